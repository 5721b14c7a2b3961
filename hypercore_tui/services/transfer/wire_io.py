"""Reading and writing :mod:`~hypercore_tui.core.cpwire` messages on pipes: the far end's
stdin and stdout, or the ssh process's pipes here."""

from __future__ import annotations

import asyncio
import time
from typing import BinaryIO

from hypercore_tui.core import cpwire
from hypercore_tui.core.progress import Progress
from hypercore_tui.services import linestream

#: Seconds between two progress messages.
PROGRESS_EVERY = 0.25


async def read_message(reader: asyncio.StreamReader) -> cpwire.Message | None:
    """The next message; None at the end of the stream (a line cut short counts as the
    end). Raises :class:`ProtocolError` for a message with wrong fields or too much
    garbage."""
    return await linestream.read_message(reader, cpwire.decode, cpwire.WireError,
                                         "the copy's stream", max_line=cpwire.MAX_LINE)


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
