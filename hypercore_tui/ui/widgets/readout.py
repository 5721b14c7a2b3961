"""A fixed-size piece of text that changes often (a value, a status line).

``Static.update`` asks for a new layout of the whole screen each time (the text
might need another size): once a second per value, that is most of the dashboard's
CPU. A ``Readout`` has its size from CSS, so a new value only repaints itself, and
an unchanged value does nothing at all.
"""

from __future__ import annotations

from rich.text import Text
from textual.app import RenderResult
from textual.reactive import reactive
from textual.widget import Widget


class Readout(Widget):
    DEFAULT_CSS = """
    Readout {
        height: 1;
    }
    """

    content: reactive[Text] = reactive(Text, layout=False)

    def __init__(self, content: Text | None = None, *, id: str | None = None,  # noqa: A002
                 classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        if content is not None:
            self.set_reactive(Readout.content, content)

    def show(self, content: Text) -> None:
        """Show ``content`` (a repaint only when it differs from what is shown)."""
        if content != self.content:
            self.content = content

    def render(self) -> RenderResult:
        return self.content
