"""Every message the dashboard's widgets and workers send, named for what happened."""

from __future__ import annotations

from textual.message import Message

from hypercore_tui.core.models import VmState
from hypercore_tui.core.snapshots import SnapshotInfo
from hypercore_tui.services import monitor
from hypercore_tui.services.host import HostSummary


class VmSampled(Message):
    """The monitor read VMs (the app keeps their names): one message stands for a whole
    burst, since the polls of all VMs fall on the same ticks."""

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, VmSampled)


class VmStateChanged(Message):
    def __init__(self, name: str, old: VmState, new: VmState, reason: str) -> None:
        super().__init__()
        self.name, self.old, self.new, self.reason = name, old, new, reason


class VmEventLogged(Message):
    """A QMP event or observation for the event log (detail may hold guest text)."""

    def __init__(self, name: str, event: str, detail: str, timestamp: float) -> None:
        super().__init__()
        self.name, self.event, self.detail, self.timestamp = name, event, detail, timestamp


class GuestInfoChanged(Message):
    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name


class VmJobsChanged(Message):
    """A VM's QEMU jobs (or its shared-folder note) changed; ``finished``: a job ended."""

    def __init__(self, name: str, finished: bool) -> None:
        super().__init__()
        self.name, self.finished = name, finished


class VmListChanged(Message):
    def __init__(self, names: tuple[str, ...]) -> None:
        super().__init__()
        self.names = names


class HostSampled(Message):
    def __init__(self, summary: HostSummary) -> None:
        super().__init__()
        self.summary = summary

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, HostSampled)


class VmSelected(Message):
    """The cursor of the VM list moved to ``name`` (None: no VM)."""

    def __init__(self, name: str | None) -> None:
        super().__init__()
        self.name = name


class ActionSucceeded(Message):
    def __init__(self, name: str | None, verb: str, summary: str) -> None:
        super().__init__()
        self.name, self.verb, self.summary = name, verb, summary


class ActionFailed(Message):
    def __init__(self, name: str | None, verb: str, error: str) -> None:
        super().__init__()
        self.name, self.verb, self.error = name, verb, error


class SnapshotsListed(Message):
    def __init__(self, name: str, snapshots: list[SnapshotInfo] | None, error: str | None
                 ) -> None:
        super().__init__()
        self.name, self.snapshots, self.error = name, snapshots, error


class SnapshotJobProgress(Message):
    """A snapshot job moved on; ``fraction`` is None when QEMU gives no figure."""

    def __init__(self, name: str, stage: str, fraction: float | None) -> None:
        super().__init__()
        self.name, self.stage, self.fraction = name, stage, fraction

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, SnapshotJobProgress) and message.name == self.name


class SnapshotJobFinished(Message):
    def __init__(self, name: str, summary: str | None, error: str | None) -> None:
        super().__init__()
        self.name, self.summary, self.error = name, summary, error


def from_notice(notice: monitor.MonitorNotice) -> Message:
    """The message for a monitor notice."""
    if isinstance(notice, monitor.VmSampled):
        return VmSampled()
    if isinstance(notice, monitor.VmStateChanged):
        return VmStateChanged(notice.name, notice.old, notice.new, notice.reason)
    if isinstance(notice, monitor.VmEventSeen):
        return VmEventLogged(notice.name, notice.event, notice.detail, notice.timestamp)
    if isinstance(notice, monitor.GuestInfoChanged):
        return GuestInfoChanged(notice.name)
    if isinstance(notice, monitor.VmsChanged):
        return VmListChanged(notice.names)
    if isinstance(notice, monitor.VmJobsChanged):
        return VmJobsChanged(notice.name, notice.finished)
    return HostSampled(notice.summary)
