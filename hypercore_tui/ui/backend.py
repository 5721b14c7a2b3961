"""The services the dashboard uses, behind one small interface.

The app receives a :class:`Backend` (injected: UI tests pass a small fake). The
live one calls ``hypercore_tui.services``. Operations are synchronous and may
take long (a boot waits for QEMU, a snapshot for its job): the app always calls
them from worker threads. Each returns a one-line summary for a notification or
raises :class:`~hypercore_tui.core.errors.HypercoreError` with a one-line reason.
The monitor is async and runs on the app's event loop (its blocking reads are
in threads or take microseconds).

This module is the dashboard's only door to the services: widgets and screens import
what they use of them (the view model, notices, result types) from here
(a lint-imports contract keeps it so).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

from hypercore_tui.core import progress as job_progress
from hypercore_tui.core.errors import HypercoreError, OperationFailed
from hypercore_tui.core.hosts import Host
from hypercore_tui.core.models import ClipboardMode
from hypercore_tui.core.sizes import format_bytes
from hypercore_tui.core.snapshots import SnapshotInfo
from hypercore_tui.services import boot as boot_service
from hypercore_tui.services import clipboard as clipboard_service
from hypercore_tui.services import console, display, host, lifecycle, shared, transfer, vmsettings
from hypercore_tui.services import create as create_service
from hypercore_tui.services import keys as keys_service
from hypercore_tui.services import migrate as migrate_service
from hypercore_tui.services import screen as screen_service
from hypercore_tui.services import snapshots as snapshot_service
from hypercore_tui.services import storage as storage_service
from hypercore_tui.services.console import DETACH_KEY, ConsoleAccess
from hypercore_tui.services.context import Context
from hypercore_tui.services.create import CreateRequest
from hypercore_tui.services.display import DisplayAccess, DisplayOutcome, laptop_steps
from hypercore_tui.services.guest_clock import ClockCorrection
from hypercore_tui.services.host import HostSummary
from hypercore_tui.services.hosts import fleet as fleet_service
from hypercore_tui.services.hosts.fleet import FleetSink, RemoteChange, RemoteHost
from hypercore_tui.services.hosts.registry import list_hosts
from hypercore_tui.services.hosts.stream import StreamState
from hypercore_tui.services.migrate import MigrationPlan, MigrationProgress, MigrationResult
from hypercore_tui.services.monitor import (
    AgentStatus,
    GuestInfoChanged,
    HostSampled,
    Monitor,
    MonitorNotice,
    MonitorSettings,
    PauseReason,
    Sink,
    VmDefinitionChanged,
    VmEventSeen,
    VmJobsChanged,
    VmSampled,
    VmsChanged,
    VmStateChanged,
    VmView,
)
from hypercore_tui.services.storage import ImageRow, StorageReport
from hypercore_tui.ui.clipsync import (
    ClipEntry,
    ClipNotice,
    ClipSink,
    ClipSyncView,
    ClipVm,
    LiveClipSync,
)

__all__ = [
    "DETACH_KEY", "AgentStatus", "Backend", "ClipEntry", "ClipNotice", "ClipSink",
    "ClipSyncOps", "ClipSyncView", "ClipVm", "ClipboardOps", "ConsoleAccess", "FleetLike",
    "FleetSink", "KeyboardOps",
    "CreateRequest", "DisplayAccess", "DisplayOutcome", "GuestInfoChanged", "HostSampled",
    "HostSummary",
    "ImageRow", "LiveBackend", "MigrationOps", "MigrationPlan", "MigrationProgress",
    "MigrationResult", "MonitorLike", "MonitorNotice", "PauseReason", "Progress",
    "PulledText", "RemoteChange", "RemoteSnapshots", "TYPE_CONFIRM_ABOVE", "RemoteHost",
    "RemoteOps", "StreamState",
    "SnapshotOps", "StorageLoader", "StorageReport", "VmDefinitionChanged", "VmEventSeen",
    "VmJobsChanged",
    "VmSampled", "VmStateChanged", "VmView", "VmsChanged", "storage_loader",
    "laptop_steps", "migrated_summary",
]

T = TypeVar("T")

#: Progress of a long job as the dashboard shows it: (what is happening, fraction done or
#: None when unknown). Services report a core ``Progress``: :func:`_shown` converts.
Progress = Callable[[str, float | None], None]


def _shown(show: Progress) -> job_progress.Progress:
    def report(stage: str, done: float | None, total: float) -> None:
        show(stage, job_progress.fraction(done, total))
    return report


class MonitorLike(Protocol):
    host: HostSummary | None

    @property
    def views(self) -> Mapping[str, VmView]: ...

    def view(self, name: str) -> VmView | None: ...

    def set_focus(self, name: str | None) -> None: ...

    def poke(self, name: str) -> None: ...

    async def rescan(self) -> None: ...

    async def run(self) -> None: ...


class SnapshotOps(Protocol):
    def list(self, name: str) -> list[SnapshotInfo]: ...

    def create(self, name: str, tag: str | None, *, disk_only: bool,
               progress: Progress) -> str: ...

    def restore(self, name: str, tag: str, *, safety_snapshot: bool,
                progress: Progress) -> str: ...

    def delete(self, name: str, tag: str, *, progress: Progress) -> str: ...


@dataclass(frozen=True)
class PulledText:
    """A guest's clipboard text and the one-line summary of the pull (for the log)."""

    text: str
    summary: str


class ClipboardOps(Protocol):
    def push(self, name: str, text: str) -> str: ...

    def pull(self, name: str) -> PulledText: ...

    def copy_in(self, source: Path, name: str | None, *, progress: Progress) -> str:
        """Copy a host file into VM ``name`` (its home directory), or into the shared
        folder when ``name`` is None."""
        ...


class ClipSyncOps(Protocol):
    """The clipboard sync (issue 13), on the app's event loop: :meth:`run` is a worker
    for the app's life (it runs the sync while it is on here, else shows the one another
    process runs); the others are quick, or coroutines the app runs as workers."""

    def view(self) -> ClipSyncView: ...

    def start(self) -> str:
        """Switch it on here (every VM); Busy when another process runs it."""
        ...

    def stop(self) -> str: ...

    async def run(self, sink: ClipSink) -> None: ...

    async def offer(self, text: str) -> str: ...

    async def offer_files(self, paths: Sequence[Path]) -> str:
        """Host files and folders (a drop) copied into the shared folder as one files
        entry that the running sync offers on every VM's clipboard; one line
        (``OperationFailed``) when no sync runs, nothing copied then."""
        ...

    async def text_of(self, entry_id: int) -> str | None:
        """The text of an entry of the history (OSC 52 to the user's terminal); None
        when it is gone or not text."""
        ...

    async def again(self, entry_id: int) -> str: ...

    async def push_to(self, entry_id: int, vm: str) -> str: ...


class KeyboardOps(Protocol):
    """Keys and text as key presses (services.keys), synchronous for worker threads.
    ``layout``: the guest's keyboard layout (core.keyboard names it)."""

    #: the layout a VM starts with ($HYPERCORE_KEYMAP, else us)
    default_layout: str
    #: texts longer than this (characters) are typed only once the user confirmed
    confirm_above: int

    def send_keys(self, name: str, keys: Sequence[str], layout: str) -> int:
        """Keys named as core.keyboard.key_chords names them, in order; how many."""
        ...

    def type_text(self, name: str, text: str, layout: str, *, progress: Progress) -> str:
        """The text typed as key presses; the one-line summary."""
        ...


#: Reads the Ceph cluster's report for the storage tab (async, on the app's loop).
StorageLoader = Callable[[], Awaitable[StorageReport]]


def storage_loader(ctx: Context) -> StorageLoader:
    """The storage tab's reader of the Ceph cluster ``ctx`` names."""
    return lambda: storage_service.storage_report(ctx)


class FleetLike(Protocol):
    """The remote hosts' streams (``services.hosts.fleet.RemoteFleet``)."""

    @property
    def hosts(self) -> Mapping[str, RemoteHost]: ...

    async def run(self) -> None: ...


#: Text longer than this (characters) is typed into a VM only once confirmed.
TYPE_CONFIRM_ABOVE = keys_service.CONFIRM_ABOVE


class RemoteOps(Protocol):
    """The other hosts configured (``hypercore hosts add``): their VMs in the dashboard,
    the lifecycle verbs run there through ``--host``."""

    #: the other hosts' names, as configured
    @property
    def host_names(self) -> Sequence[str]: ...

    #: the verbs :meth:`run_verb` takes ("start", "stop", "force stop", "pause",
    #: "resume", "reset", "snapshot"); any other is said to be unsupported remotely
    verbs: frozenset[str]

    def make_fleet(self, sink: FleetSink) -> FleetLike: ...

    def run_verb(self, host: str, verb: str, vm: str) -> str:
        """Blocking (a worker thread's): the verb run on ``vm`` of ``host``."""
        ...

    # The rest are blocking too (worker threads), each run there through ``--host``;
    # a failure is ``HypercoreError`` with the remote error line.

    def clip_push(self, host: str, vm: str, text: str) -> str: ...

    def clip_pull(self, host: str, vm: str) -> str:
        """The VM's clipboard text, exactly (untrusted)."""
        ...

    def set_clipboard_mode(self, host: str, vm: str, mode: ClipboardMode) -> str: ...

    def type_text(self, host: str, vm: str, text: str) -> str:
        """Typed on the VM's keyboard layout there; refused there when it cannot type
        all of it."""
        ...

    def open_console(self, host: str, vm: str) -> ConsoleAccess:
        """A tmux window on the VM's serial console there, else the line to run."""
        ...

    def display_line(self, host: str, vm: str) -> str:
        """The line to run on the user's own machine for the VM's screen."""
        ...

    def migration_targets(self, host: str) -> list[str]:
        """The hosts ``host`` reaches itself (its VMs migrate to those)."""
        ...

    def migrate(self, host: str, vm: str, target: str) -> str: ...

    def snapshot_list(self, host: str, vm: str) -> list[SnapshotInfo]: ...

    def snapshot_create(self, host: str, vm: str, tag: str | None, *,
                        disk_only: bool) -> str: ...

    def snapshot_restore(self, host: str, vm: str, tag: str) -> str: ...

    def snapshot_delete(self, host: str, vm: str, tag: str) -> str: ...


class RemoteSnapshots:
    """The Snapshots tab's operations on another host's VM, named by its row key
    ``HOST/VM`` (a VM name holds no ``/``), run there through ``--host``."""

    def __init__(self, remote: RemoteOps) -> None:
        self.remote = remote

    @staticmethod
    def _split(key: str) -> tuple[str, str]:
        host, _, vm = key.partition("/")
        return host, vm

    def list(self, name: str) -> list[SnapshotInfo]:
        return self.remote.snapshot_list(*self._split(name))

    def create(self, name: str, tag: str | None, *, disk_only: bool,
               progress: Progress) -> str:
        host, vm = self._split(name)
        progress(f"taking the snapshot on {host}", None)
        return self.remote.snapshot_create(host, vm, tag, disk_only=disk_only)

    def restore(self, name: str, tag: str, *, safety_snapshot: bool,
                progress: Progress) -> str:
        host, vm = self._split(name)
        safety = ""
        if safety_snapshot:
            progress(f"taking a safety snapshot first on {host}", None)
            safety = f" ({self.remote.snapshot_create(host, vm, None, disk_only=False)})"
        progress(f"restoring on {host}", None)
        return self.remote.snapshot_restore(host, vm, tag) + safety

    def delete(self, name: str, tag: str, *, progress: Progress) -> str:
        host, vm = self._split(name)
        progress(f"deleting on {host}", None)
        return self.remote.snapshot_delete(host, vm, tag)


class LiveRemote:
    """services.hosts: the streams and ``--host`` commands."""

    def __init__(self, ctx: Context, hosts: Sequence[Host]) -> None:
        self.ctx = ctx
        self.hosts = {h.name: h for h in hosts}
        self.verbs = frozenset(fleet_service.VERBS)

    @property
    def host_names(self) -> Sequence[str]:
        return sorted(self.hosts)

    def make_fleet(self, sink: FleetSink) -> fleet_service.RemoteFleet:
        return fleet_service.RemoteFleet(self.ctx, list(self.hosts.values()), sink)

    def run_verb(self, host: str, verb: str, vm: str) -> str:
        return fleet_service.run_verb(self.ctx, self.hosts[host], verb, vm)

    def clip_push(self, host: str, vm: str, text: str) -> str:
        return fleet_service.clip_push(self.ctx, self.hosts[host], vm, text)

    def clip_pull(self, host: str, vm: str) -> str:
        return fleet_service.clip_pull(self.ctx, self.hosts[host], vm)

    def set_clipboard_mode(self, host: str, vm: str, mode: ClipboardMode) -> str:
        return fleet_service.set_clipboard_mode(self.ctx, self.hosts[host], vm, mode.value)

    def type_text(self, host: str, vm: str, text: str) -> str:
        return fleet_service.type_text(self.ctx, self.hosts[host], vm, text)

    def open_console(self, host: str, vm: str) -> ConsoleAccess:
        return console.open_remote_console(self.ctx, self.hosts[host].name, vm)

    def display_line(self, host: str, vm: str) -> str:
        return fleet_service.display_line(self.ctx, self.hosts[host], vm)

    def migration_targets(self, host: str) -> list[str]:
        return fleet_service.other_hosts(self.ctx, self.hosts[host])

    def migrate(self, host: str, vm: str, target: str) -> str:
        return fleet_service.migrate(self.ctx, self.hosts[host], vm, target)

    def snapshot_list(self, host: str, vm: str) -> list[SnapshotInfo]:
        return fleet_service.snapshot_list(self.ctx, self.hosts[host], vm)

    def snapshot_create(self, host: str, vm: str, tag: str | None, *,
                        disk_only: bool) -> str:
        return fleet_service.snapshot_create(self.ctx, self.hosts[host], vm, tag,
                                             disk_only=disk_only)

    def snapshot_restore(self, host: str, vm: str, tag: str) -> str:
        return fleet_service.snapshot_restore(self.ctx, self.hosts[host], vm, tag)

    def snapshot_delete(self, host: str, vm: str, tag: str) -> str:
        return fleet_service.snapshot_delete(self.ctx, self.hosts[host], vm, tag)


def live_remote(ctx: Context) -> LiveRemote | None:
    """The configured remote hosts, or None when there are none (or the settings do not
    read: ``hosts list`` says why)."""
    try:
        hosts = [h for h in list_hosts(ctx) if not h.is_local]
    except HypercoreError:
        return None
    return LiveRemote(ctx, hosts) if hosts else None


class MigrationOps(Protocol):
    """Live migration of this host's running VMs to another host (services.migrate),
    synchronous for worker threads."""

    def plan(self, name: str) -> MigrationPlan:
        """What would move; the one-line reason (``HypercoreError``) when ``name`` cannot
        migrate live (not running, a local disk...)."""
        ...

    def migrate(self, name: str, host: str, *, progress: Callable[[MigrationProgress], None],
                cancelled: Callable[[], bool]) -> MigrationResult:
        """Move ``name`` to ``host``, ``progress`` called from this thread about twice a
        second; ``cancelled`` asked until the switch-over (True: the VM stays running
        here, ``OperationFailed`` says so)."""
        ...


class LiveMigration:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    def plan(self, name: str) -> MigrationPlan:
        return migrate_service.plan_migration(self.ctx, name)

    def migrate(self, name: str, host: str, *, progress: Callable[[MigrationProgress], None],
                cancelled: Callable[[], bool]) -> MigrationResult:
        return _run(migrate_service.migrate_vm(self.ctx, name, host, progress=progress,
                                               cancelled=cancelled))


def migrated_summary(result: MigrationResult) -> str:
    """``web migrated to b: downtime 84 ms, total 3.2 s`` (the notification, the log)."""
    line = (f"{result.name} migrated to {result.target}: downtime {result.downtime_ms:.0f} ms, "
            f"total {result.total_s:.1f} s")
    return line + (f"; shared folder there: {result.share}" if result.share else "")


class Backend(Protocol):
    snapshots: SnapshotOps | None
    clipboard: ClipboardOps | None
    clipsync: ClipSyncOps | None  # None: no clipboard sync in this dashboard
    storage: StorageLoader | None  # None: no Ceph cluster configured, no storage tab
    keyboard: KeyboardOps | None  # None: no keyboard mode, no typing into VMs
    remote: RemoteOps | None  # None: no other host configured (the list is not grouped)
    migration: MigrationOps | None  # None: no live migration from this dashboard

    def make_monitor(self, sink: Sink) -> MonitorLike: ...

    def start_vm(self, name: str) -> str: ...

    def stop_vm(self, name: str) -> str: ...

    def force_stop_vm(self, name: str) -> str: ...

    def pause_vm(self, name: str) -> str: ...

    def resume_vm(self, name: str) -> str: ...

    def reset_vm(self, name: str) -> str: ...

    def delete_vm(self, name: str) -> str: ...

    def create_vm(self, request: CreateRequest, *, boot: bool) -> str: ...

    def create_demo_vm(self) -> str: ...

    def open_console(self, name: str) -> ConsoleAccess: ...

    def open_display(self, name: str) -> DisplayOutcome:
        """Start remote-viewer here when a graphical session is reachable, else the
        line to run on the user's own machine."""
        ...

    def set_clipboard_mode(self, name: str, mode: ClipboardMode) -> str:
        """Set the VM's clipboard mode in its definition (running or not)."""
        ...

    async def screendump(self, name: str) -> bytes:
        """The running VM's screen as PNG bytes (QMP ``screendump``), for the Screen
        tab. A coroutine on the app's loop, like the monitor: a new QMP session per
        frame, each call bounded (``SCREEN_DUMP_TIMEOUT``); a monitor socket another
        command holds is not waited for (``Busy``)."""
        ...


#: The Screen tab's bounds on one frame: QEMU's answer, and the monitor socket's lock
#: (another command holding it skips a frame rather than delaying the next ones).
SCREEN_DUMP_TIMEOUT = 5.0
SCREEN_LOCK_TIMEOUT = 0.3


def _run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a service coroutine to completion in this (worker) thread."""
    return asyncio.run(coro)


def _clock_note(correction: ClockCorrection | None) -> str:
    """"; guest clock set forward 8.1 s" after an action that set the guest's clock again."""
    return f"; {correction.describe()}" if correction is not None else ""


class LiveSnapshots:
    """services.snapshots, synchronous for worker threads."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    def list(self, name: str) -> list[SnapshotInfo]:
        return _run(snapshot_service.list_snapshots(self.ctx, name))

    def create(self, name: str, tag: str | None, *, disk_only: bool,
               progress: Progress) -> str:
        snap = _run(snapshot_service.create_snapshot(self.ctx, name, tag, disk_only=disk_only,
                                                     progress=_shown(progress)))
        kind = "RAM + disk" if snap.has_ram else "disk only"
        return f"{name}: snapshot {snap.tag} taken ({kind})"

    def restore(self, name: str, tag: str, *, safety_snapshot: bool,
                progress: Progress) -> str:
        safety = ""
        if safety_snapshot:
            progress("taking a safety snapshot first", None)
            snap = _run(snapshot_service.create_snapshot(self.ctx, name, None,
                                                         progress=_shown(progress)))
            safety = f" (safety snapshot {snap.tag} taken first)"
        clock = _run(snapshot_service.restore_snapshot(self.ctx, name, tag,
                                                       progress=_shown(progress)))
        return f"{name}: restored snapshot {tag}{safety}" + _clock_note(clock)

    def delete(self, name: str, tag: str, *, progress: Progress) -> str:
        _run(snapshot_service.delete_snapshot(self.ctx, name, tag, progress=_shown(progress)))
        return f"{name}: snapshot {tag} deleted"


#: Where a pasted host file lands in a guest (exists and is writable on every Linux).
GUEST_DROP_DIR = "/tmp/"


class LiveClipboard:
    """services.clipboard (the hub) and services.transfer, synchronous for workers."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.hub = clipboard_service.ClipboardHub()

    def push(self, name: str, text: str) -> str:
        self.hub.set_text(text, source="paste")
        (result,) = _run(clipboard_service.push(self.ctx, [name], text))
        if not result.ok:
            raise OperationFailed(result.error or f"{name}: the clipboard push failed")
        how = f" ({result.method})" if result.method else ""
        return f"{name}: {len(text)} characters put on its clipboard{how}"

    def pull(self, name: str) -> PulledText:
        detail = _run(clipboard_service.pull_detail(self.ctx, name))
        text = detail.text or ""
        self.hub.set_text(text, source=f"vm:{name}")
        how = f" ({detail.method})" if detail.method else ""
        if not text:
            return PulledText(text, f"{name}: its clipboard is empty{how}")
        return PulledText(text, f"{name}: {len(text)} characters copied from its "
                                f"clipboard{how}")

    def copy_in(self, source: Path, name: str | None, *, progress: Progress) -> str:
        if name is None:
            target = shared.copy_into_share(self.ctx, source)
            return f"copied {source.name} into the shared folder as {target.name}"

        def bytes_done(stage: str, done: float | None, total: float) -> None:
            progress(f"copying {source.name}", done / total if done is not None and total
                     else None)

        result = _run(transfer.copy(self.ctx, str(source), f"{name}:{GUEST_DROP_DIR}",
                                    progress=bytes_done))
        return (f"copied {source.name} to {result.destination} ({format_bytes(result.bytes)}, "
                f"{result.channel})")


class LiveKeyboard:
    """services.keys, synchronous for worker threads."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        try:
            self.default_layout = keys_service.default_keymap(ctx).name
        except HypercoreError:  # a bad $HYPERCORE_KEYMAP: `hypercore type` says so
            self.default_layout = "us"
        self.confirm_above = TYPE_CONFIRM_ABOVE

    def send_keys(self, name: str, keys: Sequence[str], layout: str) -> int:
        return _run(keys_service.send_keys(self.ctx, name, keys, keymap=layout))

    def type_text(self, name: str, text: str, layout: str, *, progress: Progress) -> str:
        typed = _run(keys_service.type_text(self.ctx, name, text, keymap=layout,
                                            progress=_shown(progress)))
        return typed.describe()


class LiveBackend:
    """The real services of one HYPERCORE_HOME."""

    def __init__(self, ctx: Context, settings: MonitorSettings | None = None) -> None:
        self.ctx = ctx
        self.settings = settings
        self.snapshots: SnapshotOps | None = LiveSnapshots(ctx)
        self.clipboard: ClipboardOps | None = LiveClipboard(ctx)
        self.clipsync: ClipSyncOps | None = LiveClipSync(ctx)
        self.storage: StorageLoader | None = None
        self.keyboard: KeyboardOps | None = LiveKeyboard(ctx)
        self.remote: RemoteOps | None = live_remote(ctx)
        self.migration: MigrationOps | None = LiveMigration(ctx)
        if ctx.ceph_conf:
            self.storage = storage_loader(ctx)

    def make_monitor(self, sink: Sink) -> Monitor:
        return Monitor(self.ctx, sink, self.settings)

    def start_vm(self, name: str) -> str:
        status = _run(boot_service.boot_vm(self.ctx, name))
        # (a disk repaired after QEMU died)
        return f"{name} started (pid {status.pid})" + "".join(f"; {n}" for n in status.notes)

    def stop_vm(self, name: str) -> str:
        how = _run(lifecycle.stop_vm(self.ctx, name))
        return f"{name} stopped ({how})"

    def force_stop_vm(self, name: str) -> str:
        how = _run(lifecycle.stop_vm(self.ctx, name, force=True))
        return f"{name} stopped ({how})"

    def pause_vm(self, name: str) -> str:
        _run(lifecycle.pause_vm(self.ctx, name))
        return f"{name} paused"

    def resume_vm(self, name: str) -> str:
        clock = _run(lifecycle.resume_vm(self.ctx, name))
        return f"{name} resumed" + _clock_note(clock)

    def reset_vm(self, name: str) -> str:
        _run(lifecycle.reset_vm(self.ctx, name))
        return f"{name} reset"

    def delete_vm(self, name: str) -> str:
        lifecycle.delete_vm(self.ctx, name)
        return f"{name} deleted"

    def create_vm(self, request: CreateRequest, *, boot: bool) -> str:
        spec = create_service.create_vm(self.ctx, request)
        if not boot:
            return f"{spec.name} created ({spec.ram_mb} MB, {spec.cpus} CPU)"
        _run(boot_service.boot_vm(self.ctx, spec.name))
        return f"{spec.name} created and started"

    def create_demo_vm(self) -> str:
        spec = host.create_demo_vm(self.ctx)
        _run(boot_service.boot_vm(self.ctx, spec.name))
        return f"{spec.name} created and started: a {spec.ram_mb} MB test guest"

    def open_console(self, name: str) -> ConsoleAccess:
        return console.open_console(self.ctx, name)

    def open_display(self, name: str) -> DisplayOutcome:
        return display.open_display(self.ctx, name)

    def set_clipboard_mode(self, name: str, mode: ClipboardMode) -> str:
        return _run(vmsettings.set_clipboard_mode(self.ctx, name, mode)).describe(name)

    async def screendump(self, name: str) -> bytes:
        return await screen_service.screendump(self.ctx, name, timeout=SCREEN_DUMP_TIMEOUT,
                                               lock_timeout=SCREEN_LOCK_TIMEOUT)
