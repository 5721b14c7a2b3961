"""The keyboard layout of the selected VM's guest, for its keyboard mode and typed text
(one key each: us, de, fr, gb)."""

from __future__ import annotations

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Static

from hypercore_tui.core.keyboard import LAYOUTS
from hypercore_tui.ui.text import safe

#: The key that picks each layout.
KEYS = {"us": "u", "de": "d", "fr": "f", "gb": "g"}


class KeyboardLayoutScreen(ModalScreen[str | None]):
    """Dismisses with the layout picked, or None (cancelled)."""

    BINDINGS = [
        *(Binding(key, f"choose('{name}')", LAYOUTS[name].title, id=f"layout.{name}")
          for name, key in KEYS.items()),
        Binding("escape", "choose('')", "Cancel", id="layout.cancel"),
    ]

    DEFAULT_CSS = """
    KeyboardLayoutScreen {
        align: center middle;
    }
    KeyboardLayoutScreen > Vertical {
        width: 72;
        max-width: 100%;
        height: auto;
        border: thick $accent;
        background: $surface;
        padding: 0 1;
    }
    KeyboardLayoutScreen Horizontal {
        height: auto;
        margin-top: 1;
    }
    KeyboardLayoutScreen Button {
        margin-right: 1;
    }
    """

    def __init__(self, vm_name: str, current: str) -> None:
        super().__init__()
        self.vm_name, self.current = vm_name, current

    def compose(self) -> ComposeResult:
        with Vertical():
            title = Text("Keyboard layout of ", style="bold")
            title.append_text(safe(self.vm_name, "bold", limit=40))
            yield Static(title, id="layout-title")
            yield Static(Text("The guest's own layout: keys and typed text are sent as that "
                              "keyboard's keys (dead keys typed as such).", style="dim"))
            lines = []
            for name, layout in LAYOUTS.items():
                now = name == self.current
                line = Text(f"{name:<4}", style="bold" if now else "")
                line.append(layout.title, style="" if now else "dim")
                if now:
                    line.append("  (now)", style="bold")
                lines.append(line)
            yield Static(Text("\n").join(lines), id="layout-list")
            with Horizontal():
                for name, key in KEYS.items():
                    yield Button(f"{name} ({key})", id=f"layout-{name}", compact=True,
                                 variant="primary" if name == self.current else "default")
                yield Button("Cancel", id="layout-", compact=True)

    def action_choose(self, choice: str) -> None:
        self.dismiss(choice if choice in LAYOUTS else None)

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        self.action_choose((event.button.id or "").removeprefix("layout-"))
