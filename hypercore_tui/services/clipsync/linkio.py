"""Clipboard entries on the link between two hosts (:mod:`~hypercore_tui.core.clipwire`):
sent from this host's history, received into this host's checks.

* :func:`send_entry`: a text or PNG entry's bytes; a files entry's tree read from this
  host's share (the entry folder the history names, through folder descriptors, never
  following a link), sorted by name in each folder;
* :func:`receive_entry`: the other host's entry, checked as today's entries are: a text
  must be UTF-8 without NUL and at most ``clipboard.MAX_TEXT_BYTES``, a PNG at most
  ``clipimage.MAX_IMAGE_BYTES``, files at most the user's cap (``clipboard.files_max``),
  written into a new ``ENTRY.part`` in this host's share through folder descriptors
  (``O_EXCL``, ``O_NOFOLLOW``), renamed to ``ENTRY`` only when the tree's digest matched;
  the caller then offers it to its sync, which checks it with ``clipfiles.check_entry``.

An entry this host will not take is read to its end and dropped (:class:`Refused`, one
line); a stream that breaks the protocol raises ``ProtocolError`` (the link is dropped and
made again).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass

from hypercore_tui.core import clipwire
from hypercore_tui.core.clip import KIND_FILES, KIND_TEXT, ClipItem, FilesEntry
from hypercore_tui.core.errors import HypercoreError, NoSpace, OperationFailed, ProtocolError
from hypercore_tui.services import (
    clipboard,
    clipfiles,
    clipfiles_host,
    clipimage,
    clipsettings,
    linestream,
)
from hypercore_tui.services.clipfiles import DIR_FLAGS, opened_dir, show_name
from hypercore_tui.services.context import Context

_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


class Refused(OperationFailed):
    """An entry from the other host that this host does not take (said in one line)."""


@dataclass(frozen=True)
class Received:
    """An entry taken from the other host: ``data`` (text or PNG), or ``files`` (a new
    complete entry in this host's share) with ``tree``, the content's wire digest."""

    kind: str
    at: float
    data: bytes = b""
    files: FilesEntry | None = None
    tree: str = ""


# -- reading the stream ------------------------------------------------------------------


async def read_message(reader: asyncio.StreamReader) -> clipwire.Message | None:
    """The next message; None at the end of the stream."""
    return await linestream.read_message(reader, clipwire.decode, clipwire.WireError,
                                         "the clipboard link")


async def read_exactly(reader: asyncio.StreamReader, size: int) -> bytes:
    try:
        return await reader.readexactly(size)
    except asyncio.IncompleteReadError:
        raise ProtocolError("the clipboard link ended inside an entry") from None


async def skip(reader: asyncio.StreamReader, size: int) -> None:
    while size:
        size -= len(await read_exactly(reader, min(size, clipwire.CHUNK)))


# -- sending ---------------------------------------------------------------------------------


async def send_message(writer: asyncio.StreamWriter, message: clipwire.Message) -> None:
    writer.write(clipwire.encode(message))
    await writer.drain()


async def send_entry(ctx: Context, writer: asyncio.StreamWriter, item: ClipItem) -> str:
    """Send ``item`` (text, PNG or files); its wire identity: the item's digest, or a files
    entry's tree digest. ``OperationFailed`` when a files entry cannot be read (the
    receiver was told to drop it)."""
    files = item.files
    if files is None:
        await send_message(writer, clipwire.Entry(item.kind, len(item.data), item.at))
        writer.write(item.data)
        await writer.drain()
        return item.digest
    await send_message(writer, clipwire.Files(files.names, files.cut, files.size, item.at))
    tree = clipwire.TreeDigest(files.names)
    try:
        with clipfiles_host.entries_dir(ctx) as base, opened_dir(files.entry, base) as fd:
            for met in _walk_sorted(fd, files.names):
                await _send_item(writer, tree, met)
    except (OSError, OperationFailed) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        await send_message(writer, clipwire.Abort(f"files not read: {why}"))
        raise OperationFailed(f"files not sent: {why}") from None
    digest = tree.hexdigest()
    await send_message(writer, clipwire.End(digest))
    return digest


@dataclass(frozen=True)
class _Met:
    parent: int
    name: bytes
    depth: int
    st: os.stat_result


def _walk_sorted(fd: int, names: tuple[bytes, ...]) -> Iterator[_Met]:
    """Every item under ``names`` (in that order) in ``fd``, depth first, each folder's
    content sorted by name, ``lstat`` only; only the current path's folders are open."""
    stack: list[tuple[int, Iterator[bytes]]] = [(fd, iter(names))]
    try:
        while stack:
            parent, pending = stack[-1]
            name = next(pending, None)
            if name is None:
                stack.pop()
                if parent != fd:
                    os.close(parent)
                continue
            st = os.lstat(name, dir_fd=parent)
            mode = st.st_mode
            if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
                raise OperationFailed(f"{show_name(name)} is not a plain file or folder")
            yield _Met(parent, name, len(stack) - 1, st)
            if stat.S_ISDIR(mode):
                sub = os.open(name, DIR_FLAGS, dir_fd=parent)
                try:
                    children = sorted(os.fsencode(n) for n in os.listdir(sub))
                except BaseException:
                    os.close(sub)
                    raise
                stack.append((sub, iter(children)))
    finally:
        for parent, _ in stack:
            if parent != fd:
                os.close(parent)


async def _send_item(writer: asyncio.StreamWriter, tree: clipwire.TreeDigest,
                     met: _Met) -> None:
    if met.depth > clipwire.MAX_DEPTH:
        raise OperationFailed(f"folders deeper than {clipwire.MAX_DEPTH}")
    if stat.S_ISDIR(met.st.st_mode):
        item = clipwire.Item(met.depth, met.name, True)
        tree.item(item)
        await send_message(writer, item)
        return
    src = os.open(met.name, _READ_FLAGS, dir_fd=met.parent)
    try:
        st = os.fstat(src)
        if not stat.S_ISREG(st.st_mode):
            raise OperationFailed(f"{show_name(met.name)} changed while it was sent")
        item = clipwire.Item(met.depth, met.name, False, st.st_size,
                             bool(st.st_mode & 0o111))
        tree.item(item)
        await send_message(writer, item)
        left = st.st_size
        while left:
            chunk = await asyncio.to_thread(os.read, src, min(left, clipwire.CHUNK))
            if not chunk:
                # (the receiver cannot tell: the bytes promised are padded, then aborted)
                writer.write(bytes(left))
                raise OperationFailed(f"{show_name(met.name)} shrank while it was sent")
            left -= len(chunk)
            tree.data(chunk)
            writer.write(chunk)
            await writer.drain()
    finally:
        os.close(src)


# -- receiving ---------------------------------------------------------------------------


async def receive_entry(ctx: Context, reader: asyncio.StreamReader,
                        header: clipwire.Entry | clipwire.Files, *,
                        discard: bool = False) -> Received:
    """The entry ``header`` starts, read to its end. :class:`Refused` (after reading it
    all) when this host does not take it; ``ProtocolError`` for a broken stream.
    ``discard``: a files entry this host holds already is read to its end and dropped
    (its tree digest is returned, no files)."""
    if isinstance(header, clipwire.Entry):
        return await _receive_data(reader, header)
    return await _receive_files(ctx, reader, header, discard=discard)


async def _receive_data(reader: asyncio.StreamReader, header: clipwire.Entry) -> Received:
    limit = clipboard.MAX_TEXT_BYTES if header.kind == KIND_TEXT else \
        clipimage.MAX_IMAGE_BYTES
    if header.size > limit:
        await skip(reader, header.size)
        what = "text" if header.kind == KIND_TEXT else "image"
        raise Refused(f"a {what} of {header.size} bytes is above this host's limit of "
                      f"{limit // (1 << 20)} MiB: not taken")
    data = await read_exactly(reader, header.size)
    if header.kind == KIND_TEXT:
        try:
            clipboard.check_text(data.decode("utf-8", errors="strict"))
        except UnicodeDecodeError:
            raise Refused("a text that is not UTF-8: not taken") from None
        except HypercoreError as exc:  # a NUL character
            raise Refused(f"{exc}: not taken") from None
    return Received(header.kind, header.at, data=data)


class _Into:
    """The tree being received into ``ENTRY.part`` (None: being dropped)."""

    def __init__(self, part: int | None, cap: int) -> None:
        self.folders: list[int] = [part] if part is not None else []
        self.dropping = part is None
        self.why = ""
        self.cap = cap
        self.total = 0
        self.items = 0

    def close(self) -> None:
        for fd in self.folders[1:]:
            os.close(fd)
        del self.folders[1:]

    def drop(self, why: str) -> None:
        if not self.dropping:
            self.dropping, self.why = True, why
            self.close()


async def _receive_files(ctx: Context, reader: asyncio.StreamReader,
                         header: clipwire.Files, *, discard: bool) -> Received:
    cap = clipfiles.files_cap(ctx)
    tree = clipwire.TreeDigest(header.names)
    entry = clipfiles.new_entry_id()
    part_name = f"{entry}.part"
    made = False
    why = ""
    with contextlib.ExitStack() as stack:
        part: int | None = None
        if discard:
            why = "held already"
        elif header.size > cap:
            why = clipsettings.cap_refusal(cap)
        else:
            try:
                base = stack.enter_context(clipfiles_host.entries_dir(ctx))
                os.mkdir(part_name, 0o700, dir_fd=base)
                made = True
                part = stack.enter_context(opened_dir(part_name, base))
                os.fchmod(part, 0o755)
            except OSError as exc:
                why = f"cannot make the entry in the shared folder: {exc.strerror or exc}"
            except OperationFailed as exc:
                why = str(exc)
        into = _Into(part, cap)
        if why:
            into.why = why
        try:
            end = await _items(reader, header, tree, into)
            if discard:
                return Received(KIND_FILES, header.at, tree=tree.hexdigest())
            if into.dropping:
                raise Refused(f"files not taken: {into.why}")
            if isinstance(end, clipwire.Abort):
                raise Refused(f"files not taken: the other host: "
                              f"{show_name(end.why.encode())}")
            if end.sha256 != tree.hexdigest():
                raise Refused("files not taken: their digest did not match")
            into.close()
            if part is not None:
                os.rename(part_name, entry, src_dir_fd=base, dst_dir_fd=base)
                made = False
        finally:
            into.close()
            if made:
                with contextlib.suppress(OSError, ValueError):
                    clipfiles.remove_entry(ctx, part_name)
    files = FilesEntry(entry=entry, names=header.names, cut=header.cut, size=into.total)
    return Received(KIND_FILES, header.at, files=files, tree=tree.hexdigest())


async def _items(reader: asyncio.StreamReader, header: clipwire.Files,
                 tree: clipwire.TreeDigest, into: _Into
                 ) -> clipwire.End | clipwire.Abort:
    top = iter(header.names)
    while True:
        message = await read_message(reader)
        if message is None:
            raise ProtocolError("the clipboard link ended inside a files entry")
        if isinstance(message, clipwire.End | clipwire.Abort):
            if next(top, None) is not None:
                into.drop("the other host did not send every item it named")
            return message
        if not isinstance(message, clipwire.Item):
            raise ProtocolError("the clipboard link: a message inside a files entry")
        tree.item(message)
        into.items += 1
        if message.depth == 0 and message.name != next(top, None):
            raise ProtocolError("the clipboard link: an item the files entry did not name")
        if message.depth > (len(into.folders) - 1 if not into.dropping else message.depth):
            raise ProtocolError("the clipboard link: an item outside its folder")
        if into.items > clipfiles.MAX_ITEMS:
            into.drop(f"more than {clipfiles.MAX_ITEMS} files and folders")
        into.total += message.size
        if into.total > into.cap:
            into.drop(clipsettings.cap_refusal(into.cap))
        await _take(reader, message, tree, into)


async def _take(reader: asyncio.StreamReader, item: clipwire.Item,
                tree: clipwire.TreeDigest, into: _Into) -> None:
    out: int | None = None
    if not into.dropping:
        while len(into.folders) > item.depth + 1:
            os.close(into.folders.pop())
        folder = into.folders[item.depth]
        try:
            if item.is_dir:
                os.mkdir(item.name, 0o700, dir_fd=folder)
                made = os.open(item.name, DIR_FLAGS, dir_fd=folder)
                into.folders.append(made)
                os.fchmod(made, 0o755)
                return
            out = os.open(item.name, _CREATE_FLAGS, 0o600, dir_fd=folder)
            os.fchmod(out, 0o755 if item.executable else 0o644)
        except OSError as exc:
            into.drop(_os_why(item.name, exc))
    try:
        left = item.size
        while left:
            chunk = await read_exactly(reader, min(left, clipwire.CHUNK))
            left -= len(chunk)
            tree.data(chunk)
            if out is not None and not into.dropping:
                try:
                    await asyncio.to_thread(_write_all, out, chunk)
                except OSError as exc:
                    into.drop(_os_why(item.name, exc))
    finally:
        if out is not None:
            os.close(out)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _os_why(name: bytes, exc: OSError) -> str:
    if isinstance(exc, NoSpace) or exc.errno == 28:
        return "the host disk is full"
    return f"{show_name(name)}: {exc.strerror or exc}"
