"""CLI command groups beyond the VM lifecycle in ``cli.py``.

Each module here defines ``register(sub) -> dict[str, Handler]``: it adds its
subparsers to ``sub`` and returns the handlers by command name. ``cli.py``
imports every module of this package, so a new group is one new file.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from hypercore_tui.services.context import Context

Handler = Callable[[Context, argparse.Namespace], int]
T = TypeVar("T")


def out(text: str) -> None:
    """One line on stdout, flushed (scripts read it as it comes).

    Each line is passed through :func:`printable`: a file name, disk path, snapshot tag
    or guest-reported value can never send escape sequences (OSC 52, CSI...) or bidi
    controls to the terminal. JSON (``json.dumps`` escapes them itself) is unchanged.
    """
    import sys

    from hypercore_tui.core.text import printable

    safe = "\n".join(printable(line, limit=None) for line in text.split("\n"))
    sys.stdout.write(safe + "\n")
    sys.stdout.flush()


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Run one service coroutine to completion from a synchronous CLI handler."""
    import asyncio

    return asyncio.run(coro)
