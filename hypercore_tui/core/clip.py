"""What the shared clipboard holds: entries, their identity and how they are shown.

Pure data: no I/O. The sync engine (``services/clipsync``) keeps a :class:`History` of
:class:`ClipItem`; guests, the host and the dashboard offer new ones.
"""

from __future__ import annotations

import hashlib
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from hypercore_tui.core.sizes import format_bytes
from hypercore_tui.core.text import printable

KIND_TEXT = "text"
#: How many entries the hub remembers (in memory only: clipboards carry passwords).
HISTORY_SIZE = 50
PREVIEW_CHARS = 60


def digest(kind: str, data: bytes) -> str:
    """The identity of a clipboard content: equal contents are one entry, wherever
    they come from (this is how an entry the hub itself put into a guest is told apart
    from a new copy there)."""
    return hashlib.sha256(kind.encode() + b"\0" + data).hexdigest()


@dataclass(frozen=True)
class ClipItem:
    """One clipboard content the hub took, with where and when it was seen."""

    id: int
    kind: str
    data: bytes
    source: str  # "vm:NAME", "host", "dashboard", "cli"
    at: float  # wall-clock time it was detected (the newest detection wins)
    digest: str = field(default="")

    def __post_init__(self) -> None:
        if not self.digest:
            object.__setattr__(self, "digest", digest(self.kind, self.data))

    @property
    def size(self) -> int:
        return len(self.data)

    @property
    def text(self) -> str:
        return self.data.decode("utf-8", errors="replace")

    @property
    def source_vm(self) -> str | None:
        return self.source[3:] if self.source.startswith("vm:") else None

    def preview(self, limit: int = PREVIEW_CHARS) -> str:
        """One line, every control character escaped: safe in a terminal and as
        Textual text (never markup)."""
        if self.kind != KIND_TEXT:
            return f"[{self.kind}]"
        return printable(self.text, limit=limit)

    def describe(self) -> str:
        """e.g. ``text 12 B from vm:a "hello…"``."""
        return f"{self.kind} {format_bytes(self.size)} from {self.source}: {self.preview(40)}"

    def meta(self) -> dict[str, Any]:
        """What ``clip status --json`` and the dashboard see: everything but the data."""
        return {"id": self.id, "kind": self.kind, "size": self.size, "source": self.source,
                "at": round(self.at, 3), "preview": self.preview()}


class History:
    """The current entry and the ones before it, newest first; at most ``keep``.

    :meth:`offer` decides what becomes current: a content equal to the current one is
    no change (an echo of the hub's own push, or the same copy again), and a detection
    older than the current entry's loses (two guests copying at once converge on the
    one seen last).
    """

    def __init__(self, keep: int = HISTORY_SIZE) -> None:
        self._items: deque[ClipItem] = deque(maxlen=keep)
        self._next_id = 1

    @property
    def current(self) -> ClipItem | None:
        return self._items[0] if self._items else None

    def __iter__(self) -> Iterator[ClipItem]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def get(self, item_id: int) -> ClipItem | None:
        return next((item for item in self._items if item.id == item_id), None)

    def offer(self, kind: str, data: bytes, source: str, *, at: float | None = None
              ) -> ClipItem | None:
        """Make this content current; None when it changes nothing (same content, or
        detected before the current entry)."""
        when = time.time() if at is None else at
        current = self.current
        if current is not None:
            if current.digest == digest(kind, data):
                return None
            if when < current.at:
                return None
        item = ClipItem(id=self._next_id, kind=kind, data=data, source=source, at=when)
        self._next_id += 1
        self._items.appendleft(item)
        return item

    def again(self, item_id: int, source: str) -> ClipItem | None:
        """An older entry made current again (re-pushed from the history)."""
        old = self.get(item_id)
        if old is None:
            return None
        if self.current is not None and self.current.digest == old.digest:
            return self.current
        item = ClipItem(id=self._next_id, kind=old.kind, data=old.data, source=source,
                        at=max(time.time(), self.current.at if self.current else 0.0))
        self._next_id += 1
        self._items.appendleft(item)
        return item
