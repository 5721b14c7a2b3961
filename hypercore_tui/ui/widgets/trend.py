"""A sparkline on a fixed scale, one column per sample, newest on the right.

Textual's ``Sparkline`` stretches its data over the whole width and scales it
between the data's own minimum and maximum: a VM at a steady 3 % CPU would look
as busy as one at 100 %. ``TrendLine`` keeps Sparkline's ``data`` reactive and
colour component classes, but draws each sample in its own column against an
explicit ``scale`` (100 % per vCPU, the VM's RAM, the window's peak rate), and
leaves the columns before the first sample empty. Any height works.
"""

from __future__ import annotations

from rich.color import Color as RichColor
from rich.console import Console, ConsoleOptions, RenderResult
from rich.segment import Segment
from rich.style import Style
from textual.app import RenderResult as WidgetRenderResult
from textual.reactive import reactive
from textual.renderables._blend_colors import blend_colors
from textual.widgets import Sparkline

BARS = "▁▂▃▄▅▆▇█"


class ScaledBars:
    """Rich renderable: ``values`` right-aligned in ``width`` columns, ``height`` rows."""

    def __init__(self, values: list[float], *, scale: float, width: int, height: int,
                 low: RichColor, high: RichColor, empty: Style) -> None:
        self.values = values[-width:] if width > 0 else []
        self.scale = scale if scale > 0 else 1.0
        self.width, self.height = max(width, 0), max(height, 1)
        self.low, self.high, self.empty = low, high, empty

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        steps = len(BARS) * self.height
        pad = self.width - len(self.values)
        levels: list[tuple[int, Style]] = []
        for value in self.values:
            ratio = min(max(value / self.scale, 0.0), 1.0)
            level = int(round(ratio * steps))
            if value > 0 and level == 0:
                level = 1  # any activity shows
            style = Style(color=blend_colors(self.low, self.high, ratio))
            levels.append((level, style))
        for row in reversed(range(self.height)):
            low_edge = row * len(BARS)
            if pad > 0:
                yield Segment(" " * pad)
            for level, style in levels:
                if row == 0 and level == 0:
                    yield Segment(BARS[0], self.empty)  # a known zero: a baseline
                elif level <= low_edge:
                    yield Segment(" ")
                elif level >= low_edge + len(BARS):
                    yield Segment(BARS[-1], style)
                else:
                    yield Segment(BARS[level - low_edge - 1], style)
            if row:
                yield Segment.line()


class TrendLine(Sparkline):
    """A metric's recent history on a fixed scale (assign fresh lists to ``data``)."""

    DEFAULT_CSS = """
    TrendLine {
        height: 1;
        min-width: 8;
    }
    TrendLine > .sparkline--max-color {
        color: $error;
    }
    TrendLine > .sparkline--min-color {
        color: $success;
    }
    """

    scale: reactive[float] = reactive(1.0)
    """The value drawn as a full column."""

    def render(self) -> WidgetRenderResult:
        _, base = self.background_colors
        low = base + self.get_component_styles("sparkline--min-color").color
        high = base + self.get_component_styles("sparkline--max-color").color
        empty = Style(color=(base + low.with_alpha(0.35)).rich_color)
        return ScaledBars([float(v) for v in (self.data or [])], scale=self.scale,
                          width=self.size.width, height=self.size.height,
                          low=low.rich_color, high=high.rich_color, empty=empty)
