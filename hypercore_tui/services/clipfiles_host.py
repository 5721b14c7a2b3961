"""Host files and folders made a files entry of the clipboard (a path dropped on the
dashboard, ``hypercore clip push --files``).

:func:`build_entry` copies the items into a fresh entry directory in the shared folder as
a guest's ``pull-files`` does: ``.hypercore-clip/ENTRY.part/`` holds them under their own
names and is renamed to ``ENTRY`` once complete, so the running sync checks it with
:func:`~hypercore_tui.services.clipfiles.check_entry` and offers it to every guest as one
copied in a guest (:meth:`SyncEngine.offer_files`).

Everything is counted before anything is copied: a symbolic link anywhere in the set (links
are never followed: the whole copy is refused), a device, FIFO or socket, a file that
cannot be read, more than the cap or than ``MAX_ITEMS`` items are one line, and nothing is
copied. The items are walked through folder descriptors (``O_NOFOLLOW``), and checked again
while they are copied (an item that became a link or a FIFO, a file that grew past the
cap): on any failure, a full host disk included, the ``.part`` directory is removed. Names
are bytes from end to end (new lines, leading dashes, non-UTF-8: exact); no shell sees them.

The copies are readable by all (files 0644, or 0755 when the source is executable;
folders 0755): each guest's desktop user pastes from the share, and guests see the host's
owner.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import stat
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from hypercore_tui.adapters.fs import write_all
from hypercore_tui.core.clip import FILES_DIR, FilesEntry, valid_name
from hypercore_tui.core.errors import InvalidInput, NoSpace, NotFound, OperationFailed
from hypercore_tui.services import clipfiles, clipsettings
from hypercore_tui.services.clipfiles import (
    DIR_FLAGS,
    MAX_ITEMS,
    FilesRefused,
    Walked,
    not_carried,
    opened_dir,
    show_name,
    walk_tree,
)
from hypercore_tui.services.context import Context
from hypercore_tui.services.shared import host_share_dir

COPY_CHUNK = 1 << 20
NOT_COPIED = "the files were not copied into the shared folder"
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass(frozen=True)
class HostItem:
    """One item to carry: the folder holding it (the host path as given, links in it
    followed: the user named it) and its own name (the entry's top-level name)."""

    folder: bytes
    name: bytes

    @property
    def path(self) -> bytes:
        return self.folder.rstrip(b"/") + b"/" + self.name


def host_items(paths: Sequence[str | bytes | os.PathLike[str]]) -> list[HostItem]:
    """The items named by ``paths`` (relative ones from the working directory); each
    names a file or a folder by its last component, and no two the same."""
    if not paths:
        raise InvalidInput("no files or folders named")
    items: list[HostItem] = []
    for path in paths:
        raw = os.fsencode(path)
        if not raw or b"\0" in raw:
            raise InvalidInput("an empty path, or one with a NUL byte")
        if not raw.startswith(b"/"):
            raw = os.getcwdb().rstrip(b"/") + b"/" + raw
        trimmed = raw.rstrip(b"/")
        folder, _, name = trimmed.rpartition(b"/")
        if not valid_name(name):
            raise InvalidInput(f"{show_name(raw)} names no file or folder of its own")
        if any(item.name == name for item in items):
            raise InvalidInput(f"two items are named {show_name(name)}: an entry holds one "
                               "of each name")
        items.append(HostItem(folder or b"/", name))
    return items


@contextlib.contextmanager
def _item_folder(item: HostItem) -> Iterator[int]:
    try:
        fd = os.open(item.folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise NotFound(f"no such file or folder: {show_name(item.path)}") from None
    except OSError as exc:
        raise FilesRefused(f"cannot read {show_name(item.folder)}: "
                           f"{exc.strerror or exc}") from None
    try:
        yield fd
    finally:
        os.close(fd)


def _walk(fd: int, item: HostItem) -> Iterator[Walked]:
    walk = walk_tree(fd, [item.name], prefix=item.folder.rstrip(b"/"))
    try:
        yield from walk
    finally:
        walk.close()


def measure(items: Sequence[HostItem], cap: int) -> tuple[int, int]:
    """(total size of the regular files, top-level folders); :class:`FilesRefused` for a
    link, a device, FIFO or socket, a file or folder that cannot be read, more than ``cap``
    bytes or ``MAX_ITEMS`` items."""
    total = count = folders = 0
    for item in items:
        with _item_folder(item) as fd:
            try:
                for met in _walk(fd, item):
                    count += 1
                    if count > MAX_ITEMS:
                        raise FilesRefused(f"more than {MAX_ITEMS} files and folders: "
                                           "not carried")
                    if (why := not_carried(met)) is not None:
                        raise FilesRefused(why)
                    if stat.S_ISREG(met.st.st_mode):
                        if not os.access(met.name, os.R_OK, dir_fd=met.parent,
                                         follow_symlinks=False):
                            raise FilesRefused(f"{show_name(met.shown)} cannot be read: "
                                               "the copy is not carried")
                        total += met.st.st_size
                        if total > cap:
                            raise FilesRefused(clipsettings.cap_refusal(cap))
                    elif met.depth == 0:
                        folders += 1
            except FileNotFoundError:
                raise NotFound(f"no such file or folder: {show_name(item.path)}") from None
            except OSError as exc:
                raise FilesRefused(f"cannot read under {show_name(item.path)}: "
                                   f"{exc.strerror or exc}") from None
    return total, folders


@contextlib.contextmanager
def entries_dir(ctx: Context) -> Iterator[int]:
    """The share's ``.hypercore-clip``, made when missing (mode 1777, as a guest makes
    it: every guest's users write there); never through a link."""
    with opened_dir(str(host_share_dir(ctx)), None) as share:
        try:
            os.mkdir(FILES_DIR, 0o700, dir_fd=share)
            made = True
        except FileExistsError:
            made = False
        except OSError as exc:
            raise _failure(f"cannot make {FILES_DIR} in the shared folder", exc) from None
        try:
            fd = os.open(FILES_DIR, DIR_FLAGS, dir_fd=share)
        except OSError as exc:  # (ELOOP, ENOTDIR: a link or a file there)
            raise OperationFailed(f"the shared folder's {FILES_DIR} is not a folder: "
                                  f"{exc.strerror or exc}") from None
        try:
            if made:
                os.fchmod(fd, 0o1777)
            yield fd
        finally:
            os.close(fd)


class CopyStopped(OperationFailed):
    """The copy was stopped (its caller went away): nothing of it is left."""


class _Copy:
    """One copy into ``ENTRY.part``: each walked item made again under the folder of its
    depth (a folder met is made, then holds what follows it, one level deeper)."""

    def __init__(self, part: int, cap: int, stop: threading.Event | None) -> None:
        self.folders: list[int] = [part]  # folders[d]: where items of depth d go
        self.cap = cap
        self.copied = 0
        self.stop = stop

    def _check_stop(self) -> None:
        if self.stop is not None and self.stop.is_set():
            raise CopyStopped("the copy into the shared folder was stopped")

    def close(self) -> None:
        for fd in self.folders[1:]:
            os.close(fd)
        del self.folders[1:]

    def take(self, met: Walked) -> None:
        self._check_stop()
        if (why := not_carried(met)) is not None:
            raise FilesRefused(f"{why} (it changed while it was copied)")
        while len(self.folders) > met.depth + 1:
            os.close(self.folders.pop())
        into = self.folders[met.depth]
        if stat.S_ISDIR(met.st.st_mode):
            os.mkdir(met.name, 0o700, dir_fd=into)
            made = os.open(met.name, DIR_FLAGS, dir_fd=into)
            self.folders.append(made)
            os.fchmod(made, 0o755)
            return
        self._file(met, into)

    def _file(self, met: Walked, into: int) -> None:
        src = os.open(met.name, _READ_FLAGS, dir_fd=met.parent)
        try:
            if not stat.S_ISREG(os.fstat(src).st_mode):
                raise FilesRefused(f"{show_name(met.shown)} changed while it was copied "
                                   "(not a plain file any more)")
            out = os.open(met.name, _CREATE_FLAGS, 0o600, dir_fd=into)
            try:
                os.fchmod(out, 0o755 if met.st.st_mode & 0o111 else 0o644)
                while chunk := os.read(src, COPY_CHUNK):
                    self._check_stop()
                    self.copied += len(chunk)
                    if self.copied > self.cap:
                        raise FilesRefused(f"{show_name(met.shown)} grew while it was "
                                           f"copied: {clipsettings.cap_refusal(self.cap)}")
                    write_all(out, chunk)
            finally:
                os.close(out)
        finally:
            os.close(src)


def _copy_items(items: Sequence[HostItem], part: int, cap: int,
                stop: threading.Event | None) -> None:
    copy = _Copy(part, cap, stop)
    try:
        for item in items:
            with _item_folder(item) as fd:
                for met in _walk(fd, item):
                    copy.take(met)
            copy.close()
    finally:
        copy.close()


def build_entry(ctx: Context, paths: Sequence[str | bytes | os.PathLike[str]], *,
                cap: int | None = None, stop: threading.Event | None = None) -> FilesEntry:
    """Copy the host files and folders ``paths`` into a new entry in the share (see the
    module); its :class:`FilesEntry`. ``cap``: the user's (:func:`clipfiles.files_cap`)
    when not given; ``stop`` set: the copy ends (:class:`CopyStopped`). Raises
    :class:`FilesRefused` (the set is not carried), ``NotFound``, ``InvalidInput``,
    :class:`NoSpace` (the host disk is full); nothing of the copy stays in the share
    then."""
    items = host_items(paths)
    limit = clipfiles.files_cap(ctx) if cap is None else cap
    total, folders = measure(items, limit)
    entry = clipfiles.new_entry_id()
    part_name = f"{entry}.part"
    with entries_dir(ctx) as base:
        try:
            os.mkdir(part_name, 0o700, dir_fd=base)
        except OSError as exc:
            raise _failure("cannot make the entry in the shared folder", exc) from None
        try:
            with opened_dir(part_name, base) as part:
                os.fchmod(part, 0o755)
                _copy_items(items, part, limit, stop)
            os.rename(part_name, entry, src_dir_fd=base, dst_dir_fd=base)
        except NoSpace:
            _remove(ctx, part_name)
            raise NoSpace(f"the host disk is full: {NOT_COPIED} (nothing of them is left "
                          "there)") from None
        except OSError as exc:
            _remove(ctx, part_name)
            raise _failure(NOT_COPIED, exc) from None
        except BaseException:
            _remove(ctx, part_name)
            raise
    return FilesEntry(entry=entry, names=tuple(item.name for item in items), size=total,
                      folders=folders)


async def build_entry_async(ctx: Context, paths: Sequence[str | bytes | os.PathLike[str]]
                            ) -> FilesEntry:
    """:func:`build_entry` in a thread. Cancelled (a dashboard quitting, Ctrl+C), it stops
    the copy and waits for its ``.part`` to be removed (or removes the entry finished
    meanwhile) before it lets the cancellation go on: no entry is left that nobody
    offers."""
    stop = threading.Event()
    task = asyncio.ensure_future(asyncio.to_thread(build_entry, ctx, paths, stop=stop))
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        stop.set()
        try:
            files = await task
        except BaseException:  # noqa: BLE001 - stopped, refused: nothing is left
            pass
        else:
            clipfiles.forget(ctx, files.entry)
        raise


def _remove(ctx: Context, part_name: str) -> None:
    with contextlib.suppress(OSError):
        clipfiles.remove_entry(ctx, part_name)


def _failure(what: str, exc: OSError) -> OperationFailed:
    if exc.errno == errno.ENOSPC:
        return NoSpace(f"the host disk is full: {what} (nothing of them is left there)")
    return OperationFailed(f"{what}: {exc.strerror or exc}")
