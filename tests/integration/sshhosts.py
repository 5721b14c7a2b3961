"""Two hosts on this machine for the multi-host tests: network namespaces ``a`` and ``b``
joined by a veth pair (10.77.0.1 and 10.77.0.2) (``bridged``: each joined by its own
veth pair to a bridge in this namespace, which has 10.77.0.254: a Ceph cluster bound
there is reached from both hosts and from the tests), each with its own real OpenSSH server
(``/usr/sbin/sshd``: own host key, config and log), its own ``HYPERCORE_HOME`` and runtime
directory, and this worktree's ``hypercore`` first on the SSH user's PATH there.

A command "on a host" runs inside its namespace (``ip netns exec``) with that host's
environment: ``hosts[a].run("--host", "b", "list")`` is ``hypercore --host b list`` typed
on host a. SSH logs in as root with a client key made for the run; the client's config,
key and known_hosts live in the run's directory (``HYPERCORE_SSH_CONFIG``, and ``HOME``
points there too): root's own ~/.ssh is never read or written.

Everything is torn down on every exit path: every process in both namespaces is killed
(sshd, its sessions, SSH masters, QEMUs), the namespaces (and the veth pair) are deleted.
Needs root (CI runs as root) and openssh-server (``scripts/setup.sh`` installs it).
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ..conftest import ROOT

SSHD = "/usr/sbin/sshd"
SUBNET = "10.77.0"
#: This namespace's address on the bridge of ``ssh_hosts(bridged=True)``.
BRIDGE_ADDRESS = f"{SUBNET}.254"
#: What the fake old Hypercore (``SshHost.old_command``) says its version is.
OLD_VERSION = "0.0.9"
#: A locally administered MAC address no interface here has.
BLACK_HOLE_MAC = "02:00:00:00:de:ad"


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


def _black_hole(here: SshHost, address: str, on: bool) -> None:
    """``here``'s packets to ``address`` go to a MAC address nobody has (``on``), or to
    the right one again (no error when they did not)."""
    if on:
        _ip("-n", here.netns, "neigh", "replace", address, "lladdr", BLACK_HOLE_MAC, "dev",
            here.veth, "nud", "permanent")
    else:
        subprocess.run(["ip", "-n", here.netns, "neigh", "del", address, "dev", here.veth],
                       check=False, capture_output=True, timeout=30)


def _keygen(path: Path, comment: str) -> str:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment,
                    "-f", str(path)], check=True, capture_output=True, timeout=30)
    return path.with_suffix(".pub").read_text().strip()


def netns_pids(netns: str) -> list[int]:
    proc = subprocess.run(["ip", "netns", "pids", netns], capture_output=True, text=True,
                          timeout=10)
    return [int(p) for p in proc.stdout.split()]


def kill_netns_processes(netns: str, *, cmdline_has: bytes | None = None) -> None:
    """SIGKILL every process in the namespace (``cmdline_has``: those whose command line
    holds that), and wait until they are gone."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        pids = [pid for pid in netns_pids(netns)
                if cmdline_has is None or cmdline_has in _cmdline(pid)]
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.05)


def signal_netns_processes(netns: str, signum: int, cmdline_has: bytes) -> list[int]:
    """Send ``signum`` to the processes in the namespace whose command line holds
    ``cmdline_has``; their pids."""
    pids = [pid for pid in netns_pids(netns) if cmdline_has in _cmdline(pid)]
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)
    return pids


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


@dataclass
class SshHost:
    """One host: its namespace, sshd and Hypercore home."""

    name: str
    netns: str
    veth: str
    address: str
    root: Path
    client_dir: Path
    sshd: subprocess.Popen[bytes] | None = None
    environ: dict[str, str] = field(default_factory=dict)

    @property
    def home(self) -> Path:
        return self.root / "home"

    @property
    def runtime(self) -> Path:
        return self.root / "run"

    @property
    def bin_dir(self) -> Path:
        return self.root / "bin"

    @property
    def user_home(self) -> Path:
        """HOME of the SSH user's sessions here (no rc files: nothing but ours runs)."""
        return self.root / "user"

    @property
    def sshd_log(self) -> Path:
        return self.root / "sshd.log"

    @property
    def destination(self) -> str:
        return f"root@{self.address}"

    @property
    def old_command(self) -> str:
        """A ``hypercore`` there that says it is another version."""
        return str(self.bin_dir / "hypercore-old")

    # -- running things here ----------------------------------------------------------

    def argv(self, *args: str) -> list[str]:
        return ["ip", "netns", "exec", self.netns, sys.executable, "-m", "hypercore_tui",
                *args]

    def run(self, *args: str, stdin: bytes | None = None, timeout: float = 60,
            environ: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
        """``hypercore ARGS`` typed on this host."""
        return subprocess.run(self.argv(*args), input=stdin, capture_output=True,
                              timeout=timeout, env=dict(environ or self.environ),
                              stdin=None if stdin is not None else subprocess.DEVNULL)

    def popen(self, argv: list[str], **kwargs: object) -> subprocess.Popen[bytes]:
        """Any program started on this host (inside its namespace, its environment)."""
        return subprocess.Popen(["ip", "netns", "exec", self.netns, *argv],
                                env=self.environ, **kwargs)  # type: ignore[call-overload]

    # -- its sshd ---------------------------------------------------------------------

    def write_sshd_config(self, authorized_keys: Path,
                          extra: Mapping[str, str] | None = None) -> Path:
        env = {
            **(extra or {}),
            "HYPERCORE_HOME": str(self.home),
            "HYPERCORE_RUNTIME_DIR": str(self.runtime),
            "HYPERCORE_ACCEL": "tcg",
            "HOME": str(self.user_home),
            "PATH": f"{self.bin_dir}:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
        }
        config = self.root / "sshd_config"
        config.write_text("\n".join([
            f"ListenAddress {self.address}",
            "Port 22",
            f"HostKey {self.root / 'host_key'}",
            f"PidFile {self.root / 'sshd.pid'}",
            f"AuthorizedKeysFile {authorized_keys}",
            "StrictModes no",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "PermitRootLogin prohibit-password",
            "UsePAM no",
            "PrintMotd no",
            "LogLevel VERBOSE",
            "SetEnv " + " ".join(f"{k}={v}" for k, v in env.items()),
            "",
        ]))
        return config

    def start_sshd(self) -> None:
        """Start (or start again) this host's sshd; returns once it listens."""
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # its privilege separation dir
        offset = self.sshd_log.stat().st_size if self.sshd_log.exists() else 0
        log = open(self.sshd_log, "ab")  # noqa: SIM115 - the child keeps it
        try:
            self.sshd = subprocess.Popen(
                ["ip", "netns", "exec", self.netns, SSHD, "-D", "-e", "-f",
                 str(self.root / "sshd_config")], stdin=subprocess.DEVNULL, stdout=log,
                stderr=log)
        finally:
            log.close()
        listening = f"Server listening on {self.address} port 22"
        deadline = time.monotonic() + 10
        while listening not in self.sshd_log.read_bytes()[offset:].decode(errors="replace"):
            if self.sshd.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"sshd on {self.name} did not start:\n"
                                     f"{self.sshd_log.read_text(errors='replace')[-2000:]}")
            time.sleep(0.02)

    def stop_sshd(self) -> None:
        """The host's SSH service goes away: sshd and every session it serves (and what
        runs in them) are killed."""
        kill_netns_processes(self.netns)
        if self.sshd is not None:
            self.sshd.wait(timeout=10)
            self.sshd = None

    def auth_count(self) -> int:
        """Logins this sshd accepted so far."""
        return self.sshd_log.read_text(errors="replace").count("Accepted publickey for root")

    def link(self, up: bool) -> None:
        """The network cable of this host: unplugged, connections fail (no route to host)."""
        _ip("-n", self.netns, "link", "set", self.veth, "up" if up else "down")


@dataclass
class SshHosts:
    a: SshHost
    b: SshHost
    directory: Path

    @property
    def ssh_config(self) -> Path:
        return self.directory / "client" / "ssh_config"

    def __getitem__(self, name: str) -> SshHost:
        return {"a": self.a, "b": self.b}[name]

    def silence(self, on: bool) -> None:
        """Packets between a and b vanish without a trace (no refusal, no "no route"): each
        side sends them to a MAC address nobody has. Connections hang as on a dead link;
        ``silence(False)`` makes them flow again (TCP retransmits what was lost)."""
        _black_hole(self.a, self.b.address, on)
        _black_hole(self.b, self.a.address, on)

    def cut_off(self, address: str, on: bool) -> None:
        """Packets from both hosts to ``address`` (a cluster on the bridge: it stops
        answering them) vanish as in :meth:`silence`; ``cut_off(address, False)`` lets them
        through again (a no-op when they were not cut)."""
        _black_hole(self.a, address, on)
        _black_hole(self.b, address, on)

    def client_config(self, name: str, *, identity: Path | None = None,
                      known_hosts: Path | None = None) -> Path:
        """Another client config (a key not authorized, an empty known_hosts...)."""
        client = self.directory / "client"
        path = client / name
        path.write_text(_client_config(identity or client / "id_ed25519",
                                       known_hosts or client / "known_hosts"))
        return path


def _client_config(identity: Path, known_hosts: Path) -> str:
    return "\n".join([
        "Host *",
        "  User root",
        f"  IdentityFile {identity}",
        "  IdentitiesOnly yes",
        "  IdentityAgent none",
        f"  UserKnownHostsFile {known_hosts}",
        "  GlobalKnownHostsFile /dev/null",
        "  StrictHostKeyChecking yes",
        "",
    ])


def _entry_point(path: Path) -> None:
    """``hypercore`` as this worktree runs it (the same code as the tests)."""
    path.write_text("#!/bin/sh\n"
                    f"PYTHONPATH={shlex.quote(str(ROOT))} "
                    f"exec {shlex.quote(sys.executable)} -m hypercore_tui \"$@\"\n")
    path.chmod(0o755)


def _old_entry_point(path: Path) -> None:
    path.write_text("#!/bin/sh\n"
                    f'[ "$1" = --version ] && echo "hypercore {OLD_VERSION}" && exit 0\n'
                    "echo 'hypercore: error: this old version must never run a command' >&2\n"
                    "exit 3\n")
    path.chmod(0o755)


@contextlib.contextmanager
def ssh_hosts(*, bridged: bool = False, extra_env: Mapping[str, str] | None = None
              ) -> Iterator[SshHosts]:
    """Hosts ``a`` and ``b``, sshd running on both; everything removed afterwards.
    ``bridged``: both on a bridge here (:data:`BRIDGE_ADDRESS`) instead of one veth pair.
    ``extra_env``: more variables for Hypercore on both hosts (SSH sessions too)."""
    tag = str(os.getpid())
    bridge = f"hcbr{tag}"
    directory = Path(tempfile.mkdtemp(prefix="hcssh-", dir="/tmp"))
    client = directory / "client"
    client.mkdir(mode=0o700)
    hosts: list[SshHost] = []
    try:
        client_pub = _keygen(client / "id_ed25519", "hypercore-test-client")
        authorized = client / "authorized_keys"
        authorized.write_text(client_pub + "\n")
        known: list[str] = []
        for index, name in enumerate("ab", start=1):
            root = directory / name
            for sub in ("", "home", "run", "bin", "user"):
                (root / sub).mkdir(mode=0o700, exist_ok=True)
            host = SshHost(name=name, netns=f"hc{tag}{name}", veth=f"hcv{tag}{name}",
                           address=f"{SUBNET}.{index}", root=root, client_dir=client)
            hosts.append(host)
            known.append(f"{host.address} {_keygen(root / 'host_key', name)}")
            _entry_point(host.bin_dir / "hypercore")
            _old_entry_point(host.bin_dir / "hypercore-old")
            host.write_sshd_config(authorized, extra_env)
            environ = {k: v for k, v in os.environ.items()
                       if not k.startswith(("SSH_", "XDG_", "HYPERCORE_"))}
            environ.update(HYPERCORE_HOME=str(host.home), HYPERCORE_RUNTIME_DIR=str(host.runtime),
                           HYPERCORE_ACCEL="tcg", HOME=str(host.user_home),
                           HYPERCORE_SSH_CONFIG=str(client / "ssh_config"),
                           PYTHONPATH=str(ROOT), **(extra_env or {}))
            host.environ = environ
        (client / "known_hosts").write_text("\n".join(known) + "\n")
        (client / "ssh_config").write_text(_client_config(client / "id_ed25519",
                                                          client / "known_hosts"))
        a, b = hosts
        for host in hosts:
            _ip("netns", "add", host.netns)
        if bridged:
            _ip("link", "add", bridge, "type", "bridge")
            _ip("addr", "add", f"{BRIDGE_ADDRESS}/24", "dev", bridge)
            _ip("link", "set", bridge, "up")
            for host in hosts:
                port = f"hcp{tag}{host.name}"
                _ip("link", "add", host.veth, "type", "veth", "peer", "name", port)
                _ip("link", "set", port, "master", bridge)
                _ip("link", "set", port, "up")
        else:
            _ip("link", "add", a.veth, "type", "veth", "peer", "name", b.veth)
        for host in hosts:
            _ip("link", "set", host.veth, "netns", host.netns)
            _ip("-n", host.netns, "addr", "add", f"{host.address}/24", "dev", host.veth)
            _ip("-n", host.netns, "link", "set", host.veth, "up")
            _ip("-n", host.netns, "link", "set", "lo", "up")
        for host in hosts:
            host.start_sshd()
        yield SshHosts(a, b, directory)
    finally:
        for host in hosts:
            with contextlib.suppress(Exception):
                kill_netns_processes(host.netns)
            if host.sshd is not None:
                with contextlib.suppress(Exception):
                    host.sshd.wait(timeout=5)
            subprocess.run(["ip", "netns", "del", host.netns], capture_output=True, timeout=30)
            # (still here when it was never moved into its namespace)
            subprocess.run(["ip", "link", "del", host.veth], capture_output=True, timeout=30)
        if bridged:
            subprocess.run(["ip", "link", "del", bridge], capture_output=True, timeout=30)
        shutil.rmtree(directory, ignore_errors=True)


def require_root() -> str | None:
    """Why these tests cannot run here, or None."""
    if os.geteuid() != 0:
        return "network namespaces need root (CI runs as root)"
    if not os.path.exists(SSHD):
        return "openssh-server is not installed (scripts/setup.sh installs it)"
    return None


def cmdline_of(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def size_of(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return -1


def ssh_master_pids(host: SshHost) -> list[int]:
    """This host's shared SSH connections (their masters name themselves ``ssh: PATH [mux]``)."""
    return [pid for pid in netns_pids(host.netns)
            if cmdline_of(pid).startswith(b"ssh: ") and b"[mux]" in cmdline_of(pid)]


def one_line(proc: subprocess.CompletedProcess[bytes]) -> str:
    """The single stderr line of a failed command (no traceback, nothing else)."""
    lines = proc.stderr.decode().splitlines()
    assert len(lines) == 1, proc.stderr.decode()
    return lines[0]
