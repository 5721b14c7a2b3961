"""``hypercore migrate --offline NAME HOST``: a stopped VM moved to another host, both
ends (the target's is ``hypercore migrate-incoming NAME --offline``, run there over the
host's shared SSH connection, fed JSON lines and the disk's bytes on its stdin).

1. the source sends ``{"definition": ..., "disk": {"format", "size"} | null, ...}``; the
   target checks it can take the VM (no VM of that name, its kernel/initrd/ISO there, a
   Ceph disk reachable), makes the VM's directory with the definition pending
   (``incoming.json``: no command sees the VM there) and answers ``{"ready": true}``;
2. a local disk (qcow2/raw): its ``size`` bytes follow, then ``{"sha256": ...}``; the
   target writes them to ``vms/NAME/disk.FORMAT`` of its own home (runs of zeros as
   holes), fsyncs, reads the file back and answers with its own sha256
   (``{"received": ..., "sha256": ...}``); both sides compare. A Ceph disk stays where it
   is: only the definition moves;
3. ``{"commit": true}``: the pending definition becomes the target's ``vm.json``
   (``{"committed": true}``), then the source removes the VM here: its directory (with a
   disk Hypercore made there; an adopted image, used in place, is kept, as ``delete-vm``
   keeps it) and runtime files.

Until the commit every failure (either end dies, SSH drops, a checksum differs, the
target's disk fills up, ``Ctrl+C``) leaves the VM here as it was and nothing there: the
target removes what it made, and the source asks it again (``migrate-incoming NAME
--abort``) when its session was cut off. The source holds the VM's lock throughout, so
it cannot be booted here meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hypercore_tui.adapters import images
from hypercore_tui.adapters.fs import (
    atomic_write_json,
    locked_async,
    read_json,
    replace_durably,
    write_all,
)
from hypercore_tui.core.errors import (
    AlreadyExists,
    HypercoreError,
    InvalidInput,
    InvalidState,
    NotFound,
    OperationFailed,
    Timeout,
    os_failure,
)
from hypercore_tui.core.layout import VmPaths
from hypercore_tui.core.models import DiskKind, DiskSpec, VmSpec, VmState
from hypercore_tui.core.sizes import format_bytes
from hypercore_tui.core.text import printable
from hypercore_tui.services import rbd_disks, registry, vmstate
from hypercore_tui.services.context import Context
from hypercore_tui.services.create import is_installed
from hypercore_tui.services.hosts import registry as hosts_registry
from hypercore_tui.services.hosts import remote
from hypercore_tui.services.hosts.connection import HostConnection
from hypercore_tui.services.lifecycle import clean_runtime
from hypercore_tui.services.migrate import (
    COMMIT_WAIT,
    READY_WAIT,
    TargetSession,
    abort_there,
)
from hypercore_tui.services.migrate_incoming import (
    PAYLOAD_WAIT,
    SILENCE_LIMIT,
    Reply,
    claimed_incoming,
    read_message,
)

log = logging.getLogger("hypercore.migrate")
log.addHandler(logging.NullHandler())

CHUNK = 1 << 20
#: Seconds between two progress reports.
PROGRESS_EVERY = 0.5
#: Seconds the target may take per GiB to fsync and read back (hash) the copy.
VERIFY_PER_GIB = 60.0

CopySink = Callable[[int, int], None]  # (bytes sent, bytes in all)


@dataclass(frozen=True)
class OfflineResult:
    name: str
    target: str
    disk: str  # where the disk is now: the path there, or the Ceph image
    copied: int  # bytes copied (0: the disk is on Ceph)
    sha256: str | None  # of the copy, the same on both hosts
    source_disk: str  # "removed", "kept" (an adopted image) or "ceph"
    total_s: float


def check_movable(spec: VmSpec) -> None:
    """Refuse, with the reason, a stopped VM whose disk cannot move alone."""
    if spec.linked_to is not None:
        raise InvalidInput(f"{spec.name}: a linked clone of {spec.linked_to} (its disk's "
                           "backing file is that VM's disk) cannot move on its own")
    if spec.base_of:
        raise InvalidInput(f"{spec.name}: the disk of linked clones ("
                           f"{', '.join(spec.base_of)}) cannot move while they use it")


def target_disk(paths: VmPaths, kind: DiskKind) -> Path:
    """Where a moved local disk lands: the VM's directory of this host's home."""
    if kind is DiskKind.QCOW2:
        return paths.default_disk
    if kind is DiskKind.RAW:
        return paths.vm_dir / "disk.raw"
    raise InvalidInput(f"not a local disk format: {kind.value}")


# -- the source ---------------------------------------------------------------------------


async def move_offline(ctx: Context, name: str, host_name: str, *,
                       bandwidth_mbps: int | None = None,
                       progress: CopySink | None = None) -> OfflineResult:
    """Move the stopped VM ``name`` to ``host_name`` (see the module)."""
    host = hosts_registry.get_host(ctx, host_name)
    if host.is_local:
        raise InvalidInput(f"{host_name!r} is this host: name another one (`hypercore "
                           "hosts list`)")
    spec = registry.load(ctx, name)
    paths = ctx.vm_paths(name)
    _require_stopped(paths)
    check_movable(spec)
    conn = HostConnection(ctx, host)
    await asyncio.to_thread(conn.ensure_ready)
    async with locked_async(paths.lock, what=f"{name}: migrate --offline",
                            timeout=vmstate.LOCK_WAIT):
        spec = registry.load(ctx, name)  # (as it is now, under the lock)
        _require_stopped(paths)
        check_movable(spec)
        return await _move_locked(ctx, spec, paths, conn, bandwidth_mbps=bandwidth_mbps,
                                  progress=progress)


def _require_stopped(paths: VmPaths) -> None:
    state = vmstate.running_or_stopped(paths)
    if state is not VmState.STOPPED:
        raise InvalidState(f"{paths.name} is running: --offline moves a stopped VM (stop it "
                           "first; one whose disk is on Ceph migrates live without it)")


def _local_disk(spec: VmSpec) -> tuple[Path, int] | None:
    """The local disk to copy and its size; None when it is on Ceph."""
    if spec.disk.is_rbd:
        return None
    path = Path(str(spec.disk.path))
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise NotFound(f"{spec.name}: its disk {path} cannot be read: "
                       f"{exc.strerror or exc}") from None
    backing = images.image_info(path).backing_file
    if backing:
        raise InvalidInput(f"{spec.name}: its disk {path} has a backing file ({backing}) "
                           "that would not move with it; `qemu-img convert` it to a "
                           "standalone image first")
    return path, size


async def _move_locked(ctx: Context, spec: VmSpec, paths: VmPaths, conn: HostConnection, *,
                       bandwidth_mbps: int | None, progress: CopySink | None) -> OfflineResult:
    name = spec.name
    started = time.monotonic()
    disk = await asyncio.to_thread(_local_disk, spec)
    unclean = None
    with contextlib.suppress(FileNotFoundError, HypercoreError):
        unclean = read_json(paths.unclean_stop)
    proc = await remote.start(ctx, conn.host, ["migrate-incoming", name, "--offline"],
                              stdin=subprocess.PIPE, own_session=True)
    target = TargetSession(conn.name, proc)
    committed = False
    try:
        target.send({
            "definition": spec.to_dict(),
            "installed": is_installed(paths) if spec.iso else None,
            "unclean_stop": unclean,
            "disk": None if disk is None else {"format": spec.disk.kind.value,
                                               "size": disk[1]}})
        ready = await target.receive(READY_WAIT, "before the copy")
        if not ready.get("ready"):
            raise OperationFailed(f"{conn.name}: the target did not get ready")
        there = str(ready.get("disk") or spec.disk.describe())
        digest = None
        if disk is not None:
            path, size = disk
            digest = await _send_disk(target, path, size, bandwidth_mbps=bandwidth_mbps,
                                      progress=progress)
            target.send({"sha256": digest})
            answer = await target.receive(
                COMMIT_WAIT + VERIFY_PER_GIB * size / (1 << 30), "after the copy")
            if answer.get("sha256") != digest or answer.get("received") != size:
                raise OperationFailed(
                    f"{name}: the disk copied to {conn.name} differs from this one "
                    f"(sha256 {printable(str(answer.get('sha256')))}, not {digest})")
            log.info("%s: disk copied to %s:%s (%d bytes, sha256 %s) in %.1f s", name,
                     conn.name, there, size, digest, time.monotonic() - started)
        # The switch-over: from its answer on, the VM is the target's.
        target.send({"commit": True})
        try:
            answer = await target.receive(COMMIT_WAIT, "to the switch-over")
        except HypercoreError as exc:
            answer = {"lost": str(exc)}
        if answer.get("committed") is not True:
            owned_there = await _owned_there(ctx, conn, name)
            if owned_there is None:
                raise OperationFailed(
                    f"{name}: the switch-over's answer from {conn.name} was lost "
                    f"({answer.get('lost', 'no answer')}) and it cannot be asked; the VM is "
                    f"left here: check `hypercore --host {conn.name} list` and delete it "
                    "on one host")
            if not owned_there:
                raise OperationFailed(f"{conn.name}: the switch-over failed there "
                                      f"({answer.get('lost', 'no answer')})")
        committed = True
        await asyncio.to_thread(_remove_here, paths)
        total = time.monotonic() - started
        source_disk = "ceph" if disk is None else ("removed" if spec.disk.owned else "kept")
        log.info("%s: moved (stopped) to %s in %.1f s; the disk here: %s", name, conn.name,
                 total, source_disk)
        return OfflineResult(name=name, target=conn.name, disk=there,
                             copied=0 if disk is None else disk[1], sha256=digest,
                             source_disk=source_disk, total_s=total)
    except BaseException as exc:
        if not committed:
            reason = exc if isinstance(exc, HypercoreError) else type(exc).__name__
            log.warning("%s: the offline move to %s failed (%s); the VM stays here", name,
                        conn.name, reason)
        raise
    finally:
        await target.close(abort=not committed)
        if not committed and target.proc.returncode not in (0, 1):
            await abort_there(ctx, conn, name)


async def _send_disk(target: TargetSession, path: Path, size: int, *,
                     bandwidth_mbps: int | None, progress: CopySink | None) -> str:
    """Stream the disk's ``size`` bytes to the target; their sha256."""
    digest = hashlib.sha256()
    rate = None if bandwidth_mbps is None else bandwidth_mbps * 125_000  # bytes/s
    began = time.monotonic()
    reported = 0.0
    sent = 0
    with open(path, "rb") as image:
        while sent < size:
            chunk = image.read(min(CHUNK, size - sent))
            if not chunk:
                raise OperationFailed(f"{path} shrank while it was copied")
            digest.update(chunk)
            await target.send_bytes(chunk, "during the copy")
            sent += len(chunk)
            now = time.monotonic()
            if progress is not None and (now - reported >= PROGRESS_EVERY or sent == size):
                reported = now
                progress(sent, size)
            if rate is not None and sent / rate > now - began:
                await asyncio.sleep(sent / rate - (now - began))
    if progress is not None and size == 0:
        progress(0, 0)
    return digest.hexdigest()


async def _owned_there(ctx: Context, conn: HostConnection, name: str) -> bool | None:
    """Whether the target took the VM, asked in a new session (``--abort``: removes a
    pending move, refuses one it owns); None when it cannot be asked."""
    try:
        proc = await asyncio.to_thread(remote.run_captured, ctx, conn.host,
                                       ["migrate-incoming", name, "--abort"], timeout=30)
    except HypercoreError as exc:
        log.warning("%s: cannot ask %s whether it took the VM: %s", name, conn.name, exc)
        return None
    if proc.returncode == 0:
        return False
    if b"defined on this host" in proc.stderr:
        return True
    return None


def _remove_here(paths: VmPaths) -> None:
    """After the switch-over: the VM's runtime files and directory (a disk Hypercore made
    is in it; an adopted image used in place is elsewhere, and stays)."""
    try:
        os.unlink(paths.definition)  # first: from here no command sees the VM
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise OperationFailed(f"{paths.name}: moved, but its definition here cannot be "
                              f"removed ({exc.strerror or exc}): remove {paths.vm_dir}") from None
    clean_runtime(paths)
    shutil.rmtree(paths.run_dir, ignore_errors=True)
    shutil.rmtree(paths.vm_dir, ignore_errors=True)


# -- the target ---------------------------------------------------------------------------


def _payload_spec(name: str, payload: Mapping[str, Any]) -> tuple[VmSpec, int | None]:
    """The VM sent, and the size of its local disk to follow (None: on Ceph)."""
    definition = payload.get("definition")
    if not isinstance(definition, dict):
        raise InvalidInput("no VM definition was sent")
    spec = VmSpec.from_dict(definition)
    if spec.name != name:
        raise InvalidInput(f"the definition sent names {spec.name!r}, not {name!r}")
    check_movable(spec)
    disk = payload.get("disk")
    if spec.disk.is_rbd:
        if disk is not None:
            raise InvalidInput(f"{name}: a disk on Ceph is not copied")
        return spec, None
    if not isinstance(disk, dict) or disk.get("format") != spec.disk.kind.value:
        raise InvalidInput(f"{name}: the disk's format was not sent")
    size = disk.get("size")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise InvalidInput(f"{name}: bad disk size {size!r}")
    return spec, size


def _check_boot_files(spec: VmSpec, installed: bool | None) -> None:
    """The files the VM boots from outside its disk must be on this host too."""
    files = [("kernel", spec.kernel), ("initrd", spec.initrd)]
    if spec.iso and installed is not True:
        files.append(("ISO", spec.iso))
    for what, path in files:
        if path and not Path(path).is_file():
            raise NotFound(f"{spec.name}: its {what} {path} is not on this host")


async def serve_offline(ctx: Context, name: str, reader: asyncio.StreamReader,
                        reply: Reply) -> None:
    """One offline move in, from the source's first line to its commit (see the module)."""
    paths = ctx.vm_paths(name)
    payload = await read_message(reader, PAYLOAD_WAIT)
    if payload is None:
        raise OperationFailed(f"{name}: the source ended before sending the definition")
    spec, size = _payload_spec(name, payload)
    installed = payload.get("installed")
    installed = installed if isinstance(installed, bool) else None
    if registry.exists(ctx, name):
        raise AlreadyExists(f"a VM named {name!r} is defined on this host already")
    _check_boot_files(spec, installed)
    if spec.disk.is_rbd:
        await rbd_disks.check_reachable(ctx, spec, "moving in")
    async with claimed_incoming(ctx, name):
        await _take(spec, size, installed, paths, payload, reader, reply)


async def _take(spec: VmSpec, size: int | None, installed: bool | None, paths: VmPaths,
                payload: Mapping[str, Any], reader: asyncio.StreamReader,
                reply: Reply) -> None:
    name = spec.name
    disk = None if size is None else target_disk(paths, spec.disk.kind)
    if disk is not None:
        spec = spec.with_changes(disk=DiskSpec(kind=spec.disk.kind, path=str(disk),
                                               owned=True))
    atomic_write_json(paths.incoming_definition, spec.to_dict())
    if installed is not None:
        atomic_write_json(paths.installation_state, {"isInstalled": installed})
    unclean = payload.get("unclean_stop")
    if isinstance(unclean, dict):
        atomic_write_json(paths.unclean_stop, unclean)
    if disk is not None:
        with contextlib.suppress(FileNotFoundError):  # (a move in cut off left it)
            disk.unlink()
    reply({"ready": True, "disk": None if disk is None else str(disk)})
    if disk is not None and size is not None:
        await _receive_disk(reader, disk, size)
        said = await read_message(reader, SILENCE_LIMIT)
        sent = said.get("sha256") if said else None
        here = await asyncio.to_thread(_sha256_of, disk)
        if sent != here:
            raise OperationFailed(f"{name}: the disk copied here differs from the "
                                  f"source's (sha256 {here}, not {printable(str(sent))})")
        reply({"received": size, "sha256": here})
    message = await read_message(reader, COMMIT_WAIT)
    if message is None or not message.get("commit"):
        raise OperationFailed(f"{name}: the source ended the move (or the SSH connection "
                              "was lost)")
    # The switch-over: from here this host owns the VM.
    replace_durably(paths.incoming_definition, paths.definition)
    reply({"committed": True})
    log.info("%s: moved in (stopped)", name)


async def _receive_disk(reader: asyncio.StreamReader, disk: Path, size: int) -> None:
    """Write the ``size`` bytes that follow on ``reader`` to ``disk`` (a new file; runs of
    zeros left as holes), fsynced."""
    try:
        fd = os.open(disk, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except OSError as exc:
        raise os_failure(f"cannot create {disk}: {exc.strerror or exc}", exc) from None
    try:
        left = size
        while left:
            try:
                chunk = await asyncio.wait_for(reader.readexactly(min(CHUNK, left)),
                                               SILENCE_LIMIT)
            except asyncio.IncompleteReadError:
                raise OperationFailed(f"{disk.parent.name}: the source ended the copy (or "
                                      "the SSH connection was lost)") from None
            except TimeoutError:
                raise Timeout(f"{disk.parent.name}: no data from the source for "
                              f"{SILENCE_LIMIT:g} s; copy given up") from None
            if chunk.count(0) == len(chunk):
                os.lseek(fd, len(chunk), os.SEEK_CUR)
            else:
                write_all(fd, chunk)
            left -= len(chunk)
        try:
            os.ftruncate(fd, size)
            os.fsync(fd)
        except OSError as exc:
            raise os_failure(f"cannot write {disk}: {exc.strerror or exc}", exc) from None
    finally:
        os.close(fd)


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as image:
        while chunk := image.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def describe(result: OfflineResult) -> str:
    """One line for a person."""
    if result.copied == 0 and result.sha256 is None:
        moved = f"its definition (the disk stays on Ceph: {result.disk})"
    else:
        kept = ("removed here" if result.source_disk == "removed"
                else "the image here is yours: kept")
        moved = (f"its disk copied to {result.disk} there ({format_bytes(result.copied)}, "
                 f"sha256 {result.sha256[:16] if result.sha256 else '?'}… the same on both "
                 f"hosts; {kept})")
    return f"{result.name}: moved to {result.target} (stopped) in {result.total_s:.1f} s: {moved}"

