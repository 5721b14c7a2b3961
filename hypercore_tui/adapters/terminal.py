"""The user's terminal joined to a socket: raw mode, a detach key, the mode restored on
every way out (the detach key, the peer closing, an error, SIGTERM/SIGHUP/SIGINT).

In raw mode the terminal sends every key as a byte (Ctrl+C included, it reaches the
peer); only the detach key stays here. Output is passed through untouched.
"""

from __future__ import annotations

import contextlib
import enum
import os
import select
import shutil
import signal
import socket
import subprocess
import termios
import tty
from collections.abc import Iterator, Mapping
from types import FrameType

#: Ctrl+] (0x1d) detaches, as in telnet and ``virsh console``.
DETACH_BYTE = 0x1D
DETACH_KEY = "Ctrl+]"
_CHUNK = 65536


class RelayEnd(enum.Enum):
    DETACHED = "detached"  # the user pressed the detach key
    PEER_CLOSED = "peer closed"  # the socket's other end went away
    INPUT_CLOSED = "input closed"  # the terminal went away (hangup)
    SIGNALLED = "signalled"  # SIGTERM or SIGHUP


class _Stop(Exception):
    pass


def is_terminal(fd: int) -> bool:
    return os.isatty(fd)


def terminal_name(fd: int) -> str:
    try:
        return os.ttyname(fd)
    except OSError:
        return "a terminal"


@contextlib.contextmanager
def raw_mode(fd: int) -> Iterator[None]:
    """The terminal in raw mode for the block; its old mode back on every exit path."""
    saved = termios.tcgetattr(fd)
    try:
        tty.setraw(fd, termios.TCSANOW)
        yield
    finally:
        with contextlib.suppress(termios.error, OSError):
            termios.tcsetattr(fd, termios.TCSADRAIN, saved)


@contextlib.contextmanager
def _stop_on_signals() -> Iterator[None]:
    """SIGTERM/SIGHUP end the relay through an exception (so ``finally`` blocks run)."""
    def stop(_signum: int, _frame: FrameType | None) -> None:
        raise _Stop

    caught = (signal.SIGTERM, signal.SIGHUP)
    previous = {sig: signal.signal(sig, stop) for sig in caught}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def relay(sock: socket.socket, in_fd: int, out_fd: int) -> RelayEnd:
    """Copy ``in_fd`` to ``sock`` and ``sock`` to ``out_fd`` until the detach key, the
    socket's end, the input's end or a signal. The caller sets the terminal's mode."""
    sock.setblocking(False)
    try:
        with _stop_on_signals():
            return _pump(sock, in_fd, out_fd)
    except _Stop:
        return RelayEnd.SIGNALLED


def _pump(sock: socket.socket, in_fd: int, out_fd: int) -> RelayEnd:
    sock_fd = sock.fileno()
    while True:
        readable, _, _ = select.select([sock_fd, in_fd], [], [])
        if sock_fd in readable:
            try:
                data = sock.recv(_CHUNK)
            except BlockingIOError:
                data = None
            except OSError:
                return RelayEnd.PEER_CLOSED
            if data == b"":
                return RelayEnd.PEER_CLOSED
            if data:
                _write_all(out_fd, data)
        if in_fd in readable:
            try:
                keys = os.read(in_fd, _CHUNK)
            except OSError:
                return RelayEnd.INPUT_CLOSED
            if not keys:
                return RelayEnd.INPUT_CLOSED
            before, detach, _ = keys.partition(bytes([DETACH_BYTE]))
            if before:
                try:
                    _send_all(sock, before)
                except OSError:
                    return RelayEnd.PEER_CLOSED
            if detach:
                return RelayEnd.DETACHED


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _send_all(sock: socket.socket, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            sent = sock.send(view)
        except BlockingIOError:
            select.select([], [sock], [])
            continue
        view = view[sent:]


def tmux_terminal_features(environ: Mapping[str, str]) -> tuple[str, ...] | None:
    """What tmux knows the attached terminal can do (``#{client_termfeatures}``, e.g.
    ``sixel`` for a tmux built with it); None outside tmux or when tmux cannot say.
    (The Screen tab draws with what passes through tmux: only Sixel does.)"""
    if not environ.get("TMUX") or not shutil.which("tmux", path=environ.get("PATH")):
        return None
    try:
        proc = subprocess.run(["tmux", "display-message", "-p", "#{client_termfeatures}"],
                              env=dict(environ), capture_output=True, timeout=1.0,
                              stdin=subprocess.DEVNULL, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if proc.returncode != 0:
        return None
    return tuple(f for f in proc.stdout.decode(errors="replace").strip().split(",") if f)
