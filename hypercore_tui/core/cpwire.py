"""The stream between the two ends of a copy across hosts (``hypercore cp HOST:VM:/path``),
carried by one SSH session's stdin and stdout.

A file goes as newline-delimited JSON messages and its raw bytes:

* ``{"type": "progress", "stage": TEXT, "done": N, "total": N}``: how far the sender's
  first leg got (a guest file fetched there), any number of them, before the file;
* ``{"type": "file", "name": NAME, "size": N, "mode": N, "channel": TEXT}``, then exactly
  ``size`` bytes of the file;
* ``{"type": "end", "sha256": HEX}``: the sum the source guest (or file) has; the receiver
  compares it with what it received before anything gets a final name.

The receiving end (``cp-stream receive``) answers on its stdout:

* ``{"type": "ready"}``: its guest runs and its agent answers; send;
* ``{"type": "progress", ...}``: its last leg (into the guest);
* ``{"type": "done", "final": PATH, "channel": TEXT, "sha256": HEX}``.

A receiving end whose stdin ends before ``done`` was cut off: it removes what it wrote.
Failures are the far end's own ``hypercore: error: ...`` line and exit code. Lines that
are no message (a remote shell's greeting) are skipped; a message's fields are checked,
since a file name from the other host becomes a guest path's last part.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

#: Longest message line a reader accepts.
MAX_LINE = 1 << 16
#: Raw bytes per chunk on the wire.
CHUNK = 1 << 20
_SHA256 = re.compile(r"[0-9a-f]{64}")
_MAX_TEXT = 4096


@dataclass(frozen=True)
class Progress:
    stage: str
    done: int
    total: int


@dataclass(frozen=True)
class FileHeader:
    name: str
    size: int
    mode: int
    channel: str = ""


@dataclass(frozen=True)
class End:
    sha256: str


@dataclass(frozen=True)
class Ready:
    pass


@dataclass(frozen=True)
class Done:
    final: str
    channel: str
    sha256: str


Message = Progress | FileHeader | End | Ready | Done


class WireError(ValueError):
    """A line that reads as a message of ours but whose fields are wrong."""


def encode(message: Message) -> bytes:
    """One message line (with its newline); ASCII only, so no text can split it."""
    if isinstance(message, Progress):
        fields: dict[str, Any] = {"type": "progress", "stage": message.stage,
                                  "done": message.done, "total": message.total}
    elif isinstance(message, FileHeader):
        fields = {"type": "file", "name": message.name, "size": message.size,
                  "mode": message.mode, "channel": message.channel}
    elif isinstance(message, End):
        fields = {"type": "end", "sha256": message.sha256}
    elif isinstance(message, Ready):
        fields = {"type": "ready"}
    else:
        fields = {"type": "done", "final": message.final, "channel": message.channel,
                  "sha256": message.sha256}
    return json.dumps(fields, separators=(",", ":")).encode() + b"\n"


def decode(raw: bytes) -> Message | None:
    """The message on one line; None for a line that is no message of ours (skipped).
    A message with a missing or wrong field raises :class:`WireError`."""
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("type"), str):
        return None
    kind = data["type"]
    if kind == "progress":
        return Progress(_text(data, "stage"), _count(data, "done"), _count(data, "total"))
    if kind == "file":
        return FileHeader(file_name(_text(data, "name")), _count(data, "size"),
                          _mode(data), _text(data, "channel", required=False))
    if kind == "end":
        return End(_digest(data))
    if kind == "ready":
        return Ready()
    if kind == "done":
        return Done(_text(data, "final"), _text(data, "channel", required=False),
                    _digest(data))
    return None


def file_name(name: str) -> str:
    """A file name as the other host sent it: one path component, nothing else."""
    if name in ("", ".", "..") or "/" in name or "\x00" in name or len(name) > 255:
        raise WireError(f"not a file name: {name[:80]!r}")
    return name


def _text(data: dict[str, Any], key: str, *, required: bool = True) -> str:
    value = data.get(key, None if required else "")
    if not isinstance(value, str) or len(value) > _MAX_TEXT:
        raise WireError(f"{data['type']} message: {key!r} is not text")
    return value


def _count(data: dict[str, Any], key: str) -> int:
    value = data.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise WireError(f"{data['type']} message: {key!r} is not a count")
    return value


def _mode(data: dict[str, Any]) -> int:
    value = _count(data, "mode")
    if value > 0o7777:
        raise WireError(f"file message: mode {value:o} is not a permission mode")
    return value


def _digest(data: dict[str, Any]) -> str:
    value = data.get("sha256")
    if not isinstance(value, str) or not _SHA256.fullmatch(value):
        raise WireError(f"{data['type']} message: 'sha256' is not a sha256 sum")
    return value
