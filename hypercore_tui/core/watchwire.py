"""The ``hypercore watch --json`` stream: newline-delimited JSON, one object per line, each
with a ``"type"``. Written by ``services/watch.py``, read by ``services/hosts/stream.py``.

Lines (other fields may be added; a reader ignores what it does not know, and skips a line
that is not a JSON object with a ``type``):

* ``{"type": "hello", "protocol": 1, "version": "0.1.0", "host": NODE, "heartbeat": 1.5}``
  first;
* ``{"type": "vms", "vms": [ROW, ...]}`` every VM (at the start, when VMs come or go, and
  every ``SNAPSHOT_SECONDS``); ROW has ``list --json``'s fields (``name, state, pid, ram_mb,
  cpus, disk, agent``) and what the dashboard shows (``guest``, ``jobs``, ``share_note``...);
* ``{"type": "vm", "vm": NAME, "row": ROW}``: one VM's row changed (guest facts, jobs,
  definition);
* ``{"type": "state", "vm": NAME, "old": STATE, "new": STATE, "reason": TEXT}``;
* ``{"type": "sample", "vm": NAME, ...}``: ``stats --json``'s fields, for the sparklines;
* ``{"type": "event", "vm": NAME, "event": QMP_EVENT, "detail": TEXT, "time": EPOCH}``;
* ``{"type": "host", ...}``: the host's CPU, memory, load and free space;
* ``{"type": "heartbeat", "time": EPOCH}`` after ``heartbeat`` seconds without a line, so
  a reader tells a quiet host from a stalled stream;
* ``{"type": "dropped", "lines": N}``: the reader was too slow, N lines were left out.

Every string is escaped by ``json.dumps`` (ASCII only): a VM's or guest's text can never
split a line or reach a terminal raw.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

PROTOCOL = 1
#: Seconds without any line after which the writer sends a heartbeat.
HEARTBEAT_SECONDS = 1.5
#: Seconds between two full ``vms`` lines.
SNAPSHOT_SECONDS = 10.0
#: Longest line a reader accepts (a longer one is skipped as garbage).
MAX_LINE = 1 << 20
_MAX_TYPE = 32


@dataclass(frozen=True)
class WatchLine:
    """One line of the stream, read."""

    type: str
    fields: Mapping[str, Any]

    @property
    def vm(self) -> str | None:
        name = self.fields.get("vm")
        return name if isinstance(name, str) else None


def encode(kind: str, **fields: object) -> bytes:
    """One line of the stream (with its newline)."""
    return json.dumps({"type": kind, **fields}, separators=(",", ":")).encode() + b"\n"


def decode(line: bytes) -> WatchLine | None:
    """A line read, or None for anything else (not JSON, not an object, no ``type``)."""
    if len(line) > MAX_LINE:
        return None
    try:
        data = json.loads(line)
    except (ValueError, RecursionError):
        return None
    if not isinstance(data, dict):
        return None
    kind = data.get("type")
    if not isinstance(kind, str) or not kind or len(kind) > _MAX_TYPE:
        return None
    return WatchLine(kind, data)
