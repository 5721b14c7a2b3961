"""Snapshots of a stopped VM's disk, by ``qemu-img``, one backend per disk kind.

Called only while the VM's lock is held and the VM was found stopped (services.snapshots);
no ``-U``: QEMU's image lock is the last line of defence. :func:`backend_for` is the one
dispatch point on ``spec.disk.kind``; RBD disks use ``services.rbd_disks.RbdOffline``.
"""

from __future__ import annotations

from typing import Protocol

from hypercore_tui.adapters import images
from hypercore_tui.core.errors import InvalidState, OperationFailed
from hypercore_tui.core.models import DiskKind, VmSpec
from hypercore_tui.core.snapshots import SnapshotInfo
from hypercore_tui.services import rbd_disks
from hypercore_tui.services.context import Context


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


def backend_for(ctx: Context, spec: VmSpec) -> OfflineBackend:
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

