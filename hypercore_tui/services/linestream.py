"""One message a line on a stream from another process or host (the clipboard link's
:mod:`~hypercore_tui.core.clipwire`, the copy's :mod:`~hypercore_tui.core.cpwire`): lines
that are no message (a remote shell's greeting) skipped up to a bound, an overlong or
malformed line one :class:`ProtocolError` naming the stream."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypeVar

from hypercore_tui.core.errors import ProtocolError

M = TypeVar("M")

#: Lines that are no message (a remote shell's greeting) skipped before giving up.
MAX_SKIPPED = 100


async def read_message(reader: asyncio.StreamReader, decode: Callable[[bytes], M | None],
                       wire_error: type[Exception], what: str, *,
                       max_line: int | None = None) -> M | None:
    """The next message ``decode`` makes of a line of ``what`` (``the copy's stream``);
    None at the end of the stream (a line cut short counts as the end)."""
    for _ in range(MAX_SKIPPED):
        try:
            raw = await reader.readuntil(b"\n")
        except asyncio.IncompleteReadError:
            return None
        except asyncio.LimitOverrunError:
            raise ProtocolError(f"an overlong line on {what}") from None
        if max_line is not None and len(raw) > max_line:
            raise ProtocolError(f"an overlong line on {what}")
        try:
            message = decode(raw)
        except wire_error as exc:
            raise ProtocolError(f"{what}: {exc}") from None
        if message is not None:
            return message
    raise ProtocolError(f"{what} carries no messages (a shell greeting?)")
