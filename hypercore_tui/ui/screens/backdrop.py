"""Dialogs over the dashboard that do not render the dashboard again at each repaint.

A modal screen with a translucent background shows the screen beneath it dimmed:
Textual renders that screen's every widget again and tints each of its segments each
time the dialog is repainted (its first layout, its focus, its own content: 3-4 times
while a dialog opens, and at each keystroke in the command palette), though the screen
beneath did not change. :class:`StillBackdrop` keeps the dimmed rendering until the
screen beneath repaints (Textual then refreshes the dialog over the regions it
repainted), the dialog is resized or shown again.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Self

from rich.console import RenderableType
from textual.css.styles import RulesMap
from textual.geometry import Region
from textual.renderables.background_screen import BackgroundScreen
from textual.strip import Strip
from textual.style import Style
from textual.visual import RenderOptions, RichVisual, Visual

if TYPE_CHECKING:
    from textual.screen import Screen

    _Mixin = Screen[Any]
else:
    _Mixin = object  # (not a DOMNode: Textual takes the CSS from a screen's first DOMNode base)


class _Backdrop(Visual):
    """The dimmed screen beneath, rendered once for a given size and style."""

    def __init__(self, visual: Visual) -> None:
        self.visual = visual
        self._key: tuple[int, int | None, Style] | None = None
        self._strips: list[Strip] = []

    def render_strips(self, width: int, height: int | None, style: Style,
                      options: RenderOptions) -> list[Strip]:
        key = (width, height, style)
        if key != self._key:
            self._strips = self.visual.render_strips(width, height, style, options)
            self._key = key
        return self._strips

    def get_optimal_width(self, rules: RulesMap, container_width: int) -> int:
        return self.visual.get_optimal_width(rules, container_width)

    def get_height(self, rules: RulesMap, width: int) -> int:
        return self.visual.get_height(rules, width)


class StillBackdrop(_Mixin):
    """Mixed into a modal screen class, first among its bases."""

    _backdrop: _Backdrop | None = None
    _backdrop_of: tuple[object, object] | None = None

    def render(self) -> RenderableType | Visual:  # type: ignore[override]  # (a Visual is
        # what Widget.render may return; Screen narrows it to Rich renderables)
        rendered = super().render()  # (takes the screen beneath off the render stack)
        if not isinstance(rendered, BackgroundScreen):
            self._backdrop = None
            return rendered
        of = (rendered.screen, rendered.color)
        if self._backdrop is None or self._backdrop_of != of:
            self._backdrop = _Backdrop(RichVisual(self, rendered))
            self._backdrop_of = of
        return self._backdrop

    def on_screen_resume(self) -> None:
        """Shown (again): the screen beneath may have changed meanwhile. (Textual calls
        this before its own handler, which lays the dialog out and paints it.)"""
        self._backdrop = None

    def refresh(self, *regions: Region, repaint: bool = True, layout: bool = False,
                recompose: bool = False) -> Self:
        if regions:  # (the screen beneath repainted these)
            self._backdrop = None
        return super().refresh(*regions, repaint=repaint, layout=layout, recompose=recompose)
