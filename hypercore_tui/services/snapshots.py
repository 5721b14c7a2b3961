"""Snapshots that never endanger a disk.

The rule (DESIGN.md §4): no writing ``qemu-img`` command ever runs on an image a
running QEMU holds. So:

* a running (or paused) VM is snapshotted by QEMU itself: ``snapshot-save`` /
  ``snapshot-load`` / ``snapshot-delete`` jobs (RAM + disks), or a
  ``blockdev-snapshot-internal-sync`` transaction for ``--disk-only``;
* a stopped VM's qcow2 image is handled with ``qemu-img snapshot``, only after the
  VM's state was checked *while holding the VM's lock* (so nothing can boot it
  meanwhile), and without ``-U``: QEMU's image lock is the last line of defence.

Restoring a RAM snapshot into a stopped VM boots it into the saved state
(``-loadvm``). Restoring a disk-only snapshot under a running guest is refused:
reverting a disk beneath a live kernel corrupts its filesystems.

Dispatch is on ``spec.disk.kind`` (:func:`_offline_backend`): RBD disks use
``services.rbd_disks.RbdOffline``; the QMP path is the same for every kind (RBD
nodes listed first in a job's devices). Every call serialises on the VM lock,
every QMP call and job wait has a timeout, and every failure is a one-line
:class:`HypercoreError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import os
import secrets
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, replace
from typing import Any, Protocol

from hypercore_tui.adapters import images
from hypercore_tui.adapters.qmp import QmpCommandError, QmpSession, qmp_session
from hypercore_tui.core.argv import DISK_NODE
from hypercore_tui.core.errors import (
    AlreadyExists,
    Busy,
    HypercoreError,
    InvalidInput,
    InvalidState,
    NoSpace,
    NotFound,
    OperationFailed,
    Timeout,
    says_no_space,
)
from hypercore_tui.core.layout import VmPaths
from hypercore_tui.core.models import DiskKind, VmSpec, VmState
from hypercore_tui.core.names import validate_snapshot_tag
from hypercore_tui.core.progress import Progress
from hypercore_tui.core.snapshots import (
    FINAL_JOB_STATES,
    JOB_PREFIX,
    SnapshotInfo,
    explain_save_failure,
    find_job,
    find_snapshot,
    generate_tag,
    job_id,
    job_progress,
    load_failure_left_vm_intact,
    order_snapshot_devices,
    snapshot_space_error,
    snapshots_from_qemu,
)
from hypercore_tui.services import bases, boot, rbd_disks, records, shared, vmstate
from hypercore_tui.services.context import Context

__all__ = [
    "SnapshotInfo", "create_snapshot", "delete_snapshot", "list_snapshots", "restore_snapshot",
]

log = logging.getLogger("hypercore.snapshots")
log.addHandler(logging.NullHandler())

#: How long a RAM save/load job may take (a big guest under TCG is slow);
#: ``HYPERCORE_SNAPSHOT_TIMEOUT`` (seconds) or the ``timeout`` argument override it.
DEFAULT_JOB_TIMEOUT = 600.0
DISK_ONLY_TIMEOUT = 120.0
LIST_LOCK_WAIT = 10.0
QMP_TIMEOUT = 10.0
_EVENT_POLL = 0.05
_JOB_POLL = 2.0
_CANCEL_GRACE = 10.0

# -- helpers ----------------------------------------------------------------------------


def job_timeout(ctx: Context, timeout: float | None = None) -> float:
    if timeout is not None:
        return timeout
    text = ctx.environ.get("HYPERCORE_SNAPSHOT_TIMEOUT", "").strip()
    if not text:
        return DEFAULT_JOB_TIMEOUT
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if value <= 0:
        raise InvalidInput(f"HYPERCORE_SNAPSHOT_TIMEOUT must be a positive number of seconds, "
                           f"not {text!r}")
    return value


def _report(progress: Progress | None, stage: str, fraction: float | None) -> None:
    if progress is not None:
        progress(stage, fraction, 1.0)


def _not_found(name: str, tag: str) -> NotFound:
    return NotFound(f"{name} has no snapshot {tag!r} (see `hypercore snapshot list {name}`)")


def _new_tag(name: str, tag: str | None, existing: list[SnapshotInfo]) -> str:
    taken = [s.tag for s in existing]
    if tag is None:
        return generate_tag(dt.datetime.now(), taken)
    if tag in taken:
        raise AlreadyExists(f"{name} already has a snapshot {tag!r}; choose another tag or "
                           f"delete it first")
    return tag


def _free_bytes(spec: VmSpec) -> int | None:
    """Space left on the filesystem of a local disk image (None: RBD, or unknown)."""
    if spec.disk.is_rbd or not spec.disk.path:
        return None
    try:
        info = os.statvfs(os.path.dirname(spec.disk.path) or "/")
    except OSError:
        return None
    return info.f_bavail * info.f_frsize


def _devices(spec: VmSpec) -> list[str]:
    """The VM's snapshot devices (format node names), RBD first."""
    return order_snapshot_devices([(DISK_NODE, spec.disk.kind)])


# -- stopped VMs: qemu-img, dispatched on the disk kind --------------------------------


class OfflineBackend(Protocol):
    """Snapshots of a stopped VM's disk. Blocking: called through asyncio.to_thread."""

    def list(self, spec: VmSpec) -> list[SnapshotInfo]: ...
    def create(self, spec: VmSpec, tag: str) -> None: ...
    def apply(self, spec: VmSpec, tag: str) -> None: ...
    def delete(self, spec: VmSpec, tag: str) -> None: ...


class Qcow2Offline:
    """Internal snapshots in a local qcow2 file, by ``qemu-img snapshot`` (no ``-U``)."""

    def _path(self, spec: VmSpec) -> str:
        assert spec.disk.path is not None
        return spec.disk.path

    def list(self, spec: VmSpec) -> list[SnapshotInfo]:
        return images.list_snapshots(self._path(spec), fmt="qcow2")

    def create(self, spec: VmSpec, tag: str) -> None:
        images.snapshot_create(self._path(spec), tag)

    def apply(self, spec: VmSpec, tag: str) -> None:
        images.snapshot_apply(self._path(spec), tag)

    def delete(self, spec: VmSpec, tag: str) -> None:
        images.snapshot_delete(self._path(spec), tag)


class RawOffline:
    """A raw image holds no snapshots: listing is empty, changing is refused."""

    def _refuse(self, spec: VmSpec) -> InvalidState:
        return InvalidState(
            f"{spec.name}'s disk {spec.disk.describe()} is a raw image, which cannot hold "
            "snapshots; convert it to qcow2 (qemu-img convert -O qcow2) to use snapshots")

    def list(self, spec: VmSpec) -> list[SnapshotInfo]:
        return []

    def create(self, spec: VmSpec, tag: str) -> None:
        raise self._refuse(spec)

    def apply(self, spec: VmSpec, tag: str) -> None:
        raise self._refuse(spec)

    def delete(self, spec: VmSpec, tag: str) -> None:
        raise self._refuse(spec)


def _offline_backend(ctx: Context, spec: VmSpec) -> OfflineBackend:
    """The stopped-VM backend for the VM's disk kind (the one dispatch point)."""
    if spec.disk.kind is DiskKind.QCOW2:
        return Qcow2Offline()
    if spec.disk.kind is DiskKind.RAW:
        return RawOffline()
    if spec.disk.kind is DiskKind.RBD:
        # No image lock protects an RBD image: that backend checks its watchers itself.
        return rbd_disks.RbdOffline(ctx)
    raise OperationFailed(f"{spec.name}: snapshots of a {spec.disk.kind} disk are not "
                          "supported")


async def _offline_find(backend: OfflineBackend, spec: VmSpec, tag: str) -> SnapshotInfo:
    snap = find_snapshot(await asyncio.to_thread(backend.list, spec), tag)
    if snap is None:
        raise _not_found(spec.name, tag)
    return snap


# -- running VMs: QMP ------------------------------------------------------------------


@contextlib.asynccontextmanager
async def _session(paths: VmPaths) -> AsyncIterator[QmpSession]:
    async with qmp_session(paths.qmp_socket, vm_name=paths.name, timeout=5.0,
                           lock_timeout=10.0, events=True) as qmp:
        yield qmp


async def _live_list(qmp: QmpSession, spec: VmSpec) -> list[SnapshotInfo]:
    """Snapshots from ``query-block`` (the format node's image holds them)."""
    blocks = await qmp.execute("query-block", timeout=QMP_TIMEOUT)
    for block in blocks if isinstance(blocks, list) else []:
        inserted = block.get("inserted") if isinstance(block, Mapping) else None
        if isinstance(inserted, Mapping) and inserted.get("node-name") == DISK_NODE:
            image = inserted.get("image")
            records = image.get("snapshots", []) if isinstance(image, Mapping) else []
            snaps = snapshots_from_qemu(records if isinstance(records, list) else [])
            if spec.disk.is_rbd:
                # QEMU's rbd driver reports the image size as vm-state-size (and no date):
                # RBD snapshots never hold RAM (raw over rbd cannot store a vmstate).
                snaps = [replace(s, has_ram=False, vmstate_bytes=0) for s in snaps]
            return snaps
    raise OperationFailed(f"{spec.name}: QEMU reports no disk node {DISK_NODE!r}")


async def _live_find(qmp: QmpSession, spec: VmSpec, tag: str) -> SnapshotInfo:
    snap = find_snapshot(await _live_list(qmp, spec), tag)
    if snap is None:
        raise _not_found(spec.name, tag)
    return snap


async def _is_running(qmp: QmpSession) -> bool:
    status = await qmp.execute("query-status", timeout=QMP_TIMEOUT)
    return isinstance(status, Mapping) and status.get("status") == "running"


async def _resume(qmp: QmpSession, name: str) -> None:
    """``cont`` a VM that a failed job left stopped (best effort, logged)."""
    try:
        if not await _is_running(qmp):
            await qmp.execute("cont", timeout=QMP_TIMEOUT)
            log.info("%s: resumed after a failed snapshot job", name)
    except HypercoreError as exc:
        log.warning("%s: could not resume after a failed snapshot job: %s", name, exc)


async def _dismiss_stale_jobs(qmp: QmpSession, name: str) -> None:
    """Dismiss finished jobs an earlier (killed) hypercore left; refuse if one still runs."""
    jobs = await qmp.execute("query-jobs", timeout=QMP_TIMEOUT)
    for job in jobs if isinstance(jobs, list) else []:
        jid = str(job.get("id", ""))
        if not jid.startswith(JOB_PREFIX):
            continue
        if job.get("status") == "concluded":
            log.info("%s: dismissing stale job %s (%s)", name, jid, job.get("error", "ok"))
            await qmp.execute("job-dismiss", {"id": jid}, timeout=QMP_TIMEOUT)
        else:
            raise Busy(f"{name}: an earlier snapshot job ({jid}) is still running in QEMU; "
                       "try again when it has finished")


@dataclass(frozen=True)
class JobResult:
    error: str | None  # QEMU's reason when the job failed
    paused_seconds: float | None  # STOP -> RESUME while the job ran (QEMU's clock)


async def _run_job(qmp: QmpSession, paths: VmPaths, command: str, arguments: dict[str, Any],
                   *, what: str, timeout: float, progress: Progress | None) -> JobResult:
    """Start a snapshot job and wait for it to conclude; read its error, dismiss it.

    JOB_STATUS_CHANGE events say when it is done; ``query-jobs`` polling is the
    fallback (and gives progress). While QEMU saves RAM its monitor does not answer,
    so a poll that times out just means "still busy" until the job deadline. At the
    deadline the job is cancelled and gets a short grace period to conclude; a job
    that still runs then is left to QEMU (the next snapshot operation dismisses it).

    The VM's job record names the job from just before it starts, and says when it
    concluded, for dashboards (QEMU's monitor is silent while it saves RAM, and a
    dashboard without the monitor socket gets no events).
    """
    name = paths.name
    jid = job_id(command.removeprefix("snapshot-"), secrets.token_hex(4))
    # QEMU may run the job's first part (the whole RAM save) before its reply to the
    # start command goes out: that reply gets the job's time, not a command's.
    _report(progress, what, None)
    records.write_job_record(paths, jid, command)
    try:
        await qmp.execute(command, {"job-id": jid, **arguments},
                          timeout=max(QMP_TIMEOUT, timeout))
    except QmpCommandError:
        records.finish_job_record(paths, jid)  # refused: no job was created
        raise
    start = time.monotonic()
    deadline = start + timeout
    last_poll = start
    stopped_at: float | None = None
    paused = 0.0
    cancelled = False
    concluded = False

    def take_events() -> bool:
        nonlocal stopped_at, paused
        done = False
        for event in qmp.pending_events():
            if event.name == "STOP":
                stopped_at = event.timestamp
            elif event.name == "RESUME" and stopped_at is not None:
                paused += max(0.0, event.timestamp - stopped_at)
                stopped_at = None
            elif (event.name == "JOB_STATUS_CHANGE" and event.data.get("id") == jid
                  and event.data.get("status") in FINAL_JOB_STATES):
                done = True
        return done

    while not concluded:
        if take_events():
            break
        now = time.monotonic()
        if now >= deadline:
            if cancelled:
                raise Timeout(f"{name}: {what} did not finish within {timeout:g}s and QEMU "
                              f"has not cancelled it yet (job {jid}); check "
                              f"`hypercore snapshot list {name}` later")
            cancelled = True
            log.warning("%s: %s job %s timed out; cancelling", name, command, jid)
            with contextlib.suppress(HypercoreError):
                await qmp.execute("job-cancel", {"id": jid}, timeout=_CANCEL_GRACE / 2)
            deadline = time.monotonic() + _CANCEL_GRACE
            last_poll = 0.0  # poll right away
            continue
        if now - last_poll >= _JOB_POLL:
            last_poll = now
            try:
                jobs = await qmp.execute("query-jobs",
                                         timeout=max(0.5, min(5.0, deadline - now)))
            except Timeout:
                continue  # the monitor is busy (saving RAM): keep waiting
            job = find_job(jobs, jid)
            if job is None or job.get("status") in FINAL_JOB_STATES:
                concluded = True
                continue
            fraction = job_progress(job)
            if fraction is not None:
                _report(progress, what, fraction)
        await asyncio.sleep(_EVENT_POLL)

    jobs = await qmp.execute("query-jobs",
                             timeout=max(QMP_TIMEOUT, deadline - time.monotonic()))
    job = find_job(jobs, jid)
    # Concluded (or gone): QEMU tells the truth from here on.
    records.finish_job_record(paths, jid)
    error: str | None
    if job is None:
        error = "QEMU dropped the job before its result could be read"
    else:
        raw_error = job.get("error")
        error = str(raw_error) if raw_error else None
        try:
            await qmp.execute("job-dismiss", {"id": jid}, timeout=QMP_TIMEOUT)
        except HypercoreError as exc:  # dismissed on the next run (_dismiss_stale_jobs)
            log.warning("%s: job-dismiss %s failed: %s", name, jid, exc)
    take_events()  # a RESUME that came with the conclusion
    log.info("%s: %s job %s %s (guest paused %.3fs)", name, command, jid,
             f"failed: {error}" if error else "done", paused)
    if cancelled and error:
        raise Timeout(f"{name}: {what} did not finish within {timeout:g}s and was cancelled "
                      "(set HYPERCORE_SNAPSHOT_TIMEOUT for bigger guests)")
    return JobResult(error=error, paused_seconds=paused if stopped_at is None else None)


# -- list -----------------------------------------------------------------------------


async def list_snapshots(ctx: Context, name: str) -> list[SnapshotInfo]:
    """The VM's snapshots, oldest first (from QEMU when running, qemu-img when stopped)."""
    paths = ctx.vm_paths(name)
    async with vmstate.locked_definition(ctx, name, "snapshot list",
                                         timeout=LIST_LOCK_WAIT) as spec:
        # RBD: the binding lists a running VM's snapshots too (read-only; real dates).
        if vmstate.running_or_stopped(paths) is VmState.RUNNING and not spec.disk.is_rbd:
            async with _session(paths) as qmp:
                return await _live_list(qmp, spec)
        return await asyncio.to_thread(_offline_backend(ctx, spec).list, spec)


# -- create ---------------------------------------------------------------------------


async def create_snapshot(ctx: Context, name: str, tag: str | None = None, *,
                          disk_only: bool = False, progress: Progress | None = None,
                          timeout: float | None = None) -> SnapshotInfo:
    """Snapshot the VM: RAM + disks when running (disks only with ``disk_only``),
    the disk when stopped. ``tag`` defaults to ``snap-YYYYmmdd-HHMMSS``."""
    if tag is not None:
        validate_snapshot_tag(tag)
    paths = ctx.vm_paths(name)
    limit = job_timeout(ctx, timeout)
    async with vmstate.locked_definition(ctx, name, "snapshot create") as spec:
        spec = bases.check_not_base(ctx, spec, "its disk must not change; snapshot a clone "
                                    "instead")
        if vmstate.running_or_stopped(paths) is VmState.RUNNING:
            if spec.disk.is_rbd and disk_only:  # else refused below: no RAM state on RBD
                await rbd_disks.check_reachable(ctx, spec, "a live snapshot")
            return await _live_create(spec, paths, tag, disk_only=disk_only,
                                      progress=progress, timeout=limit)
        backend = _offline_backend(ctx, spec)
        tag = _new_tag(name, tag, await asyncio.to_thread(backend.list, spec))
        _report(progress, "writing the snapshot into the stopped VM's disk image", None)
        await asyncio.to_thread(backend.create, spec, tag)
        snap = find_snapshot(await asyncio.to_thread(backend.list, spec), tag)
        if snap is None:
            raise OperationFailed(f"{name}: qemu-img reported success but snapshot {tag!r} "
                                  "is not in the image")
        _report(progress, "done", 1.0)
        return snap


async def _live_create(spec: VmSpec, paths: VmPaths, tag: str | None, *, disk_only: bool,
                       progress: Progress | None, timeout: float) -> SnapshotInfo:
    name = spec.name
    if spec.disk.is_rbd and not disk_only:
        raise InvalidState(f"{name}'s disk is an RBD image, which cannot hold the VM's RAM "
                           "state: use --disk-only (crash-consistent), or stop the VM first")
    async with _session(paths) as qmp:
        tag = _new_tag(name, tag, await _live_list(qmp, spec))
        no_space = snapshot_space_error(name, _free_bytes(spec), ram_bytes=None if disk_only
                                        else spec.ram_mb * 1024 * 1024)
        if no_space:
            raise OperationFailed(no_space)
        devices = _devices(spec)
        if disk_only:
            await shared.remount_left_unmounted(spec, paths)  # an interrupted save's leftover
            _report(progress, "snapshotting the disk (guest keeps running)", None)
            actions = [{"type": "blockdev-snapshot-internal-sync",
                        "data": {"device": node, "name": tag}} for node in devices]
            try:
                await qmp.execute("transaction", {"actions": actions}, timeout=DISK_ONLY_TIMEOUT)
            except QmpCommandError as exc:
                raise OperationFailed(explain_save_failure(name, exc.desc)) from None
            # No QEMU job here: recorded as a finished one, so dashboards re-read the list.
            records.write_job_record(paths, job_id("disk", secrets.token_hex(4)),
                                     "blockdev-snapshot-internal-sync", finished=True)
        else:
            await _dismiss_stale_jobs(qmp, name)
            was_running = await _is_running(qmp)
            async with shared.unmounted_for_ram_save(spec, paths) as unmounted:
                if unmounted:
                    _report(progress, "shared folder unmounted in the guest for the save", None)
                result = await _run_job(qmp, paths, "snapshot-save",
                                        {"tag": tag, "vmstate": DISK_NODE, "devices": devices},
                                        what=f"saving RAM and disks of {name}", timeout=timeout,
                                        progress=progress)
            if result.error:
                if was_running:
                    await _resume(qmp, name)
                raise OperationFailed(explain_save_failure(
                    name, result.error, free_bytes=_free_bytes(spec),
                    ram_bytes=spec.ram_mb * 1024 * 1024))
            if was_running and result.paused_seconds is not None:
                _report(progress, f"guest was paused {result.paused_seconds:.2f}s", 1.0)
        snap = find_snapshot(await _live_list(qmp, spec), tag)
    if snap is None:
        raise OperationFailed(f"{name}: QEMU reported success but snapshot {tag!r} is not listed")
    _report(progress, "done", 1.0)
    return snap


# -- restore --------------------------------------------------------------------------


async def restore_snapshot(ctx: Context, name: str, tag: str, *,
                           progress: Progress | None = None,
                           timeout: float | None = None) -> None:
    """Bring the VM back to snapshot ``tag``.

    Running VM + RAM snapshot: ``snapshot-load`` (the guest continues from then).
    Running VM + disk-only snapshot: refused (stop it first).
    Stopped VM + RAM snapshot: boots it into the saved state (``-loadvm``).
    Stopped VM + disk-only snapshot: ``qemu-img snapshot -a``.
    """
    validate_snapshot_tag(tag)
    paths = ctx.vm_paths(name)
    limit = job_timeout(ctx, timeout)
    async with vmstate.locked_definition(ctx, name, "snapshot restore") as spec:
        spec = bases.check_not_base(ctx, spec, "restoring a snapshot would change the disk "
                                    "they are built on")
        if vmstate.running_or_stopped(paths) is VmState.RUNNING:
            await _live_restore(spec, paths, tag, progress=progress, timeout=limit)
            return
        backend = _offline_backend(ctx, spec)
        snap = await _offline_find(backend, spec, tag)
        if snap.has_ram:
            _report(progress, f"booting {name} into the saved state", None)
            await boot.boot_vm(ctx, name, loadvm=tag, lock_held=True)
            await shared.remount_after_ram_change(spec, paths)
        else:
            _report(progress, "reverting the stopped VM's disk image", None)
            await asyncio.to_thread(backend.apply, spec, tag)
        _report(progress, "done", 1.0)


async def _live_restore(spec: VmSpec, paths: VmPaths, tag: str, *, progress: Progress | None,
                        timeout: float) -> None:
    name = spec.name
    async with _session(paths) as qmp:
        snap = await _live_find(qmp, spec, tag)
        if not snap.has_ram:
            raise InvalidState(
                f"{name} is running and snapshot {tag!r} holds no RAM state: reverting the "
                "disk under a running guest would corrupt it; stop the VM first "
                f"(`hypercore stop-vm {name}`), then restore")
        await _dismiss_stale_jobs(qmp, name)
        was_running = await _is_running(qmp)
        result = await _run_job(qmp, paths, "snapshot-load",
                                {"tag": tag, "vmstate": DISK_NODE, "devices": _devices(spec)},
                                what=f"loading snapshot {tag} into {name}", timeout=timeout,
                                progress=progress)
        if result.error is None:
            if was_running:
                await _resume(qmp, name)  # QEMU restarts it itself; make sure
            # RAM snapshots are saved with the share unmounted: mount it again.
            await shared.remount_after_ram_change(spec, paths)
            return
        reason = " ".join(result.error.split())
        if load_failure_left_vm_intact(reason):
            if was_running:
                await _resume(qmp, name)
            raise OperationFailed(f"{name}: restoring snapshot {tag!r} failed: {reason}")
        raise OperationFailed(
            f"{name}: restoring snapshot {tag!r} failed part-way ({reason}); the VM is left "
            "paused because its state may be inconsistent: restore another snapshot or "
            f"`hypercore stop-vm {name} --force`")


# -- delete ---------------------------------------------------------------------------


async def delete_snapshot(ctx: Context, name: str, tag: str, *,
                          progress: Progress | None = None,
                          timeout: float | None = None) -> None:
    """Delete snapshot ``tag`` (``snapshot-delete`` job when running, qemu-img when stopped)."""
    validate_snapshot_tag(tag)
    paths = ctx.vm_paths(name)
    limit = job_timeout(ctx, timeout)
    async with vmstate.locked_definition(ctx, name, "snapshot delete") as spec:
        spec = bases.check_not_base(ctx, spec, "its disk must not change while they exist")
        if vmstate.running_or_stopped(paths) is VmState.RUNNING:
            if spec.disk.is_rbd:
                await rbd_disks.check_reachable(ctx, spec, "deleting a snapshot")
            async with _session(paths) as qmp:
                await _live_find(qmp, spec, tag)
                await _dismiss_stale_jobs(qmp, name)
                result = await _run_job(qmp, paths, "snapshot-delete",
                                        {"tag": tag, "devices": _devices(spec)},
                                        what=f"deleting snapshot {tag} of {name}",
                                        timeout=limit, progress=progress)
                # A share an interrupted RAM save left unmounted is mounted again.
                await shared.remount_left_unmounted(spec, paths)
            if result.error:
                reason = " ".join(result.error.split())
                if says_no_space(reason):
                    raise OperationFailed(_delete_needs_space(name, tag, reason))
                raise OperationFailed(f"{name}: deleting snapshot {tag!r} failed: {reason}")
        else:
            backend = _offline_backend(ctx, spec)
            await _offline_find(backend, spec, tag)
            _report(progress, "deleting the snapshot from the stopped VM's disk image", None)
            try:
                await asyncio.to_thread(backend.delete, spec, tag)
            except NoSpace as exc:
                reason = exc.message.removeprefix(images.NO_SPACE + ": ")
                raise OperationFailed(_delete_needs_space(name, tag, reason)) from None
        _report(progress, "done", 1.0)


def _delete_needs_space(name: str, tag: str, reason: str) -> str:
    # qcow2 writes the shortened snapshot table to a new place before it frees anything.
    return (f"{name}: no space left on device to delete snapshot {tag!r}: the image needs a "
            f"few KiB free to rewrite its snapshot table, then gives the snapshot's space "
            f"back; free a little space first ({reason})")
