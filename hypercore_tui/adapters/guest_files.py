"""Guest files through the agent's ``guest-file-open/read/write/close`` (no guest-exec).

Copies move in chunks of :data:`CHUNK` bytes. The agent allows up to 48 MiB, but it
holds several copies of a chunk while (de)coding it (a 256 MB guest's qemu-ga was
OOM-killed at 32 MiB) and measured throughput is flat from 256 KiB to 16 MiB, best at
1 MiB (host qemu-ga: 29 MiB/s up, ~95 MiB/s down; TCG guest ~3 / ~9). Reading and
base64-encoding the next chunk (or decoding, hashing and writing the last one) runs in
a thread while the agent works, so the client keeps up with it.

Errors: what :meth:`AgentClient.execute` raises (a guest disk that is full:
:class:`~hypercore_tui.adapters.qga.AgentNoSpace`); a host disk that is full while a
download is written: :class:`~hypercore_tui.core.errors.NoSpace`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
from pathlib import Path

from hypercore_tui.adapters.fs import write_all
from hypercore_tui.adapters.qga import AgentClient, AgentCommandError, AgentState
from hypercore_tui.core.errors import HypercoreError, OperationFailed
from hypercore_tui.core.progress import Progress

#: Raw bytes per guest-file-write / guest-file-read of a copy (see the docstring).
CHUNK = 1 << 20
#: One chunk normally takes well under a second; an agent that died in the guest is only
#: noticed through this timeout (the host side of the channel stays open).
CHUNK_TIMEOUT = 30.0
#: Clean-up after a failure re-syncs this briefly: a hung agent must not add minutes.
CLEANUP_SYNC = 2.0
#: Chunk size of :func:`read_file` (small files such as /proc/mounts).
SMALL_CHUNK = 65536


async def read_file(agent: AgentClient, path: str, *, limit: int = 1 << 20) -> bytes:
    """A small guest file (``/proc/...``), at most ``limit`` bytes."""
    handle = await agent.execute("guest-file-open", {"path": path, "mode": "r"})
    data = b""
    try:
        while len(data) < limit:
            chunk = await agent.execute("guest-file-read", {"handle": handle,
                                                            "count": SMALL_CHUNK})
            data += base64.b64decode(chunk.get("buf-b64", ""))
            if chunk.get("eof") or not chunk.get("count"):
                break
    finally:
        with contextlib.suppress(AgentCommandError):
            await agent.execute("guest-file-close", {"handle": handle})
    return data[:limit]


async def _close_handle(agent: AgentClient, handle: int) -> None:
    with contextlib.suppress(HypercoreError):
        await agent.execute("guest-file-close", {"handle": handle}, timeout=10.0,
                            sync_timeout=CLEANUP_SYNC)


async def upload_file(agent: AgentClient, src: Path, guest_path: str, *,
                      progress: Progress | None = None, total: int | None = None,
                      chunk: int = CHUNK, chunk_timeout: float = CHUNK_TIMEOUT) -> str:
    """Write the host file ``src`` to ``guest_path`` (created or truncated); returns the
    sha256 of what was sent. ``progress`` gets bytes written of ``total``."""
    total = src.stat().st_size if total is None else total
    hasher = hashlib.sha256()
    handle = int(await agent.execute("guest-file-open", {"path": guest_path, "mode": "w"}))
    try:
        with open(src, "rb") as fh:
            def next_payload() -> tuple[int, str]:
                data = fh.read(chunk)
                hasher.update(data)
                return len(data), base64.b64encode(data).decode("ascii")

            done = 0
            size, payload = await asyncio.to_thread(next_payload)
            while size:
                pending = asyncio.ensure_future(asyncio.to_thread(next_payload))
                try:
                    reply = await agent.execute("guest-file-write",
                                                {"handle": handle, "buf-b64": payload},
                                                timeout=chunk_timeout)
                except BaseException:
                    pending.cancel()
                    with contextlib.suppress(BaseException):
                        await pending
                    raise
                if int(reply.get("count", -1)) != size:
                    raise OperationFailed(f"{agent.vm_name}: short write to {guest_path} "
                                          f"({reply.get('count')} of {size} bytes)")
                done += size
                if progress is not None:
                    progress("writing through the guest agent", done, max(total, done))
                size, payload = await pending
    finally:
        if agent.state is not AgentState.CLOSED:
            await _close_handle(agent, handle)
    return hasher.hexdigest()


async def download_file(agent: AgentClient, guest_path: str, fd: int, *,
                        progress: Progress | None = None, total: int = 0,
                        chunk: int = CHUNK, chunk_timeout: float = CHUNK_TIMEOUT) -> str:
    """Read ``guest_path`` into the host file descriptor ``fd``; returns the sha256 of
    what was received. ``progress`` gets bytes written of ``total``."""
    hasher = hashlib.sha256()
    handle = int(await agent.execute("guest-file-open", {"path": guest_path, "mode": "r"}))

    def sink(b64: str) -> int:
        data = base64.b64decode(b64)
        hasher.update(data)
        write_all(fd, data)
        return len(data)

    done = 0
    pending: asyncio.Future[int] | None = None
    try:
        while True:
            reply = await agent.execute("guest-file-read", {"handle": handle, "count": chunk},
                                        timeout=chunk_timeout)
            if pending is not None:
                done += await pending
                pending = None
                if progress is not None:
                    progress("reading through the guest agent", done, max(total, done))
            b64 = reply.get("buf-b64", "")
            if b64:
                pending = asyncio.ensure_future(asyncio.to_thread(sink, b64))
            if reply.get("eof") or not reply.get("count"):
                break
        if pending is not None:
            done += await pending
            pending = None
            if progress is not None:
                progress("reading through the guest agent", done, max(total, done))
    finally:
        if pending is not None:
            with contextlib.suppress(BaseException):
                await pending
        if agent.state is not AgentState.CLOSED:
            await _close_handle(agent, handle)
    return hasher.hexdigest()
