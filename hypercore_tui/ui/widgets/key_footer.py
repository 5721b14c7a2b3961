"""The key bar at the bottom: the screen's keys that fit, whole, most important first.

Textual's Footer lays its keys out in a row and lets the row run past the right edge
(where the command palette key, docked over it, leaves a cut fragment: ``^p palettev``).
This bar is one line of text: the keys in the order the screen ranks them, each shown
whole or not at all, then the help key and the command palette key at the right. A key
the screen disables shows dimmed; a click on a key presses it.

(It is also one widget: Textual's Footer rebuilt a widget per key whenever the bindings
changed, and kept each old key's bindings alive; upstream Textualize/textual#6666.)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rich.text import Text
from textual import events
from textual.binding import Binding
from textual.screen import Screen
from textual.widget import Widget

#: Between two keys.
GAP = " "
#: Before the keys kept at the right (help, palette).
SEPARATOR = " │ "


@dataclass(frozen=True)
class BarKey:
    key: str  # what to press (Textual's key name)
    label: str  # "b Start"
    enabled: bool
    rank: tuple[int, int]

    @property
    def width(self) -> int:
        return Text(self.label).cell_len


class KeyFooter(Widget, can_focus=False):
    """``ranking``: binding ids (else actions), most important first; the others follow
    in the screen's order. ``pinned``: ids shown at the right, beside the palette key."""

    DEFAULT_CSS = """
    KeyFooter {
        dock: bottom;
        height: 1;
        color: $footer-foreground;
        background: $footer-background;
    }
    KeyFooter > .key-footer--key {
        color: $footer-key-foreground;
        text-style: bold;
    }
    KeyFooter > .key-footer--description {
        color: $footer-description-foreground;
    }
    KeyFooter > .key-footer--separator {
        color: $footer-description-foreground 40%;
    }
    """
    COMPONENT_CLASSES = {"key-footer--key", "key-footer--description",
                         "key-footer--separator"}

    def __init__(self, ranking: Sequence[str] = (), *, pinned: Sequence[str] = (),
                 id: str | None = None) -> None:  # noqa: A002 - Textual API
        super().__init__(id=id)
        self.ranking = {name: index for index, name in enumerate(ranking)}
        self.pinned = tuple(pinned)
        self._spans: list[tuple[int, int, str]] = []  # (start, end, key) as last drawn
        self._shown: tuple[list[BarKey], list[BarKey]] | None = None  # ditto

    def on_mount(self) -> None:
        # immediate: repainted in the same frame as what changed the keys (a message
        # to the bar, the default, came after that frame: one more, 17-33 ms later)
        self.screen.bindings_updated_signal.subscribe(self, self._bindings_changed,
                                                      immediate=True)

    def on_unmount(self) -> None:
        self.screen.bindings_updated_signal.unsubscribe(self)

    def _bindings_changed(self, screen: Screen[object]) -> None:
        # Repainted only if what it shows changed: the bindings are published again at
        # each focus change and dialog, mostly the same (and a repaint of the screen
        # beneath a dialog renders the dialog's dimmed backdrop again).
        if screen is self.screen and self.fit(self.size.width) != self._shown:
            self.refresh()

    # -- what is shown ----------------------------------------------------------------

    def keys(self) -> tuple[list[BarKey], list[BarKey]]:
        """(the ranked keys, the keys at the right end), each action once."""
        app = self.app
        ranked: list[BarKey] = []
        pinned: dict[str, BarKey] = {}
        palette: BarKey | None = None
        seen: set[str] = set()
        for order, (key, active) in enumerate(self.screen.active_bindings.items()):
            binding: Binding = active.binding
            name = binding.id or binding.action
            is_palette = key == app.COMMAND_PALETTE_BINDING and app.ENABLE_COMMAND_PALETTE
            if not (binding.show or is_palette) or not binding.description or name in seen:
                continue
            seen.add(name)
            item = BarKey(binding.key, f"{app.get_key_display(binding)} {binding.description}",
                          active.enabled, (self.ranking.get(name, len(self.ranking)), order))
            if is_palette:
                palette = item
            elif name in self.pinned:
                pinned[name] = item
            else:
                ranked.append(item)
        ranked.sort(key=lambda k: k.rank)
        ends = [pinned[n] for n in self.pinned if n in pinned]
        return ranked, ends + ([palette] if palette else [])

    def fit(self, width: int) -> tuple[list[BarKey], list[BarKey]]:
        """The keys shown in ``width`` columns: the right end (while it fits), then every
        ranked key that fits whole, in rank order."""
        ranked, ends = self.keys()
        while ends and _span(ends) > width:
            ends = ends[1:]  # the palette key is the last to go
        room = width - (_span(ends) + len(SEPARATOR) if ends else 0)
        shown: list[BarKey] = []
        used = 0
        for key in ranked:
            need = key.width + (len(GAP) if shown else 0)
            if used + need <= room:
                shown.append(key)
                used += need
        return shown, ends

    def render(self) -> Text:
        width = self.size.width
        self._shown = shown, ends = self.fit(width)
        key_style = self.get_component_rich_style("key-footer--key")
        text_style = self.get_component_rich_style("key-footer--description")
        dim = self.get_component_rich_style("key-footer--separator")
        line = Text(no_wrap=True, overflow="crop", end="")
        spans: list[tuple[int, int, str]] = []

        def put(items: list[BarKey]) -> None:
            for index, item in enumerate(items):
                if index:
                    line.append(GAP)
                start = line.cell_len
                key, _, description = item.label.partition(" ")
                line.append(key, style=key_style if item.enabled else dim)
                line.append(" " + description, style=text_style if item.enabled else dim)
                spans.append((start, line.cell_len, item.key))

        put(shown)
        if ends:
            line.append(" " * max(0, width - line.cell_len - _span(ends) - len(SEPARATOR)))
            line.append(SEPARATOR, style=dim)
            put(ends)
        self._spans = spans
        return line

    def on_click(self, event: events.Click) -> None:
        for start, end, key in self._spans:
            if start <= event.x < end:
                self.app.simulate_key(key)
                return


def _span(keys: list[BarKey]) -> int:
    return sum(k.width for k in keys) + len(GAP) * max(0, len(keys) - 1)
