"""The clipboard link between two hosts' syncs (``hypercore clip sync --link HOST``), carried
by one SSH session's stdin and stdout: newline-delimited JSON messages (ASCII) and raw
bytes after some of them.

* ``{"type": "hello", "mode": "attached"|"own", "detail": TEXT}``: the far end (``clip
  link`` on the other host) runs: attached to that host's running sync, or running one of
  its own for as long as the link lives;
* ``{"type": "beat"}``: a heartbeat, both ways, every :data:`BEAT` seconds;
* ``{"type": "note", "message": TEXT}``: something the far end wants said (a fault);
* ``{"type": "entry", "kind": "text"|"image/png", "size": N, "at": T}`` then ``size``
  bytes: a text (UTF-8) or PNG clipboard entry detected at ``at`` (wall clock);
* ``{"type": "files", "names": [B64...], "cut": B, "size": N, "at": T}``: a files entry
  (``size``: its files' total), then one ``{"type": "item", "depth": D, "name": B64,
  "dir": B, "size": N, "exec": B}`` per file or folder (a file's ``size`` bytes after
  it), depth first, sorted by name in each folder, then ``{"type": "end", "sha256":
  HEX}`` (the tree's digest, :class:`TreeDigest`) or ``{"type": "abort", "why":
  TEXT}`` (the sender could not read it all: the receiver drops what it got).

Everything read is the other host's data: a name is one path component (never a path),
sizes are counted and capped by the receiver, texts are shown through ``printable``.

Contents go as raw bytes after their header (as ``cpwire`` carries a file), not as base64
inside a JSON line: no third more on the wire, and no line ever longer than a header, so
a reader's line limit stays small whatever the entry's size.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import re
from dataclasses import dataclass
from typing import Any

from hypercore_tui.core.clip import KIND_TEXT, valid_name

#: Longest message line a reader accepts (a files header names up to 256 KiB of names).
MAX_LINE = 1 << 20
#: Seconds between two heartbeats; a link silent for :data:`SILENT_AFTER` is dropped.
BEAT = 2.0
SILENT_AFTER = 8.0
#: Raw bytes per chunk on the wire.
CHUNK = 1 << 18
#: How deep a folder tree may go.
MAX_DEPTH = 64
KIND_PNG = "image/png"
MODES = ("attached", "own")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_MAX_TEXT = 1024


@dataclass(frozen=True)
class Hello:
    mode: str
    detail: str = ""


@dataclass(frozen=True)
class Beat:
    pass


@dataclass(frozen=True)
class Note:
    message: str


@dataclass(frozen=True)
class Entry:
    """A text or PNG entry; ``size`` bytes follow."""

    kind: str
    size: int
    at: float


@dataclass(frozen=True)
class Files:
    """A files entry's header; :class:`Item` messages follow, then :class:`End` or
    :class:`Abort`."""

    names: tuple[bytes, ...]
    cut: bool
    size: int
    at: float


@dataclass(frozen=True)
class Item:
    """One file or folder of a files entry: ``name`` in the folder of ``depth`` (0: the
    entry itself)."""

    depth: int
    name: bytes
    is_dir: bool
    size: int = 0
    executable: bool = False


@dataclass(frozen=True)
class End:
    sha256: str


@dataclass(frozen=True)
class Abort:
    why: str


Message = Hello | Beat | Note | Entry | Files | Item | End | Abort


class WireError(ValueError):
    """A line that reads as a message of ours but whose fields are wrong."""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def encode(message: Message) -> bytes:
    """One message line (with its newline); ASCII only."""
    fields: dict[str, Any]
    if isinstance(message, Hello):
        fields = {"type": "hello", "mode": message.mode, "detail": message.detail}
    elif isinstance(message, Beat):
        fields = {"type": "beat"}
    elif isinstance(message, Note):
        fields = {"type": "note", "message": message.message}
    elif isinstance(message, Entry):
        fields = {"type": "entry", "kind": message.kind, "size": message.size,
                  "at": message.at}
    elif isinstance(message, Files):
        fields = {"type": "files", "names": [_b64(n) for n in message.names],
                  "cut": message.cut, "size": message.size, "at": message.at}
    elif isinstance(message, Item):
        fields = {"type": "item", "depth": message.depth, "name": _b64(message.name),
                  "dir": message.is_dir, "size": message.size, "exec": message.executable}
    elif isinstance(message, End):
        fields = {"type": "end", "sha256": message.sha256}
    else:
        fields = {"type": "abort", "why": message.why}
    return json.dumps(fields, separators=(",", ":"), sort_keys=True).encode("ascii") + b"\n"


def decode(raw: bytes) -> Message | None:
    """The message on one line; None for a line that is no message of ours (a remote
    shell's greeting: skipped). Wrong fields raise :class:`WireError`."""
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("type"), str):
        return None
    kind = data["type"]
    if kind == "beat":
        return Beat()
    if kind == "hello":
        mode = _text(data, "mode")
        if mode not in MODES:
            raise WireError(f"hello message: unknown mode {mode[:20]!r}")
        return Hello(mode, _text(data, "detail", required=False))
    if kind == "note":
        return Note(_text(data, "message"))
    if kind == "entry":
        what = _text(data, "kind")
        if what not in (KIND_TEXT, KIND_PNG):
            raise WireError(f"entry message: kind {what[:20]!r} is not carried")
        return Entry(what, _count(data, "size"), _time(data))
    if kind == "files":
        raw_names = data.get("names")
        if not isinstance(raw_names, list) or not raw_names:
            raise WireError("files message: 'names' is not a list of names")
        names = tuple(_name(n) for n in raw_names)
        if len(set(names)) != len(names):
            raise WireError("files message: a name given twice")
        return Files(names, _flag(data, "cut"), _count(data, "size"), _time(data))
    if kind == "item":
        depth = _count(data, "depth")
        if depth > MAX_DEPTH:
            raise WireError(f"item message: deeper than {MAX_DEPTH} folders")
        is_dir = _flag(data, "dir")
        size = _count(data, "size")
        if is_dir and size:
            raise WireError("item message: a folder with a size")
        return Item(depth, _name(data.get("name")), is_dir, size, _flag(data, "exec"))
    if kind == "end":
        value = data.get("sha256")
        if not isinstance(value, str) or not _SHA256.fullmatch(value):
            raise WireError("end message: 'sha256' is not a sha256 sum")
        return End(value)
    if kind == "abort":
        return Abort(_text(data, "why"))
    return None


def _text(data: dict[str, Any], key: str, *, required: bool = True) -> str:
    value = data.get(key, None if required else "")
    if not isinstance(value, str):
        raise WireError(f"{data['type']} message: {key!r} is not text")
    return value[:_MAX_TEXT]


def _count(data: dict[str, Any], key: str) -> int:
    value = data.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise WireError(f"{data['type']} message: {key!r} is not a count")
    return value


def _flag(data: dict[str, Any], key: str) -> bool:
    value = data.get(key)
    if not isinstance(value, bool):
        raise WireError(f"{data['type']} message: {key!r} is not true or false")
    return value


def _time(data: dict[str, Any]) -> float:
    value = data.get("at")
    if isinstance(value, bool) or not isinstance(value, int | float) \
            or not math.isfinite(value) or value < 0:
        raise WireError(f"{data['type']} message: 'at' is not a time")
    return float(value)


def _name(value: object) -> bytes:
    """One path component, as the other host sent it (base64 of its exact bytes)."""
    if not isinstance(value, str) or len(value) > 400:
        raise WireError("not a file name")
    try:
        name = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise WireError("a file name that is not base64") from None
    if not valid_name(name) or len(name) > 255:
        raise WireError(f"not a file name: {name[:80]!r}")
    return name


class TreeDigest:
    """The identity of a files entry's content on the wire: sha256 over each item's
    message and bytes, in the order sent. Equal trees sent by any host are equal digests
    (items are sorted by name in each folder), so a files entry that comes back round a
    ring of hosts is known again although each host names its entry anew."""

    def __init__(self, names: tuple[bytes, ...]) -> None:
        self._sha = hashlib.sha256(b"files\0" + b"\0".join(names) + b"\0")

    def item(self, item: Item) -> None:
        self._sha.update(encode(item))

    def data(self, chunk: bytes) -> None:
        self._sha.update(chunk)

    def hexdigest(self) -> str:
        return self._sha.hexdigest()

