"""The user's settings: ``$HYPERCORE_HOME/settings.json``, one JSON object whose top-level
keys belong to one idea each (``hosts`` for now: ``services/hosts/registry.py``).

Written atomically (temp file + fsync + rename) under a lock, read-modify-write as one
step, so two commands changing different keys never lose each other's change; keys this
version does not know are kept as they are.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from hypercore_tui.adapters.fs import atomic_write_json, locked, read_json
from hypercore_tui.core.errors import OperationFailed
from hypercore_tui.services.context import Context

#: How long a change waits for another one to finish (changes take milliseconds).
LOCK_TIMEOUT = 5.0


def read_settings(ctx: Context) -> dict[str, Any]:
    """The settings; ``{}`` when there is no file yet."""
    path = ctx.layout.settings_file
    try:
        data = read_json(path)
    except FileNotFoundError:
        return {}
    if not isinstance(data, dict):
        raise OperationFailed(f"{path}: not a JSON object; fix or remove it")
    return data


@contextlib.contextmanager
def changing_settings(ctx: Context, what: str) -> Iterator[dict[str, Any]]:
    """The settings to change in place; written back when the block ends without an
    error. ``what`` names the change for a "busy" message."""
    ctx.ensure_home()
    lock = ctx.layout.home / ".settings.lock"
    with locked(lock, what=f"settings: {what}", timeout=LOCK_TIMEOUT):
        settings = read_settings(ctx)
        yield settings
        atomic_write_json(ctx.layout.settings_file, settings)
