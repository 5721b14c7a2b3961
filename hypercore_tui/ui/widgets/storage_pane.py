"""The storage pane: the Ceph cluster's health, its RBD images and the VMs using them.

Self-contained: mount ``StoragePane(load)`` anywhere, ``load`` being the backend's
storage loader (:func:`hypercore_tui.ui.backend.storage_loader`). It runs it in an
exclusive Textual worker (the service runs the rados/rbd calls in a thread with a
deadline, so the UI loop never waits on Ceph), gets the result back as a
:class:`StoragePane.ReportLoaded` or :class:`StoragePane.ReportFailed` message, and
polls again ``interval`` seconds after the previous read finished (reads never overlap;
a hidden pane does not read). The messages bubble on, so the app may also react
(notify on a failure, say).
A stopped or unreachable cluster shows as one line within seconds.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.message import Message
from textual.timer import Timer
from textual.widgets import DataTable, Static

from hypercore_tui.core.errors import HypercoreError
from hypercore_tui.core.models import VmState
from hypercore_tui.core.sizes import format_bytes
from hypercore_tui.ui.backend import ImageRow, StorageLoader, StorageReport
from hypercore_tui.ui.text import safe
from hypercore_tui.ui.widgets.steady_scroll import SteadyDataTable

HEALTH_STYLE: Mapping[str, str] = {
    "HEALTH_OK": "bold green", "HEALTH_WARN": "bold yellow", "HEALTH_ERR": "bold red",
}
VM_STATE_LOOK: Mapping[VmState, tuple[str, str]] = {
    VmState.RUNNING: ("▶", "green"), VmState.PAUSED: ("‖", "yellow"),
    VmState.STOPPED: ("■", "dim"), VmState.STARTING: ("…", "cyan"),
    VmState.SHUTTING_DOWN: ("↓", "cyan"), VmState.CRASHED: ("✗", "bold red"),
}
COLUMNS = (("image", "IMAGE"), ("size", "SIZE"), ("used", "USED"), ("snaps", "SNAPS"),
           ("vm", "VM"))


class StoragePane(Vertical):
    """Pools, images (size, used, snapshots), the VM of each image, cluster health."""

    DEFAULT_CSS = """
    StoragePane {
        height: 1fr;
        background: $surface;
    }
    StoragePane > #storage-health {
        height: auto;
        padding: 0 1;
    }
    StoragePane > DataTable {
        height: 1fr;
        scrollbar-size-vertical: 1;
    }
    StoragePane > #storage-status {
        height: 1;
        padding: 0 1;
        color: $text-muted;
    }
    StoragePane > #storage-status.-error {
        color: $error;
    }
    """

    BINDINGS = [
        Binding("r", "refresh_storage", "Refresh storage", id="storage.refresh"),
    ]

    class ReportLoaded(Message):
        """A storage report was read."""

        def __init__(self, report: StorageReport) -> None:
            super().__init__()
            self.report = report

    class ReportFailed(Message):
        """Reading the cluster failed; ``error`` is one line."""

        def __init__(self, error: str) -> None:
            super().__init__()
            self.error = error

    def __init__(self, load: StorageLoader, *, interval: float = 10.0,
                 id: str | None = None,  # noqa: A002 - Textual API
                 classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self._load = load
        self.interval = interval
        self.report: StorageReport | None = None
        self.error: str | None = None
        self._timer: Timer | None = None
        self._updated: float | None = None

    def compose(self) -> ComposeResult:
        yield Static(Text("Ceph: reading the cluster…", style="dim"), id="storage-health")
        yield SteadyDataTable(id="storage-images", cursor_type="row", show_row_labels=False)
        yield Static("", id="storage-status")

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        for key, label in COLUMNS:
            table.add_column(label, key=key)
        self.refresh_report()

    # -- reading ------------------------------------------------------------------

    def action_refresh_storage(self) -> None:
        self.refresh_report()

    def refresh_report(self) -> None:
        """Read the cluster now (a read in progress is replaced)."""
        if self._timer is not None:
            self._timer.stop()
            self._timer = None
        self._status("reading the cluster…", error=False)
        self._read_report()

    @work(exclusive=True, group="storage-report", exit_on_error=False)
    async def _read_report(self) -> None:
        try:
            report = await self._load()
        except HypercoreError as exc:
            self.post_message(self.ReportFailed(str(exc)))
        except Exception as exc:  # noqa: BLE001 - the pane must survive anything
            self.post_message(self.ReportFailed(f"internal error: {type(exc).__name__}: {exc}"))
        else:
            self.post_message(self.ReportLoaded(report))

    def _schedule(self) -> None:
        if self._timer is not None:
            self._timer.stop()
        self._timer = self.set_timer(self.interval, self._poll)

    def _poll(self) -> None:
        self._timer = None
        if not self.display or not self.is_on_screen:
            self._schedule()  # hidden: look again later, read nothing now
            return
        self._read_report()

    # -- showing ------------------------------------------------------------------

    @on(ReportLoaded)
    def _show_report(self, message: ReportLoaded) -> None:
        self.report, self.error = message.report, None
        self._updated = time.time()
        self.query_one("#storage-health", Static).update(health_text(message.report))
        self._fill(message.report)
        count = len(message.report.images)
        missing = "".join(f"; missing: {image} (VM {vm})"
                          for vm, image in message.report.missing)
        self._status(f"{count} image(s), updated {time.strftime('%H:%M:%S')}{missing}",
                     error=bool(message.report.missing))
        self._schedule()

    @on(ReportFailed)
    def _show_failure(self, message: ReportFailed) -> None:
        self.error = message.error
        health = Text("Ceph ", style="bold")
        health.append("unavailable", style="bold red")
        self.query_one("#storage-health", Static).update(health)
        stale = ""
        if self._updated is not None:
            stale = f" (table from {time.strftime('%H:%M:%S', time.localtime(self._updated))})"
        self._status(f"✗ {message.error}{stale}", error=True)
        self._schedule()

    def _status(self, text: str, *, error: bool) -> None:
        status = self.query_one("#storage-status", Static)
        status.update(safe(text, limit=400))
        status.set_class(error, "-error")

    def _fill(self, report: StorageReport) -> None:
        table = self.query_one(DataTable)
        selected = None
        if table.row_count and table.cursor_row >= 0:
            selected = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        table.clear()
        for row in report.images:
            table.add_row(*image_cells(row), key=row.spec)
        if selected is not None:
            for index, row in enumerate(report.images):
                if row.spec == selected:
                    table.move_cursor(row=index)
                    break


def health_text(report: StorageReport) -> Text:
    """``Ceph HEALTH_OK · 1/1 OSDs up · 1 mon · capacity …``."""
    st = report.status
    text = Text("Ceph ", style="bold")
    text.append(st.health, style=HEALTH_STYLE.get(st.health, "bold"))
    text.append(f" · {st.osds_up}/{st.osds} OSDs up · {st.quorum}/{st.mons} mon")
    if st.bytes_total:
        text.append(f" · {format_bytes(st.bytes_used)} of {format_bytes(st.bytes_total)}")
    provisioned = sum(p.provisioned for p in report.pools)
    text.append(f" · {len(report.pools)} pool(s), {format_bytes(provisioned)} provisioned")
    for check in st.checks[:2]:
        text.append("\n")
        text.append_text(safe(check, "yellow", limit=200))
    return text


def image_cells(row: ImageRow) -> tuple[Text, ...]:
    name = safe(row.spec, "bold", limit=48)
    if row.parent:
        name.append_text(safe(f" ← {row.parent}", "dim", limit=40))
    vms = Text()
    for index, vm in enumerate(row.vms):
        symbol, style = VM_STATE_LOOK.get(vm.state, ("?", ""))
        if index:
            vms.append(", ")
        vms.append(f"{symbol} ", style=style)
        vms.append_text(safe(vm.name, limit=40))
    if not row.vms:
        vms.append("open by another client" if row.clients else "—", style="dim")
    return (
        name,
        Text(format_bytes(row.size), justify="right"),
        Text(format_bytes(row.used), justify="right"),
        Text(str(len(row.snapshots)), justify="right"),
        vms,
    )
