"""The Clipboard tab: the sync's VMs (one line each) and the hub's history, newest first.

Clipboard contents are hostile: the previews (already escaped by the hub) are shown as
plain text, never as markup. Enter on an entry makes it current again (every VM gets
it); ``t`` writes it into the VM selected in the VM list.
"""

from __future__ import annotations

import time
from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.message import Message
from textual.widgets import DataTable, Static

from hypercore_tui.core.sizes import format_bytes
from hypercore_tui.ui.backend import ClipSyncView
from hypercore_tui.ui.text import safe
from hypercore_tui.ui.widgets.steady_scroll import SteadyDataTable

OFF_TEXT = ("The clipboard sync is off.\n\n"
            "C starts the clipboard sync; or run `hypercore clip sync` (in a tmux window, "
            "say): this dashboard then shows that one.\n\n"
            "While it runs, a copy in any VM reaches every other VM, and text pasted into "
            "the dashboard goes to all of them.")
COLUMNS = ("id", "time", "source", "kind", "size", "preview")


class ClipPane(Vertical):
    """Shows a :class:`ClipSyncView`; asks for re-pushes with messages."""

    DEFAULT_CSS = """
    ClipPane > #clip-status {
        height: auto;
        max-height: 12;
        padding: 0 1;
    }
    ClipPane > #clip-table {
        height: 1fr;
    }
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("t", "push_to", "Entry to the selected VM", id="clip.push-to"),
    ]

    class Again(Message):
        """Enter on an entry: make it current again (every VM)."""

        def __init__(self, entry_id: int) -> None:
            super().__init__()
            self.entry_id = entry_id

    class PushTo(Message):
        """``t`` on an entry: write it into the VM selected in the VM list."""

        def __init__(self, entry_id: int) -> None:
            super().__init__()
            self.entry_id = entry_id

    def __init__(self, *, id: str | None = None) -> None:  # noqa: A002 - Textual API
        super().__init__(id=id)
        self.view = ClipSyncView()
        self.status = Static(OFF_TEXT, id="clip-status", markup=False)
        self.table: DataTable[Text | str] = SteadyDataTable(id="clip-table", cursor_type="row",
                                                      zebra_stripes=True)

    def compose(self) -> ComposeResult:
        yield self.status
        yield self.table

    def on_mount(self) -> None:
        for column in COLUMNS:
            self.table.add_column(column, key=column)
        self.table.display = False

    def show(self, view: ClipSyncView) -> None:
        self.view = view
        self.status.update(self.status_text(view))
        self.table.display = view.running
        cursor = self.selected_entry()
        self.table.clear()
        for entry in view.entries:
            self.table.add_row(
                str(entry.id), time.strftime("%H:%M:%S", time.localtime(entry.at)),
                safe(entry.source, limit=80), safe(entry.kind, limit=20),
                format_bytes(entry.size), safe(entry.preview, limit=200), key=str(entry.id))
        if cursor is not None and str(cursor) in self.table.rows:
            self.table.move_cursor(row=self.table.get_row_index(str(cursor)))

    @staticmethod
    def status_text(view: ClipSyncView) -> Text:
        if not view.running:
            return Text(OFF_TEXT)
        where = ("runs in this dashboard (C stops it)" if view.here else
                 f"runs in pid {view.pid} (hypercore clip sync)")
        text = Text()
        text.append(f"clipboard sync {where}", style="bold")
        if not view.vms:
            text.append("\nno VMs yet", style="dim")
        for vm in (*view.vms, *view.hosts):
            text.append("\n")
            text.append_text(safe(vm.name, "bold", limit=64))
            text.append(f": {vm.state}" if vm.mode == "host" else f": {vm.mode}, {vm.state}")
            if vm.note:
                text.append(" (")
                text.append_text(safe(vm.note, "dim", limit=120))
                text.append(")")
        text.append("\nEnter: to every VM · t: to the selected VM", style="dim")
        return text

    def selected_entry(self) -> int | None:
        table = self.table
        if not table.row_count or not self.view.running:
            return None
        try:
            key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        except Exception:  # noqa: BLE001 - no row under the cursor
            return None
        return int(key) if key is not None else None

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        if event.row_key.value is not None:
            self.post_message(self.Again(int(event.row_key.value)))

    def action_push_to(self) -> None:
        entry = self.selected_entry()
        if entry is None:
            self.notify("No clipboard entry selected", severity="warning", markup=False)
            return
        self.post_message(self.PushTo(entry))
