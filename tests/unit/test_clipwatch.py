"""The clipboard watcher's start: the host reading clipboard.sh watch's hc-* lines, and the
guest program's own argument and setup failures (run here with the host's python3: no
guest, no display)."""

from __future__ import annotations

import ast
import contextlib
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hypercore_tui.adapters.qga import ExecResult
from hypercore_tui.services import clipboard, clipwatch, guest_exec

FOUND = (b"hc-found-pid=812\nhc-found-start=4242\nhc-found-uid=1000\nhc-found-gid=1000\n"
         b"hc-found-kind=x11\nhc-found-display=:0\nhc-found-xauthority=\nhc-found-wayland=\n"
         b"hc-found-runtime=/run/user/1000\nhc-found-sockets= /tmp/.X11-unix/X0\n")


def result(stderr: bytes, status: int = 0) -> ExecResult:
    return ExecResult(exitcode=status, signal=None, stdout=b"", stderr=stderr)


def test_a_started_watcher_with_its_pid_and_session() -> None:
    start = clipwatch.parse_start(result(
        b"hc-session=x11 :0 uid=1000\nhc-lookup=scan\n" + FOUND
        + b"hc-watch=x11\nhc-watch-pid=1234\n"), "vm1")
    assert (start.kind, start.pid, start.reason) == ("x11", 1234, None)
    assert start.watching and start.session == "x11 :0 uid=1000"
    assert start.lookup == clipboard.LOOKUP_SCAN
    assert start.found is not None and (start.found.pid, start.found.uid) == (812, 1000)


def test_a_cached_lookup_reports_nothing_found() -> None:
    start = clipwatch.parse_start(result(
        b"hc-session=wayland wayland-0 uid=1000\nhc-lookup=cached\n" + FOUND
        + b"hc-watch=wayland\nhc-watch-pid=77\n"), "vm1")
    assert (start.kind, start.pid, start.found) == ("wayland", 77, None)


def test_already_running_names_the_running_watcher() -> None:
    start = clipwatch.parse_start(result(b"hc-session=x11 :0 uid=1000\nhc-lookup=cached\n"
                                         b"hc-watch=running\nhc-watch-pid=99\n"), "vm1")
    assert (start.kind, start.pid, start.watching) == ("running", 99, True)
    # (a holder that wrote no pid yet is still running)
    assert clipwatch.parse_start(result(b"hc-watch=running\n"), "vm1").pid is None


def test_no_session_and_unsupported_say_why() -> None:
    none = clipwatch.parse_start(result(b"hc-watch=none\n", 3), "vm1")
    assert (none.kind, none.pid, none.watching) == ("none", None, False)
    unsupported = clipwatch.parse_start(result(
        b"hc-session=x11 :0 uid=1000\nhc-lookup=scan\nhc-watch=unsupported\n"
        b"no libXfixes.so.3\n", 3), "vm1")
    assert (unsupported.kind, unsupported.reason) == ("unsupported", "no libXfixes.so.3")


@pytest.mark.parametrize(("stderr", "status", "why"), [
    (b"hc-session=x11 :0 uid=1000\ncannot open display :0\n", 1, "cannot open display :0"),
    (b"no port /dev/virtio-ports/org.hypercore.clipboard.0\n", 1, "no port /dev/virtio"),
    (b"", 137, "exit status 137"),
    (b"hc-watch=x11\n", 0, "gave no pid"),  # a start without a pid is no start
    (b"hc-watch=x11\nhc-watch-pid=12\n", 1, "exit status 1"),  # ...nor a failed status
    (b"hc-watch=none\n", 0, "exit status 0"),
    (b"hc-watch=\x1b[31mx11\nhc-watch-pid=1\n", 0, "exit status 0"),  # unknown kind
])
def test_failures_raise_with_the_guests_reason(stderr: bytes, status: int, why: str) -> None:
    with pytest.raises(clipboard.ClipboardError, match="vm1: the clipboard watcher") as err:
        clipwatch.parse_start(result(stderr, status), "vm1")
    assert why in str(err.value)


def test_a_guest_reason_cannot_carry_terminal_escapes() -> None:
    start = clipwatch.parse_start(result(b"hc-watch=unsupported\nno \x1b]52;c;AAAA\x07lib\n",
                                         3), "vm1")
    assert start.reason is not None and "\x1b" not in start.reason and "\x07" not in start.reason


def test_a_huge_pid_is_no_pid() -> None:
    start = clipwatch.parse_start(result(b"hc-watch=running\nhc-watch-pid=99999999999999\n"),
                                  "vm1")
    assert start.pid is None


# -- the guest program ------------------------------------------------------------------


def program() -> str:
    return guest_exec.script_text(clipwatch.WATCHER_PROGRAM)


def run_program(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-", *args], input=program().encode(),
                          capture_output=True, timeout=30, check=False,
                          env={"PATH": "/usr/bin:/bin"})


def test_the_program_is_python_3_7_and_standalone() -> None:
    tree = ast.parse(program(), feature_version=(3, 7))
    imported = {alias.name.split(".")[0] for node in ast.walk(tree)
                if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom) and node.module}
    assert "hypercore_tui" not in imported
    assert imported <= {"__future__", "base64", "ctypes", "errno", "fcntl", "os", "re", "select",
                        "shutil", "signal", "stat", "subprocess", "sys", "time", "urllib"}


def test_the_program_refuses_bad_arguments() -> None:
    proc = run_program("/dev/null", "1000")
    assert proc.returncode == 2 and b"usage" in proc.stderr
    proc = run_program("/dev/null", "x", "1000", "", "x11")
    assert proc.returncode == 2 and b"bad ids" in proc.stderr
    proc = run_program("--frobnicate", "/dev/null", "1000", "1000", "", "x11")
    assert proc.returncode == 2 and b"unknown option" in proc.stderr


def test_the_program_says_there_is_no_port(tmp_path: Path) -> None:
    port = tmp_path / "no-such-port"
    proc = run_program(f"--lock={tmp_path / 'lock'}", str(port), "1000", "1000", "", "x11")
    assert proc.returncode == 1
    assert proc.stderr.decode().strip() == f"no port {port}"
    # (the lock taken, its pid written, and released when the program ended)
    assert (tmp_path / "lock").read_text().strip().isdigit()
    again = run_program(f"--lock={tmp_path / 'lock'}", str(port), "1000", "1000", "", "x11")
    assert b"hc-watch=running" not in again.stderr


#: A stand-in for wl-paste --watch CMD: one line at once (the selection as it is), one
#: more a moment later (a change), then it waits; --list-types: a file manager's copy.
FAKE_WL_PASTE = """#!/bin/sh
if [ "$1" = --list-types ]; then printf 'text/uri-list\\nx-special/gnome-copied-files\\n'; exit; fi
[ "$1 $2" = "--watch echo" ] || exit 2
echo
sleep 1.5
echo
exec sleep 600
"""
#: One without the data-control protocol: it says so and ends.
FAKE_WL_PASTE_UNSUPPORTED = """#!/bin/sh
echo "Watch mode requires a compositor that supports the wlroots data-control protocol" >&2
exit 1
"""


def fake_wayland(tmp_path: Path, script: str) -> tuple[dict[str, str], Path]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "wl-paste").write_text(script)
    (bin_dir / "wl-paste").chmod(0o755)
    port = tmp_path / "port"
    os.mkfifo(port)
    return {"PATH": f"{bin_dir}:/usr/bin:/bin"}, port


def ids() -> list[str]:
    return [str(os.getuid()), str(os.getgid()), ""]


def test_wayland_a_change_makes_one_line_and_nothing_before(tmp_path: Path) -> None:
    """The real daemon path (fork, setsid, fork, ready, select loop) against a fake
    wl-paste: the first line (the selection at start) is no change, the next one is."""
    env, port = fake_wayland(tmp_path, FAKE_WL_PASTE)
    reader = os.open(port, os.O_RDWR | os.O_NONBLOCK)  # (a reader before the writer opens)
    pid = None
    try:
        proc = subprocess.run([sys.executable, "-", f"--lock={tmp_path / 'lock'}", str(port),
                               *ids(), "wayland"], input=program().encode(),
                              capture_output=True, timeout=30, check=False, env=env)
        assert proc.returncode == 0, proc.stderr
        lines = proc.stderr.decode().splitlines()
        assert lines[0] == "hc-watch=wayland" and lines[1].startswith("hc-watch-pid=")
        pid = int(lines[1].partition("=")[2])
        assert (tmp_path / "lock").read_text().strip() == str(pid)
        with pytest.raises(BlockingIOError):
            os.read(reader, 64)  # (the first line was the selection as it was)
        deadline = time.monotonic() + 5
        got = b""
        while not got and time.monotonic() < deadline:
            select.select([reader], [], [], 0.2)
            with contextlib.suppress(BlockingIOError):
                got = os.read(reader, 64)
        assert got == b"c files\n"  # (the hint: the copy offers a file list)
        again = run_program(f"--lock={tmp_path / 'lock'}", str(port), *ids(), "wayland")
        assert again.returncode == 0
        assert again.stderr.decode().split() == ["hc-watch=running", f"hc-watch-pid={pid}"]
    finally:
        if pid is not None:
            os.kill(pid, signal.SIGTERM)
        os.close(reader)


def test_wayland_without_data_control_says_why(tmp_path: Path) -> None:
    env, port = fake_wayland(tmp_path, FAKE_WL_PASTE_UNSUPPORTED)
    reader = os.open(port, os.O_RDWR | os.O_NONBLOCK)
    try:
        proc = subprocess.run([sys.executable, "-", f"--lock={tmp_path / 'lock'}", str(port),
                               *ids(), "wayland"], input=program().encode(),
                              capture_output=True, timeout=30, check=False, env=env)
    finally:
        os.close(reader)
    assert proc.returncode == 3
    assert proc.stderr.decode().splitlines() == [
        "hc-watch=unsupported",
        "Watch mode requires a compositor that supports the wlroots data-control protocol"]


def test_a_watcher_that_takes_writes_says_its_token() -> None:
    start = clipwatch.parse_start(result(b"hc-watch=x11\nhc-watch-pid=12\n"
                                         b"hc-watch-write=0123456789abcdef\n"), "vm1")
    assert start.token == "0123456789abcdef"
    running = clipwatch.parse_start(result(b"hc-watch=running\nhc-watch-pid=12\n"
                                           b"hc-watch-write=0123456789abcdef\n"), "vm1")
    assert running.token == "0123456789abcdef"
    for bad in (b"0123456789ABCDEF", b"0123", b"0123456789abcdef0", b"$(id)xxxxxxxxxx"):
        odd = clipwatch.parse_start(result(b"hc-watch=x11\nhc-watch-pid=12\n"
                                           b"hc-watch-write=" + bad + b"\n"), "vm1")
        assert odd.token is None
    assert clipwatch.parse_start(result(b"hc-watch=x11\nhc-watch-pid=12\n"), "vm1").token \
        is None  # (an older watcher)


#: wl-paste for a watcher whose port takes writes: no change ever; wl-copy keeps what it
#: is given in $HC_CLIP.
FAKE_WL_QUIET = """#!/bin/sh
if [ "$1" = --list-types ]; then printf 'text/plain\\n'; exit; fi
[ "$1 $2" = "--watch echo" ] || exit 2
echo
exec sleep 600
"""
FAKE_WL_COPY = """#!/bin/sh
exec cat > "$HC_CLIP"
"""


def test_the_daemon_writes_the_hosts_text_down_its_port(tmp_path: Path) -> None:
    """The real daemon on a tty as its port (a virtio port reads and writes alike): it
    announces a token, sets the clipboard with the session's tool for a ``w`` line with
    that token, answers on the port, and ignores a line with another token."""
    import base64
    import tty

    env, _ = fake_wayland(tmp_path, FAKE_WL_QUIET)
    (tmp_path / "bin" / "wl-copy").write_text(FAKE_WL_COPY)
    (tmp_path / "bin" / "wl-copy").chmod(0o755)
    clip = tmp_path / "clip"
    env["HC_CLIP"] = str(clip)
    master, slave = os.openpty()
    tty.setraw(slave)
    os.set_blocking(master, False)
    pid = None
    lock = f"--lock={tmp_path / 'lock'}"

    def answer() -> bytes:
        got = b""
        deadline = time.monotonic() + 10
        while not got.endswith(b"\n") and time.monotonic() < deadline:
            select.select([master], [], [], 0.2)
            with contextlib.suppress(BlockingIOError):
                got += os.read(master, 4096)
        return got

    try:
        proc = subprocess.run([sys.executable, "-", lock, os.ttyname(slave), *ids(),
                               "wayland"], input=program().encode(), capture_output=True,
                              timeout=30, check=False, env=env)
        assert proc.returncode == 0, proc.stderr
        lines = proc.stderr.decode().splitlines()
        assert lines[0] == "hc-watch=wayland" and lines[2].startswith("hc-watch-write=")
        pid = int(lines[1].partition("=")[2])
        token = lines[2].partition("=")[2]
        assert len(token) == 16 and (tmp_path / "lock.token").read_text().strip() == token
        text = "from the host ✓ $(id)".encode()
        os.write(master, b"w fedcba9876543210 00000001 "  # (another watcher's)
                 + base64.b64encode(b"stale") + b"\n")
        os.write(master, f"w {token} 0000abcd ".encode() + base64.b64encode(text) + b"\n")
        assert answer() == b"w-ok 0000abcd\n"
        assert clip.read_bytes() == text
        again = run_program(lock, os.ttyname(slave), *ids(), "wayland")
        assert again.stderr.decode().split() == ["hc-watch=running", f"hc-watch-pid={pid}",
                                                 f"hc-watch-write={token}"]
    finally:
        if pid is not None:
            os.kill(pid, signal.SIGTERM)
        os.close(master)
        os.close(slave)
