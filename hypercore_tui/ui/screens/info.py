"""A read-only panel of facts to copy (console command, display socket, ssh tunnel)."""

from __future__ import annotations

from collections.abc import Sequence

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Static

from hypercore_tui.ui.text import safe

InfoRow = tuple[str, str]  # (label, value: shown literally, wrapped, never cut)


class InfoScreen(ModalScreen[str | None]):
    """Dismisses with ``"copy"`` (copy the main command) or None."""

    BINDINGS = [
        Binding("escape,q", "close", "Close", id="info.close"),
        Binding("y", "copy", "Copy command", id="info.copy"),
    ]

    DEFAULT_CSS = """
    InfoScreen {
        align: center middle;
    }
    InfoScreen > #info {
        width: 90;
        max-width: 100%;
        height: auto;
        max-height: 100%;
        border: thick $accent;
        background: $surface;
        padding: 0 1;
    }
    InfoScreen #info-title {
        text-style: bold;
        margin-bottom: 1;
    }
    InfoScreen #info-buttons {
        height: auto;
        margin-top: 1;
        align-horizontal: right;
    }
    InfoScreen Button {
        margin-left: 2;
    }
    """

    def __init__(self, title: Text, rows: Sequence[InfoRow], *,
                 copy_text: str | None = None) -> None:
        super().__init__()
        self.title_text, self.rows = title, list(rows)
        self.copy_text = copy_text

    def compose(self) -> ComposeResult:
        with Vertical(id="info"):
            yield Static(self.title_text, id="info-title")
            body = Text()
            for index, (label, value) in enumerate(self.rows):
                if index:
                    body.append("\n")
                body.append(f"{label:<9}", style="dim")
                body.append_text(safe(value, limit=1000))
            yield Static(body, id="info-body")
            with Horizontal(id="info-buttons"):
                if self.copy_text:
                    yield Button("Copy command (y)", id="info-copy", compact=True)
                yield Button("Close (Esc)", id="info-close", compact=True)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "copy":
            return bool(self.copy_text)
        return True

    def action_close(self) -> None:
        self.dismiss(None)

    def action_copy(self) -> None:
        self.dismiss("copy")

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        actions = {"info-copy": "copy"}
        self.dismiss(actions.get(event.button.id or ""))
