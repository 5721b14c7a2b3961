"""The host's own clipboards as peers of the clipboard sync (issue 13), against real
peers and no QEMU: a private tmux server (its paste buffer) and an Xvfb display whose
clipboard a desktop user fills with xclip.

Each test runs a :class:`SyncEngine` over a home without VMs: what the host copies
becomes an entry (source ``host:tmux`` / ``host:x11``), an entry from a VM reaches the
host's clipboard, nothing echoes, and a board that goes away is one fault while the
sync goes on.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from hypercore_tui.core.clip import KIND_TEXT
from hypercore_tui.services.clipsync.engine import SyncEngine, SyncEvent, describe_status
from hypercore_tui.services.clipsync.hostpeer import HostPeer
from hypercore_tui.services.context import Context

from .storage_env import WaylandSession, XSession, start_wayland_session, start_x_session

pytestmark = pytest.mark.timeout(90)

HOSTILE = "$(touch /tmp/hc-pwned) `id`\n-n --text\t\x1b]52;c;SGVsbG8=\x07 😀\n"


@pytest.fixture
def tmux_env() -> Iterator[dict[str, str]]:
    directory = Path(tempfile.mkdtemp(prefix="hctmux-", dir="/tmp"))
    sock = directory / "tmux.sock"
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(directory)}
    subprocess.run(["tmux", "-S", str(sock), "-f", "/dev/null", "new-session", "-d"],
                   env=env, check=True, timeout=10)
    env["TMUX"] = f"{sock},0,0"
    yield env
    subprocess.run(["tmux", "-S", str(sock), "kill-server"], env=env, timeout=10, check=False)
    shutil.rmtree(directory, ignore_errors=True)


def tmux(env: dict[str, str], *args: str, stdin: bytes | None = None
         ) -> subprocess.CompletedProcess[bytes]:
    sock = env["TMUX"].split(",")[0]
    return subprocess.run(["tmux", "-S", sock, *args], input=stdin, capture_output=True,
                          env=env, timeout=10, check=False)


async def until(check: Callable[[], object], what: str, timeout: float = 2.0) -> float:
    """Wait until ``check()`` is true; how long it took."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    while not await asyncio.to_thread(check):
        if loop.time() - start > timeout:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.02)
    return loop.time() - start


@asynccontextmanager
async def running(tmp_path: Path, environ: dict[str, str], *, host: bool = True
                  ) -> AsyncIterator[tuple[SyncEngine, list[SyncEvent]]]:
    env = {**environ, "HYPERCORE_HOME": str(tmp_path / "home"),
           "HYPERCORE_RUNTIME_DIR": str(tmp_path / "run")}
    events: list[SyncEvent] = []
    engine = SyncEngine(Context.from_environ(env), None, on_event=events.append, host=host)
    task = asyncio.create_task(engine.run())
    try:
        yield engine, events
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def peer(engine: SyncEngine, name: str) -> HostPeer:
    found = [p for p in engine.hosts if p.name == name]
    assert found, [p.name for p in engine.hosts]
    return found[0]


# -- tmux ---------------------------------------------------------------------------------


async def test_tmux_buffer_is_a_peer_of_the_sync(tmp_path: Path,
                                                  tmux_env: dict[str, str]) -> None:
    async with running(tmp_path, tmux_env) as (engine, events):
        await until(lambda: engine.hosts and engine.hosts[0].state == "polling",
                    "the tmux peer", timeout=5)
        board = peer(engine, "host:tmux")
        assert [p.name for p in engine.hosts] == ["host:tmux"]

        # a copy in tmux (copy mode, set-buffer...) becomes the hub's entry
        assert tmux(tmux_env, "set-buffer", "--", "copied in tmux").returncode == 0
        took = await until(lambda: engine.history.current is not None, "the tmux entry")
        current = engine.history.current
        assert current is not None and current.source == "host:tmux"
        assert current.data == b"copied in tmux"
        print(f"tmux -> hub in {took * 1000:.0f} ms")

        # an entry from a VM reaches the tmux buffer, byte-exact, hostile text as data
        engine.offer(KIND_TEXT, HOSTILE.encode(), "vm:x")
        took = await until(lambda: tmux(tmux_env, "show-buffer").stdout == HOSTILE.encode(),
                           "the VM's entry in the tmux buffer")
        print(f"hub -> tmux in {took * 1000:.0f} ms")
        assert not Path("/tmp/hc-pwned").exists()
        assert any(e.kind == "push" and e.vm == "host:tmux" for e in events)

        # no echo: the buffer read back is not a new entry
        await asyncio.sleep(2.5)
        assert [(i.source, i.data) for i in engine.history] == [
            ("vm:x", HOSTILE.encode()), ("host:tmux", b"copied in tmux")]

        status = engine.status()
        assert status["host"] == [{"name": "host:tmux", "state": "polling",
                                   "note": "tmux show-buffer every 1 s",
                                   "last_change": board.last_change}]
        assert "  host:tmux: polling (tmux show-buffer every 1 s)" in describe_status(status)

        # the tmux server goes away: one fault, the peer stops, the sync goes on
        tmux(tmux_env, "kill-server")
        await until(lambda: board.state == "stopped", "the fault", timeout=5)
        await asyncio.sleep(1.5)
        faults = [e for e in events if e.kind == "fault"]
        assert len(faults) == 1 and faults[0].message.startswith("host:tmux: no longer synced")
        assert engine.offer_text("after the fault", "vm:y") is not None
        await asyncio.sleep(1.2)
        assert len([e for e in events if e.kind == "fault"]) == 1
        assert engine.status()["host"][0]["state"] == "stopped"


async def test_tmux_buffer_at_start_is_not_offered_and_no_host_leaves_it_out(
        tmp_path: Path, tmux_env: dict[str, str]) -> None:
    assert tmux(tmux_env, "set-buffer", "--", "old copy").returncode == 0
    async with running(tmp_path, tmux_env) as (engine, _):
        await until(lambda: engine.hosts and engine.hosts[0].state == "polling",
                    "the tmux peer", timeout=5)
        await asyncio.sleep(1.5)
        assert len(engine.history) == 0
    async with running(tmp_path, tmux_env, host=False) as (engine, _):
        await asyncio.sleep(0.5)
        assert engine.hosts == [] and engine.status()["host"] == []


async def test_tmux_idle_cost(tmp_path: Path, tmux_env: dict[str, str]) -> None:
    """What following the tmux buffer costs while nothing changes (printed: -s)."""
    async with running(tmp_path, tmux_env) as (engine, _):
        await until(lambda: engine.hosts and engine.hosts[0].state == "polling",
                    "the tmux peer", timeout=5)
        server = int(tmux(tmux_env, "display-message", "-p", "#{pid}").stdout)
        before, server_before = os.times(), _cpu(server)
        await asyncio.sleep(10)
        after, server_after = os.times(), _cpu(server)
    ours = (after.user + after.system + after.children_user + after.children_system
            - before.user - before.system - before.children_user - before.children_system)
    theirs = server_after - server_before
    print(f"tmux peer idle: {ours * 10:.2f} % of a core here (with the tmux clients), "
          f"{theirs * 10:.2f} % in the tmux server")
    assert ours / 10 < 0.05  # well under 5 %: a sanity bound, the figure is printed


def _cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# -- a local display: X11 and Wayland -------------------------------------------------------


@pytest.fixture(params=["x11", "wayland"])
def display(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
            ) -> Iterator[XSession | WaylandSession]:
    """An Xvfb display, or a real headless sway (data-control), of ``nobody``; named only
    in the sync's environment, not this process's."""
    session: XSession | WaylandSession = (start_x_session() if request.param == "x11"
                                          else start_wayland_session())
    for name in ("DISPLAY", "WAYLAND_DISPLAY", "TMUX"):
        monkeypatch.delenv(name, raising=False)
    yield session
    session.stop()


async def test_a_display_is_a_peer_of_the_sync(tmp_path: Path,
                                               display: XSession | WaylandSession) -> None:
    """host:x11 / host:wayland: a copy by the desktop's user becomes the entry
    (event-driven: XFixes, `wl-paste --watch`), an entry from a VM is what the display
    shows, nothing echoes, and the display (or compositor) ending is one fault while the
    sync goes on."""
    kind = "x11" if isinstance(display, XSession) else "wayland"
    env = {**display.client_env, "HOME": str(tmp_path)}
    async with running(tmp_path, env) as (engine, events):
        await until(lambda: engine.hosts and engine.hosts[0].state == "watching",
                    f"the {kind} peer", timeout=10)
        board = peer(engine, f"host:{kind}")

        # a desktop application (the session's user) copies: an entry, event-driven
        await asyncio.to_thread(display.write_clipboard, b"copied on the host desktop")
        took = await until(lambda: engine.history.current is not None, f"the {kind} entry")
        current = engine.history.current
        assert current is not None and current.source == f"host:{kind}"
        assert current.data == b"copied on the host desktop"
        print(f"{kind} -> hub in {took * 1000:.0f} ms")

        # an entry from a VM: the display's own reader shows it
        engine.offer(KIND_TEXT, HOSTILE.encode(), "vm:x")
        took = await until(lambda: display.read_clipboard() == HOSTILE.encode(),
                           "the VM's entry on the display")
        print(f"hub -> {kind} in {took * 1000:.0f} ms")

        # no echo (the write was a change the watcher saw)
        await asyncio.sleep(1.5)
        assert [i.source for i in engine.history] == ["vm:x", f"host:{kind}"]

        # the display (the compositor) closes: one fault, the sync goes on
        display.procs[0].terminate()
        await until(lambda: board.state == "stopped", "the fault", timeout=5)
        faults = [e for e in events if e.kind == "fault"]
        assert len(faults) == 1, faults
        print(f"{kind} gone: {faults[0].message}")
        if kind == "x11":
            assert "display closed" in faults[0].message
        assert engine.offer_text("after the display", "vm:y") is not None
        assert engine.status()["host"][0]["state"] == "stopped"
