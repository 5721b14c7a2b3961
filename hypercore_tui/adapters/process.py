"""QEMU processes: finding the binary, launching detached, pidfiles, signals; and the
short-lived helpers that run detached beside a VM (:func:`spawn_detached`)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from hypercore_tui.adapters import kvmprobe
from hypercore_tui.core.errors import InvalidInput, OperationFailed, Timeout

QEMU_BINARY = "qemu-system-x86_64"


def find_qemu(environ: Mapping[str, str] = os.environ) -> str:
    override = environ.get("HYPERCORE_QEMU")
    found = override or shutil.which(QEMU_BINARY)
    if not found:
        raise OperationFailed(
            f"{QEMU_BINARY} not found: install the qemu-system-x86 package (scripts/run.sh does)"
        )
    return found


def qemu_devices(qemu: str, *, timeout: float = 10.0) -> frozenset[str]:
    """The device names ``qemu -device help`` lists (modules installed included); empty
    when it cannot run."""
    try:
        proc = subprocess.run([qemu, "-device", "help"], capture_output=True, text=True,
                              timeout=timeout, check=False, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return frozenset()
    names = set()
    for line in (proc.stdout + proc.stderr).splitlines():
        line = line.strip()
        if line.startswith('name "'):
            names.add(line.split('"', 2)[1])
    return frozenset(names)


def qemu_has_spice(qemu: str, *, timeout: float = 10.0) -> bool:
    """Whether this QEMU has a SPICE server (``-spice help`` lists its options)."""
    try:
        proc = subprocess.run([qemu, "-spice", "help"], capture_output=True, text=True,
                              timeout=timeout, check=False, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return "spice options" in proc.stdout  # (exit status 1 even then)


def kvm_usable() -> bool:
    """/dev/kvm opens (which does not prove that guests run: see :mod:`kvmprobe`)."""
    return kvmprobe.device_error() is None


@dataclass(frozen=True)
class AccelChoice:
    accel: str  # "kvm" or "tcg"
    #: Why TCG although /dev/kvm opens (the KVM probe failed): said once to the user.
    note: str | None = None


def forced_accel(environ: Mapping[str, str]) -> str | None:
    """``HYPERCORE_ACCEL`` (kvm|tcg), or None when unset."""
    forced = environ.get("HYPERCORE_ACCEL", "").strip().lower()
    if forced and forced not in ("kvm", "tcg"):
        raise InvalidInput(f"HYPERCORE_ACCEL must be kvm or tcg, not {forced!r}")
    return forced or None


def choose_accel(environ: Mapping[str, str] = os.environ, *,
                 cache_dir: Path | None = None) -> AccelChoice:
    """``HYPERCORE_ACCEL`` (kvm|tcg) wins, with no probe. Else TCG when /dev/kvm does not
    open; when it opens, KVM only if a probe guest ran under it this host boot (the
    verdict is cached in ``cache_dir``), else TCG with the reason in ``note``.

    May block for the probe (about 3 s, once per host boot): async code runs it in a
    thread.
    """
    forced = forced_accel(environ)
    if forced:
        if forced == "kvm" and not kvm_usable():
            raise OperationFailed("HYPERCORE_ACCEL=kvm but /dev/kvm cannot be opened")
        return AccelChoice(forced)
    if not kvm_usable():
        return AccelChoice("tcg")
    qemu = find_qemu(environ)
    if cache_dir is None:
        result = kvmprobe.run_probe("kvm", qemu=qemu)
    else:
        result = kvmprobe.probe_kvm(cache_dir, qemu=qemu, environ=environ)
    if result.runs:
        return AccelChoice("kvm")
    return AccelChoice("tcg", note=f"{result.verdict}; using TCG")


def known_accel_note(environ: Mapping[str, str], *, cache_dir: Path) -> str | None:
    """:func:`choose_accel`'s note when this host boot's cached verdict gives it, without
    running QEMU (for displays that must stay cheap); None when not known or no note."""
    try:
        if forced_accel(environ) or not kvm_usable():
            return None
        qemu = find_qemu(environ)
    except (InvalidInput, OperationFailed):
        return None
    found = kvmprobe.cached_verdict(cache_dir, qemu=qemu, environ=environ)
    return None if found is None or found.runs else f"{found.verdict}; using TCG"


def launch_daemonized(argv: Sequence[str], *, log_path: Path, timeout: float = 60.0) -> None:
    """Run QEMU with ``-daemonize``: returns once QEMU initialised and detached.

    QEMU reports start-up errors on the launcher's stderr and exits non-zero;
    those lines go to ``log_path`` and the last one into the raised error.
    The detached QEMU runs in its own session, so it outlives this process,
    the terminal and the SSH connection.
    """
    # Unbuffered: a full disk fails the write itself, never a later flush or close.
    try:
        log = open(log_path, "ab", buffering=0)
    except OSError as exc:
        raise OperationFailed(f"cannot open {log_path}: {exc.strerror or exc}") from None
    with log:
        try:
            log.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} starting QEMU\n".encode())
            log.write((" ".join(argv) + "\n").encode())
        except OSError as exc:  # QEMU is not started
            raise OperationFailed(f"cannot write {log_path}: {exc.strerror or exc}") from None
        try:
            proc = subprocess.run(
                list(argv), stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout,
                start_new_session=True, check=False,
                umask=0o077,  # sockets, pidfile and logs private to the user
            )
        except subprocess.TimeoutExpired:
            raise Timeout(f"QEMU did not finish starting within {timeout:g}s") from None
        except OSError as exc:
            raise OperationFailed(f"cannot run {argv[0]}: {exc.strerror}") from None
        with contextlib.suppress(OSError):  # QEMU may be running: the log is best effort
            log.write(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        text = proc.stderr.decode(errors="replace")
        lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
        reason = lines[-1] if lines else f"exit status {proc.returncode}"
        # "2026-01-01T00:00:00.000000Z qemu-system-x86_64: -blockdev ...: reason" -> reason
        if "qemu-system" in reason:
            reason = reason.split("qemu-system-x86_64: ", 1)[-1]
        raise OperationFailed(f"QEMU failed to start: {reason}")


#: A helper's log beyond this size is started again (it holds a few lines a boot).
HELPER_LOG_LIMIT = 256 * 1024


def spawn_detached(argv: Sequence[str], *, log_path: Path, what: str,
                   env: Mapping[str, str] | None = None) -> int:
    """Start a helper process that outlives this one: its own session, stdin from
    /dev/null, stdout and stderr appended to ``log_path`` after a line with the time and
    ``what``. Returns its pid. This process reaps it if it ends first (a thread waits
    for it), so a long-lived dashboard collects no zombies."""
    try:
        mode = "wb" if log_path.stat().st_size > HELPER_LOG_LIMIT else "ab"
    except OSError:
        mode = "ab"
    try:
        with open(log_path, mode, buffering=0) as log:
            log.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} {what}\n".encode())
            proc = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=log,
                                    stderr=log, start_new_session=True,
                                    env=None if env is None else dict(env))
    except OSError as exc:
        raise OperationFailed(f"cannot start {what}: {exc.strerror or exc}") from None
    threading.Thread(target=proc.wait, name=f"reap {proc.pid}", daemon=True).start()
    return proc.pid


def read_pidfile(pidfile: Path) -> int | None:
    try:
        text = pidfile.read_text().strip()
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def process_alive(pid: int, *, pidfile: Path | None = None) -> bool:
    """True when ``pid`` is a live (not zombie) process, and, given ``pidfile``,
    one that was started with that pidfile (guards against PID reuse)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
        state = stat[stat.rindex(b")") + 2: stat.rindex(b")") + 3]
        if state in (b"Z", b"X"):
            return False
        if pidfile is not None:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                args = fh.read().split(b"\0")
            return str(pidfile).encode() in args
        return True
    except (FileNotFoundError, ProcessLookupError, ValueError):
        return False
    except PermissionError:
        return True


def process_argv(pid: int) -> list[str] | None:
    """The command line of process ``pid`` (``/proc/PID/cmdline``); None when unreadable."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            data = fh.read()
    except OSError:
        return None
    return [arg.decode(errors="replace") for arg in data.split(b"\0")[:-1]] or None


def send_signal(pid: int, sig: signal.Signals) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass
    except PermissionError as exc:
        raise OperationFailed(f"not allowed to signal process {pid}: {exc.strerror}") from None


async def wait_exit(pid: int, timeout: float, *, pidfile: Path | None = None,
                    poll: float = 0.05) -> bool:
    """Wait until ``pid`` is gone; False on timeout."""
    deadline = time.monotonic() + timeout
    while process_alive(pid, pidfile=pidfile):
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(poll)
    return True
