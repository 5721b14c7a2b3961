"""The host side of a copy: checks of the source and the destination, a temporary file
placed atomically, sha256 (and the spot check's blocks) while copying, a source that
changes meanwhile caught, and the shared folder as the host sees it (share paths a guest
reports, validated; the staging directory and files staged there)."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import os
import secrets
import stat
import time
from pathlib import Path
from typing import Any

from hypercore_tui.adapters.fs import write_all
from hypercore_tui.core.errors import InvalidInput, NoSpace, NotFound, OperationFailed
from hypercore_tui.core.progress import Progress
from hypercore_tui.core.text import printable
from hypercore_tui.services import shared
from hypercore_tui.services.context import Context
from hypercore_tui.services.transfer.errors import TransferError, host_writes
from hypercore_tui.services.transfer.spot import BLOCK, Spot

#: Chunk size of host-side copies (staging in the shared folder).
HOST_CHUNK = 8 << 20


def host_source(path: str) -> tuple[Path, os.stat_result]:
    p = Path(path)
    try:
        info = p.stat()
    except FileNotFoundError:
        raise NotFound(f"no such file: {path}") from None
    except OSError as exc:
        raise InvalidInput(f"{path}: {exc.strerror}") from None
    if stat.S_ISDIR(info.st_mode):
        raise InvalidInput(f"{path} is a directory; copying directories is not supported "
                           "(pack it with tar first)")
    if not stat.S_ISREG(info.st_mode):
        raise InvalidInput(f"{path} is not a regular file")
    if not os.access(p, os.R_OK):
        raise InvalidInput(f"{path}: permission denied")
    return p, info


def host_destination(dst: str, name: str) -> Path:
    p = Path(dst)
    if p.is_dir():
        p = p / name
    elif dst.endswith("/"):
        raise NotFound(f"no such directory: {dst}")
    if p.is_dir():
        raise InvalidInput(f"{p} is a directory")
    parent = p.parent
    if not parent.is_dir():
        raise NotFound(f"no such directory: {parent}")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InvalidInput(f"{parent}: permission denied")
    return p


def open_host_temp(final: Path) -> tuple[Path, int]:
    tmp = final.with_name(f".{final.name[:200]}.hypercore-{secrets.token_hex(6)}.part")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o600)
    except OSError as exc:
        raise TransferError(f"cannot create a file in {final.parent}: {exc.strerror}") from None
    return tmp, fd


async def host_copy(src: Path, final: Path, mode: int, progress: Progress | None,
                    total: int) -> str:
    """Copy a host file of ``total`` bytes to ``final`` through a temporary file; returns
    the sha256. (The source changing meanwhile: :func:`stream_into`'s error.)"""
    tmp, fd = open_host_temp(final)
    try:
        with host_writes(final):
            digest = await stream_into(fd, src, progress, total, size=total)
        await asyncio.to_thread(os.fsync, fd)
        os.fchmod(fd, mode & 0o7777)
        os.close(fd)
        fd = -1
        os.replace(tmp, final)
    except BaseException as exc:
        if fd >= 0:
            os.close(fd)
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise exc from None
    return digest


#: What says a file did not change: a write (even one putting the same bytes back) moves
#: its ctime, which nobody but root can set back.
FileState = tuple[int, int, int, int, int]


def file_state(info: os.stat_result) -> FileState:
    return (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)


def changed(what: str, how: str) -> TransferError:
    """The error for a file that changed while it was copied."""
    return TransferError(f"{what} changed while it was copied ({how}); copy it again")


async def stream_into(fd: int, src: Path, progress: Progress | None, total: int, *,
                      size: int | None = None, spot: Spot | None = None,
                      what: str | None = None) -> str:
    """Copy ``src`` into ``fd``; its sha256, and ``spot`` fed.

    The source must not change meanwhile (its state at the start and the end, through the
    open file) and must have ``size`` bytes when that is given; else
    :func:`changed`'s error naming it as ``what``."""
    shown = what or printable(str(src), limit=500)
    hasher = hashlib.sha256()
    done = 0

    def step(fh: Any) -> int:
        chunk = fh.read(HOST_CHUNK)
        if chunk:
            hasher.update(chunk)
            if spot is not None:
                spot.feed(done, chunk)
            write_all(fd, chunk)
        return len(chunk)

    with open(src, "rb") as fh:
        before = file_state(os.fstat(fh.fileno()))
        if size is not None and before[2] != size:
            raise changed(shown, f"{before[2]} bytes now, not {size}")
        while True:
            n = await asyncio.to_thread(step, fh)
            if not n:
                break
            done += n
            if progress is not None:
                progress("copying", done, max(total, done))
        after = file_state(os.fstat(fh.fileno()))
    if after[2] != before[2]:
        raise changed(shown, f"{after[2]} bytes now, not {before[2]}")
    if after != before:
        raise changed(shown, "written to meanwhile")
    if done != before[2]:
        raise changed(shown, f"{done} bytes read, not {before[2]}")
    return hasher.hexdigest()


async def stage_file(src: Path, staged: Path, progress: Progress | None, size: int
                     ) -> FileState:
    """Copy ``src`` (``size`` bytes) to ``staged``, a new file in the staging directory for
    a guest to read, in the kernel (``sendfile``: no pass through Python; it is hashed
    while the guest copies it). The source must not change meanwhile (else
    :func:`changed`'s error). Returns the staged file's state once written.

    No fsync and no rename: the file is read once, at once, and removed. It is left
    read-only (0400): through 9p (mapped-xattr) a guest cannot make it writable again."""
    what = printable(str(src), limit=500)
    out = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                  0o600)
    try:
        try:
            with host_writes(staged), open(src, "rb") as fh:
                before = file_state(os.fstat(fh.fileno()))
                if before[2] != size:
                    raise changed(what, f"{before[2]} bytes now, not {size}")
                done = 0
                while done < size:
                    n = await asyncio.to_thread(_send, out, fh.fileno(),
                                                min(HOST_CHUNK, size - done))
                    if not n:
                        break
                    done += n
                    if progress is not None:
                        progress("copying", done, size)
                after = file_state(os.fstat(fh.fileno()))
            if after != before:
                raise changed(what, f"{after[2]} bytes now, not {size}" if after[2] != size
                              else "written to meanwhile")
            if done != size:
                raise changed(what, f"{done} bytes read, not {size}")
            os.fchmod(out, 0o400)
        finally:
            os.close(out)
        return file_state(os.stat(staged))
    except BaseException:
        with contextlib.suppress(OSError):
            staged.unlink()
        raise


def _send(out: int, src: int, count: int) -> int:
    try:
        return os.sendfile(out, src, None, count)
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise NoSpace(f"no space left on the host: {exc.strerror}") from None
        raise OperationFailed(f"copy failed on the host: {exc.strerror}") from None


def spot_of(path: Path, spot: Spot) -> Spot:
    """``spot`` fed with its blocks of the file (a few preads)."""
    with open(path, "rb") as fh:
        for block in spot.blocks:
            spot.feed(block * BLOCK, os.pread(fh.fileno(), BLOCK, block * BLOCK))
    return spot


def file_sha256(path: Path) -> str:
    """A file's sha256 (also run in a thread while a guest copies a staged file: taken
    between two equal states of the file, it is the sha256 of what the guest read)."""
    hasher = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(HOST_CHUNK):
            hasher.update(chunk)
    return hasher.hexdigest()


# -- the shared folder, as the host sees it --------------------------------------------


def share_host_path(ctx: Context, rel: str) -> Path:
    """The host path of a guest-reported path inside the share (validated, no escape)."""
    root = Path(os.path.realpath(shared.host_share_dir(ctx)))
    parts = [p for p in rel.split("/") if p]
    if not parts or any(p in (".", "..") or "\x00" in p for p in parts):
        raise TransferError(f"unexpected shared-folder path from the guest: {rel!r}")
    candidate = root.joinpath(*parts)
    parent = Path(os.path.realpath(candidate.parent))
    if parent != root and root not in parent.parents:
        raise TransferError(f"the shared-folder path {rel!r} leads outside the shared folder")
    if os.path.islink(parent / candidate.name):
        # Guests cannot make host symlinks (9p mapped-xattr): someone on the host did.
        raise TransferError(f"the shared-folder path {rel!r} is a symbolic link on the host; "
                            "not following it")
    return parent / candidate.name


def share_relative(ctx: Context, host_path: Path) -> str | None:
    """``/a/b`` when ``host_path`` lies inside the host's shared folder, else None."""
    root = os.path.realpath(shared.host_share_dir(ctx))
    real = os.path.realpath(host_path)
    if not real.startswith(root + os.sep):
        return None
    return "/" + os.path.relpath(real, root).replace(os.sep, "/")


def staging_dir(ctx: Context) -> Path:
    directory = shared.host_share_dir(ctx) / shared.STAGING_DIR
    try:
        directory.mkdir(mode=0o700)
    except FileExistsError:
        pass
    except OSError as exc:
        raise TransferError(f"cannot create the staging directory {directory}: "
                            f"{exc.strerror or exc}") from None
    # Never through a symlink (staged files would land outside the share) or a file.
    if not stat.S_ISDIR(os.lstat(directory).st_mode):
        raise TransferError(f"the staging directory {directory} is not a directory (a file "
                            "or a symbolic link put there); remove it and copy again")
    _clean_stale_staging(directory)
    return directory


def _clean_stale_staging(directory: Path, max_age: float = 24 * 3600) -> None:
    now = time.time()
    with contextlib.suppress(OSError):
        for entry in directory.iterdir():
            with contextlib.suppress(OSError):
                if now - entry.lstat().st_mtime > max_age:
                    entry.unlink()
