"""Ask for a snapshot's tag (empty: automatic) and whether to leave the RAM out."""

from __future__ import annotations

from dataclasses import dataclass

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Checkbox, Input, Static

from hypercore_tui.core.errors import InvalidInput
from hypercore_tui.core.names import validate_snapshot_tag
from hypercore_tui.ui.text import safe


@dataclass(frozen=True)
class SnapshotRequest:
    tag: str | None
    disk_only: bool


class SnapshotTagScreen(ModalScreen[SnapshotRequest | None]):
    BINDINGS = [Binding("escape", "cancel", "Cancel", id="snapshot-tag.cancel")]

    DEFAULT_CSS = """
    SnapshotTagScreen {
        align: center middle;
    }
    SnapshotTagScreen > Vertical {
        width: 60;
        max-width: 100%;
        height: auto;
        border: thick $accent;
        background: $surface;
        padding: 0 1;
    }
    SnapshotTagScreen #tag-error {
        color: $error;
        height: auto;
    }
    """

    def __init__(self, vm_name: str) -> None:
        super().__init__()
        self.vm_name = vm_name

    def compose(self) -> ComposeResult:
        with Vertical():
            title = Text("Snapshot of ", style="bold")
            title.append_text(safe(self.vm_name, "bold"))
            yield Static(title)
            yield Static(Text("Tag (empty: automatic). Enter takes it, Esc cancels.",
                              style="dim"))
            yield Input(placeholder="e.g. before-upgrade", id="tag", compact=True)
            yield Checkbox("Disk only (no RAM state; the guest keeps running)", False,
                           id="disk-only", compact=True)
            yield Static("", id="tag-error", markup=False)

    @on(Input.Submitted, "#tag")
    def _submit(self, event: Input.Submitted) -> None:
        event.stop()
        tag = event.value.strip() or None
        if tag is not None:
            try:
                validate_snapshot_tag(tag)
            except InvalidInput as exc:
                self.query_one("#tag-error", Static).update(safe(str(exc), limit=200))
                return
        self.dismiss(SnapshotRequest(tag, self.query_one("#disk-only", Checkbox).value))

    def action_cancel(self) -> None:
        self.dismiss(None)
