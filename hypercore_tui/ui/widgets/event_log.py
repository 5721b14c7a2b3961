"""The event log: QMP events, state changes and action results of every VM."""

from __future__ import annotations

import time

from rich.text import Text
from textual.widgets import RichLog

from hypercore_tui.ui.text import safe

EVENT_STYLES = {
    "CRASHED": "bold red", "ERROR": "red", "SHUTDOWN": "cyan", "POWERDOWN": "cyan",
    "STOP": "yellow", "RESUME": "green", "RESET": "magenta", "DONE": "green",
    "IO_ERROR": "bold yellow",
}


class EventLog(RichLog):
    """Newest at the bottom; at most ``max_lines`` kept. Guest text is shown literally."""

    DEFAULT_CSS = """
    EventLog {
        background: $surface;
        scrollbar-size-vertical: 1;
    }
    """

    def __init__(self, *, id: str | None = None) -> None:  # noqa: A002 - Textual API
        # min_width: RichLog wraps at 78 columns at least, wider than the pane on most
        # terminals: the end of long lines was cut off (past the right edge).
        super().__init__(id=id, max_lines=1000, markup=False, highlight=False, wrap=True,
                         min_width=20)

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
        self.write(line)
