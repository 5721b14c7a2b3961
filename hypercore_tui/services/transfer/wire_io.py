"""Reading and writing :mod:`~hypercore_tui.core.cpwire` messages on pipes: the far end's
stdin and stdout, or the ssh process's pipes here."""

from __future__ import annotations

import asyncio
import time
from typing import BinaryIO

from hypercore_tui.core import cpwire
from hypercore_tui.core.errors import ProtocolError
from hypercore_tui.core.progress import Progress

#: Lines that are no message (a remote shell's greeting) skipped before giving up.
MAX_SKIPPED = 100
#: Seconds between two progress messages.
PROGRESS_EVERY = 0.25


async def read_message(reader: asyncio.StreamReader) -> cpwire.Message | None:
    """The next message; None at the end of the stream (a line cut short counts as the
    end). Raises :class:`ProtocolError` for a message with wrong fields or too much
    garbage."""
    for _ in range(MAX_SKIPPED):
        try:
            raw = await reader.readuntil(b"\n")
        except asyncio.IncompleteReadError:
            return None
        except asyncio.LimitOverrunError:
            raise ProtocolError("an overlong line on the copy's stream") from None
        if len(raw) > cpwire.MAX_LINE:
            raise ProtocolError("an overlong line on the copy's stream")
        try:
            message = cpwire.decode(raw)
        except cpwire.WireError as exc:
            raise ProtocolError(f"the copy's stream: {exc}") from None
        if message is not None:
            return message
    raise ProtocolError("the copy's stream carries no messages (a shell greeting?)")


def send_message(out: BinaryIO, message: cpwire.Message) -> None:
    out.write(cpwire.encode(message))
    out.flush()


async def send_bytes(out: BinaryIO, data: bytes) -> None:
    def write() -> None:
        out.write(data)
        out.flush()

    await asyncio.to_thread(write)


def progress_messages(out: BinaryIO) -> Progress:
    """A progress callback that sends progress messages (at most every
    :data:`PROGRESS_EVERY` seconds, and the last one)."""
    last = 0.0

    def report(stage: str, done: float | None, total: float) -> None:
        nonlocal last
        now = time.monotonic()
        if done is None or (now - last < PROGRESS_EVERY and done < total):
            return
        last = now
        send_message(out, cpwire.Progress(stage, int(done), int(total)))

    return report
