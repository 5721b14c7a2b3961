"""virtiofsd: the vhost-user file server behind ``--shared-mode virtiofs``.

One virtiofsd per VM boot serves the shared folder on ``VmPaths.virtiofs_socket``;
QEMU connects to it (``vhost-user-fs-pci``, guest RAM in a shared memfd backend,
see ``core.argv``). virtiofsd exits by itself when QEMU disconnects; :func:`stop`
is the safety net for a QEMU that never connected or a crash cleanup.

Debian 12 ships QEMU 7.2's C virtiofsd as ``/usr/lib/qemu/virtiofsd``: it needs
root (it sandboxes itself in namespaces). The Rust virtiofsd (``/usr/libexec/
virtiofsd``, package virtiofsd in later releases) takes the same options used here.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path

from hypercore_tui.adapters.fs import atomic_write_bytes
from hypercore_tui.adapters.process import process_alive, read_pidfile
from hypercore_tui.core.errors import InvalidInput, OperationFailed, Timeout

CANDIDATES = ("/usr/libexec/virtiofsd", "/usr/lib/qemu/virtiofsd")
START_TIMEOUT = 10.0


def find_virtiofsd(environ: Mapping[str, str] = os.environ) -> str:
    """``HYPERCORE_VIRTIOFSD``, else the distribution's virtiofsd."""
    override = environ.get("HYPERCORE_VIRTIOFSD")
    if override:
        return override
    for candidate in CANDIDATES:
        if os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which("virtiofsd")
    if found:
        return found
    raise OperationFailed("virtiofsd not found: install the qemu-system-common package "
                          "(or virtiofsd), or use --shared-mode 9p")


def build_argv(binary: str, socket_path: Path, source: Path) -> list[str]:
    """The virtiofsd command line (options as both the C and the Rust daemon take them)."""
    text = str(source)
    # -o takes a comma-separated option list: a comma in the path would start a new option.
    if "," in text or "\\" in text:
        raise InvalidInput(f"the shared folder path {text!r} contains ',' or '\\', which "
                           "virtiofsd cannot take; move HYPERCORE_HOME or use 9p")
    return [binary, f"--socket-path={socket_path}", "-o", f"source={text}",
            "-o", "cache=auto"]


def start(binary: str, *, socket_path: Path, source: Path, pidfile: Path, log_path: Path,
          timeout: float = START_TIMEOUT) -> int:
    """Start virtiofsd detached (own session) and wait until its socket listens."""
    argv = build_argv(binary, socket_path, source)
    stop(pidfile)
    socket_path.unlink(missing_ok=True)
    with open(log_path, "ab") as log:
        log.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} starting virtiofsd\n".encode())
        log.write((" ".join(argv) + "\n").encode())
        log.flush()
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                    start_new_session=True, umask=0o077)
        except OSError as exc:
            raise OperationFailed(f"cannot run {binary}: {exc.strerror}") from None
    atomic_write_bytes(pidfile, f"{proc.pid}\n".encode(), mode=0o600)
    deadline = time.monotonic() + timeout
    while not socket_path.exists():
        if proc.poll() is not None:
            pidfile.unlink(missing_ok=True)
            raise OperationFailed(f"virtiofsd failed to start: {_last_line(log_path)}")
        if time.monotonic() > deadline:
            stop(pidfile)
            raise Timeout(f"virtiofsd did not create its socket within {timeout:g}s")
        time.sleep(0.02)
    return proc.pid


def _last_line(log_path: Path) -> str:
    try:
        lines = [ln.strip() for ln in log_path.read_text(errors="replace").splitlines()
                 if ln.strip() and not ln.startswith("---")]
    except OSError:
        return "see its log"
    return lines[-1] if lines else "no output"


def _is_ours(pid: int) -> bool:
    """Alive, and a virtiofsd (guards against a reused PID)."""
    if not process_alive(pid):
        return False
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            args = fh.read().split(b"\0")
    except OSError:
        return False
    return bool(args) and b"virtiofsd" in os.path.basename(args[0])


def running(pidfile: Path) -> bool:
    pid = read_pidfile(pidfile)
    return pid is not None and _is_ours(pid)


def stop(pidfile: Path, *, timeout: float = 5.0) -> None:
    """Stop the virtiofsd recorded in ``pidfile`` (if any): SIGTERM, then SIGKILL."""
    pid = read_pidfile(pidfile)
    if pid is None:
        return
    if _is_ours(pid):
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, timeout)):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                break
            deadline = time.monotonic() + wait
            while process_alive(pid) and time.monotonic() < deadline:
                _reap(pid)
                time.sleep(0.02)
            if not process_alive(pid):
                break
    pidfile.unlink(missing_ok=True)


def _reap(pid: int) -> None:
    """Collect the exit status when virtiofsd is our own child (no zombie left)."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
