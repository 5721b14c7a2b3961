"""The ``hypercore`` command groups, one module each, and what they share.

Each module defines ``register(sub) -> dict[str, Handler]``: it adds its subparsers to
``sub`` and returns the handlers by command name. ``cli.py`` registers the modules in
the order ``hypercore --help`` lists their commands.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from hypercore_tui.core.text import printable
from hypercore_tui.services.context import Context
from hypercore_tui.services.guest_clock import ClockCorrection

PROG = "hypercore"

Handler = Callable[[Context, argparse.Namespace], int]
T = TypeVar("T")


def out(text: str) -> None:
    """One line on stdout, flushed (scripts read it as it comes).

    Each line is passed through :func:`printable`: a file name, disk path, snapshot tag
    or guest-reported value can never send escape sequences (OSC 52, CSI...) or bidi
    controls to the terminal. JSON (``json.dumps`` escapes them itself) is unchanged.
    """
    safe = "\n".join(printable(line, limit=None) for line in text.split("\n"))
    sys.stdout.write(safe + "\n")
    sys.stdout.flush()


def plain(text: str) -> str:
    """A path or message as it may be printed: control characters escaped."""
    return printable(text, limit=None)


def note_clock(correction: ClockCorrection | None) -> None:
    """``hypercore: note: NAME: guest clock set forward 8.1 s`` on stderr, after an
    operation that set a guest's clock again (resume, snapshot restore)."""
    if correction is not None:
        sys.stderr.write(f"{PROG}: note: {correction.name}: {correction.describe()}\n")


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Run one service coroutine to completion from a synchronous CLI handler."""
    return asyncio.run(coro)


# -- argument types ---------------------------------------------------------------------


def whole_number(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    return value


def seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError("seconds must not be negative")
    return value
