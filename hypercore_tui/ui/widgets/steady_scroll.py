"""Scroll views whose scroll bars are repainted only when something about them changed.

Textual (8.2) hands every ``ScrollView`` (the VM rows, ``DataTable``, ``RichLog``) the
visible part of its content as its "virtual size" at each layout pass, which never
equals the virtual size the widget keeps for itself once it scrolls; so every layout of
the screen (a tab switch, a dialog, a filter keystroke, the detail pane changing for the
selected VM) updated and repainted the scroll bars of each scroll view on the screen,
one more frame 17-33 ms after the key's own. :class:`SteadyScrollbars` skips that update
when neither the widget's size, its container's nor its own virtual size changed since
the last one (a change of its virtual size is laid out, and updates them then).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from textual.geometry import Size
from textual.widgets import DataTable, RichLog
from textual.widgets.data_table import CellType

if TYPE_CHECKING:
    from textual.scroll_view import ScrollView

    _Mixin = ScrollView
else:
    _Mixin = object  # (not a DOMNode: Textual takes CSS and component classes from the
    # first DOMNode among a widget's bases)


class SteadyScrollbars(_Mixin):
    """Mixed into a ``ScrollView`` subclass, first among its bases."""

    _steady_seen: tuple[Size, Size, Size] | None = None

    def _size_updated(self, size: Size, virtual_size: Size, container_size: Size,
                      layout: bool = True) -> bool:
        seen = (size, container_size, self.virtual_size)
        if seen == self._steady_seen:
            # (what ScrollView answers then: nothing to resize)
            return self._container_size != container_size
        self._steady_seen = seen
        return super()._size_updated(size, virtual_size, container_size, layout)


class SteadyDataTable(SteadyScrollbars, DataTable[CellType]):
    """A ``DataTable`` with :class:`SteadyScrollbars`."""


class SteadyRichLog(SteadyScrollbars, RichLog):
    """A ``RichLog`` with :class:`SteadyScrollbars`."""
