"""One graph row of the detail pane: name, trend line, current value and scale."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.widgets import Static

from hypercore_tui.ui.widgets.readout import Readout
from hypercore_tui.ui.widgets.trend import TrendLine


class MetricRow(Horizontal):
    """``CPU  ▁▂▃▅▇█▇▅  12% /200%``: label, trend, value; the trend takes the rest."""

    DEFAULT_CSS = """
    MetricRow {
        height: auto;
    }
    MetricRow > .metric--label {
        width: 8;
        height: 100%;
        content-align-vertical: middle;
        color: $text-muted;
    }
    MetricRow > TrendLine {
        width: 1fr;
    }
    MetricRow > Readout {
        width: 17;
        height: 100%;
        content-align-vertical: middle;
        padding-left: 1;
    }
    """

    def __init__(self, label: str, *, id: str | None = None) -> None:  # noqa: A002 - Textual API
        super().__init__(id=id)
        self._label = label

    def compose(self) -> ComposeResult:
        yield Static(self._label, classes="metric--label", markup=False)
        yield TrendLine([])
        yield Readout(classes="metric--value")

    def show(self, values: list[float], scale: float, value: Text) -> None:
        trend = self.query_one(TrendLine)
        trend.scale = scale
        trend.data = values  # a fresh list each time: the reactive sees a new value
        self.query_one(Readout).show(value)

    @property
    def trend(self) -> TrendLine:
        return self.query_one(TrendLine)
