"""One leg of a copy: a host file into a guest (:func:`to_guest`) or a guest file to the
host (:func:`from_guest`), each through the fastest channel it may use (the shared
folder, direct or staged, or the agent).

What is checked, with verification on (what can go wrong, and what catches it):

* **agent**: the guest's sha256 of its file against the host's of the bytes sent or
  received (guest-file-read/write carry them; hashing is small beside the agent's 3-11
  MiB/s under TCG);
* **shared folder, into a guest**: the host copies the source into a new staged file
  (in the kernel, then 0400); a source written to meanwhile (its size, inode, mtime or
  ctime moved) is refused. The guest copies the staged file into its temporary file and
  checks the size (a copy cut short) and the spot blocks (:mod:`.spot`: a copy that
  differs), ``FROM_SHARE``, while the host hashes the staged file. Then the staged file
  must be exactly as the host left it (same inode, size, mtime, ctime: a write, even one
  putting the same bytes back, or a replacement moves one of them): the guest read the
  very bytes whose sha256 the host reports. Only then does ``FINALIZE`` rename the copy
  into place, within its directory: a rename, never a copy across filesystems. A source
  already inside the shared folder is read by the guest in place, with the same checks;
* **shared folder, out of a guest**: ``TO_SHARE`` copies the source into a staged file
  and refuses a source that changed meanwhile (size, device, inode, mtime, ctime before
  and after), then prints the sha256 of the spot blocks; the host copies the staged file
  to its destination, hashing all of it and feeding the same blocks, refuses a staged
  file not of the source's size or written to while it read it, and compares the
  blocks. Not caught: another writer in the shared folder changing the staged file
  between the guest's write and the host's read outside the checked blocks;
* **shared folder, direct** (the guest path lies inside the share): the host copies the
  file itself, the source unchanged while read, and hashes the result again.

Without verification: no spot blocks and no check of the staged file after the guest's
copy (one guest step copies and renames); sizes and a source changing while the host
reads it are still checked.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import stat
from pathlib import Path
from typing import Any

from hypercore_tui.adapters import guest_files
from hypercore_tui.adapters.qga import ExecResult
from hypercore_tui.core.errors import NoSpace
from hypercore_tui.core.progress import Progress
from hypercore_tui.core.text import printable
from hypercore_tui.services import guest_exec, shared
from hypercore_tui.services.context import Context
from hypercore_tui.services.transfer.errors import (
    HOST_FULL,
    TransferError,
    guest_failure,
    host_writes,
    translate,
)
from hypercore_tui.services.transfer.guest_side import (
    FINALIZE,
    FROM_SHARE,
    PREPARE_DST,
    PREPARE_SRC,
    SIZE,
    TO_SHARE,
    Guest,
    check_free,
    checked,
    guest_sha256,
    remove_guest_file,
    run_script,
)
from hypercore_tui.services.transfer.host_files import (
    FileState,
    changed,
    file_sha256,
    file_state,
    host_copy,
    host_destination,
    open_host_temp,
    share_host_path,
    share_relative,
    spot_of,
    stage_file,
    staging_dir,
    stream_into,
)
from hypercore_tui.services.transfer.locations import basename
from hypercore_tui.services.transfer.spot import Spot, choose_blocks

#: Chunk sizes of the agent channel (raw bytes per guest-file-write / guest-file-read).
WRITE_CHUNK = guest_files.CHUNK
READ_CHUNK = guest_files.CHUNK
#: The agent channel's wait for one chunk (see guest_files.CHUNK_TIMEOUT).
CHUNK_TIMEOUT = guest_files.CHUNK_TIMEOUT

CHANNEL_AGENT = "agent"
CHANNEL_SHARE = "shared folder"
CHANNEL_SHARE_DIRECT = "shared folder (direct)"


async def to_guest(ctx: Context, host_src: Path, src_info: os.stat_result, guest: Guest,
                   dst: str, name: str, channel: str, verify: bool,
                   progress: Progress | None) -> tuple[str, str, str]:
    """Place a host file in the guest. Returns (final path, channel used, sha256)."""
    size = src_info.st_size
    mode = f"{stat.S_IMODE(src_info.st_mode) & 0o777:o}"
    token = secrets.token_hex(8)
    mnt = guest.mountpoint or ""
    prep = await _prepare_destination(ctx, guest, dst, name, token, mnt,
                                      "1" if mnt and channel != "agent" else "0")
    values = guest_exec.parse_out(prep.stdout)
    final = values["final"]
    rel = values.get("share_rel")
    if rel is not None and "tmp" not in values:
        # Inside the guest's share mount: the host writes the file there itself.
        host_final = share_host_path(ctx, rel)
        digest = await host_copy(host_src, host_final, src_info.st_mode, progress, size)
        if verify and await asyncio.to_thread(file_sha256, host_final) != digest:
            raise TransferError(f"checksum mismatch writing {host_final}")
        seen = await run_script(guest.agent, SIZE, final)
        if seen.shell_status != 0 or seen.stdout.strip() != str(size).encode():
            raise TransferError(f"{guest.name}: wrote {host_final} but the guest does not see "
                                f"it at {final}; is the VM's shared folder another one?")
        return final, CHANNEL_SHARE_DIRECT, digest
    tmp = values["tmp"]
    staged: Path | None = None
    try:
        check_free(guest, values, size, final)
        if mnt and channel != "agent":
            in_share = share_relative(ctx, host_src)
            if in_share is not None:
                # Already inside the shared folder: the guest reads it from there.
                staged_host = host_src
                staged_guest = mnt.rstrip("/") + in_share
                state = file_state(os.stat(host_src))
                if state[2] != size:
                    raise changed(printable(str(host_src), limit=500),
                                  f"{state[2]} bytes now, not {size}")
            else:
                staged = staged_host = staging_dir(ctx) / token
                try:
                    state = await stage_file(host_src, staged, progress, size)
                except NoSpace:
                    raise NoSpace(f"{HOST_FULL} in the shared folder "
                                  f"{shared.host_share_dir(ctx)} to stage the copy to "
                                  f"{guest.name}; nothing was placed at "
                                  f"{guest.name}:{printable(final, limit=500)}") from None
                staged_guest = f"{mnt.rstrip('/')}/{shared.STAGING_DIR}/{token}"
            used = CHANNEL_SHARE
            digest = await _from_share(guest, staged_host, staged_guest, state, tmp, final,
                                       mode, verify)
            if progress is not None:
                progress("copying", size, size)
        else:
            digest = await guest_files.upload_file(guest.agent, host_src, tmp,
                                                   progress=progress, total=size,
                                                   chunk=WRITE_CHUNK, chunk_timeout=CHUNK_TIMEOUT)
            used = CHANNEL_AGENT
            await checked(guest.agent, FINALIZE, tmp, final, digest if verify else "", mode,
                          "", str(size), what=final)
    except BaseException as exc:
        await remove_guest_file(ctx, guest, tmp)
        raise translate(guest.name, exc, final) from None
    finally:
        if staged is not None:
            with contextlib.suppress(OSError):
                staged.unlink()
    return final, used, digest


async def _from_share(guest: Guest, staged_host: Path, staged_guest: str, state: FileState,
                     tmp: str, final: str, mode: str, verify: bool) -> str:
    """The guest's copy of a file in the shared folder, placed at ``final``; its sha256.

    The host hashes the file while the guest copies it into ``tmp``. With ``verify``, the
    guest checks its copy's size and spot blocks (FROM_SHARE), then the file must be as it
    was (``state``) before the guest started: unchanged over the whole time the guest read
    it and this host hashed it, so the guest read the bytes hashed here. Only then does
    FINALIZE rename ``tmp``. Without: one FINALIZE copies and renames."""
    size = str(state[2])
    spot = spot_of(staged_host, Spot(choose_blocks(state[2]))) if verify else None
    hashing = asyncio.ensure_future(asyncio.to_thread(file_sha256, staged_host))
    try:
        if spot is None:
            await checked(guest.agent, FINALIZE, tmp, final, "", mode, staged_guest, size,
                          what=final)
        else:
            await checked(guest.agent, FROM_SHARE, staged_guest, tmp, size, spot.argv,
                          spot.hexdigest(), what=final)
    finally:
        with contextlib.suppress(Exception):
            await asyncio.shield(hashing)
    try:
        digest = hashing.result()
        now: FileState | None = file_state(os.stat(staged_host))
    except OSError:
        digest, now = "", None
    if spot is None:
        return digest
    if now != state:
        raise TransferError(f"the file in the shared folder ({staged_host}) changed while "
                            f"{guest.name} copied it; nothing was placed at "
                            f"{guest.name}:{printable(final, limit=500)}")
    await checked(guest.agent, FINALIZE, tmp, final, "", mode, "", size, what=final)
    return digest


async def _prepare_destination(ctx: Context, guest: Guest, *args: str) -> ExecResult:
    """PREPARE_DST. Cancelled meanwhile (Ctrl-C, a far end whose sender is gone), the
    script still runs in the guest and creates the temporary file: it is waited for
    (briefly) and the file removed before the cancellation goes on."""
    work = asyncio.ensure_future(checked(guest.agent, PREPARE_DST, *args))
    try:
        return await asyncio.shield(work)
    except asyncio.CancelledError:
        with contextlib.suppress(BaseException):
            done = await asyncio.wait_for(work, 20.0)
            tmp = guest_exec.parse_out(done.stdout).get("tmp")
            if tmp:
                await remove_guest_file(ctx, guest, tmp)
        raise


async def from_guest(ctx: Context, guest: Guest, src: str, host_dst: str | None,
                     channel: str, verify: bool, progress: Progress | None,
                     final_host: Path | None = None) -> tuple[Path, str, str, int, int]:
    """Fetch a guest file to the host. Returns (final host path, channel, sha256, size, mode)."""
    prep = await checked(guest.agent, PREPARE_SRC, src, guest.mountpoint or "")
    values = guest_exec.parse_out(prep.stdout)
    size = int(values.get("size", "0"))
    mode = int(values.get("mode", "644"), 8)
    final = final_host if final_host is not None else host_destination(
        host_dst or ".", basename(src))
    rel = values.get("share_rel")
    if rel is not None and channel != "agent":
        host_src = share_host_path(ctx, rel)
        digest = await host_copy(host_src, final, mode, progress, size)
        if verify and await asyncio.to_thread(file_sha256, final) != digest:
            with contextlib.suppress(OSError):
                final.unlink()
            raise TransferError(f"checksum mismatch writing {final}")
        return final, CHANNEL_SHARE_DIRECT, digest, size, mode
    tmp, fd = open_host_temp(final)
    staged: Path | None = None
    try:
        if guest.mountpoint and channel != "agent":
            token = secrets.token_hex(8)
            staged = staging_dir(ctx) / token
            staged_guest = f"{guest.mountpoint.rstrip('/')}/{shared.STAGING_DIR}/{token}"
            spot = Spot(choose_blocks(size)) if verify else None
            res = await _watch_growth(
                run_script(guest.agent, TO_SHARE, src, staged_guest, str(size),
                           "1" if verify else "0", spot.argv if spot else ""),
                staged, size, progress)
            if res.shell_status != 0:
                if isinstance(guest_exec.script_failure(guest.name, res), NoSpace):
                    # The guest wrote into the shared folder: the host's disk is full.
                    raise NoSpace(f"{HOST_FULL} in the shared folder "
                                  f"{shared.host_share_dir(ctx)} to stage the copy from "
                                  f"{guest.name}; nothing was placed at "
                                  f"{printable(str(final), limit=500)}")
                raise guest_failure(guest.name, res)
            guest_sum = res.stdout.decode(errors="replace").split(" ", 1)[0].strip()
            with host_writes(final):
                digest = await stream_into(fd, staged, None, size, size=size, spot=spot,
                                           what=f"the copy of {guest.name}:{printable(src)} "
                                                "in the shared folder")
            expected = spot.hexdigest() if spot is not None else ""
            if progress is not None:
                progress("copying", size, size)
            used = CHANNEL_SHARE
        else:
            with host_writes(final):
                digest = await guest_files.download_file(
                    guest.agent, src, fd, progress=progress, total=size, chunk=READ_CHUNK,
                    chunk_timeout=CHUNK_TIMEOUT)
            guest_sum = await guest_sha256(guest.agent, src) if verify else ""
            expected = digest
            used = CHANNEL_AGENT
        if verify and guest_sum != expected:
            what = ("the sampled blocks' sha256" if used == CHANNEL_SHARE else "sha256")
            raise TransferError(f"checksum mismatch: {guest.name}:{printable(src)} has "
                                f"{what} {guest_sum}, received {expected}")
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
        raise translate(guest.name, exc, str(final)) from None
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
