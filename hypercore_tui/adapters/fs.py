"""Files that must never be half-written, private directories and advisory locks."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import json
import os
import stat
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

from hypercore_tui.core.errors import Busy, InvalidInput, NoSpace, OperationFailed, os_failure


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove_stale_temps(path: Path) -> None:
    """Temp files of writers that died mid-write (their pid is gone) are removed."""
    for stale in path.parent.glob(f".{path.name}.tmp-*"):
        pid = stale.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
            with contextlib.suppress(OSError):
                stale.unlink()


def atomic_write_bytes(path: Path, data: bytes, *, mode: int = 0o644) -> None:
    """Write ``data`` to ``path`` so that a crash leaves the old file or the new one.

    temp file in the same directory + fsync + rename + fsync of the directory.
    """
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, mode)
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        _fsync_dir(path.parent)
        _remove_stale_temps(path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise os_failure(f"cannot write {path}: {exc.strerror or exc}", exc) from exc


def replace_durably(source: Path, target: Path) -> None:
    """``os.replace`` and an fsync of the directory: after a crash the rename is there."""
    try:
        os.replace(source, target)
        _fsync_dir(target.parent)
    except OSError as exc:
        raise os_failure(f"cannot rename {source} to {target}: {exc.strerror or exc}",
                         exc) from exc


def write_all(fd: int, data: bytes | memoryview) -> None:
    """Write all of ``data`` to the host file descriptor ``fd``; a full disk raises
    :class:`NoSpace`."""
    view = memoryview(data)
    while view:
        try:
            written = os.write(fd, view)
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                raise NoSpace(f"no space left on the host: {exc.strerror}") from None
            raise OperationFailed(f"write failed on the host: {exc.strerror}") from None
        view = view[written:]


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def read_json(path: Path) -> Any:
    try:
        with open(path, "rb") as fh:
            return json.load(fh)
    except FileNotFoundError:
        raise
    except (OSError, ValueError) as exc:
        raise OperationFailed(f"cannot read {path}: {exc}") from exc


def ensure_private_dir(path: Path) -> Path:
    """Create ``path`` (and parents) as a directory only this user can enter.

    An existing directory must belong to us and not be a symlink; it is
    tightened to 0700. Anything else is refused: sockets live here.
    """
    try:
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        info = os.lstat(path)
    except OSError as exc:
        raise os_failure(f"cannot create directory {path}: {exc.strerror or exc}", exc) from exc
    if not stat.S_ISDIR(info.st_mode):
        raise OperationFailed(f"{path} exists and is not a directory")
    if info.st_uid != os.getuid():
        raise OperationFailed(f"{path} belongs to another user (uid {info.st_uid}); refusing it")
    if stat.S_IMODE(info.st_mode) != 0o700:
        os.chmod(path, 0o700)
    return path


class FileLock:
    """An ``flock`` on a file: released when closed or when the process dies."""

    def __init__(self, path: Path, description: str = "") -> None:
        self.path = path
        self.description = description
        self._fd: int | None = None

    def try_acquire(self) -> bool:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise OperationFailed(f"cannot open lock file {self.path}: "
                                  f"{exc.strerror or exc}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                return False
            raise
        self._fd = fd
        if self.description:
            # Who holds it, for the "busy" message: best effort (a full disk refuses it).
            # Written over the old text, then cut: no page is freed and needed again.
            note = f"{os.getpid()} {self.description}\n".encode()
            with contextlib.suppress(OSError):
                os.pwrite(fd, note, 0)
                os.ftruncate(fd, len(note))
        return True

    def acquire(self, timeout: float, poll: float = 0.05) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            if self.try_acquire():
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(poll)

    def holder(self) -> str:
        """What the current holder wrote about itself (best effort)."""
        try:
            return self.path.read_text(errors="replace").strip()
        except OSError:
            return ""

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> FileLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


    def busy_error(self) -> Busy:
        holder = self.holder()
        suffix = f" (held by pid {holder})" if holder else ""
        return Busy(f"{self.description}: busy, another hypercore operation is in "
                    f"progress{suffix}")


@contextlib.contextmanager
def locked(path: Path, *, what: str, timeout: float = 0.0) -> Iterator[FileLock]:
    """Hold ``path``'s lock for the block, or raise :class:`Busy` naming the holder.

    Blocks the calling thread while waiting: async code uses :func:`locked_async`.
    """
    lock = FileLock(path, what)
    if not lock.acquire(timeout):
        raise lock.busy_error()
    try:
        yield lock
    finally:
        lock.release()


async def acquire_async(lock: FileLock, timeout: float) -> bool:
    """``lock.acquire(timeout)`` in a thread, never blocking the event loop. Cancelled
    while it waits, the lock is released whenever the thread gets it: a cancelled caller
    never leaves it held (every later session would find it "in use")."""
    acquiring = asyncio.ensure_future(asyncio.to_thread(lock.acquire, timeout))
    try:
        return await asyncio.shield(acquiring)
    except asyncio.CancelledError:
        acquiring.add_done_callback(lambda _f: lock.release())
        raise


@contextlib.asynccontextmanager
async def locked_async(path: Path, *, what: str, timeout: float = 0.0
                       ) -> AsyncIterator[FileLock]:
    """:func:`locked` for coroutines: waits in a thread, never blocks the event loop."""
    lock = FileLock(path, what)
    if not await acquire_async(lock, timeout):
        raise lock.busy_error()
    try:
        yield lock
    finally:
        lock.release()


def check_regular_file(path: str, what: str) -> Path:
    """An existing, readable regular file (ISO, kernel, image...)."""
    p = Path(path)
    try:
        info = p.stat()
    except FileNotFoundError:
        raise InvalidInput(f"{what} {path!r} does not exist") from None
    except OSError as exc:
        raise InvalidInput(f"{what} {path!r}: {exc.strerror}") from None
    if not stat.S_ISREG(info.st_mode) and not stat.S_ISBLK(info.st_mode):
        raise InvalidInput(f"{what} {path!r} is not a regular file")
    if not os.access(p, os.R_OK):
        raise InvalidInput(f"{what} {path!r} is not readable")
    return p.absolute()
