"""The clipboard watcher in the real Debian guest (Xvfb :0, hcuser's session): started
through the agent, it writes a line to the VM's clipboard port (run/clip.sock on the
host) when hcuser's clipboard changes (a short text: the text itself, ``t BASE64``),
runs as hcuser, once per guest, and does nothing at all while nothing changes. It runs
in rsa of the shared desktop pair (no boot of its own; the pair's earlier modules may
have left a watcher running, so the first start replaces it); the tests run in order.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import pytest

from hypercore_tui.adapters.guest_files import read_file
from hypercore_tui.adapters.qga import AgentClient, AgentCommandError, agent_session
from hypercore_tui.core.layout import VmPaths
from hypercore_tui.services import clipwatch

from ..conftest import HcEnv
from .real_guest import UID

pytestmark = [pytest.mark.qemu, pytest.mark.timeout(600)]

#: A line on the port this soon after the change (measured: well under a second).
SIGNAL_WAIT = 5.0
IDLE_SECONDS = 10.0


VM = "rsa"


@dataclass
class Watch:
    env: HcEnv
    paths: VmPaths
    pids: list[int]  # the watchers started, in order


@pytest.fixture(scope="module")
def watch(desktop_pair: HcEnv) -> Iterator[Watch]:
    """rsa of the shared desktop pair: booted, hcuser's X session up."""
    yield Watch(desktop_pair, desktop_pair.ctx.vm_paths(VM), [])


@asynccontextmanager
async def guest(w: Watch) -> AsyncIterator[tuple[AgentClient, asyncio.StreamReader]]:
    """The agent, and the host end of the notification port (connected first: what the
    guest writes while nobody listens is dropped)."""
    reader, writer = await asyncio.open_unix_connection(str(w.paths.clip_socket))
    try:
        async with agent_session(w.paths.qga_socket, vm_name=VM) as agent:
            yield agent, reader
    finally:
        writer.close()
        await writer.wait_closed()


async def copy_as_user(agent: AgentClient, text: str) -> None:
    """Put ``text`` on :0's clipboard as hcuser, with xclip (not through Hypercore)."""
    result = await agent.exec(
        ["setpriv", f"--reuid={UID}", f"--regid={UID}", "--init-groups", "env", "DISPLAY=:0",
         "sh", "-c", 'printf %s "$1" | xclip -selection clipboard -i >/dev/null 2>&1', "sh",
         text], env=["PATH=/usr/bin:/bin"], timeout=60)
    assert result.shell_status == 0, result


async def status_of(agent: AgentClient, pid: int) -> dict[str, str] | None:
    """/proc/PID/status read through the agent (no guest process started); None when the
    process is gone (or a zombie)."""
    try:
        text = (await read_file(agent, f"/proc/{pid}/status")).decode()
    except AgentCommandError:
        return None
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    values = {k: v.strip() for k, v in fields.items()}
    return None if values.get("State", "").startswith("Z") else values


async def processes(agent: AgentClient) -> int:
    """The guest's count of processes started since boot (/proc/stat)."""
    for line in (await read_file(agent, "/proc/stat")).decode().splitlines():
        if line.startswith("processes "):
            return int(line.split()[1])
    raise AssertionError("no processes line in /proc/stat")


async def signalled(reader: asyncio.StreamReader, text: str) -> None:
    """The next line from the port, soon: the copied text itself."""
    line = await asyncio.wait_for(reader.readline(), SIGNAL_WAIT)
    assert line == b"t " + base64.b64encode(text.encode()) + b"\n", line


async def drain(reader: asyncio.StreamReader, seconds: float = 0.5) -> None:
    """Lines of one change that arrive split (a burst may make two)."""
    while True:
        try:
            await asyncio.wait_for(reader.readline(), seconds)
        except TimeoutError:
            return


async def test_started_in_the_x_session_it_signals_a_change(watch: Watch) -> None:
    async with guest(watch) as (agent, reader):
        started = time.monotonic()
        start = await clipwatch.start_watcher(agent, replace=True)
        took = time.monotonic() - started
        assert start.kind == clipwatch.KIND_X11 and start.pid, start
        assert start.session == f"x11 :0 uid={UID}"
        watch.pids.append(start.pid)
        before = time.monotonic()
        await copy_as_user(agent, "first")
        await signalled(reader, "first")
        latency = time.monotonic() - before
        await drain(reader)
        await copy_as_user(agent, "second")
        await signalled(reader, "second")
        await drain(reader)
    print(f"\nclipwatch start (service, wall): {took * 1000:.0f} ms; change to line on the "
          f"host: {latency * 1000:.0f} ms (the xclip run through the agent included)")


async def test_it_runs_as_the_session_user_holding_the_port(watch: Watch) -> None:
    async with guest(watch) as (agent, _):
        status = await status_of(agent, watch.pids[-1])
        assert status is not None
        assert status["Uid"].split() == [str(UID)] * 4
        assert status["Gid"].split() == [str(UID)] * 4
        lock = (await read_file(agent, "/run/hypercore-clipwatch.lock")).decode().strip()
        assert lock == str(watch.pids[-1])


async def test_a_second_start_finds_it_running(watch: Watch) -> None:
    async with guest(watch) as (agent, reader):
        first = await clipwatch.start_watcher(agent)
        assert (first.kind, first.pid) == (clipwatch.KIND_RUNNING, watch.pids[-1])
        # The session a scan found, named back: checked in the guest and used.
        if first.found is not None:
            again = await clipwatch.start_watcher(agent, session=first.found)
            assert again.kind == clipwatch.KIND_RUNNING and again.lookup == "cached"
        await copy_as_user(agent, "still one watcher")
        await signalled(reader, "still one watcher")
        await drain(reader)


async def test_idle_it_does_nothing(watch: Watch) -> None:
    """No line, no wakeup of the watcher, no processes started, while nothing changes."""
    async with guest(watch) as (agent, reader):
        pid = watch.pids[-1]
        before = await status_of(agent, pid)
        forks = await processes(agent)
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(reader.readline(), IDLE_SECONDS)
        after = await status_of(agent, pid)
        forked = await processes(agent) - forks
        seconds = time.monotonic() - started
        assert before is not None and after is not None
        woke = (int(after["voluntary_ctxt_switches"]) - int(before["voluntary_ctxt_switches"]),
                int(after["nonvoluntary_ctxt_switches"])
                - int(before["nonvoluntary_ctxt_switches"]))
        print(f"\nclipwatch idle {seconds:.1f}s: watcher context switches {woke}, guest "
              f"processes started {forked}")
        assert woke == (0, 0)
        assert forked <= 2 * seconds


async def test_replace_starts_a_new_watcher_and_stops_the_old(watch: Watch) -> None:
    async with guest(watch) as (agent, reader):
        old = watch.pids[-1]
        start = await clipwatch.start_watcher(agent, replace=True)
        assert start.kind == clipwatch.KIND_X11 and start.pid and start.pid != old, start
        watch.pids.append(start.pid)
        assert await status_of(agent, old) is None
        assert await status_of(agent, start.pid) is not None
        await copy_as_user(agent, "after the replacement")
        await signalled(reader, "after the replacement")
        await drain(reader)
