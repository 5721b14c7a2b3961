"""Clones of a stopped VM: a full copy, or a linked clone on a qcow2 overlay.

* Full clone: ``qemu-img convert`` of the source disk into a new qcow2 image
  (independent of the source; internal snapshots are not copied).
* Linked clone: a new qcow2 overlay whose backing file is the source's disk
  (``-b SRC -F FMT``). The source becomes a *base* (``VmSpec.base_of``): it cannot
  be booted, deleted or have its snapshots changed while clones exist, because any
  change to a backing file corrupts the overlays built on it (services.bases).

A running source is refused: a copy of a disk that changes while it is copied is
not a clone, and a linked clone's base must never change again. Clones get a
fresh MAC address and their own definition (``linked_to`` names the base).
A failed clone leaves nothing behind: no VM directory, no partial disk, the
source's ``base_of`` unchanged. Dispatch is on ``spec.disk.kind``: RBD disks are
cloned by ``services.rbd_disks`` (RBD clones hang off a snapshot, so their source
stays usable and is no frozen base).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import os
import secrets
import shutil
from pathlib import Path

from hypercore_tui.adapters import images
from hypercore_tui.core.errors import (
    AlreadyExists,
    HypercoreError,
    InvalidInput,
    InvalidState,
    NoSpace,
    NotFound,
    OperationFailed,
)
from hypercore_tui.core.models import DiskKind, DiskSpec, VmSpec, VmState, mac_from_bytes
from hypercore_tui.core.names import validate_vm_name
from hypercore_tui.core.progress import Progress
from hypercore_tui.services import bases, rbd_disks, registry, vmstate
from hypercore_tui.services.context import Context

__all__ = ["clone_vm"]

log = logging.getLogger("hypercore.clones")
log.addHandler(logging.NullHandler())

#: Slowest copy speed assumed when sizing the convert timeout (bytes/s).
_MIN_COPY_RATE = 8 * 1024 * 1024
_MIN_COPY_TIMEOUT = 600.0


def _fresh_mac(taken: set[str]) -> str:
    while True:
        mac = mac_from_bytes(secrets.token_bytes(3))
        if mac not in taken:
            return mac


def _macs_in_use(ctx: Context) -> set[str]:
    macs = set()
    for name in registry.vm_names(ctx):
        with contextlib.suppress(HypercoreError):
            macs.add(registry.load(ctx, name).mac)
    return macs


async def clone_vm(ctx: Context, source: str, new: str, *, linked: bool = False,
                   progress: Progress | None = None) -> VmSpec:
    """Clone the stopped VM ``source`` as ``new``; returns the new VM's definition."""
    validate_vm_name(new)
    if new == source:
        raise InvalidInput("the clone needs a name of its own")
    registry.check_defined(ctx, source)
    if registry.exists(ctx, new) or ctx.vm_paths(new).vm_dir.exists():
        raise AlreadyExists(f"a VM named {new!r} already exists")
    src_paths = ctx.vm_paths(source)
    async with vmstate.locked_definition(ctx, source, f"clone to {new}") as spec:
        if vmstate.running_or_stopped(src_paths) is VmState.RUNNING:
            kind = "a linked clone's base must never change again" if linked else \
                "its disk would change while it is copied"
            raise InvalidState(f"{source} is running; stop it first ({kind})")
        # The one dispatch point on the disk kind.
        if spec.disk.kind is DiskKind.RBD:
            return await rbd_disks.clone_vm(ctx, spec, new, linked=linked,
                                            mac=_fresh_mac(_macs_in_use(ctx)),
                                            progress=progress)
        src_disk = _local_disk(spec)
        return await _clone_local(ctx, spec, src_disk, new, linked=linked, progress=progress)


def _local_disk(spec: VmSpec) -> Path:
    assert spec.disk.path is not None
    path = Path(spec.disk.path)
    if not path.is_file():
        raise NotFound(f"{spec.name}: disk image {path} is missing")
    return path


async def _clone_local(ctx: Context, spec: VmSpec, src_disk: Path, new: str, *, linked: bool,
                       progress: Progress | None) -> VmSpec:
    new_paths = registry.claim_vm_dir(ctx, new)
    disk = new_paths.default_disk
    recorded = False
    try:
        if linked:
            # base_of first: a crash from here on leaves a stale entry (safe), never a
            # clone whose base could be deleted.
            bases.add_clone(ctx, spec.name, new)
            recorded = True
            await asyncio.to_thread(images.create_image, disk, 0, fmt="qcow2",
                                    backing=src_disk, backing_fmt=spec.disk.kind.value)
            if progress is not None:
                progress("done", 1.0, 1.0)
        else:
            partial = disk.with_name(disk.name + ".part")
            size = (await asyncio.to_thread(images.image_info, src_disk)).virtual_size
            await images.convert_image(
                src_disk, partial, src_fmt=spec.disk.kind.value, dst_fmt="qcow2",
                progress=progress,
                timeout=max(_MIN_COPY_TIMEOUT, size / _MIN_COPY_RATE))
            os.replace(partial, disk)
        clone = spec.with_changes(
            name=new,
            disk=DiskSpec(kind=DiskKind.QCOW2, path=str(disk), owned=True),
            mac=_fresh_mac(_macs_in_use(ctx)),
            created=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            base_of=(),
            linked_to=spec.name if linked else None,
        )
        src_state = ctx.vm_paths(spec.name).installation_state
        if src_state.is_file():
            shutil.copyfile(src_state, new_paths.installation_state)
        registry.save(ctx, clone)
    except BaseException as exc:
        shutil.rmtree(new_paths.vm_dir, ignore_errors=True)
        if recorded:
            try:
                bases.remove_clone(ctx, spec.name, new)
            except HypercoreError as undo:  # stale entry: harmless, dropped later
                log.warning("%s: could not forget failed clone %s: %s", spec.name, new, undo)
        if isinstance(exc, OSError):
            raise OperationFailed(f"cloning {spec.name} to {new} failed: "
                                  f"{exc.strerror or exc}") from None
        if isinstance(exc, NoSpace):
            raise OperationFailed(f"cloning {spec.name} to {new} failed, no space left on "
                                  f"device (nothing was left behind): "
                                  f"{exc.message.removeprefix(images.NO_SPACE + ': ')}"
                                  ) from None
        raise
    log.info("cloned %s to %s (%s)", spec.name, new, "linked" if linked else "full copy")
    return clone
