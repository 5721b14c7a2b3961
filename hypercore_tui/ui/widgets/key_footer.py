"""The key bar at the bottom: Textual's Footer without its memory leak.

Textual's Footer rebuilds its keys whenever the bindings change (a tab, a dialog, the
focus moving), and each new key binds to the footer's ``compact`` setting. Textual
keeps those bindings on the footer until ``compact`` changes, which it never does here:
every rebuild kept the old keys alive (with their styles and caches), and made the
next rebuild slower. A dashboard left open grew by ~5 MiB a minute under use
(tests/load/test_soak.py; upstream: Textualize/textual#6666). This footer drops the
bindings of removed keys after each rebuild.
"""

from __future__ import annotations

from typing import Any

from textual.widgets import Footer


class KeyFooter(Footer):
    async def recompose(self) -> None:
        await super().recompose()
        self.prune_watchers()

    def prune_watchers(self) -> int:
        """Forget the watchers of keys that were removed; returns how many are left.

        Textual keeps watchers in a ``__watchers`` attribute of the watched object and
        prunes closed ones only when the watched value changes.
        """
        watchers: dict[str, list[tuple[Any, Any]]] = getattr(self, "__watchers", {})
        left = 0
        for entries in watchers.values():
            entries[:] = [(node, callback) for node, callback in entries
                          if not getattr(node, "_closing", False)
                          and not getattr(node, "_closed", False)]
            left += len(entries)
        return left
