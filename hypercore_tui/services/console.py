"""A VM's serial console on the user's terminal: ``hypercore console NAME`` and the
dashboard's c (a tmux window running that command, or the command to run).

QEMU's socket chardev serves one client at a time: a second one would connect and then
hang, unserved. Every console takes the lock beside the socket first
(:func:`~hypercore_tui.core.layout.socket_lock`), so a second one is told who holds it.
Everything the guest prints is kept in ``serial.log`` as well, attached or not.
"""

from __future__ import annotations

import shlex
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass

from hypercore_tui.adapters import terminal
from hypercore_tui.adapters.fs import FileLock
from hypercore_tui.core.errors import Busy, InvalidInput, OperationFailed, Timeout
from hypercore_tui.core.layout import VmPaths, socket_lock
from hypercore_tui.services import vmstate
from hypercore_tui.services.context import Context

DETACH_KEY = terminal.DETACH_KEY
CONNECT_TIMEOUT = 5.0
#: The variables that say which VMs a ``hypercore`` command sees.
_HOME_VARIABLES = ("HYPERCORE_HOME", "HYPERCORE_RUNTIME_DIR")


def console_lock(paths: VmPaths, what: str) -> FileLock:
    return FileLock(socket_lock(paths.serial_socket), what)


def _busy(name: str, lock: FileLock) -> Busy:
    pid, _, what = lock.holder().partition(" ")
    held = f"pid {pid} ({what})" if pid and what else f"pid {pid}" if pid else "another client"
    return Busy(f"{name}: the serial console is in use by {held}; QEMU serves one client "
                f"at a time: detach there with {DETACH_KEY}")


def attach(ctx: Context, name: str, *, in_fd: int, out_fd: int,
           say: Callable[[str], None]) -> terminal.RelayEnd:
    """Join the terminal on ``in_fd``/``out_fd`` to the VM's serial console until the
    detach key, QEMU's end or a signal; ``say`` gets the lines around it."""
    vm = vmstate.require_running(ctx, name)
    if not terminal.is_terminal(in_fd):
        raise InvalidInput(f"console needs a terminal on stdin (the guest's output is kept "
                           f"in {vm.paths.serial_log})")
    lock = console_lock(vm.paths, f"console on {terminal.terminal_name(in_fd)}")
    if not lock.try_acquire():
        raise _busy(name, lock)
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(CONNECT_TIMEOUT)
            try:
                sock.connect(str(vm.paths.serial_socket))
            except TimeoutError:
                raise Timeout(f"{name}: the serial console did not answer within "
                              f"{CONNECT_TIMEOUT:g}s") from None
            except OSError as exc:
                raise OperationFailed(f"{name}: cannot connect to the serial console: "
                                      f"{exc.strerror or exc}") from None
            say(f"Connected to {name}'s serial console; {DETACH_KEY} detaches "
                "(Enter shows the prompt).")
            with terminal.raw_mode(in_fd):
                end = terminal.relay(sock, in_fd, out_fd)
    finally:
        lock.release()
    return end


def ended(name: str, end: terminal.RelayEnd) -> str:
    """The line said when a console ends."""
    if end is terminal.RelayEnd.PEER_CLOSED:
        return f"{name}'s serial console closed (QEMU stopped)"
    return f"detached from {name}'s serial console"


# -- the dashboard's c ------------------------------------------------------------------


@dataclass(frozen=True)
class ConsoleAccess:
    argv: tuple[str, ...]  # attaches a terminal to the VM's serial console
    opened: bool  # True when a tmux window was opened for it
    message: str
    command_line: str  # what the user types for it (``hypercore console NAME``)


def command_line(ctx: Context, name: str) -> str:
    """``hypercore console NAME``, with the variables that name a non-default home."""
    assignments = [f"{var}={shlex.quote(ctx.environ[var])}" for var in _HOME_VARIABLES
                   if ctx.environ.get(var)]
    return " ".join([*assignments, "hypercore", "console", shlex.quote(name)])


def open_console(ctx: Context, name: str) -> ConsoleAccess:
    """Open the serial console in a new tmux window when inside tmux, else say how."""
    vm = vmstate.require_running(ctx, name)
    probe = console_lock(vm.paths, "")
    if not probe.try_acquire():
        raise _busy(name, probe)
    probe.release()
    argv = (sys.executable, "-m", "hypercore_tui", "console", name)
    return _in_tmux_window(ctx, name, f"{name}:console", argv, command_line(ctx, name))


def open_remote_console(ctx: Context, host: str, name: str) -> ConsoleAccess:
    """The serial console of ``name`` on another host (``hypercore --host HOST console
    NAME``, over the host's shared SSH connection) in a new tmux window, else say how.
    The remote end checks the VM and the console's lock; its error line shows in the
    window."""
    argv = (sys.executable, "-m", "hypercore_tui", "--host", host, "console", name)
    line = " ".join(["hypercore", "--host", shlex.quote(host), "console", shlex.quote(name)])
    return _in_tmux_window(ctx, f"{host}/{name}", f"{host}/{name}:console", argv, line)


def _in_tmux_window(ctx: Context, label: str, window: str, argv: tuple[str, ...],
                    line: str) -> ConsoleAccess:
    if not ctx.environ.get("TMUX") or not shutil.which("tmux"):
        return ConsoleAccess(argv, False, f"run in another terminal: {line} "
                                          f"({DETACH_KEY} detaches)", line)
    # The window's command gets tmux's global environment: the variables that say where
    # this dashboard's VMs are go with it (XDG_RUNTIME_DIR holds the sockets by default).
    variables = [arg for var in (*_HOME_VARIABLES, "XDG_RUNTIME_DIR") if ctx.environ.get(var)
                 for arg in ("-e", f"{var}={ctx.environ[var]}")]
    tmux = ["tmux", "new-window", "-n", window, *variables, *argv]
    try:
        proc = subprocess.run(tmux, env=dict(ctx.environ), capture_output=True, timeout=5,
                              stdin=subprocess.DEVNULL, check=False)
    except subprocess.TimeoutExpired:
        raise Timeout("tmux did not open a window within 5s") from None
    except OSError as exc:
        raise OperationFailed(f"cannot run tmux: {exc.strerror}") from None
    if proc.returncode != 0:
        lines = proc.stderr.decode(errors="replace").strip().splitlines()
        reason = lines[-1] if lines else f"exit status {proc.returncode}"
        raise OperationFailed(f"tmux new-window failed: {reason}")
    return ConsoleAccess(argv, True, f"{label}: serial console opened in tmux window "
                                     f"'{window}' ({DETACH_KEY} detaches)", line)

