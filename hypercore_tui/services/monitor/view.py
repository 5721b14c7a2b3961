"""What the dashboard shows about one VM (:class:`VmView`), kept up to date by its
watcher. Every string the guest agent provides is untrusted: shown literally, never
interpreted."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from hypercore_tui.core.jobs import JobInfo
from hypercore_tui.core.layout import VmPaths
from hypercore_tui.core.models import ClipboardMode, DisplayKind, VmSpec, VmState
from hypercore_tui.core.series import VmHistory, VmSample


class AgentStatus(enum.StrEnum):
    UNKNOWN = "unknown"
    ANSWERING = "answering"
    SILENT = "silent"


@dataclass(frozen=True)
class GuestInfo:
    """What the guest agent said about the guest. Every string is guest-provided:
    untrusted, shown literally, never interpreted."""

    hostname: str | None = None
    os_name: str | None = None
    kernel: str | None = None
    addresses: tuple[str, ...] = ()
    users: tuple[str, ...] = ()


@dataclass(frozen=True)
class PauseReason:
    """QEMU paused the VM by itself: a disk request failed (``nospace``: the host's disk
    is full; QEMU retries the request on resume)."""

    nospace: bool

    @property
    def short(self) -> str:
        return "host disk full" if self.nospace else "disk I/O error"

    @property
    def remedy(self) -> str:
        return "free space" if self.nospace else "fix the disk"

    def describe(self) -> str:
        cause = ("no space left on the host's device for its disk" if self.nospace
                 else "a disk I/O error")
        return f"QEMU paused it: {cause}; {self.remedy}, then resume it"


@dataclass(frozen=True)
class NoSignOfLife:
    """A running VM whose guest has shown nothing since QEMU started: not one byte on its
    serial console, no answer from its agent (``MonitorSettings.no_sign_of_life_after``
    and more after the start). Under KVM on a nested host the vCPUs may never run guest
    code; a guest that writes only to its screen and has no agent looks the same."""

    accel: str | None  # what QEMU's command line asks for ("kvm", "tcg"); None: unknown

    def describe(self, since_boot: str) -> str:
        """``since_boot``: the time since QEMU started, as the UI writes it ("75s")."""
        text = f"no sign of life: no serial output and no agent {since_boot} after boot"
        if self.accel == "kvm":
            return (text + " (under KVM on a nested host guests may never run; try "
                    "HYPERCORE_ACCEL=tcg)")
        where = f"under {self.accel.upper()}; " if self.accel else ""
        return text + f" ({where}is it booting? v shows its screen)"


@dataclass
class VmView:
    """Everything the dashboard shows about one VM; updated in place by the monitor."""

    name: str
    state: VmState = VmState.STOPPED
    pid: int | None = None
    ram_mb: int | None = None
    cpus: int | None = None
    disk: str | None = None
    disk_owned: bool = True  # deleted with the VM
    display: DisplayKind = DisplayKind.VNC
    clipboard: ClipboardMode = ClipboardMode.SYNC
    sample: VmSample | None = None
    history: VmHistory = field(default_factory=VmHistory)
    guest: GuestInfo | None = None
    agent: AgentStatus = AgentStatus.UNKNOWN
    error: str | None = None
    watch: str = ""  # "events" (own monitor session), "shared" (short sessions), ""
    display_socket: str | None = None  # the VNC or SPICE server's socket
    serial_socket: str | None = None
    #: QEMU's jobs (query-jobs, JOB_STATUS_CHANGE; Hypercore's record while QEMU is silent)
    jobs: tuple[JobInfo, ...] = ()
    #: The shared folder is not mounted in the guest although it should be (why)
    share_note: str | None = None
    #: Why QEMU paused the VM by itself (a failed disk write); None otherwise
    pause_reason: PauseReason | None = None
    #: The guest showed nothing at all since QEMU started (set only while the agent is silent)
    no_sign_of_life: NoSignOfLife | None = None

    def apply_spec(self, spec: VmSpec, paths: VmPaths) -> None:
        self.ram_mb, self.cpus = spec.ram_mb, spec.cpus
        self.disk, self.display = spec.disk.describe(), spec.display
        self.disk_owned = spec.disk.owned
        self.clipboard = spec.clipboard
        sock = paths.display_socket(spec.display)
        self.display_socket = None if sock is None else str(sock)
        self.serial_socket = str(paths.serial_socket)
