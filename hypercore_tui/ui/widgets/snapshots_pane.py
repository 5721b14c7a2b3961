"""The selected VM's snapshots: list, take, restore (optionally after a safety
snapshot) and delete, with the job's progress. Jobs run in worker threads, one
per VM at a time; the pane never waits for them."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.widgets import DataTable, ProgressBar, Static

from hypercore_tui.core.errors import HypercoreError
from hypercore_tui.core.series import format_duration
from hypercore_tui.core.snapshots import SnapshotInfo
from hypercore_tui.ui.backend import Progress, SnapshotOps
from hypercore_tui.ui.messages import (
    SnapshotJobFinished,
    SnapshotJobProgress,
    SnapshotsListed,
)
from hypercore_tui.ui.screens.confirm import Confirmation, ConfirmScreen
from hypercore_tui.ui.screens.snapshot_tag import SnapshotRequest, SnapshotTagScreen
from hypercore_tui.ui.text import safe
from hypercore_tui.ui.widgets.steady_scroll import SteadyDataTable
from hypercore_tui.ui.widgets.vm_list import short_bytes

UNAVAILABLE = "Snapshots are not available in this build."
TAG_WIDTH = 14  # longer tags are cut in the table (80 columns leave ~46 for it)


class SnapshotsPane(Vertical):
    BINDINGS = [
        Binding("t", "take", "Take snapshot", id="snapshot.take"),
        Binding("L", "restore", "Restore snapshot", id="snapshot.restore"),
        Binding("X", "delete", "Delete snapshot", id="snapshot.delete"),
        Binding("r", "reload", "Reload list", id="snapshot.reload"),
    ]

    DEFAULT_CSS = """
    SnapshotsPane > #snap-title {
        height: auto;
        padding: 0 1;
    }
    SnapshotsPane > DataTable {
        height: 1fr;
        scrollbar-size-horizontal: 1;
        scrollbar-size-vertical: 1;
    }
    SnapshotsPane > ProgressBar {
        display: none;
        padding: 0 1;
    }
    SnapshotsPane.-busy > ProgressBar {
        display: block;
    }
    SnapshotsPane > #snap-status {
        height: auto;
        padding: 0 1;
        color: $text-muted;
    }
    """

    def __init__(self, ops: SnapshotOps | None, *, remote: SnapshotOps | None = None,
                 id: str | None = None) -> None:  # noqa: A002 - Textual API
        super().__init__(id=id)
        self.local_ops = ops
        #: another host's VM (``HOST/VM``: a VM name holds no ``/``) goes to these
        self.remote_ops = remote
        self.ops = ops
        self.vm_name: str | None = None
        self.snapshots: list[SnapshotInfo] = []
        self._stale = True

    def compose(self) -> ComposeResult:
        yield Static("", id="snap-title", markup=False)
        table: DataTable[Text] = SteadyDataTable(id="snap-table", cursor_type="row")
        table.add_column("Tag", key="tag")
        table.add_column("Taken (UTC)", key="date")
        table.add_column("Clock", key="clock")
        table.add_column("RAM", key="ram")
        yield table
        yield ProgressBar(total=1.0, show_eta=False, id="snap-progress")
        yield Static("t take · L restore · X delete · r reload", id="snap-status",
                     markup=False)

    # -- which VM -------------------------------------------------------------------

    def show_vm(self, name: str | None, *, visible: bool) -> None:
        """Follow the selected VM; the list is read only while the pane is visible."""
        if name != self.vm_name:
            self.vm_name, self.snapshots, self._stale = name, [], True
            self.ops = self.remote_ops if name is not None and "/" in name else self.local_ops
            self.set_class(name is not None and self._job_running(name), "-busy")
            self._fill()
        if visible and self._stale:
            self.action_reload()

    def list_may_have_changed(self, name: str, *, visible: bool) -> None:
        """A job on ``name`` ended (maybe started elsewhere: another dashboard, the CLI):
        read the list again now if it is on screen, else when it is shown next."""
        if name != self.vm_name:
            return
        if visible:
            self.action_reload()
        else:
            self._stale = True

    def action_reload(self) -> None:
        self._stale = False
        if self.ops is None or self.vm_name is None:
            self._fill()
            return
        self._title(Text("reading snapshots…", style="italic"))
        self.load_snapshots(self.vm_name)

    @work(thread=True, exclusive=True, group="snapshot-list", exit_on_error=False)
    def load_snapshots(self, name: str) -> None:
        assert self.ops is not None
        try:
            snapshots = self.ops.list(name)
        except HypercoreError as exc:
            self.post_message(SnapshotsListed(name, None, str(exc)))
            return
        self.post_message(SnapshotsListed(name, snapshots, None))

    @on(SnapshotsListed)
    def _listed(self, event: SnapshotsListed) -> None:
        event.stop()
        if event.name != self.vm_name:
            return
        if event.error is not None:
            self._title(safe(event.error, "yellow", limit=300))
            return
        self.snapshots = list(event.snapshots or [])
        self._fill()

    def _title(self, text: Text) -> None:
        self.query_one("#snap-title", Static).update(text)

    def _fill(self) -> None:
        table = self.query_one("#snap-table", DataTable)
        table.clear()
        if self.ops is None:
            self._title(Text(UNAVAILABLE, style="dim"))
            return
        if self.vm_name is None:
            self._title(Text("No VM selected.", style="dim"))
            return
        title = Text()
        title.append_text(safe(self.vm_name, "bold"))
        count = len(self.snapshots)
        title.append(f": {count} snapshot{'' if count == 1 else 's'}")
        if count:
            title.append("  (RAM none: disk only)", style="dim")
        self._title(title)
        for snap in self.snapshots:
            when = snap.date.astimezone(dt.UTC).strftime("%y-%m-%d %H:%M")
            ram = short_bytes(snap.vmstate_bytes) if snap.has_ram else "none"
            table.add_row(safe(snap.tag, "bold", limit=TAG_WIDTH), Text(when),
                          Text(format_duration(snap.vm_clock_seconds)), Text(ram),
                          key=snap.tag)

    def highlighted(self) -> SnapshotInfo | None:
        table = self.query_one("#snap-table", DataTable)
        if not self.snapshots or table.cursor_row < 0 or table.cursor_row >= len(self.snapshots):
            return None
        return self.snapshots[table.cursor_row]

    # -- jobs -----------------------------------------------------------------------

    def _busy(self) -> bool:
        name = self.vm_name
        if self.ops is None:
            self.app.notify(UNAVAILABLE, severity="warning", markup=False)
            return True
        if name is None:
            self.app.notify("No VM selected", severity="warning", markup=False)
            return True
        if self._job_running(name):
            self.app.notify(f"{name}: a snapshot job is already running", severity="warning",
                            markup=False)
            return True
        return False

    def _job_running(self, name: str) -> bool:
        group = f"snapshot-job-{name}"
        return any(w.group == group and w.is_running for w in self.app.workers)

    def action_take(self) -> None:
        if self._busy():
            return
        name = self.vm_name
        assert name is not None

        def chosen(request: SnapshotRequest | None) -> None:
            if request is not None:
                self._start_job(name, "snapshot", lambda progress: self._ops.create(
                    name, request.tag, disk_only=request.disk_only, progress=progress))

        self.app.push_screen(SnapshotTagScreen(name), chosen)

    def action_restore(self) -> None:
        snap = self.highlighted()
        if self._busy() or snap is None:
            return
        name = self.vm_name
        assert name is not None
        title = Text("Restore ")
        title.append_text(safe(name, "bold"))
        title.append(" to snapshot ")
        title.append_text(safe(snap.tag, "bold"))
        title.append("?")
        body = Text("Everything that happened in the VM since the snapshot is lost"
                    + (" (its RAM and disk go back in time)." if snap.has_ram else
                       " (its disk goes back in time)."))

        def confirmed(answer: Confirmation | None) -> None:
            if answer is not None:
                self._start_job(name, "restore", lambda progress: self._ops.restore(
                    name, snap.tag, safety_snapshot=answer.option, progress=progress))

        self.app.push_screen(ConfirmScreen(title, body, "Restore",
                                           option="Take a safety snapshot first"), confirmed)

    def action_delete(self) -> None:
        snap = self.highlighted()
        if self._busy() or snap is None:
            return
        name = self.vm_name
        assert name is not None
        title = Text("Delete snapshot ")
        title.append_text(safe(snap.tag, "bold"))
        title.append(" of ")
        title.append_text(safe(name, "bold"))
        title.append("?")

        def confirmed(answer: Confirmation | None) -> None:
            if answer is not None:
                self._start_job(name, "delete snapshot", lambda progress: self._ops.delete(
                    name, snap.tag, progress=progress))

        self.app.push_screen(ConfirmScreen(title, Text("It cannot be brought back."),
                                           "Delete"), confirmed)

    @property
    def _ops(self) -> SnapshotOps:
        assert self.ops is not None
        return self.ops

    def _start_job(self, name: str, verb: str, job: Callable[[Progress], str]) -> None:
        self.add_class("-busy")
        self.query_one(ProgressBar).update(total=None, progress=0)

        def progress(stage: str, fraction: float | None) -> None:
            self.post_message(SnapshotJobProgress(name, stage, fraction))

        def run() -> None:
            try:
                summary = job(progress)
            except HypercoreError as exc:
                self.post_message(SnapshotJobFinished(name, None, f"{verb}: {exc}"))
                return
            except Exception as exc:  # noqa: BLE001 - shown as one line, logged by the app
                self.post_message(SnapshotJobFinished(
                    name, None, f"{verb}: internal error: {type(exc).__name__}: {exc}"))
                return
            self.post_message(SnapshotJobFinished(name, summary, None))

        self.run_worker(run, thread=True, group=f"snapshot-job-{name}", exit_on_error=False,
                        name=f"{verb} {name}")

    @on(SnapshotJobProgress)
    def _progress(self, event: SnapshotJobProgress) -> None:
        event.stop()
        if event.name != self.vm_name:
            return
        bar = self.query_one(ProgressBar)
        if event.fraction is None:
            bar.update(total=None)
        else:
            bar.update(total=1.0, progress=event.fraction)
        self.query_one("#snap-status", Static).update(safe(event.stage, limit=200))

    @on(SnapshotJobFinished)
    def _finished(self, event: SnapshotJobFinished) -> None:
        # Not stopped: the app notifies and logs it too.
        if event.name == self.vm_name:
            self.remove_class("-busy")
            self.query_one("#snap-status", Static).update(
                "t take · L restore · X delete · r reload")
            self.action_reload()
