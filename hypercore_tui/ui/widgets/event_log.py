"""The event log: QMP events, state changes and action results of every VM."""

from __future__ import annotations

import time
from collections import deque

from rich.text import Text
from textual import events

from hypercore_tui.ui.text import safe
from hypercore_tui.ui.widgets.steady_scroll import SteadyRichLog

EVENT_STYLES = {
    "CRASHED": "bold red", "ERROR": "red", "SHUTDOWN": "cyan", "POWERDOWN": "cyan",
    "STOP": "yellow", "RESUME": "green", "RESET": "magenta", "DONE": "green",
    "IO_ERROR": "bold yellow",
}

#: Entries kept (and lines shown: a long entry wraps into several).
MAX_LINES = 1000


class EventLog(SteadyRichLog):
    """Newest at the bottom; at most :data:`MAX_LINES` kept. Guest text is shown literally.

    Lines wrap at the pane's width. RichLog renders a line once, at the width it has
    when the line is written; the log lives in a tab that is hidden most of the time,
    and a hidden widget is 0 columns wide (RichLog then wraps at its ``min_width``,
    20 columns here). So the entries are kept, written only while the log has a width,
    and written again whenever that width changes (a resize, the tab shown again).
    """

    DEFAULT_CSS = """
    EventLog {
        background: $surface;
        scrollbar-size-vertical: 1;
        scrollbar-gutter: stable;
    }
    """

    def __init__(self, *, id: str | None = None) -> None:  # noqa: A002 - Textual API
        super().__init__(id=id, max_lines=MAX_LINES, markup=False, highlight=False, wrap=True,
                         min_width=1)
        self._entries: deque[Text] = deque(maxlen=MAX_LINES)
        self._unwritten = 0  # the newest entries, not written yet
        self._width = 0  # the width the written lines were wrapped at

    @property
    def entries(self) -> list[Text]:
        """The log's entries, oldest first (whether shown yet or not)."""
        return list(self._entries)

    def add(self, name: str | None, event: str, detail: str, timestamp: float | None = None
            ) -> None:
        stamp = time.strftime("%H:%M:%S", time.localtime(timestamp or time.time()))
        line = Text(no_wrap=False)
        line.append(stamp + " ", style="dim")
        if name:
            line.append_text(safe(name, "bold", limit=64))
            line.append(" ")
        line.append(event, style=EVENT_STYLES.get(event, "blue"))
        if detail:
            line.append(" ")
            line.append_text(safe(detail, limit=300))
        self._entries.append(line)
        self._unwritten = min(self._unwritten + 1, len(self._entries))
        self._catch_up()

    def _catch_up(self) -> None:
        """Write what is not written yet at the current width (everything again when the
        width changed); nothing while the log is hidden (0 columns wide)."""
        width = self.scrollable_content_region.width
        if width <= 0:
            return
        if width != self._width:
            self.clear()
            self._width, self._unwritten = width, len(self._entries)
        if not self._unwritten:
            return
        for index in range(len(self._entries) - self._unwritten, len(self._entries)):
            self.write(self._entries[index], width=width, scroll_end=False)
        self._unwritten = 0
        if self.auto_scroll:
            self.scroll_end(animate=False, immediate=False, x_axis=False)

    def on_resize(self, event: events.Resize) -> None:
        self._catch_up()

    def on_show(self, event: events.Show) -> None:
        self._catch_up()
