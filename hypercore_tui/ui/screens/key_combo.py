"""Ask for keys a terminal cannot send (``ctrl+alt+f2``, ``alt+sysrq``...), named the way
the keyboard mode names them, several separated by spaces; checked against the VM's
layout before the dialog closes."""

from __future__ import annotations

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Static

from hypercore_tui.core import keyboard
from hypercore_tui.core.errors import InvalidInput
from hypercore_tui.ui.text import safe


class KeyComboScreen(ModalScreen[list[str] | None]):
    """Dismisses with the keys to send, in order, or None (cancelled)."""

    BINDINGS = [Binding("escape", "cancel", "Cancel", id="keys.cancel")]

    DEFAULT_CSS = """
    KeyComboScreen {
        align: center middle;
    }
    KeyComboScreen > Vertical {
        width: 72;
        max-width: 100%;
        height: auto;
        border: thick $accent;
        background: $surface;
        padding: 0 1;
    }
    KeyComboScreen #keys-error {
        color: $error;
        height: auto;
    }
    """

    def __init__(self, vm_name: str, layout: str) -> None:
        super().__init__()
        self.vm_name, self.keymap = vm_name, layout

    def compose(self) -> ComposeResult:
        with Vertical():
            title = Text("Send keys to ", style="bold")
            title.append_text(safe(self.vm_name, "bold", limit=40))
            yield Static(title)
            yield Static(Text("Keys separated by spaces, modifiers joined with +: "
                              "ctrl alt shift altgr meta; names: f1-f12 enter tab escape "
                              "backspace delete insert home end pageup pagedown up down "
                              "left right space print pause menu, or one character. "
                              "Enter sends, Esc cancels.", style="dim"))
            yield Input(placeholder="e.g. ctrl+alt+f2", id="keys", compact=True)
            yield Static("", id="keys-error", markup=False)

    @on(Input.Submitted, "#keys")
    def _submit(self, event: Input.Submitted) -> None:
        event.stop()
        keys = event.value.split()
        if not keys:
            return
        keymap = keyboard.layout(self.keymap)
        try:
            for key in keys:
                keyboard.key_chords(key, keymap)
        except InvalidInput as exc:
            self.query_one("#keys-error", Static).update(safe(str(exc), limit=200))
            return
        self.dismiss(keys)

    def action_cancel(self) -> None:
        self.dismiss(None)
