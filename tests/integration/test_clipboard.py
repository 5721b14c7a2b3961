"""The clipboard hub against real peers.

* qemu-ga on the host (DISPLAY unset, as in a guest) with an X session on Xvfb whose
  user is ``nobody``: the X11 path must find the session from /proc, run xclip as that
  user and put the exact text on the X clipboard; pull reads it back.
* The real TCG test guest (no X): the fallback file path, guest to guest, ``--all``.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from hypercore_tui.adapters.hostclip import DisplayClipboard, TmuxBuffer, host_clipboards
from hypercore_tui.adapters.qga import agent_session
from hypercore_tui.core.errors import AgentCommandUnsupported, InvalidInput
from hypercore_tui.services import clipboard, records
from hypercore_tui.services.clipboard import (
    FALLBACK_FILE,
    PushResult,
    pull_via_agent,
    push_via_agent,
)

from ..conftest import GuestImage, HcEnv
from .storage_env import (
    NOBODY,
    WaylandSession,
    XSession,
    guest_sh,
    guests_env,
    host_qemu_ga,
    start_wayland_session,
    start_x_session,
)

ADVERSARIAL = [
    "a'b\"c `id` $(id) ${HOME} \\ ; | & > < * ? ~ # !",
    "trailing newline\n",
    "crlf\r\nline two\r\n",
    "\ttabs\tinside\t",
    "emoji 😀👩‍👩‍👧 combining é",
    "\u202eright-to-left שלום مرحبا",
    "-n",
    "\n\n",
    "--text",
]


@pytest.fixture
def x_session() -> Iterator[XSession]:
    session = start_x_session(NOBODY)
    yield session
    session.stop()


# -- X11 through a real qemu-ga on the host ----------------------------------------------------


async def test_x11_push_puts_exact_text_on_the_x_clipboard(x_session: XSession,
                                                            agent_sock: Path,
                                                            tmp_path: Path) -> None:
    fallback = str(tmp_path / "fallback")
    async with agent_session(agent_sock, vm_name="host") as agent:
        for text in [*ADVERSARIAL, "x" * (1024 * 1024)]:
            done = await push_via_agent(agent, text, fallback_dir=fallback)
            assert done.method == "xclip"
            assert done.session == f"x11 {x_session.display} uid={NOBODY}"
            x_session.clipboard_becomes(text.encode("utf-8"))
            pulled = await pull_via_agent(agent, fallback_dir=fallback)
            assert pulled.method == "xclip" and pulled.text == text and not pulled.empty
    assert not (Path(fallback) / "clipboard").exists(), \
        "a graphical session must not use the fallback file"


async def test_x11_pull_reads_what_a_desktop_app_copied(x_session: XSession,
                                                        agent_sock: Path) -> None:
    async with agent_session(agent_sock, vm_name="host") as agent:
        empty = await pull_via_agent(agent)
        assert empty.empty and empty.text == "" and empty.method == "xclip"
        x_session.write_clipboard("copied in the guest\r\n\u05e9\n".encode())
        pulled = await pull_via_agent(agent)
    assert pulled.text == "copied in the guest\r\n\u05e9\n"


async def test_x11_push_of_empty_text_empties_the_clipboard(x_session: XSession,
                                                            agent_sock: Path,
                                                            tmp_path: Path) -> None:
    fallback = str(tmp_path / "fallback")
    async with agent_session(agent_sock, vm_name="host") as agent:
        await push_via_agent(agent, "to be cleared", fallback_dir=fallback)
        done = await push_via_agent(agent, "", fallback_dir=fallback)
        assert done.method == "xclip"
        x_session.clipboard_becomes(b"")
        pulled = await pull_via_agent(agent, fallback_dir=fallback)
    assert pulled.method == "xclip" and pulled.text == "" and pulled.empty


async def test_xclip_runs_as_the_session_user(x_session: XSession, agent_sock: Path,
                                              tmp_path: Path) -> None:
    import psutil

    async with agent_session(agent_sock, vm_name="host") as agent:
        await push_via_agent(agent, "owner check", fallback_dir=str(tmp_path / "fb"))
    holders = [p for p in psutil.process_iter(["name", "uids", "environ"])
               if p.info["name"] == "xclip"
               and (p.info["environ"] or {}).get("DISPLAY") == x_session.display]
    assert holders, "xclip should keep holding the selection"
    assert all(p.info["uids"].real == NOBODY for p in holders)


def _start_time(pid: int) -> int:
    """Field 22 of /proc/PID/stat (after the name, which may hold spaces)."""
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()[19])


async def test_a_remembered_session_is_checked_before_it_is_used(x_session: XSession,
                                                                  agent_sock: Path,
                                                                  tmp_path: Path) -> None:
    """The session a scan found, named to the script again: used when it still holds;
    refused (and scanned for again) when it names root's process or claims root, another
    start time, another display or other display sockets."""
    fallback = str(tmp_path / "fb")
    async with agent_session(agent_sock, vm_name="host") as agent:
        first = await push_via_agent(agent, "one", fallback_dir=fallback)
        found = first.found
        assert first.lookup == clipboard.LOOKUP_SCAN and found is not None
        assert (found.uid, found.kind, found.display) == (NOBODY, "x11", x_session.display)
        assert found.start == _start_time(found.pid)
        again = await push_via_agent(agent, "two", fallback_dir=fallback, session=found)
        assert again.lookup == clipboard.LOOKUP_CACHED and again.found is None
        x_session.clipboard_becomes(b"two")
        pulled = await pull_via_agent(agent, fallback_dir=fallback, session=found)
        assert pulled.lookup == clipboard.LOOKUP_CACHED and pulled.text == "two"
        forged = [replace(found, pid=1, start=_start_time(1), uid=0, gid=0),
                  replace(found, pid=1, start=_start_time(1)),
                  replace(found, uid=0, gid=0),
                  replace(found, start=found.start + 1),
                  replace(found, display=":9999"),
                  replace(found, sockets=found.sockets + " /tmp/.X11-unix/X9999")]
        for n, hint in enumerate(forged):
            done = await push_via_agent(agent, f"three {n}", fallback_dir=fallback,
                                        session=hint)
            assert done.lookup == clipboard.LOOKUP_STALE, hint
            assert done.session == f"x11 {x_session.display} uid={NOBODY}"
            assert done.found == found
            x_session.clipboard_becomes(f"three {n}".encode())


async def test_the_tool_gets_the_session_processs_own_groups(agent_sock: Path,
                                                            tmp_path: Path) -> None:
    """xclip runs with the supplementary groups of the session's process (none here), not
    with the user's from /etc/group."""
    import psutil

    session = start_x_session(NOBODY)
    try:
        bare = subprocess.Popen(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}",
                                 "--clear-groups", "sleep", "60"],
                                env=dict(session.client_env, HOME=str(session.directory)))
        session.procs.append(bare)
        time.sleep(0.3)  # setpriv has dropped root's ids and groups
        async with agent_session(agent_sock, vm_name="host") as agent:
            done = await push_via_agent(agent, "no groups", fallback_dir=str(tmp_path))
        assert done.found is not None and done.found.pid == bare.pid
        session.clipboard_becomes(b"no groups")
        holders = [p.pid for p in psutil.process_iter(["name", "environ"])
                   if p.info["name"] == "xclip"
                   and (p.info["environ"] or {}).get("DISPLAY") == session.display]
        assert holders
        for pid in holders:
            status = Path(f"/proc/{pid}/status").read_text().splitlines()
            assert [line.split()[1:] for line in status if line.startswith("Groups:")] == [[]]
    finally:
        session.stop()


async def test_with_two_desktop_users_the_newest_session_wins(agent_sock: Path,
                                                              tmp_path: Path) -> None:
    import pwd
    import subprocess as sp

    older = start_x_session(pwd.getpwnam("daemon").pw_uid)
    newer = start_x_session(NOBODY)
    try:
        async with agent_session(agent_sock, vm_name="host") as agent:
            done = await push_via_agent(agent, "to the newest", fallback_dir=str(tmp_path))
            assert done.session == f"x11 {newer.display} uid={NOBODY}"
            newer.clipboard_becomes(b"to the newest")
            # The other user becomes active (a new process in their session).
            proc = sp.Popen(["setpriv", f"--reuid={older.uid}", f"--regid={older.uid}",
                             "--init-groups", "sleep", "60"],
                            env=dict(older.client_env, HOME=str(older.directory)))
            older.procs.append(proc)
            done = await push_via_agent(agent, "now the other one", fallback_dir=str(tmp_path))
            assert done.session == f"x11 {older.display} uid={older.uid}"
            older.clipboard_becomes(b"now the other one")
            newer.clipboard_becomes(b"to the newest")
    finally:
        newer.stop()
        older.stop()


async def test_nul_is_refused_before_reaching_the_agent(agent_sock: Path) -> None:
    async with agent_session(agent_sock, vm_name="host") as agent:
        with pytest.raises(InvalidInput, match="NUL"):
            await push_via_agent(agent, "a\x00b")


async def test_disabled_guest_exec_names_the_fix() -> None:
    with host_qemu_ga("--block-rpcs=guest-exec,guest-exec-status") as sock:
        async with agent_session(sock, vm_name="locked") as agent:
            with pytest.raises(AgentCommandUnsupported, match="block-rpcs"):
                await push_via_agent(agent, "text")


async def test_host_display_clipboard_reaches_the_guest(agent_sock: Path,
                                                        monkeypatch: pytest.MonkeyPatch,
                                                        tmp_path: Path) -> None:
    """Host clipboard = one Xvfb display read with xclip; the "guest" = qemu-ga on
    the host whose desktop session is a second Xvfb display."""
    host_x = start_x_session(os.getuid())
    guest_x = start_x_session(NOBODY)
    try:
        monkeypatch.setenv("DISPLAY", host_x.display)
        monkeypatch.setenv("XAUTHORITY", str(host_x.xauthority))
        boards = host_clipboards(dict(os.environ))
        assert boards and isinstance(boards[0], DisplayClipboard)
        host_x.write_clipboard(b"first copy\n")
        text = boards[0].read()
        assert text is not None
        async with agent_session(agent_sock, vm_name="guest") as agent:
            done = await push_via_agent(agent, text, fallback_dir=str(tmp_path / "fb"))
        assert done.method == "xclip"
        guest_x.clipboard_becomes(b"first copy\n")
    finally:
        guest_x.stop()
        host_x.stop()


# -- the host clipboard: tmux ---------------------------------------------------------------------


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


def test_tmux_paste_buffer_round_trip(tmux_env: dict[str, str]) -> None:
    boards = host_clipboards(tmux_env)
    assert [b.name for b in boards] == ["tmux"]
    board = boards[0]
    assert isinstance(board, TmuxBuffer)
    assert board.read() is None  # a new server has no buffers
    for text in ADVERSARIAL:
        board.write(text)
        assert board.read() == text


def test_no_host_clipboard_without_display_or_tmux() -> None:
    assert host_clipboards({"PATH": "/usr/bin:/bin"}) == []


# -- the real test guest: fallback file, guest to guest ------------------------------------------


@pytest.fixture(scope="module")
def guests(test_guest: GuestImage) -> Iterator[HcEnv]:
    with guests_env(test_guest, ["clipa", "clipb"]) as env:
        yield env


@pytest.mark.qemu
def test_cli_push_pull_round_trip_through_the_fallback_file(guests: HcEnv) -> None:
    for text in ADVERSARIAL:
        push = guests.run("clip", "push", "clipa", f"--text={text}")
        assert push.returncode == 0, push.stderr
        assert FALLBACK_FILE.encode() in push.stdout
        pull = guests.run("clip", "pull", "clipa")
        assert pull.returncode == 0, pull.stderr
        assert pull.stdout == text.encode("utf-8")
    stat = guest_sh(guests, "clipa", 'stat -c "%a %u" "$1" "$2"', "/var/lib/hypercore",
                    FALLBACK_FILE)
    assert stat.stdout.split(b"\n")[:2] == [b"700 0", b"600 0"]
    leftovers = guest_sh(guests, "clipa", 'ls -A "$1"', "/var/lib/hypercore")
    assert leftovers.stdout == b"clipboard\n"


@pytest.mark.qemu
def test_cli_pull_of_an_empty_clipboard_says_so_and_push_of_empty_text_clears_it(
        guests: HcEnv) -> None:
    note = b"hypercore: note: clipb: the clipboard is empty\n"
    guest_sh(guests, "clipb", 'rm -f "$1"', FALLBACK_FILE)
    pull = guests.run("clip", "pull", "clipb")
    assert (pull.returncode, pull.stdout, pull.stderr) == (0, b"", note)
    guests.run("clip", "push", "clipb", "--text", "to be cleared", check=True)
    push = guests.run("clip", "push", "clipb", "--text", "")
    assert push.returncode == 0, push.stderr
    assert push.stdout.startswith(b"clipb: 0 bytes from --text -> ")
    size = guest_sh(guests, "clipb", 'stat -c %s "$1"', FALLBACK_FILE)
    assert size.stdout == b"0\n"
    pull = guests.run("clip", "pull", "clipb")
    assert (pull.returncode, pull.stdout, pull.stderr) == (0, b"", note)


@pytest.mark.qemu
def test_cli_push_from_stdin_one_mebibyte(guests: HcEnv) -> None:
    text = ("0123456789abcdef" * 4 + "\r\n") * (1024 * 1024 // 66) + "end\n"
    push = guests.run("clip", "push", "clipa", stdin=text.encode())
    assert push.returncode == 0, push.stderr
    pull = guests.run("clip", "pull", "clipa")
    assert pull.stdout == text.encode()


@pytest.mark.qemu
def test_cli_refuses_nul_and_bad_usage(guests: HcEnv) -> None:
    nul = guests.run("clip", "push", "clipa", stdin=b"a\x00b")
    assert nul.returncode == 2
    assert b"NUL" in nul.stderr and b"Traceback" not in nul.stderr
    none = guests.run("clip", "push")
    assert none.returncode == 2 and b"--all" in none.stderr
    ghost = guests.run("clip", "push", "ghost", "--text", "x")
    assert ghost.returncode == 2 and b"no VM named" in ghost.stderr
    empty = guests.run("clip", "push", "clipa")  # stdin empty, no host clipboard
    assert empty.returncode == 2 and b"nothing to push" in empty.stderr


@pytest.mark.qemu
def test_push_all_and_guest_to_guest(guests: HcEnv) -> None:
    push = guests.run("clip", "push", "--all", "--text", "to everyone")
    assert push.returncode == 0, push.stderr
    assert push.stdout.count(b"->") == 2
    for name in ("clipa", "clipb"):
        assert guests.run("clip", "pull", name).stdout == b"to everyone"

    ctx = guests.ctx

    async def g2g() -> list[PushResult]:
        await clipboard.push(ctx, ["clipa"], "from A\n\u00e9")
        return await clipboard.push(ctx, ["clipb"], await clipboard.pull(ctx, "clipa"))

    results = asyncio.run(g2g())
    assert [(r.name, r.ok, r.method) for r in results] == [("clipb", True, "file")]
    assert asyncio.run(clipboard.pull(ctx, "clipb")) == "from A\n\u00e9"


@pytest.mark.qemu
def test_modes_set_while_running_are_kept_at_once(guests: HcEnv) -> None:
    """`set` on running VMs: push --all skips an `off` VM (one note) and leaves its
    clipboard untouched; `off` and `push-only` refuse a pull before the agent is asked."""
    guests.run("clip", "push", "clipb", "--text", "kept in B", check=True)
    try:
        guests.run("set", "clipb", "clipboard=off", check=True)
        push = guests.run("clip", "push", "--all", "--text", "not for B")
        assert push.returncode == 0, push.stderr
        assert push.stderr == b"hypercore: note: skipped clipb (clipboard off)\n"
        assert push.stdout.startswith(b"clipa: ") and push.stdout.count(b"->") == 1
        assert guest_sh(guests, "clipb", 'cat "$1"', FALLBACK_FILE).stdout == b"kept in B"
        pull = guests.run("clip", "pull", "clipb")
        assert (pull.returncode, pull.stdout, pull.stderr) == (1, b"", (
            b"hypercore: error: clipb: its clipboard is off (hypercore set clipb "
            b"clipboard=sync to change)\n"))
        guests.run("set", "clipb", "clipboard=push-only", check=True)
        guests.run("clip", "push", "clipb", "--text", "into B", check=True)
        assert guest_sh(guests, "clipb", 'cat "$1"', FALLBACK_FILE).stdout == b"into B"
        pull = guests.run("clip", "pull", "clipb")
        assert pull.returncode == 1 and b"written, never read" in pull.stderr
    finally:
        guests.run("set", "clipb", "clipboard=sync", check=True)
    assert guests.run("clip", "pull", "clipb", check=True).stdout == b"into B"


@pytest.mark.qemu
def test_push_reports_each_vm(guests: HcEnv) -> None:
    from hypercore_tui.services.create import CreateRequest, create_vm

    ctx = guests.ctx
    create_vm(ctx, CreateRequest(name="clipoff", ram_mb=64, cpus=1, disk_size="1M"))
    results = asyncio.run(clipboard.push(ctx, ["clipa", "clipoff"], "partial"))
    assert results[0].ok and results[0].method == "file" and results[0].seconds > 0
    # No graphical session: nothing looked up, nothing remembered.
    assert results[0].lookup is None and records.read_clip_session(ctx.vm_paths("clipa")) is None
    assert not results[1].ok and "not running" in (results[1].error or "")
    cli = guests.run("clip", "push", "clipa", "clipoff", "--text", "x")
    assert cli.returncode == 1 and b"clipoff is not running" in cli.stderr
    assert b"clipa:" in cli.stdout


@pytest.mark.qemu
def test_cli_push_from_the_tmux_buffer_and_pull_into_it(guests: HcEnv,
                                                        tmux_env: dict[str, str]) -> None:
    env = dict(guests.environ)
    env.pop("DISPLAY", None)
    env.pop("WAYLAND_DISPLAY", None)
    env.update(TMUX=tmux_env["TMUX"], HOME=tmux_env["HOME"])
    tmux_board = TmuxBuffer(tmux_env)
    tmux_board.write("from the tmux buffer\n$(id)")
    cli = HcEnv(guests.home, guests.runtime, env)
    push = cli.run("clip", "push", "clipb")  # no --text, empty stdin: the tmux buffer
    assert push.returncode == 0, push.stderr
    assert b"from the tmux clipboard" in push.stdout
    assert guests.run("clip", "pull", "clipb").stdout == b"from the tmux buffer\n$(id)"

    asyncio.run(clipboard.push(guests.ctx, ["clipb"], "back to tmux \u2603"))
    pull = cli.run("clip", "pull", "clipb", "--to-host")
    assert pull.returncode == 0, pull.stderr
    assert tmux_board.read() == "back to tmux \u2603"


@pytest.mark.parametrize("session_kind", ["x11", "wayland"])
def test_a_display_write_leaves_the_terminal_alone(session_kind: str) -> None:
    """The holder a display write leaves behind (xclip, wl-copy) owns the clipboard on but
    holds none of the writer's output: a process writing the display clipboard with its
    stderr on a pipe ends and the pipe closes at once (were the holder on it, it would stay
    open while the holder lives; in the dashboard its messages would land on the screen)."""
    session: XSession | WaylandSession = (start_x_session(os.getuid()) if session_kind == "x11"
                                          else start_wayland_session(NOBODY))  # (sway: not root)
    try:
        env = {**session.client_env, "PYTHONPATH": str(Path(__file__).parents[2])}
        code = ("import os; from hypercore_tui.adapters.hostclip import host_clipboards; "
                "b = host_clipboards(os.environ); print(b[0].kind); b[0].write('held on ✓')")
        started = time.monotonic()
        proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                              timeout=20, check=False)
        assert proc.returncode == 0 and proc.stdout.decode().strip() == session_kind, proc
        assert time.monotonic() - started < 10
        session.clipboard_becomes("held on ✓".encode())
    finally:
        session.stop()
