"""The far end of a copy across hosts: ``hypercore cp-stream send|receive VM PATH``, run on
the guest's host over SSH by the host where ``cp`` was typed (:mod:`.across`), speaking
:mod:`~hypercore_tui.core.cpwire` on its stdin and stdout.

Each end reuses this host's copy (:mod:`.directions`) with a file in the staging
directory (inside the shared folder: a guest that mounts it reads it from there):

* ``send``: the guest file is fetched into the staging directory (checked as ``cp``
  checks it: the guest's sha256, or through the shared folder its size and spot
  blocks), then sent with this host's sha256 of it;
* ``receive``: the file arrives in the staging directory, its sum is compared with the
  sender's, then it goes into the guest as ``cp`` places files there (temporary name,
  checked in the guest, renamed). Stdin ending before that is done means the
  sender is gone: the copy into the guest is cancelled and its temporary file removed.

The staged file is removed at the end whatever happened (one left by a killed process
goes with the staging directory's daily clean-up).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import secrets
from typing import BinaryIO

from hypercore_tui.adapters.fs import write_all
from hypercore_tui.core import cpwire
from hypercore_tui.core.errors import NoSpace
from hypercore_tui.core.text import printable
from hypercore_tui.services.context import Context
from hypercore_tui.services.transfer.directions import from_guest, to_guest
from hypercore_tui.services.transfer.errors import TransferError
from hypercore_tui.services.transfer.guest_side import guest_session
from hypercore_tui.services.transfer.host_files import staging_dir
from hypercore_tui.services.transfer.locations import basename
from hypercore_tui.services.transfer.wire_io import (
    progress_messages,
    read_message,
    send_bytes,
    send_message,
)

log = logging.getLogger("hypercore.transfer")
log.addHandler(logging.NullHandler())


async def serve_send(ctx: Context, vm: str, path: str, out: BinaryIO, *, channel: str,
                     verify: bool) -> None:
    """Send the guest file ``vm:path`` on ``out``."""
    name = basename(path)
    staged = staging_dir(ctx) / f"send-{secrets.token_hex(8)}"
    try:
        async with guest_session(ctx, vm, channel) as guest:
            _, used, digest, size, mode = await from_guest(
                ctx, guest, path, None, channel, verify, progress_messages(out),
                final_host=staged)
        send_message(out, cpwire.FileHeader(name, size, mode & 0o7777, used))
        hasher = hashlib.sha256()
        sent = 0
        with open(staged, "rb") as fh:
            while chunk := await asyncio.to_thread(fh.read, min(cpwire.CHUNK, size - sent)):
                hasher.update(chunk)
                await send_bytes(out, chunk)
                sent += len(chunk)
        if sent != size or hasher.hexdigest() != digest:
            # (the staged copy changed under us: no end message, the receiver discards it)
            raise TransferError(f"the staged copy of {vm}:{printable(path)} changed on this "
                                "host while it was sent")
        send_message(out, cpwire.End(digest))
    finally:
        with contextlib.suppress(OSError):
            staged.unlink()


async def serve_receive(ctx: Context, vm: str, path: str, reader: asyncio.StreamReader,
                        out: BinaryIO, *, channel: str, verify: bool) -> None:
    """Receive a file on ``reader`` and place it at ``vm:path``."""
    what = f"{vm}:{printable(path, limit=500)}"
    staged = staging_dir(ctx) / f"receive-{secrets.token_hex(8)}"
    try:
        async with guest_session(ctx, vm, channel) as guest:
            send_message(out, cpwire.Ready())
            header = await read_message(reader)
            if not isinstance(header, cpwire.FileHeader):
                raise _cut_off(what)
            await _receive_into(reader, staged, header, what)
            info = staged.stat()
            put = asyncio.ensure_future(to_guest(ctx, staged, info, guest, path, header.name,
                                                 channel, verify, progress_messages(out)))
            gone = asyncio.ensure_future(reader.read(1))
            try:
                await asyncio.wait({put, gone}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                gone.cancel()
            if not put.done():
                log.info("%s: the sender is gone; cancelling the copy into the guest", vm)
                put.cancel()
                with contextlib.suppress(BaseException):
                    await put
                raise _cut_off(what)
            final, used, digest = put.result()
        send_message(out, cpwire.Done(final, used, digest))
    finally:
        with contextlib.suppress(OSError):
            staged.unlink()


async def _receive_into(reader: asyncio.StreamReader, staged: os.PathLike[str],
                        header: cpwire.FileHeader, what: str) -> None:
    """The file's bytes and its end message into ``staged`` (0600, then the sender's
    mode), its sum compared."""
    fd = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                 0o600)
    try:
        hasher = hashlib.sha256()
        remaining = header.size
        while remaining:
            chunk = await reader.read(min(cpwire.CHUNK, remaining))
            if not chunk:
                raise _cut_off(what)
            hasher.update(chunk)
            try:
                await asyncio.to_thread(write_all, fd, chunk)
            except NoSpace:
                raise NoSpace(f"no space left on this host to stage the copy to {what}; "
                              "nothing was placed there") from None
            remaining -= len(chunk)
        end = await read_message(reader)
        if not isinstance(end, cpwire.End):
            raise _cut_off(what)
        if end.sha256 != hasher.hexdigest():
            raise TransferError(f"checksum mismatch: the sender has sha256 {end.sha256}, "
                                f"this host received {hasher.hexdigest()}; nothing was "
                                f"placed at {what}")
        os.fchmod(fd, header.mode & 0o777)
    finally:
        os.close(fd)


def _cut_off(what: str) -> TransferError:
    return TransferError(f"the copy was cut off (the sending host is gone); nothing was "
                         f"placed at {what}")
