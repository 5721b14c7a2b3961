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

Here are the verbs (list, create, restore, delete), which pick the path. A stopped
VM's disk goes through ``services.snapshot_offline``, dispatched on ``spec.disk.kind``
(RBD disks use ``services.rbd_disks.RbdOffline``); a running VM through
``services.snapshot_qmp``, the same for every kind (RBD nodes listed first in a job's
devices). Every call serialises on the VM lock, every QMP call and job wait has a
timeout, and every failure is a one-line :class:`HypercoreError`.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import secrets

from hypercore_tui.adapters import images
from hypercore_tui.adapters.qmp import QmpCommandError, QmpSession
from hypercore_tui.core.argv import DISK_NODE
from hypercore_tui.core.errors import (
    AlreadyExists,
    InvalidState,
    NoSpace,
    NotFound,
    OperationFailed,
    says_no_space,
)
from hypercore_tui.core.layout import VmPaths
from hypercore_tui.core.models import VmSpec, VmState
from hypercore_tui.core.names import validate_snapshot_tag
from hypercore_tui.core.progress import Progress
from hypercore_tui.core.snapshots import (
    SnapshotInfo,
    explain_save_failure,
    find_snapshot,
    generate_tag,
    job_id,
    load_failure_left_vm_intact,
    order_snapshot_devices,
    snapshot_space_error,
)
from hypercore_tui.services import (
    bases,
    boot,
    guest_clock,
    rbd_disks,
    records,
    shared,
    snapshot_offline,
    snapshot_qmp,
    vmstate,
)
from hypercore_tui.services.context import Context
from hypercore_tui.services.guest_clock import ClockCorrection
from hypercore_tui.services.snapshot_qmp import report

__all__ = [
    "SnapshotInfo", "create_snapshot", "delete_snapshot", "list_snapshots", "restore_snapshot",
]

DISK_ONLY_TIMEOUT = 120.0
LIST_LOCK_WAIT = 10.0

# -- helpers ----------------------------------------------------------------------------


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


async def _offline_find(backend: snapshot_offline.OfflineBackend, spec: VmSpec,
                        tag: str) -> SnapshotInfo:
    snap = find_snapshot(await asyncio.to_thread(backend.list, spec), tag)
    if snap is None:
        raise _not_found(spec.name, tag)
    return snap


async def _live_find(qmp: QmpSession, spec: VmSpec, tag: str) -> SnapshotInfo:
    snap = find_snapshot(await snapshot_qmp.live_list(qmp, spec), tag)
    if snap is None:
        raise _not_found(spec.name, tag)
    return snap


# -- list -----------------------------------------------------------------------------


async def list_snapshots(ctx: Context, name: str) -> list[SnapshotInfo]:
    """The VM's snapshots, oldest first (from QEMU when running, qemu-img when stopped)."""
    paths = ctx.vm_paths(name)
    async with vmstate.locked_definition(ctx, name, "snapshot list",
                                         timeout=LIST_LOCK_WAIT) as spec:
        # RBD: the binding lists a running VM's snapshots too (read-only; real dates).
        if vmstate.running_or_stopped(paths) is VmState.RUNNING and not spec.disk.is_rbd:
            async with snapshot_qmp.session(paths) as qmp:
                return await snapshot_qmp.live_list(qmp, spec)
        return await asyncio.to_thread(snapshot_offline.backend_for(ctx, spec).list, spec)


# -- create ---------------------------------------------------------------------------


async def create_snapshot(ctx: Context, name: str, tag: str | None = None, *,
                          disk_only: bool = False, progress: Progress | None = None,
                          timeout: float | None = None) -> SnapshotInfo:
    """Snapshot the VM: RAM + disks when running (disks only with ``disk_only``),
    the disk when stopped. ``tag`` defaults to ``snap-YYYYmmdd-HHMMSS``."""
    if tag is not None:
        validate_snapshot_tag(tag)
    paths = ctx.vm_paths(name)
    limit = snapshot_qmp.job_timeout(ctx, timeout)
    async with vmstate.locked_definition(ctx, name, "snapshot create") as spec:
        spec = bases.check_not_base(ctx, spec, "its disk must not change; snapshot a clone "
                                    "instead")
        if vmstate.running_or_stopped(paths) is VmState.RUNNING:
            if spec.disk.is_rbd and disk_only:  # else refused below: no RAM state on RBD
                await rbd_disks.check_reachable(ctx, spec, "a live snapshot")
            return await _live_create(spec, paths, tag, disk_only=disk_only,
                                      progress=progress, timeout=limit)
        backend = snapshot_offline.backend_for(ctx, spec)
        tag = _new_tag(name, tag, await asyncio.to_thread(backend.list, spec))
        report(progress, "writing the snapshot into the stopped VM's disk image", None)
        await asyncio.to_thread(backend.create, spec, tag)
        snap = find_snapshot(await asyncio.to_thread(backend.list, spec), tag)
        if snap is None:
            raise OperationFailed(f"{name}: qemu-img reported success but snapshot {tag!r} "
                                  "is not in the image")
        report(progress, "done", 1.0)
        return snap


async def _live_create(spec: VmSpec, paths: VmPaths, tag: str | None, *, disk_only: bool,
                       progress: Progress | None, timeout: float) -> SnapshotInfo:
    name = spec.name
    if spec.disk.is_rbd and not disk_only:
        raise InvalidState(f"{name}'s disk is an RBD image, which cannot hold the VM's RAM "
                           "state: use --disk-only (crash-consistent), or stop the VM first")
    async with snapshot_qmp.session(paths) as qmp:
        tag = _new_tag(name, tag, await snapshot_qmp.live_list(qmp, spec))
        no_space = snapshot_space_error(name, _free_bytes(spec), ram_bytes=None if disk_only
                                        else spec.ram_mb * 1024 * 1024)
        if no_space:
            raise OperationFailed(no_space)
        devices = _devices(spec)
        if disk_only:
            await shared.remount_left_unmounted(spec, paths)  # an interrupted save's leftover
            report(progress, "snapshotting the disk (guest keeps running)", None)
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
            await snapshot_qmp.dismiss_stale_jobs(qmp, name)
            was_running = await snapshot_qmp.is_running(qmp)
            async with shared.unmounted_for_ram_save(spec, paths) as unmounted:
                if unmounted:
                    report(progress, "shared folder unmounted in the guest for the save", None)
                result = await snapshot_qmp.run_job(
                    qmp, paths, "snapshot-save",
                    {"tag": tag, "vmstate": DISK_NODE, "devices": devices},
                    what=f"saving RAM and disks of {name}", timeout=timeout, progress=progress)
            if result.error:
                if was_running:
                    await snapshot_qmp.resume(qmp, name)
                raise OperationFailed(explain_save_failure(
                    name, result.error, free_bytes=_free_bytes(spec),
                    ram_bytes=spec.ram_mb * 1024 * 1024))
            if was_running and result.paused_seconds is not None:
                report(progress, f"guest was paused {result.paused_seconds:.2f}s", 1.0)
        snap = find_snapshot(await snapshot_qmp.live_list(qmp, spec), tag)
    if snap is None:
        raise OperationFailed(f"{name}: QEMU reported success but snapshot {tag!r} is not listed")
    if not disk_only:
        # The guest's clock stood still while QEMU saved its RAM (seconds for GiBs).
        correction = await guest_clock.correct_guest_clock(paths)
        if correction is not None:
            report(progress, correction.describe(), 1.0)
    report(progress, "done", 1.0)
    return snap


# -- restore --------------------------------------------------------------------------


async def restore_snapshot(ctx: Context, name: str, tag: str, *,
                           progress: Progress | None = None,
                           timeout: float | None = None) -> ClockCorrection | None:
    """Bring the VM back to snapshot ``tag``.

    Running VM + RAM snapshot: ``snapshot-load`` (the guest continues from then).
    Running VM + disk-only snapshot: refused (stop it first).
    Stopped VM + RAM snapshot: boots it into the saved state (``-loadvm``).
    Stopped VM + disk-only snapshot: ``qemu-img snapshot -a``.

    A guest brought back to a RAM snapshot has the clock of the moment it was saved: it
    is set to the host's (best effort, ``services.guest_clock``); returns that correction.
    """
    validate_snapshot_tag(tag)
    paths = ctx.vm_paths(name)
    limit = snapshot_qmp.job_timeout(ctx, timeout)
    async with vmstate.locked_definition(ctx, name, "snapshot restore") as spec:
        spec = bases.check_not_base(ctx, spec, "restoring a snapshot would change the disk "
                                    "they are built on")
        if vmstate.running_or_stopped(paths) is VmState.RUNNING:
            await _live_restore(spec, paths, tag, progress=progress, timeout=limit)
            return await guest_clock.correct_guest_clock(paths)
        backend = snapshot_offline.backend_for(ctx, spec)
        snap = await _offline_find(backend, spec, tag)
        correction = None
        if snap.has_ram:
            report(progress, f"booting {name} into the saved state", None)
            await boot.boot_vm(ctx, name, loadvm=tag, lock_held=True)
            await shared.remount_after_ram_change(spec, paths)
            correction = await guest_clock.correct_guest_clock(paths)
        else:
            report(progress, "reverting the stopped VM's disk image", None)
            await asyncio.to_thread(backend.apply, spec, tag)
        report(progress, "done", 1.0)
        return correction


async def _live_restore(spec: VmSpec, paths: VmPaths, tag: str, *, progress: Progress | None,
                        timeout: float) -> None:
    name = spec.name
    async with snapshot_qmp.session(paths) as qmp:
        snap = await _live_find(qmp, spec, tag)
        if not snap.has_ram:
            raise InvalidState(
                f"{name} is running and snapshot {tag!r} holds no RAM state: reverting the "
                "disk under a running guest would corrupt it; stop the VM first "
                f"(`hypercore stop-vm {name}`), then restore")
        await snapshot_qmp.dismiss_stale_jobs(qmp, name)
        was_running = await snapshot_qmp.is_running(qmp)
        result = await snapshot_qmp.run_job(
            qmp, paths, "snapshot-load",
            {"tag": tag, "vmstate": DISK_NODE, "devices": _devices(spec)},
            what=f"loading snapshot {tag} into {name}", timeout=timeout, progress=progress)
        if result.error is None:
            if was_running:
                await snapshot_qmp.resume(qmp, name)  # QEMU restarts it itself; make sure
            # RAM snapshots are saved with the share unmounted: mount it again.
            await shared.remount_after_ram_change(spec, paths)
            return
        reason = " ".join(result.error.split())
        if load_failure_left_vm_intact(reason):
            if was_running:
                await snapshot_qmp.resume(qmp, name)
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
    limit = snapshot_qmp.job_timeout(ctx, timeout)
    async with vmstate.locked_definition(ctx, name, "snapshot delete") as spec:
        spec = bases.check_not_base(ctx, spec, "its disk must not change while they exist")
        if vmstate.running_or_stopped(paths) is VmState.RUNNING:
            if spec.disk.is_rbd:
                await rbd_disks.check_reachable(ctx, spec, "deleting a snapshot")
            async with snapshot_qmp.session(paths) as qmp:
                await _live_find(qmp, spec, tag)
                await snapshot_qmp.dismiss_stale_jobs(qmp, name)
                result = await snapshot_qmp.run_job(
                    qmp, paths, "snapshot-delete", {"tag": tag, "devices": _devices(spec)},
                    what=f"deleting snapshot {tag} of {name}", timeout=limit, progress=progress)
                # A share an interrupted RAM save left unmounted is mounted again.
                await shared.remount_left_unmounted(spec, paths)
            if result.error:
                reason = " ".join(result.error.split())
                if says_no_space(reason):
                    raise OperationFailed(_delete_needs_space(name, tag, reason))
                raise OperationFailed(f"{name}: deleting snapshot {tag!r} failed: {reason}")
        else:
            backend = snapshot_offline.backend_for(ctx, spec)
            await _offline_find(backend, spec, tag)
            report(progress, "deleting the snapshot from the stopped VM's disk image", None)
            try:
                await asyncio.to_thread(backend.delete, spec, tag)
            except NoSpace as exc:
                reason = exc.message.removeprefix(images.NO_SPACE + ": ")
                raise OperationFailed(_delete_needs_space(name, tag, reason)) from None
        report(progress, "done", 1.0)


def _delete_needs_space(name: str, tag: str, reason: str) -> str:
    # qcow2 writes the shortened snapshot table to a new place before it frees anything.
    return (f"{name}: no space left on device to delete snapshot {tag!r}: the image needs a "
            f"few KiB free to rewrite its snapshot table, then gives the snapshot's space "
            f"back; free a little space first ({reason})")
