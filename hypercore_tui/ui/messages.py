"""Every message the dashboard's widgets and workers send, named for what happened."""

from __future__ import annotations

from textual.message import Message

from hypercore_tui.core.snapshots import SnapshotInfo
from hypercore_tui.ui.backend import (
    ClipNotice,
    HostSampled,
    MigrationProgress,
    MonitorNotice,
    RemoteChange,
    VmSampled,
)


class MonitorUpdate(Message):
    """The monitor noticed something: ``notice`` says what (a VM sampled, its state
    changed, an event...); handlers dispatch on its type. The polls of all VMs fall on
    the same ticks: one sampled update stands for a whole burst (the dashboard keeps the
    names), and a newer host summary replaces one not shown yet."""

    def __init__(self, notice: MonitorNotice) -> None:
        super().__init__()
        self.notice = notice

    def can_replace(self, message: Message) -> bool:
        return (isinstance(message, MonitorUpdate)
                and isinstance(self.notice, VmSampled | HostSampled)
                and type(message.notice) is type(self.notice))


class RemoteUpdate(Message):
    """Another host's stream brought something (its state, a VM's row or sample...)."""

    def __init__(self, change: RemoteChange) -> None:
        super().__init__()
        self.change = change


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


class ClipSyncUpdate(Message):
    """The clipboard sync did something (``notice.kind``) or was switched on or off."""

    def __init__(self, notice: ClipNotice) -> None:
        super().__init__()
        self.notice = notice


class KeysSent(Message):
    """Keys went to VM ``name`` (the dashboard's keyboard mode, or text typed into it): the
    guest's screen may have changed. ``count``: how many keys or characters. The hook for
    a screen view that refreshes sooner after a key (posted to the dashboard screen)."""

    def __init__(self, name: str, count: int) -> None:
        super().__init__()
        self.name, self.count = name, count


class MigrationProgressed(Message):
    """The migration of VM ``name`` moved on (QEMU's ``query-migrate``, about twice a
    second); a newer one replaces one not shown yet."""

    def __init__(self, name: str, progress: MigrationProgress) -> None:
        super().__init__()
        self.name, self.progress = name, progress

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, MigrationProgressed) and message.name == self.name


class MigrationEnded(Message):
    """The migration of VM ``name`` is over (its result comes as ``ActionSucceeded`` or
    ``ActionFailed``)."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name
