"""A pasted host path: copy the file into the VM, into the shared folder, or paste text."""

from __future__ import annotations

from pathlib import Path

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Static

from hypercore_tui.ui.text import safe

CHOICES = ("vm", "shared", "text")


class PasteFileScreen(ModalScreen[str | None]):
    """Dismisses with ``"vm"``, ``"shared"``, ``"text"`` or None (cancelled)."""

    BINDINGS = [
        Binding("v", "choose('vm')", "Into the VM", id="paste.vm"),
        Binding("s", "choose('shared')", "Into the shared folder", id="paste.shared"),
        Binding("t", "choose('text')", "Paste as text", id="paste.text"),
        Binding("escape", "choose('')", "Cancel", id="paste.cancel"),
    ]

    DEFAULT_CSS = """
    PasteFileScreen {
        align: center middle;
    }
    PasteFileScreen > Vertical {
        width: 72;
        max-width: 100%;
        height: auto;
        border: thick $accent;
        background: $surface;
        padding: 0 1;
    }
    PasteFileScreen Horizontal {
        height: auto;
        margin-top: 1;
    }
    PasteFileScreen Button {
        margin-right: 1;
    }
    """

    def __init__(self, path: Path, vm_name: str | None) -> None:
        super().__init__()
        self.path, self.vm_name = path, vm_name

    def compose(self) -> ComposeResult:
        with Vertical():
            title = Text("You pasted a file on this host:", style="bold")
            yield Static(title)
            yield Static(safe(self.path, limit=400))
            with Horizontal():
                if self.vm_name is not None:
                    label = Text("Copy into ")
                    label.append_text(safe(self.vm_name, limit=24))
                    label.append(" (v)")
                    yield Button(label, variant="primary", id="choice-vm", compact=True)
                yield Button("Into shared folder (s)", id="choice-shared", compact=True)
                yield Button("Paste as text (t)", id="choice-text", compact=True)
                yield Button("Cancel", id="choice-", compact=True)

    def action_choose(self, choice: str) -> None:
        if choice == "vm" and self.vm_name is None:
            return
        self.dismiss(choice if choice in CHOICES else None)

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        self.action_choose((event.button.id or "").removeprefix("choice-"))
