"""The bar that says the keyboard mode is on: where the keys go and how to leave. It takes
the key bar's place while the mode is on (the dashboard's keys do nothing then)."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

from hypercore_tui.ui.text import safe


class KeyboardBar(Static):
    DEFAULT_CSS = """
    KeyboardBar {
        dock: bottom;
        height: 1;
        display: none;
        background: $warning;
        color: $text;
        text-style: bold;
        padding: 0 1;
    }
    KeyboardBar.-on {
        display: block;
    }
    """

    def show_on(self, name: str, layout: str, leave: str) -> None:
        """The mode is on for VM ``name`` with ``layout``; ``leave``: the key that ends it."""
        line = Text("Keyboard → ")
        line.append_text(safe(name, limit=40))
        line.append(f" ({layout}) · every key goes to the VM · {leave} leaves")
        self.update(line)
        self.add_class("-on")

    def show_off(self) -> None:
        self.remove_class("-on")
        self.update("")
