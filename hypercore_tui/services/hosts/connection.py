"""One remote host's SSH connection: where its shared connection's socket lives, and the
check made once per shared connection that the host runs this version of Hypercore.

The check runs ``COMMAND --version`` there (which also opens the shared connection) and
is remembered beside the control socket together with the master's pid: while that
master lives, later commands skip it (``ssh -O check`` asks the master alone, locally).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from hypercore_tui import __version__
from hypercore_tui.adapters import ssh
from hypercore_tui.adapters.fs import atomic_write_json, ensure_private_dir, read_json
from hypercore_tui.core.errors import HypercoreError, OperationFailed, VersionMismatch
from hypercore_tui.core.hosts import Host
from hypercore_tui.services.context import Context

log = logging.getLogger("hypercore.hosts")
log.addHandler(logging.NullHandler())

#: Seconds a version check may take (connect, log in, start Python there).
CHECK_TIMEOUT = 20.0
_VERSION = re.compile(r"hypercore (\S+)")
#: The remote shell's code for "command not found".
_NOT_FOUND = 127


@dataclass(frozen=True)
class RemoteReady:
    """A host whose connection is up and whose Hypercore is ours."""

    version: str
    master_pid: int | None


class HostConnection:
    """How this process reaches one remote host."""

    def __init__(self, ctx: Context, host: Host) -> None:
        if host.destination is None:
            raise ValueError("the local host has no SSH connection")
        self.ctx = ctx
        self.host = host
        config = ctx.environ.get("HYPERCORE_SSH_CONFIG") or None
        key = f"{host.destination}\0{config or ''}".encode()
        digest = hashlib.sha256(key).hexdigest()[:20]
        self.target = ssh.SshTarget(destination=host.destination,
                                    control_path=ctx.layout.ssh_dir / f"{digest}.sock",
                                    config_file=Path(config) if config else None)
        command_key = hashlib.sha256(key + b"\0" + host.command.encode()).hexdigest()[:20]
        self._checked = ctx.layout.ssh_dir / f"{command_key}.checked.json"

    @property
    def name(self) -> str:
        return self.host.name

    def remote_argv(self, args: list[str]) -> list[str]:
        return [self.host.command, *args]

    def ensure_ready(self, *, timeout: float = CHECK_TIMEOUT) -> RemoteReady:
        """Open the shared connection if needed and check the remote version (once per
        shared connection). Raises :class:`HypercoreError` subclasses whose message starts
        with the host's name: :class:`HostUnreachable`, :class:`VersionMismatch`..."""
        ensure_private_dir(self.ctx.layout.runtime_base)
        ensure_private_dir(self.ctx.layout.ssh_dir)
        pid = ssh.master_pid(self.target)
        if pid is not None and self._remembered() == (pid, __version__):
            return RemoteReady(__version__, pid)
        try:
            version = self._remote_version(timeout)
        except HypercoreError as exc:
            raise self.named(exc) from None
        if version != __version__:
            raise VersionMismatch(
                f"{self.name}: runs Hypercore {version}, this host runs {__version__}; "
                "install the same version on both")
        pid = ssh.master_pid(self.target)
        if pid is not None:
            with contextlib.suppress(HypercoreError):
                atomic_write_json(self._checked, {"master_pid": pid, "version": version})
        return RemoteReady(version, pid)

    def named(self, exc: HypercoreError) -> HypercoreError:
        """``exc`` again, its message starting with this host's name."""
        return type(exc)(f"{self.name}: {exc}")

    def close(self) -> None:
        """End the shared connection (commands running through it end too)."""
        ssh.stop_master(self.target)
        with contextlib.suppress(OSError):
            os.unlink(self._checked)

    def _remote_version(self, timeout: float) -> str:
        proc = ssh.run(self.target, self.remote_argv(["--version"]), timeout=timeout)
        out = proc.stdout.decode(errors="replace").strip()
        if proc.returncode == _NOT_FOUND:
            raise OperationFailed(
                f"no {self.host.command!r} there for the SSH user ({self.host.destination}): "
                "install Hypercore on its PATH, or name it with `hosts add --command PATH`")
        match = _VERSION.fullmatch(out.splitlines()[-1] if out else "")
        if proc.returncode != 0 or match is None:
            said = (proc.stderr or proc.stdout).decode(errors="replace").strip()
            said = said.splitlines()[-1] if said else f"exit code {proc.returncode}"
            raise OperationFailed(f"`{self.host.command} --version` there did not say a "
                                  f"Hypercore version: {said[:200]}")
        return match.group(1)

    def _remembered(self) -> tuple[int, str] | None:
        try:
            data = read_json(self._checked)
        except (FileNotFoundError, HypercoreError):
            return None
        if not isinstance(data, dict):
            return None
        pid, version = data.get("master_pid"), data.get("version")
        if isinstance(pid, int) and isinstance(version, str):
            return pid, version
        return None


def check_hosts(ctx: Context, hosts: list[Host]) -> dict[str, str]:
    """Each host's state in a few words ("Hypercore 0.1.0", or why not), all connected to
    at once."""

    def check(host: Host) -> str:
        if host.is_local:
            return f"Hypercore {__version__}"
        try:
            return f"Hypercore {HostConnection(ctx, host).ensure_ready().version}"
        except HypercoreError as exc:
            return str(exc).removeprefix(f"{host.name}: ")

    with ThreadPoolExecutor(max_workers=min(16, max(1, len(hosts)))) as pool:
        return dict(zip((h.name for h in hosts), pool.map(check, hosts), strict=True))
