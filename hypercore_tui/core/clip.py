"""What the shared clipboard holds: entries, their identity and how they are shown.

Pure data: no I/O. The sync engine (``services/clipsync``) keeps a :class:`History` of
:class:`ClipItem`; guests, the host and the dashboard offer new ones.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote_from_bytes

from hypercore_tui.core.sizes import format_bytes
from hypercore_tui.core.text import printable

KIND_TEXT = "text"
#: Files and folders copied in a guest's file manager, carried through the shared folder:
#: the data is a :class:`FilesEntry` as JSON (never the files themselves).
KIND_FILES = "files"
#: The directory of the file entries, at the root of the shared folder (host and guests).
FILES_DIR = ".hypercore-clip"
#: A file entry's directory name: 16 lowercase hex digits, chosen by the host.
ENTRY_RE = re.compile(r"[0-9a-f]{16}")
#: How many entries the hub remembers (in memory only: clipboards carry passwords).
HISTORY_SIZE = 50
PREVIEW_CHARS = 60


def digest(kind: str, data: bytes) -> str:
    """The identity of a clipboard content: equal contents are one entry, wherever
    they come from (this is how an entry the hub itself put into a guest is told apart
    from a new copy there)."""
    return hashlib.sha256(kind.encode() + b"\0" + data).hexdigest()


def valid_name(name: bytes) -> bool:
    """A top-level name of a file entry: one path component (no "/", not "." or "..", no
    NUL); any other byte (newlines, a leading dash, non-UTF-8) is carried exactly."""
    return bool(name) and name not in (b".", b"..") and b"/" not in name and b"\0" not in name


class BadFilesEntry(ValueError):
    """A file entry's JSON that is not one the host wrote."""


@dataclass(frozen=True)
class FilesEntry:
    """What a ``files`` clipboard entry holds: the entry directory's id in the shared
    folder, its top-level names (bytes, exact), whether the copy was a cut, the total size
    of the regular files and how many top-level names are folders."""

    entry: str
    names: tuple[bytes, ...]
    cut: bool = False
    size: int = 0
    folders: int = 0

    def to_json(self) -> bytes:
        """Deterministic (equal entries are equal bytes: the hub tells echoes by digest)."""
        doc = {"entry": self.entry, "names": [base64.b64encode(n).decode("ascii")
                                              for n in self.names],
               "cut": self.cut, "size": self.size, "folders": self.folders}
        return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode("ascii")

    @classmethod
    def from_json(cls, data: bytes) -> FilesEntry:
        try:
            doc = json.loads(data)
            entry, raw, cut = doc["entry"], doc["names"], doc["cut"]
            size, folders = doc["size"], doc["folders"]
            if not (isinstance(entry, str) and ENTRY_RE.fullmatch(entry)
                    and isinstance(raw, list) and raw and isinstance(cut, bool)
                    and type(size) is int and size >= 0
                    and type(folders) is int and 0 <= folders <= len(raw)):
                raise BadFilesEntry("not a file entry")
            names = tuple(base64.b64decode(n, validate=True) for n in raw)
        except (ValueError, KeyError, TypeError, binascii.Error) as exc:
            raise BadFilesEntry(f"not a file entry: {exc}") from None
        if not all(valid_name(n) for n in names) or len(set(names)) != len(names):
            raise BadFilesEntry("not a file entry: a bad name")
        return cls(entry=entry, names=names, cut=cut, size=size, folders=folders)

    def summary(self) -> str:
        """e.g. ``2 files and 1 folder, 20.0 MiB``."""
        files = len(self.names) - self.folders
        parts = [f"{n} {word}{'s' if n != 1 else ''}"
                 for n, word in ((files, "file"), (self.folders, "folder")) if n]
        return f"{' and '.join(parts)}, {format_bytes(self.size)}"

    def guest_paths(self, mountpoint: str) -> list[bytes]:
        """Where the files are in a guest that mounts the share at ``mountpoint``."""
        base = f"{mountpoint.rstrip('/')}/{FILES_DIR}/{self.entry}/".encode()
        return [base + name for name in self.names]


def file_uri(path: bytes) -> str:
    """``file://`` URI of an absolute path: every byte but unreserved ones and "/"
    percent-encoded (a newline, a space, non-UTF-8 bytes: all exact, all ASCII)."""
    return "file://" + quote_from_bytes(path, safe="/")


def gnome_copied_files(paths: list[bytes], *, cut: bool) -> bytes:
    """``x-special/gnome-copied-files``: ``copy`` or ``cut``, then one URI a line, LF, no
    trailing newline (one crashes Nautilus)."""
    return "\n".join(["cut" if cut else "copy", *(file_uri(p) for p in paths)]).encode("ascii")


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
        """The content's size (a file entry: its files' total, not its JSON)."""
        files = self.files
        return files.size if files is not None else len(self.data)

    @property
    def files(self) -> FilesEntry | None:
        """The file entry (kind ``files``), or None."""
        if self.kind != KIND_FILES:
            return None
        try:
            return FilesEntry.from_json(self.data)
        except BadFilesEntry:
            return None

    @property
    def text(self) -> str:
        return self.data.decode("utf-8", errors="replace")

    @property
    def source_vm(self) -> str | None:
        return self.source[3:] if self.source.startswith("vm:") else None

    def preview(self, limit: int = PREVIEW_CHARS) -> str:
        """One line, every control character escaped: safe in a terminal and as
        Textual text (never markup)."""
        if self.kind == KIND_FILES:
            files = self.files
            if files is None:
                return "[files]"
            names = ", ".join(n.decode("utf-8", errors="replace") for n in files.names)
            return printable(f"{files.summary()}: {names}", limit=limit)
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
