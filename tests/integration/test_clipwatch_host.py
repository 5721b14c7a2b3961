"""The guest's clipboard watcher program (clipwatch.py, as clipboard.sh starts it: root,
then the session's user) on this host against real displays: an Xvfb (XFixes events,
TARGETS asked, xclip) and a real headless Wayland compositor with data-control (sway;
`wl-paste --watch`), its port a FIFO. Nothing at start; then one line per copy: a text of
at most INLINE_MAX bytes carried on the port itself (``t BASE64``), a file list or an
image named as a hint, a longer text as a plain change (the host reads it through the
agent) — and a text large enough for X11's INCR transfer leaves its owner serving the
next paste; nothing while idle.
"""

from __future__ import annotations

import base64
import contextlib
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hypercore_tui.services import guest_exec
from hypercore_tui.services.clipsync.vmsync import INLINE_MAX, port_line
from hypercore_tui.services.clipwatch import WATCHER_PROGRAM

from .storage_env import (
    NOBODY,
    WaylandSession,
    XSession,
    png,
    start_wayland_session,
    start_x_session,
)


@pytest.fixture(params=["x11", "wayland"])
def session(request: pytest.FixtureRequest) -> Iterator[XSession | WaylandSession]:
    made: XSession | WaylandSession = (start_x_session(NOBODY) if request.param == "x11"
                                       else start_wayland_session(NOBODY))
    yield made
    made.stop()


def port_lines(reader: int, seconds: float, *, settle: float = 0.5) -> list[bytes]:
    """The lines written on the port (a FIFO): those within ``seconds``, or, once one
    came, those until ``settle`` seconds pass without another."""
    got = b""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        select.select([reader], [], [], 0.05)
        with contextlib.suppress(BlockingIOError):
            got += os.read(reader, 65536)
            deadline = min(deadline, time.monotonic() + settle)
    return got.splitlines()


def test_the_watcher_follows_a_real_display(session: XSession | WaylandSession,
                                            tmp_path: Path) -> None:
    kind = "x11" if isinstance(session, XSession) else "wayland"
    port = tmp_path / "port"
    os.mkfifo(port)
    reader = os.open(port, os.O_RDWR | os.O_NONBLOCK)
    pid = None
    try:
        proc = subprocess.run(
            [sys.executable, "-", f"--lock={tmp_path / 'lock'}", str(port), str(NOBODY),
             str(NOBODY), "", kind],
            input=guest_exec.script_text(WATCHER_PROGRAM).encode(), capture_output=True,
            timeout=30, check=False, env=session.client_env)
        assert proc.returncode == 0, proc.stderr
        lines = proc.stderr.decode().splitlines()
        assert lines[0] == f"hc-watch={kind}" and lines[1].startswith("hc-watch-pid="), lines
        pid = int(lines[1].partition("=")[2])
        assert port_lines(reader, 1.0) == []  # (what the clipboard held at start: no change)

        text = "a copy ✓\n\t$(id)".encode()
        session.write_clipboard(text)
        got = port_lines(reader, 5)
        assert got == [b"t " + base64.b64encode(text)], got
        assert port_line(got[0]) == ("", text)  # (and the host takes it as that text)

        session.write_clipboard(b"file:///home/u/report.pdf\r\n", "text/uri-list")
        assert port_lines(reader, 5) == [b"c files"]
        session.write_clipboard(png(8, 8), "image/png")
        assert port_lines(reader, 5) == [b"c image"]
        longest = b"L" * INLINE_MAX
        session.write_clipboard(longest)
        assert port_lines(reader, 5) == [b"t " + base64.b64encode(longest)]
        session.write_clipboard(longest + b"!")  # one byte more: the agent reads it
        assert port_lines(reader, 5) == [b"c"]

        # Large enough for an INCR transfer on X11 (xclip: above its chunk size): read to
        # its end by the watcher, so the owner serves the next paste at once.
        big = os.urandom(3 << 20).hex().encode()
        session.write_clipboard(big)
        assert port_lines(reader, 10) == [b"c"]
        started = time.monotonic()
        assert session.read_clipboard() == big
        assert time.monotonic() - started < 5
        assert port_lines(reader, 2.0) == []  # idle (and reading it was no change)
    finally:
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        os.close(reader)


def test_the_watcher_writes_the_hosts_text(session: XSession | WaylandSession,
                                           tmp_path: Path) -> None:
    """The host's write down the port (a tty here: a virtio port reads and writes alike):
    the watcher sets the clipboard with the session's tool (xclip, wl-copy), answers
    ``w-ok ID``, and then signals the change as for any copy (the write's echo)."""
    import tty

    from hypercore_tui.services.clipsync.vmsync import reply_line, write_line

    kind = "x11" if isinstance(session, XSession) else "wayland"
    master, slave = os.openpty()
    tty.setraw(slave)
    os.set_blocking(master, False)
    pid = None
    try:
        proc = subprocess.run(
            [sys.executable, "-", f"--lock={tmp_path / 'lock'}", os.ttyname(slave),
             str(NOBODY), str(NOBODY), "", kind],
            input=guest_exec.script_text(WATCHER_PROGRAM).encode(), capture_output=True,
            timeout=30, check=False, env=session.client_env)
        assert proc.returncode == 0, proc.stderr
        lines = proc.stderr.decode().splitlines()
        assert lines[0] == f"hc-watch={kind}" and lines[2].startswith("hc-watch-write="), lines
        pid = int(lines[1].partition("=")[2])
        token = lines[2].partition("=")[2]
        assert port_lines(master, 1.0) == []
        for n, text in enumerate((b"from the host \xe2\x9c\x93\n\t$(id)", b"W" * INLINE_MAX)):
            ident = f"{n:08x}"
            line = write_line(token, ident, text)
            while line:  # (a tty takes 4 KiB at a time: the rest as the watcher reads)
                select.select([], [master], [], 5)
                with contextlib.suppress(BlockingIOError):
                    line = line[os.write(master, line):]
            got = port_lines(master, 5)
            assert got[0] == f"w-ok {ident}".encode() and reply_line(got[0]) == (ident, None)
            if len(text) < 1024:  # (a longer signal is cut by the tty: a virtio port takes
                # each write whole)
                assert got[1:] == [b"t " + base64.b64encode(text)], got
            assert session.read_clipboard() == text
    finally:
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        os.close(master)
        os.close(slave)
