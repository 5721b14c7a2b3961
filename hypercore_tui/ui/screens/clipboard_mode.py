"""The selected VM's clipboard mode: sync, push-only or off (one key each)."""

from __future__ import annotations

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Static

from hypercore_tui.core.models import ClipboardMode
from hypercore_tui.ui.text import safe

#: What each mode means, and the key that picks it.
MODES: dict[ClipboardMode, tuple[str, str]] = {
    ClipboardMode.SYNC: ("s", "follows the shared clipboard both ways"),
    ClipboardMode.PUSH_ONLY: ("p", "the shared clipboard is written into it, never read"),
    ClipboardMode.OFF: ("o", "never read, never written"),
}


class ClipboardModeScreen(ModalScreen[ClipboardMode | None]):
    """Dismisses with the mode picked, or None (cancelled)."""

    BINDINGS = [
        Binding("s", "choose('sync')", "Sync", id="clipmode.sync"),
        Binding("p", "choose('push-only')", "Push-only", id="clipmode.push-only"),
        Binding("o", "choose('off')", "Off", id="clipmode.off"),
        Binding("escape", "choose('')", "Cancel", id="clipmode.cancel"),
    ]

    DEFAULT_CSS = """
    ClipboardModeScreen {
        align: center middle;
    }
    ClipboardModeScreen > Vertical {
        width: 72;
        max-width: 100%;
        height: auto;
        border: thick $accent;
        background: $surface;
        padding: 0 1;
    }
    ClipboardModeScreen Horizontal {
        height: auto;
        margin-top: 1;
    }
    ClipboardModeScreen Button {
        margin-right: 1;
    }
    """

    def __init__(self, vm_name: str, current: ClipboardMode) -> None:
        super().__init__()
        self.vm_name, self.current = vm_name, current

    def compose(self) -> ComposeResult:
        with Vertical():
            title = Text("Clipboard of ", style="bold")
            title.append_text(safe(self.vm_name, "bold", limit=40))
            yield Static(title, id="clipmode-title")
            lines = []
            for mode, (_, meaning) in MODES.items():
                now = mode is self.current
                line = Text(f"{mode.value:<11}", style="bold" if now else "")
                line.append(meaning, style="" if now else "dim")
                if now:
                    line.append("  (now)", style="bold")
                lines.append(line)
            yield Static(Text("\n").join(lines), id="clipmode-modes")
            with Horizontal():
                for mode, (key, _) in MODES.items():
                    yield Button(f"{mode.value.capitalize()} ({key})", id=f"mode-{mode.value}",
                                 variant="primary" if mode is self.current else "default",
                                 compact=True)
                yield Button("Cancel", id="mode-", compact=True)

    def action_choose(self, choice: str) -> None:
        try:
            self.dismiss(ClipboardMode(choice))
        except ValueError:
            self.dismiss(None)

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        self.action_choose((event.button.id or "").removeprefix("mode-"))
