"""File transfer between the host and guests: ``hypercore cp SRC DST``.

Either side may be ``NAME:/path`` (a guest) or a host path; guest→guest works too.
Each copy picks the fastest channel by itself:

* **shared folder, direct**: the guest path lies inside the guest's mount of the share,
  so the host reads or writes the file in ``$HYPERCORE_HOME/shared_folder`` itself;
* **shared folder, staged**: the share is mounted in the guest (Hypercore mounts it if
  it is attached but not mounted): the host stages the file in the share
  (``.hypercore-transfer/``) and the guest copies it with ``dd bs=1M`` (or the other
  way round);
* **agent**: guest-file-open/read/write/close in 1 MiB chunks
  (:mod:`hypercore_tui.adapters.guest_files`, which says why 1 MiB).

Every copy ends with a sha256 check (``sha256sum`` in the guest via guest-exec,
hashlib on the host) and is placed atomically: written to a temporary name in the
destination directory (created 0600 with O_EXCL), then renamed (``mv`` argv in the
guest, ``os.replace`` on the host). On any error the temporary file is removed (best
effort when the agent is gone) and nothing appears under the final name.

Guest-side work runs as the fixed shell scripts ``hypercore_tui/guest/cp-*.sh``
(through :mod:`~hypercore_tui.services.guest_exec`) whose only inputs are argv: no file
name, VM name or guest-reported value is ever part of a command string.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import posixpath
import re
import secrets
import stat
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hypercore_tui.adapters import guest_files
from hypercore_tui.adapters.fs import write_all
from hypercore_tui.adapters.qga import (
    AgentClient,
    AgentCommandError,
    AgentState,
    ExecResult,
    agent_session,
)
from hypercore_tui.core.errors import (
    AgentCommandUnsupported,
    AgentUnavailable,
    HypercoreError,
    InvalidInput,
    NoSpace,
    NotFound,
    OperationFailed,
    ProtocolError,
    Timeout,
)
from hypercore_tui.core.models import VmSpec
from hypercore_tui.core.names import validate_vm_name
from hypercore_tui.core.progress import Progress
from hypercore_tui.core.text import printable
from hypercore_tui.services import guest_exec, shared, vmstate
from hypercore_tui.services.context import Context

log = logging.getLogger("hypercore.transfer")
log.addHandler(logging.NullHandler())

#: Chunk sizes of the agent channel (raw bytes per guest-file-write / guest-file-read).
WRITE_CHUNK = guest_files.CHUNK
READ_CHUNK = guest_files.CHUNK
#: Chunk size of host-side copies (staging in the shared folder).
HOST_CHUNK = 8 << 20
#: The agent channel's wait for one chunk (see guest_files.CHUNK_TIMEOUT).
CHUNK_TIMEOUT = guest_files.CHUNK_TIMEOUT
EXEC_TIMEOUT = 3600.0

CHANNEL_AGENT = "agent"
CHANNEL_SHARE = "shared folder"
CHANNEL_SHARE_DIRECT = "shared folder (direct)"
CHANNEL_GUEST = "inside the guest"
CHANNELS = ("auto", "agent", "share")

class TransferError(OperationFailed):
    """A copy failed; nothing was left under the destination name. (A full disk, on
    either side: :class:`~hypercore_tui.core.errors.NoSpace`.)"""


# -- locations --------------------------------------------------------------------------


@dataclass(frozen=True)
class Location:
    """One side of a copy: a host path (``vm is None``) or ``NAME:/path`` in a guest."""

    vm: str | None
    path: str

    @property
    def is_guest(self) -> bool:
        return self.vm is not None

    def __str__(self) -> str:
        return f"{self.vm}:{self.path}" if self.vm else self.path


_VM_PREFIX = re.compile(r"([A-Za-z0-9][A-Za-z0-9._-]{0,63}):(.*)", re.DOTALL)


def parse_location(text: str) -> Location:
    """``NAME:/abs/path`` is a guest path; anything else a host path.

    A host file whose name looks like ``NAME:/x`` can be given as ``./NAME:/x``.
    """
    if not text:
        raise InvalidInput("empty path")
    if "\x00" in text:
        raise InvalidInput("a path cannot contain a NUL character")
    match = _VM_PREFIX.fullmatch(text)
    if match and not text.startswith(("./", "/")):
        name, path = match.group(1), match.group(2)
        try:
            validate_vm_name(name)
        except InvalidInput:
            return Location(None, text)
        if not path.startswith("/"):
            if Path(text).exists():
                return Location(None, text)
            raise InvalidInput(f"guest paths must be absolute: {name}:/path (got {text!r})")
        return Location(name, _normalise_guest_path(path))
    return Location(None, text)


def _normalise_guest_path(path: str) -> str:
    trailing = path.endswith("/") and path != "/"
    norm = posixpath.normpath(path)
    if norm.startswith("//"):
        norm = "/" + norm.lstrip("/")
    return norm + "/" if trailing else norm


def _basename(path: str) -> str:
    name = posixpath.basename(path.rstrip("/"))
    if name in ("", ".", ".."):
        raise InvalidInput(f"{path!r} does not name a file")
    return name


# -- results ----------------------------------------------------------------------------


@dataclass(frozen=True)
class TransferResult:
    bytes: int
    seconds: float
    channel: str
    source: str
    destination: str
    sha256: str

    @property
    def mib_per_second(self) -> float:
        return self.bytes / (1024 * 1024) / self.seconds if self.seconds > 0 else 0.0


# -- guest scripts (hypercore_tui/guest/cp-*.sh; argv is their only input) -----------------

#: argv: DST NAME TOKEN SHARE_MOUNTPOINT DIRECT_OK (final path, free space, temporary file)
PREPARE_DST = "cp-prepare-destination.sh"
#: argv: SRC SHARE_MOUNTPOINT (size, mode, path in the share)
PREPARE_SRC = "cp-prepare-source.sh"
#: argv: TMP FINAL SHA256 MODE STAGED (fill, check, chmod/chown, rename)
FINALIZE = "cp-finalize.sh"
#: argv: SRC STAGED VERIFY (into the shared folder; prints the sha256)
TO_SHARE = "cp-to-share.sh"
SHA256 = "cp-sha256.sh"
REMOVE = "cp-remove.sh"
SIZE = "cp-size.sh"


async def _script(agent: AgentClient, script: str, *args: str,
                  timeout: float = EXEC_TIMEOUT) -> ExecResult:
    try:
        return await guest_exec.run_script(agent, script, *args, argv0="hypercore-cp",
                                           timeout=timeout)
    except AgentCommandUnsupported:
        raise TransferError(guest_exec.exec_blocked(
            agent.vm_name, "file transfer needs (to check, verify and rename files)")) from None
    except AgentCommandError as exc:
        if exc.command == "guest-exec":
            raise TransferError(f"{agent.vm_name}: cannot run /bin/sh in the guest "
                                f"({printable(exc.desc)}); "
                                "file transfer supports Linux guests") from None
        raise


async def _checked(agent: AgentClient, script: str, *args: str,
                   what: str | None = None) -> ExecResult:
    """Run a script; a failure raises :func:`_guest_failure`'s error."""
    result = await _script(agent, script, *args)
    if result.shell_status != 0:
        raise _guest_failure(agent.vm_name, result, what)
    return result


def _space_error(vm: str, what: str, needed: int | None = None) -> NoSpace:
    extra = f" ({needed / (1024 * 1024):.1f} MiB needed)" if needed is not None else ""
    return NoSpace(f"{vm}: no space left in the guest for {what}{extra}")


def _guest_failure(vm: str, result: ExecResult, what: str | None = None) -> HypercoreError:
    failure = guest_exec.script_failure(vm, result)
    line = failure.reason
    if isinstance(failure, NoSpace):
        return _space_error(vm, what) if what else NoSpace(f"{vm}: no space left in the "
                                                             f"guest: {line}")
    if result.exitcode == 3:  # the scripts' "no such file or directory"
        return NotFound(f"{vm}: {line}")
    if result.exitcode == 4:  # a directory where a file was expected
        return InvalidInput(f"{vm}: {line}")
    return TransferError(f"{vm}: {line}")


# -- agent sessions and share detection -------------------------------------------------------


@dataclass
class _Guest:
    name: str
    spec: VmSpec
    agent: AgentClient
    mountpoint: str | None  # where the share is mounted in the guest, if it is


@contextlib.asynccontextmanager
async def _guest(ctx: Context, name: str, channel: str) -> AsyncIterator[_Guest]:
    vm = vmstate.require_running(ctx, name)
    spec, paths = vm.spec, vm.paths
    await vmstate.require_guest_running(paths)  # paused: say so now, not after the agent's timeout
    async with agent_session(paths.qga_socket, vm_name=name) as agent:
        mountpoint = None
        if channel != "agent" and spec.shared:
            try:
                state = await shared.mount_share_via_agent(agent, spec.shared_mode)
            except HypercoreError as exc:
                log.info("%s: shared folder unavailable (%s)", name, exc)
            else:
                if state.mounted:
                    mountpoint = state.mountpoint
                else:
                    log.info("%s: shared folder %s", name, state.describe())
        if channel == "share" and mountpoint is None:
            raise TransferError(f"{name}: the shared folder is not mounted in the guest; "
                                "use the agent channel")
        yield _Guest(name, spec, agent, mountpoint)


def _share_host_path(ctx: Context, rel: str) -> Path:
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


def _share_relative(ctx: Context, host_path: Path) -> str | None:
    """``/a/b`` when ``host_path`` lies inside the host's shared folder, else None."""
    root = os.path.realpath(shared.host_share_dir(ctx))
    real = os.path.realpath(host_path)
    if not real.startswith(root + os.sep):
        return None
    return "/" + os.path.relpath(real, root).replace(os.sep, "/")


def _staging(ctx: Context) -> Path:
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


# -- host files -----------------------------------------------------------------------------


def _host_source(path: str) -> tuple[Path, os.stat_result]:
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


def _host_destination(dst: str, name: str) -> Path:
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


def _open_host_temp(final: Path) -> tuple[Path, int]:
    tmp = final.with_name(f".{final.name[:200]}.hypercore-{secrets.token_hex(6)}.part")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o600)
    except OSError as exc:
        raise TransferError(f"cannot create a file in {final.parent}: {exc.strerror}") from None
    return tmp, fd


_HOST_FULL = "no space left on the host"


@contextlib.contextmanager
def _host_writes(final: Path) -> Iterator[None]:
    """Host writes (``fs.write_all``) refused for want of space say where they went."""
    try:
        yield
    except NoSpace:
        raise NoSpace(f"{_HOST_FULL} for {printable(str(final), limit=500)}; nothing was "
                      "placed there (free some space and copy again)") from None


async def _host_copy(src: Path, final: Path, mode: int, progress: Progress | None,
                     total: int) -> str:
    """Copy a host file to ``final`` through a temporary file; returns the sha256."""
    tmp, fd = _open_host_temp(final)
    try:
        with _host_writes(final):
            digest = await _stream_into(fd, src, progress, total)
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


async def _stream_into(fd: int, src: Path, progress: Progress | None, total: int) -> str:
    hasher = hashlib.sha256()
    done = 0

    def step(fh: Any) -> int:
        chunk = fh.read(HOST_CHUNK)
        if chunk:
            hasher.update(chunk)
            write_all(fd, chunk)
        return len(chunk)

    with open(src, "rb") as fh:
        while True:
            n = await asyncio.to_thread(step, fh)
            if not n:
                break
            done += n
            if progress is not None:
                progress("copying", done, max(total, done))
    return hasher.hexdigest()


def _file_sha256(path: Path) -> str:
    hasher = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(HOST_CHUNK):
            hasher.update(chunk)
    return hasher.hexdigest()


# -- the agent channel ----------------------------------------------------------------------


async def _guest_sha256(agent: AgentClient, path: str) -> str:
    result = await _checked(agent, SHA256, path)
    return result.stdout.decode(errors="replace").split(" ", 1)[0].strip()


async def _remove_guest_file(ctx: Context, guest: _Guest, path: str) -> None:
    """Best effort: through the open session, else a new one (the agent may be back)."""
    agent = guest.agent
    if agent.state is not AgentState.CLOSED:
        with contextlib.suppress(HypercoreError, TimeoutError):
            if agent.state is not AgentState.READY:
                await agent.sync(timeout=guest_files.CLEANUP_SYNC)
            await asyncio.wait_for(_script(agent, REMOVE, path, timeout=20.0), 25.0)
            return
        if agent.state in (AgentState.CONNECTED, AgentState.READY):
            # Still connected but not answering (hung): a second session would only wait
            # for this one's lock.
            log.warning("%s: the agent does not answer; the temporary file %s stays in the "
                        "guest", guest.name, path)
            return
    paths = ctx.vm_paths(guest.name)
    try:
        async with agent_session(paths.qga_socket, vm_name=guest.name, timeout=3.0,
                                 lock_timeout=3.0) as agent:
            await _script(agent, REMOVE, path, timeout=20.0)
    except (HypercoreError, TimeoutError):
        log.warning("%s: could not remove the temporary file %s", guest.name, path)


# -- directions ---------------------------------------------------------------------------------


def _check_free(guest: _Guest, values: dict[str, str], size: int, what: str) -> None:
    try:
        avail, bsize = (int(x) for x in values.get("free", "").split())
    except ValueError:
        return
    if avail * bsize < size:
        raise _space_error(guest.name, what, size)


async def _to_guest(ctx: Context, host_src: Path, src_info: os.stat_result, guest: _Guest,
                    dst: str, name: str, channel: str, verify: bool,
                    progress: Progress | None) -> tuple[str, str, str]:
    """Place a host file in the guest. Returns (final path, channel used, sha256)."""
    size = src_info.st_size
    mode = f"{stat.S_IMODE(src_info.st_mode) & 0o777:o}"
    token = secrets.token_hex(8)
    mnt = guest.mountpoint or ""
    prep = await _checked(guest.agent, PREPARE_DST, dst, name, token, mnt,
                          "1" if mnt and channel != "agent" else "0")
    values = guest_exec.parse_out(prep.stdout)
    final = values["final"]
    rel = values.get("share_rel")
    if rel is not None and "tmp" not in values:
        # Inside the guest's share mount: the host writes the file there itself.
        host_final = _share_host_path(ctx, rel)
        digest = await _host_copy(host_src, host_final, src_info.st_mode, progress, size)
        if verify and await asyncio.to_thread(_file_sha256, host_final) != digest:
            raise TransferError(f"checksum mismatch writing {host_final}")
        seen = await _script(guest.agent, SIZE, final)
        if seen.shell_status != 0 or seen.stdout.strip() != str(size).encode():
            raise TransferError(f"{guest.name}: wrote {host_final} but the guest does not see "
                                f"it at {final}; is the VM's shared folder another one?")
        return final, CHANNEL_SHARE_DIRECT, digest
    tmp = values["tmp"]
    staged: Path | None = None
    try:
        _check_free(guest, values, size, final)
        in_share = _share_relative(ctx, host_src) if mnt and channel != "agent" else None
        if in_share is not None:
            # Already inside the shared folder: the guest reads it from there.
            digest = await asyncio.to_thread(_file_sha256, host_src)
            staged_guest = mnt.rstrip("/") + in_share
            used = CHANNEL_SHARE
            if progress is not None:
                progress("copying", size, size)
        elif mnt and channel != "agent":
            staged = _staging(ctx) / token
            try:
                digest = await _host_copy(host_src, staged, 0o600, progress, size)
            except NoSpace:
                raise NoSpace(f"{_HOST_FULL} in the shared folder {shared.host_share_dir(ctx)} "
                              f"to stage the copy to {guest.name}; nothing was placed at "
                              f"{guest.name}:{printable(final, limit=500)}") from None
            staged_guest = f"{mnt.rstrip('/')}/{shared.STAGING_DIR}/{token}"
            used = CHANNEL_SHARE
        else:
            digest = await guest_files.upload_file(guest.agent, host_src, tmp,
                                                   progress=progress, total=size,
                                                   chunk=WRITE_CHUNK, chunk_timeout=CHUNK_TIMEOUT)
            staged_guest = ""
            used = CHANNEL_AGENT
        await _checked(guest.agent, FINALIZE, tmp, final, digest if verify else "", mode,
                       staged_guest, what=final)
    except BaseException as exc:
        await _remove_guest_file(ctx, guest, tmp)
        raise _translate(guest.name, exc, final) from None
    finally:
        if staged is not None:
            with contextlib.suppress(OSError):
                staged.unlink()
    return final, used, digest


async def _from_guest(ctx: Context, guest: _Guest, src: str, host_dst: str | None,
                      channel: str, verify: bool, progress: Progress | None,
                      final_host: Path | None = None) -> tuple[Path, str, str, int, int]:
    """Fetch a guest file to the host. Returns (final host path, channel, sha256, size, mode)."""
    prep = await _checked(guest.agent, PREPARE_SRC, src, guest.mountpoint or "")
    values = guest_exec.parse_out(prep.stdout)
    size = int(values.get("size", "0"))
    mode = int(values.get("mode", "644"), 8)
    final = final_host if final_host is not None else _host_destination(
        host_dst or ".", _basename(src))
    rel = values.get("share_rel")
    if rel is not None and channel != "agent":
        host_src = _share_host_path(ctx, rel)
        digest = await _host_copy(host_src, final, mode, progress, size)
        if verify and await asyncio.to_thread(_file_sha256, final) != digest:
            with contextlib.suppress(OSError):
                final.unlink()
            raise TransferError(f"checksum mismatch writing {final}")
        return final, CHANNEL_SHARE_DIRECT, digest, size, mode
    tmp, fd = _open_host_temp(final)
    staged: Path | None = None
    try:
        if guest.mountpoint and channel != "agent":
            token = secrets.token_hex(8)
            staged = _staging(ctx) / token
            staged_guest = f"{guest.mountpoint.rstrip('/')}/{shared.STAGING_DIR}/{token}"
            res = await _watch_growth(
                _script(guest.agent, TO_SHARE, src, staged_guest, "1" if verify else "0"),
                staged, size, progress)
            if res.shell_status != 0:
                if isinstance(guest_exec.script_failure(guest.name, res), NoSpace):
                    # The guest wrote into the shared folder: the host's disk is full.
                    raise NoSpace(f"{_HOST_FULL} in the shared folder "
                                  f"{shared.host_share_dir(ctx)} to stage the copy from "
                                  f"{guest.name}; nothing was placed at "
                                  f"{printable(str(final), limit=500)}")
                raise _guest_failure(guest.name, res)
            guest_sum = res.stdout.decode(errors="replace").split(" ", 1)[0].strip()
            with _host_writes(final):
                digest = await _stream_into(fd, staged, None, size)
            if progress is not None:
                progress("copying", size, size)
            used = CHANNEL_SHARE
        else:
            with _host_writes(final):
                digest = await guest_files.download_file(
                    guest.agent, src, fd, progress=progress, total=size, chunk=READ_CHUNK,
                    chunk_timeout=CHUNK_TIMEOUT)
            guest_sum = await _guest_sha256(guest.agent, src) if verify else ""
            used = CHANNEL_AGENT
        if verify and guest_sum != digest:
            raise TransferError(f"checksum mismatch: {guest.name}:{src} has sha256 {guest_sum}, "
                                f"received {digest}")
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
        raise _translate(guest.name, exc, str(final)) from None
    finally:
        if staged is not None:
            with contextlib.suppress(OSError):
                staged.unlink()
    return final, used, digest, size, mode


async def _watch_growth(work: Any, path: Path, total: int, progress: Progress | None,
                        interval: float = 0.2) -> ExecResult:
    """Await ``work`` while reporting the size ``path`` grows to (a guest writing it)."""
    task: asyncio.Task[ExecResult] = asyncio.ensure_future(work)
    if progress is None:
        return await task
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=interval)
            if done:
                return task.result()
            with contextlib.suppress(OSError):
                progress("copying through the shared folder", min(path.stat().st_size, total),
                         total)
    except BaseException:
        task.cancel()
        with contextlib.suppress(BaseException):
            await task
        raise


def _translate(vm: str, exc: BaseException, what: str) -> BaseException:
    """One clear line for what went wrong mid-transfer."""
    if isinstance(exc, AgentCommandError):
        if isinstance(exc, NoSpace):  # qga.AgentNoSpace
            return _space_error(vm, what)
        if "Permission denied" in exc.desc:
            return TransferError(f"{vm}: permission denied writing {what}")
        if exc.command.startswith("guest-file-") and "handle" in exc.desc:
            return TransferError(f"{vm}: the guest agent restarted during the transfer (its "
                                 f"open file is gone); nothing was placed at {what}")
        return TransferError(f"{vm}: {printable(exc.desc)}")
    if isinstance(exc, AgentUnavailable | Timeout | ProtocolError):
        return TransferError(f"{exc} (during the transfer; nothing was placed at {what})")
    return exc


# -- the service ----------------------------------------------------------------------------------


async def copy(ctx: Context, src: str, dst: str, *, progress: Progress | None = None,
               channel: str = "auto", verify: bool = True) -> TransferResult:
    """Copy ``src`` to ``dst`` (either may be ``NAME:/path``); see the module docstring.

    ``channel``: ``auto`` (fastest available), ``agent`` or ``share``.
    ``verify``: compare sha256 sums at both ends (on by default).
    """
    if channel not in CHANNELS:
        raise InvalidInput(f"unknown channel {channel!r}: use {', '.join(CHANNELS)}")
    source, target = parse_location(src), parse_location(dst)
    started = time.monotonic()
    if not source.is_guest and not target.is_guest:
        raise InvalidInput("both paths are on the host; name a guest side as NAME:/path")

    if not source.is_guest:
        assert target.vm is not None
        host_src, info = _host_source(source.path)
        async with _guest(ctx, target.vm, channel) as guest:
            final, used, digest = await _to_guest(ctx, host_src, info, guest, target.path,
                                                  host_src.name, channel, verify, progress)
        return TransferResult(info.st_size, time.monotonic() - started, used, str(host_src),
                              f"{target.vm}:{final}", digest)

    assert source.vm is not None
    if not target.is_guest:
        async with _guest(ctx, source.vm, channel) as guest:
            final_host, used, digest, size, _ = await _from_guest(
                ctx, guest, source.path, target.path, channel, verify, progress)
        return TransferResult(size, time.monotonic() - started, used, str(source),
                              str(final_host), digest)

    assert target.vm is not None
    if source.vm == target.vm:
        return await _within_guest(ctx, source, target, channel, verify, progress, started)
    # Guest to guest: into the host's staging area (inside the shared folder), then out.
    staging = _staging(ctx)
    holder = staging / f"g2g-{secrets.token_hex(8)}"
    holder.mkdir(mode=0o700)
    name = _basename(source.path)
    try:
        # Sessions opened in name order: two opposite copies cannot hold one lock each.
        first, second = sorted((source.vm, target.vm))
        async with _guest(ctx, first, channel) as g1, _guest(ctx, second, channel) as g2:
            a, b = (g1, g2) if first == source.vm else (g2, g1)
            half = _halves(progress)
            fetched, used_a, _, size, mode = await _from_guest(
                ctx, a, source.path, None, channel, verify, half[0], final_host=holder / name)
            info = fetched.stat()
            final, used_b, digest = await _to_guest(ctx, fetched, info, b, target.path, name,
                                                    channel, verify, half[1])
    finally:
        with contextlib.suppress(OSError):
            for entry in holder.iterdir():
                entry.unlink()
            holder.rmdir()
    used = used_a if used_a == used_b else f"{used_a} + {used_b}"
    return TransferResult(size, time.monotonic() - started, used, str(source),
                          f"{target.vm}:{final}", digest)


def _halves(progress: Progress | None) -> tuple[Progress | None, Progress | None]:
    """Two progress callbacks reporting the two legs of a guest-to-guest copy as one."""
    if progress is None:
        return None, None
    report = progress

    def first(stage: str, done: float | None, total: float) -> None:
        report(stage, done, 2 * total)

    def second(stage: str, done: float | None, total: float) -> None:
        report(stage, None if done is None else total + done, 2 * total)

    return first, second


async def _within_guest(ctx: Context, source: Location, target: Location, channel: str,
                        verify: bool, progress: Progress | None, started: float
                        ) -> TransferResult:
    assert source.vm is not None
    async with _guest(ctx, source.vm, "agent") as guest:
        prep = await _checked(guest.agent, PREPARE_SRC, source.path, "")
        values = guest_exec.parse_out(prep.stdout)
        size = int(values.get("size", "0"))
        digest = await _guest_sha256(guest.agent, source.path) if verify else ""
        token = secrets.token_hex(8)
        dprep = await _checked(guest.agent, PREPARE_DST, target.path, _basename(source.path),
                               token, "", "0")
        dvalues = guest_exec.parse_out(dprep.stdout)
        final, tmp = dvalues["final"], dvalues["tmp"]
        try:
            _check_free(guest, dvalues, size, final)
            await _checked(guest.agent, FINALIZE, tmp, final, digest, values.get("mode", "644"),
                           source.path, what=final)
        except BaseException as exc:
            await _remove_guest_file(ctx, guest, tmp)
            raise _translate(guest.name, exc, final) from None
    if progress is not None:
        progress("copying", size, size)
    return TransferResult(size, time.monotonic() - started, CHANNEL_GUEST, str(source),
                          f"{target.vm}:{final}", digest)
