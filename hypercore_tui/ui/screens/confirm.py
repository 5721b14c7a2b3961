"""A confirmation for a destructive action: names the VM (and snapshot), Cancel focused."""

from __future__ import annotations

from dataclasses import dataclass

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Checkbox, Static

from hypercore_tui.ui.screens.backdrop import StillBackdrop


@dataclass(frozen=True)
class Confirmation:
    option: bool = False  # the state of the optional checkbox


class ConfirmScreen(StillBackdrop, ModalScreen[Confirmation | None]):
    """Dismisses with a :class:`Confirmation`, or None when cancelled."""

    BINDINGS = [
        Binding("y", "confirm", "Confirm", id="confirm.yes"),
        Binding("escape,n", "cancel", "Cancel", id="confirm.cancel"),
    ]

    DEFAULT_CSS = """
    ConfirmScreen {
        align: center middle;
    }
    ConfirmScreen > #dialog {
        width: 64;
        max-width: 100%;
        height: auto;
        border: thick $error;
        background: $surface;
        padding: 0 1;
    }
    ConfirmScreen.-mild > #dialog {
        border: thick $warning;
    }
    ConfirmScreen #confirm-title {
        text-style: bold;
        margin-bottom: 1;
    }
    ConfirmScreen #confirm-body {
        margin-bottom: 1;
    }
    ConfirmScreen #confirm-buttons {
        height: auto;
        align-horizontal: right;
    }
    ConfirmScreen Button {
        margin-left: 2;
    }
    """

    def __init__(self, title: Text, body: Text, confirm_label: str, *,
                 option: str | None = None, option_default: bool = True,
                 mild: bool = False) -> None:
        super().__init__(classes="-mild" if mild else None)
        self.title_text, self.body_text = title, body
        self.confirm_label = confirm_label
        self.option_label, self.option_default = option, option_default

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Static(self.title_text, id="confirm-title")
            yield Static(self.body_text, id="confirm-body")
            if self.option_label is not None:
                yield Checkbox(Text(self.option_label), self.option_default, id="confirm-option")
            with Horizontal(id="confirm-buttons"):
                yield Button(Text(f"{self.confirm_label} (y)"), variant="error",
                             id="confirm-yes")
                yield Button(Text("Cancel (Esc)"), id="confirm-no")

    def on_mount(self) -> None:
        self.query_one("#confirm-no", Button).focus()

    def _option(self) -> bool:
        if self.option_label is None:
            return False
        return self.query_one("#confirm-option", Checkbox).value

    def action_confirm(self) -> None:
        self.dismiss(Confirmation(self._option()))

    def action_cancel(self) -> None:
        self.dismiss(None)

    @on(Button.Pressed, "#confirm-yes")
    def _yes(self) -> None:
        self.action_confirm()

    @on(Button.Pressed, "#confirm-no")
    def _no(self) -> None:
        self.action_cancel()
