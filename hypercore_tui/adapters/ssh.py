"""OpenSSH as the way to other hosts: the ``ssh`` client with the user's own keys, agent,
``~/.ssh/config`` and known_hosts. No daemon of ours listens anywhere.

* ``BatchMode=yes``: never a password or host-key prompt (the dashboard has no terminal
  for it); a key that is not accepted or an unknown host key is an error, said in one line.
* one multiplexed connection per destination (``ControlMaster=auto``, the socket in the
  user's private runtime directory, ``ControlPersist``): a second command costs no new
  handshake.
* ``ConnectTimeout`` and ``ServerAlive*``: an unreachable host fails within seconds, a
  connection that goes silent is dropped within seconds.
* the remote command is one string built with :func:`shlex.join` (OpenSSH always hands it
  to the remote user's shell); the destination follows ``--``, so neither can ever be
  read as an option of ``ssh``.

``HYPERCORE_SSH_CONFIG`` names an ssh config file used instead of ``~/.ssh/config``
(``ssh -F``): the tests' own keys and known_hosts, or a config kept for Hypercore alone.
"""

from __future__ import annotations

import contextlib
import re
import shlex
import signal
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from hypercore_tui.core.errors import HostUnreachable, OperationFailed, Timeout

SSH = "ssh"
#: Seconds to set up the TCP connection (OpenSSH's ConnectTimeout also bounds the banner).
CONNECT_TIMEOUT = 5
#: How long an idle shared connection stays up after its last command.
CONTROL_PERSIST = 300
#: A connection whose peer does not answer ALIVE_COUNT probes ALIVE_INTERVAL s apart is
#: dropped (its commands end with exit code 255).
ALIVE_INTERVAL = 1
ALIVE_COUNT = 3
#: ssh's own exit code for a failure of the connection (remote commands' codes pass through).
SSH_FAILED = 255
_MASTER_PID = re.compile(rb"pid=(\d+)")
_DENIED = re.compile(r"Permission denied \(([^)]*)\)")


@dataclass(frozen=True)
class SshTarget:
    """One destination as ``ssh`` is run for it."""

    destination: str
    control_path: Path
    config_file: Path | None = None

    def options(self, *, log_level: str, forwarding: bool = False) -> list[str]:
        argv: list[str] = []
        if self.config_file is not None:
            argv += ["-F", str(self.config_file)]
        control_path = str(self.control_path).replace("%", "%%")
        if any(char.isspace() or char == '"' for char in control_path):
            raise OperationFailed(f"the runtime directory {str(self.control_path.parent)!r} "
                                  "holds spaces or quotes; set HYPERCORE_RUNTIME_DIR")
        for option in (
            "BatchMode=yes",
            f"ConnectTimeout={CONNECT_TIMEOUT}",
            "ControlMaster=auto",
            f"ControlPath={control_path}",
            f"ControlPersist={CONTROL_PERSIST}",
            f"ServerAliveInterval={ALIVE_INTERVAL}",
            f"ServerAliveCountMax={ALIVE_COUNT}",
            # Forwardings of the user's config belong to their own sessions, not ours
            # (``forwarding``: the one on the command line is ours; the config's are not
            # read then: ``-O forward`` passes only the command line's to the master).
            *(() if forwarding else ("ClearAllForwardings=yes",)),
            f"LogLevel={log_level}",
        ):
            argv += ["-o", option]
        return [*argv, "-e", "none"]

    def command_argv(self, remote_argv: Sequence[str], *, tty: bool = False,
                     log_level: str = "ERROR") -> list[str]:
        """``ssh`` running ``remote_argv`` there. ``tty``: ask for a terminal (only for a
        person at one: it merges the remote stdout and stderr)."""
        if not remote_argv:
            raise ValueError("no remote command")
        return [SSH, *self.options(log_level=log_level), "-t" if tty else "-T", "--",
                self.destination, shlex.join(remote_argv)]

    def control_argv(self, operation: str) -> list[str]:
        """``ssh -O check|exit``: a question to the shared connection, none to the host."""
        return [SSH, *self.options(log_level="ERROR"), "-O", operation, "--", self.destination]


def forward_socket(target: SshTarget, local: Path, remote: str, *, cancel: bool = False,
                   timeout: float = 10.0) -> None:
    """Ask the shared connection's master to forward the local unix socket ``local`` to
    the unix socket ``remote`` there (``ssh -O forward -L``); ``cancel``: stop it again
    (``-O cancel``). The master keeps the forwarding until it is cancelled or the
    connection ends; a connection that dies takes it along."""
    for path in (str(local), remote):
        if any(char.isspace() or char == ":" for char in path):
            raise OperationFailed(f"cannot forward {path!r} over SSH (spaces or colons)")
    argv = [SSH, *target.options(log_level="ERROR", forwarding=True),
            "-O", "cancel" if cancel else "forward", "-L", f"{local}:{remote}",
            "--", target.destination]
    try:
        proc = subprocess.run(argv, capture_output=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise Timeout(f"the SSH connection to {target.destination} did not set up a "
                      f"forwarding within {timeout:.0f} s") from None
    except FileNotFoundError:
        raise OperationFailed("OpenSSH's `ssh` client is not installed") from None
    if proc.returncode != 0:
        said = proc.stderr.decode(errors="replace").strip().splitlines()
        raise HostUnreachable(f"the SSH connection to {target.destination} refused to "
                              f"{'cancel' if cancel else 'set up'} the forwarding of "
                              f"{remote}: {said[-1] if said else proc.returncode}")


def run(target: SshTarget, remote_argv: Sequence[str], *, timeout: float,
        stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    """Run a command there, its output captured. A failed connection raises
    :class:`HostUnreachable` (its reason in one line); the command's own exit code is the
    caller's to judge."""
    argv = target.command_argv(remote_argv)
    try:
        proc = subprocess.run(argv, input=stdin, capture_output=True, timeout=timeout,
                              stdin=None if stdin is not None else subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise Timeout(f"no answer from {target.destination} within {timeout:.0f} s") from None
    except FileNotFoundError:
        raise OperationFailed("OpenSSH's `ssh` client is not installed") from None
    if proc.returncode == SSH_FAILED:
        raise HostUnreachable(describe_failure(proc.stderr, target.destination))
    return proc


def master_pid(target: SshTarget) -> int | None:
    """The pid of the shared connection's master when one runs (``ssh -O check``), else
    None. Local: asks the master through its socket, never the host."""
    if not target.control_path.exists():
        return None
    try:
        proc = subprocess.run(target.control_argv("check"), capture_output=True, timeout=5,
                              stdin=subprocess.DEVNULL)
    except (subprocess.TimeoutExpired, FileNotFoundError):
        return None
    match = _MASTER_PID.search(proc.stderr + proc.stdout)
    return int(match.group(1)) if proc.returncode == 0 and match else None


def stop_master(target: SshTarget) -> None:
    """Close the shared connection (``ssh -O exit``), best effort."""
    if target.control_path.exists():
        with contextlib.suppress(subprocess.TimeoutExpired, FileNotFoundError):
            subprocess.run(target.control_argv("exit"), capture_output=True, timeout=5,
                           stdin=subprocess.DEVNULL)


def run_attached(argv: Sequence[str]) -> tuple[int, bool]:
    """Run ``ssh`` with this process's stdin, stdout and stderr; returns its exit code and
    whether an interrupt (Ctrl-C, SIGTERM, SIGHUP) came meanwhile. The interrupt is passed
    on to ``ssh`` (which ends, and with it the remote command's session); this process
    waits for it."""
    interrupted = False
    proc = subprocess.Popen(list(argv))

    def _pass_on(signum: int, _frame: object) -> None:
        nonlocal interrupted
        interrupted = True
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signum)

    with _handling((signal.SIGINT, signal.SIGTERM, signal.SIGHUP), _pass_on):
        code = proc.wait()
    return code, interrupted


@contextlib.contextmanager
def _handling(signals: Sequence[signal.Signals], handler: signal._HANDLER) -> Iterator[None]:
    previous = {signum: signal.signal(signum, handler) for signum in signals}
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


def describe_failure(stderr: bytes, destination: str) -> str:
    """What ``ssh`` said when it could not run the command, as one line for a person."""
    text = stderr.decode(errors="replace")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if "REMOTE HOST IDENTIFICATION HAS CHANGED" in text:
        return (f"the SSH host key of {destination} CHANGED since it was accepted; if that "
                "is expected, remove the old key from known_hosts (ssh-keygen -R)")
    if "Host key verification failed" in text or "No ED25519 host key is known" in text:
        return (f"the SSH host key of {destination} is not known: connect once with "
                f"`ssh {destination}` to check and accept it")
    denied = _DENIED.search(text)
    if denied:
        return (f"SSH login to {destination} refused ({denied.group(1)}): is your key (or "
                "agent's) in the authorized_keys there? Hypercore never asks for a password")
    if "Connection refused" in text:
        return f"cannot connect to {destination}: connection refused (is sshd running there?)"
    if "timed out" in text:
        return f"no answer from {destination} within {CONNECT_TIMEOUT} s (connection timed out)"
    if "No route to host" in text or "Network is unreachable" in text:
        return f"cannot reach {destination}: {_reason(lines, 'unreachable', 'No route')}"
    if "Could not resolve hostname" in text:
        return f"cannot resolve the host name of {destination}"
    if lines:
        return f"ssh {destination} failed: {lines[-1]}"
    return f"the SSH connection to {destination} failed or was lost"


def _reason(lines: list[str], *needles: str) -> str:
    for line in lines:
        if any(needle in line for needle in needles):
            return line.rsplit(": ", 1)[-1].rstrip(".")
    return lines[-1] if lines else "no reason given"
