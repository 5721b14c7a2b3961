"""The command palette (ctrl+p): every dashboard action, and "go to VM" for each VM."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, cast

from textual.command import CommandPalette, DiscoveryHit, Hit, Hits, Provider

from hypercore_tui.ui.screens.backdrop import StillBackdrop

if TYPE_CHECKING:
    from hypercore_tui.ui.app import HypercoreApp

PaletteEntry = tuple[str, str, Callable[[], object]]  # (text, help, callback)


class Palette(StillBackdrop, CommandPalette):
    """Textual's command palette over the dimmed dashboard, rendered once per change of
    the dashboard (not at each keystroke in the palette)."""


class DashboardCommands(Provider):
    """Commands come from :meth:`DashboardScreen.palette_entries`. Their texts hold VM
    names, which are validated (``[A-Za-z0-9._-]``): no markup can hide in them."""

    def _entries(self) -> list[PaletteEntry]:
        return cast("HypercoreApp", self.app).dashboard.palette_entries()

    async def discover(self) -> Hits:
        for text, help_text, callback in self._entries():
            yield DiscoveryHit(text, callback, help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for text, help_text, callback in self._entries():
            score = matcher.match(text)
            if score > 0:
                yield Hit(score, matcher.highlight(text), callback, text=text, help=help_text)
