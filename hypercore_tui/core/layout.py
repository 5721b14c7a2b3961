"""Where Hypercore keeps things on disk: data under HYPERCORE_HOME, sockets in a
short private runtime directory (AF_UNIX paths are limited to 107 bytes).

Pure path arithmetic; creating and checking directories is the adapters' job.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from hypercore_tui.core.errors import InvalidInput
from hypercore_tui.core.models import DisplayKind
from hypercore_tui.core.names import validate_vm_name

#: Longest AF_UNIX socket path Linux accepts (sun_path is 108 bytes with the NUL).
MAX_SOCKET_PATH = 107
_LONGEST_SOCKET_NAME = len("qmp-monitor.sock")


def socket_lock(socket: Path) -> Path:
    """Lock file serialising the clients of one single-client QEMU socket (QMP, agent)."""
    return socket.with_name(socket.name + ".lock")


@dataclass(frozen=True)
class VmPaths:
    """The files of one VM."""

    name: str
    vm_dir: Path
    run_dir: Path

    @property
    def definition(self) -> Path:
        return self.vm_dir / "vm.json"

    @property
    def default_disk(self) -> Path:
        return self.vm_dir / "disk.qcow2"

    @property
    def serial_log(self) -> Path:
        return self.vm_dir / "serial.log"

    @property
    def qemu_log(self) -> Path:
        return self.vm_dir / "qemu.log"

    @property
    def migrate_recover_log(self) -> Path:
        """What the recoverer started after a migration given up on a stalled QEMU printed."""
        return self.vm_dir / "migrate-recover.log"

    @property
    def share_mount_log(self) -> Path:
        """What the share mounter started after a boot printed (appended, one run a boot)."""
        return self.vm_dir / "share-mount.log"

    @property
    def viewer_log(self) -> Path:
        """What the remote-viewers started for this VM printed (appended)."""
        return self.vm_dir / "viewer.log"

    @property
    def installation_state(self) -> Path:
        return self.vm_dir / "installation_state.json"

    @property
    def lock(self) -> Path:
        """flock()ed while an operation (boot, stop, snapshot...) acts on the VM."""
        return self.vm_dir / ".lock"

    @property
    def pidfile(self) -> Path:
        return self.run_dir / "qemu.pid"

    @property
    def pid_record(self) -> Path:
        """QEMU's pid, also kept beside the definition: found again even when the
        runtime dir is removed under a running VM."""
        return self.vm_dir / "qemu.pid"

    @property
    def unclean_stop(self) -> Path:
        """Left when QEMU died without a clean stop (its pidfile, or an unfinished job
        record, was found): the next boot checks the disk image first."""
        return self.vm_dir / "unclean-stop.json"

    @property
    def qmp_socket(self) -> Path:
        """QMP monitor for short-lived command sessions (CLI, services)."""
        return self.run_dir / "qmp.sock"

    @property
    def qmp_monitor_socket(self) -> Path:
        """Second QMP monitor, held by a long-lived watcher (the dashboard) for events."""
        return self.run_dir / "qmp-monitor.sock"

    @property
    def qga_socket(self) -> Path:
        return self.run_dir / "qga.sock"

    @property
    def clip_socket(self) -> Path:
        """The host end of the guest's clipboard notification port (one client: the sync)."""
        return self.run_dir / "clip.sock"

    @property
    def serial_socket(self) -> Path:
        return self.run_dir / "serial.sock"

    @property
    def vnc_socket(self) -> Path:
        return self.run_dir / "vnc.sock"

    @property
    def spice_socket(self) -> Path:
        """The SPICE server of a VM with ``display=spice`` (its clients: viewers)."""
        return self.run_dir / "spice.sock"

    def display_socket(self, display: DisplayKind) -> Path | None:
        """The socket a viewer of this VM's screen connects to; None without a display."""
        if display is DisplayKind.SPICE:
            return self.spice_socket
        if display is DisplayKind.VNC:
            return self.vnc_socket
        return None

    @property
    def virtiofs_socket(self) -> Path:
        return self.run_dir / "virtiofs.sock"

    @property
    def virtiofsd_pidfile(self) -> Path:
        return self.run_dir / "virtiofsd.pid"

    @property
    def migrate_socket(self) -> Path:
        """Where the target QEMU of a live migration takes the incoming stream."""
        return self.run_dir / "migrate.sock"

    @property
    def incoming_definition(self) -> Path:
        """The definition of a VM migrating in, until the switch-over makes it ``vm.json``
        (until then no command sees the VM here)."""
        return self.vm_dir / "incoming.json"

    @property
    def job_record(self) -> Path:
        """The QEMU job a hypercore process started (core.jobs.JobRecord), until dismissed."""
        return self.run_dir / "job.json"

    @property
    def share_unmount(self) -> Path:
        """Present while the share is unmounted in the guest for a RAM save
        (core.jobs.ShareUnmount); left behind when that process died."""
        return self.run_dir / "share-unmounted.json"

@dataclass(frozen=True)
class Layout:
    """All of Hypercore's paths for one HYPERCORE_HOME."""

    home: Path
    runtime_base: Path

    @classmethod
    def from_environ(cls, environ: Mapping[str, str], *, uid: int, user_home: Path) -> Layout:
        home = Path(environ.get("HYPERCORE_HOME") or user_home / ".hypercore")
        if "HYPERCORE_RUNTIME_DIR" in environ and environ["HYPERCORE_RUNTIME_DIR"]:
            base = Path(environ["HYPERCORE_RUNTIME_DIR"])
        elif environ.get("XDG_RUNTIME_DIR"):
            base = Path(environ["XDG_RUNTIME_DIR"]) / "hypercore"
        else:
            base = Path(f"/tmp/hypercore-{uid}")
        return cls(home=home.absolute(), runtime_base=base.absolute())

    @property
    def vms_dir(self) -> Path:
        return self.home / "vms"

    @property
    def shared_folder(self) -> Path:
        return self.home / "shared_folder"

    @property
    def log_file(self) -> Path:
        return self.home / "hypercore.log"

    @property
    def settings_file(self) -> Path:
        """The user's settings (``services/settings.py``): the hosts, for now."""
        return self.home / "settings.json"

    @property
    def ssh_dir(self) -> Path:
        """OpenSSH control sockets (one multiplexed connection per host) and what was
        learnt through each (the remote version). Per user, not per home: short paths."""
        return self.runtime_base / "ssh"

    @property
    def runtime_dir(self) -> Path:
        """Runtime directory of this home: two homes never share sockets."""
        digest = hashlib.sha256(str(self.home).encode()).hexdigest()[:8]
        return self.runtime_base / digest

    def vm(self, name: str) -> VmPaths:
        validate_vm_name(name)
        run_dir = self.runtime_dir / name
        if len(str(run_dir)) + 1 + _LONGEST_SOCKET_NAME > MAX_SOCKET_PATH:
            # A short, stable stand-in keeps socket paths under the limit.
            run_dir = self.runtime_dir / ("vm-" + hashlib.sha256(name.encode()).hexdigest()[:12])
        if len(str(run_dir)) + 1 + _LONGEST_SOCKET_NAME > MAX_SOCKET_PATH:
            raise InvalidInput(
                f"runtime directory {str(self.runtime_base)!r} is too long for unix sockets; "
                "set HYPERCORE_RUNTIME_DIR to a shorter path"
            )
        return VmPaths(name=name, vm_dir=self.vms_dir / name, run_dir=run_dir)
