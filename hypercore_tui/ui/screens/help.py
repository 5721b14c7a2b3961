"""``?``: every key of the dashboard with what it does (built from the live bindings).

The dashboard builds the help once and shows the same screen again at each ``?``
(:meth:`HelpScreen.show_rows` changes its text when the keys changed), and the dimmed
dashboard behind it is rendered once per change of the dashboard (:class:`StillBackdrop`).
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

from hypercore_tui.ui.screens.backdrop import StillBackdrop

HelpRow = tuple[str, str]  # (keys as displayed, description)

#: The text's width inside the box (64 columns less the border, the padding, a
#: scroll bar and a margin).
TEXT_WIDTH = 54


def help_text(rows: Sequence[HelpRow], width: int = TEXT_WIDTH) -> Text:
    """Two columns laid out once, as plain lines: a Rich table here was measured and
    rendered again on every layout, most of the cost of opening the help."""
    key_width = max((len(keys) for keys, _ in rows), default=0)
    indent = " " * (key_width + 2)
    text = Text(no_wrap=True, overflow="crop")
    for number, (keys, description) in enumerate(rows):
        if number:
            text.append("\n")
        lines = textwrap.wrap(description, max(width - key_width - 2, 20)) or [""]
        text.append(keys.ljust(key_width + 2), style="bold")
        text.append(lines[0])
        for line in lines[1:]:
            text.append("\n" + indent + line)
    return text


class HelpScreen(StillBackdrop, ModalScreen[None]):
    BINDINGS = [
        Binding("escape,question_mark,q", "close", "Close help", id="help.close"),
    ]

    DEFAULT_CSS = """
    HelpScreen {
        align: center middle;
    }
    HelpScreen > VerticalScroll {
        width: 64;
        max-width: 100%;
        height: auto;
        max-height: 100%;
        border: thick $accent;
        background: $surface;
        padding: 0 1;
    }
    """

    def __init__(self, rows: Sequence[HelpRow]) -> None:
        super().__init__()
        self.rows = list(rows)
        self._body = Static(help_text(self.rows))

    def compose(self) -> ComposeResult:
        with VerticalScroll():
            yield Static(Text("Keys (Esc closes; ctrl+p searches all commands)", style="bold"))
            yield self._body

    def show_rows(self, rows: Sequence[HelpRow]) -> None:
        """Shown again: with these keys (the text changes only if they did), from the
        top as when it was new."""
        rows = list(rows)
        if rows != self.rows:
            self.rows = rows
            self._body.update(help_text(rows))
        self.query_one(VerticalScroll).scroll_home(animate=False, immediate=True)

    def action_close(self) -> None:
        self.dismiss(None)
