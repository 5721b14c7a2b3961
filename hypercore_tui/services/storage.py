"""What the Ceph cluster holds, for ``hypercore storage``/``ceph`` and the dashboard.

One :func:`storage_report` reads the cluster's health, its pools and their RBD images
(size, allocated bytes, snapshots, clones, open clients) and says which VM uses each
image. It runs in a thread with a wall-clock limit (adapters.rbd.bounded), so a stopped or
unreachable cluster gives a :class:`~hypercore_tui.core.errors.ClusterUnavailable`
within seconds, never a hang; callers on an event loop just ``await`` it.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

from hypercore_tui.adapters.rbd import bounded
from hypercore_tui.adapters.rbd.results import ClusterStatus
from hypercore_tui.adapters.rbd.session import connect
from hypercore_tui.core.errors import ClusterUnavailable, HypercoreError, NotFound
from hypercore_tui.core.models import VmState
from hypercore_tui.services import rbd_disks, registry, vmstate
from hypercore_tui.services.context import Context

__all__ = ["ClusterStatus", "ImageRow", "PoolRow", "StorageReport", "VmUse", "cluster_conf",
           "cluster_status", "storage_report"]

log = logging.getLogger("hypercore.storage")
log.addHandler(logging.NullHandler())

#: Wall-clock limit of one report: each librados call is bounded by 5 s, so a dead
#: cluster fails at the first one; a healthy big one gets time for many images.
REPORT_LIMIT = 30.0
#: Above this many images in a pool, allocated bytes are not computed (one scan each).
USAGE_LIMIT = 200


@dataclass(frozen=True)
class VmUse:
    """A VM whose disk is an image."""

    name: str
    state: VmState
    owned: bool  # Hypercore created the image for it

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "state": self.state.value, "owned": self.owned}


@dataclass(frozen=True)
class ImageRow:
    pool: str
    name: str
    size: int
    used: int | None
    snapshots: tuple[str, ...]
    parent: str | None  # POOL/IMAGE of a clone's parent
    clones: tuple[str, ...]
    clients: int  # open by this many clients (a running QEMU is one)
    vms: tuple[VmUse, ...]

    @property
    def spec(self) -> str:
        return f"{self.pool}/{self.name}"

    def to_json(self) -> dict[str, Any]:
        return {
            "pool": self.pool, "image": self.name, "size_bytes": self.size,
            "used_bytes": self.used, "snapshots": list(self.snapshots), "parent": self.parent,
            "clones": list(self.clones), "clients": self.clients,
            "vms": [vm.to_json() for vm in self.vms],
        }


@dataclass(frozen=True)
class PoolRow:
    name: str
    images: tuple[ImageRow, ...]

    @property
    def provisioned(self) -> int:
        return sum(i.size for i in self.images)

    @property
    def used(self) -> int | None:
        values = [i.used for i in self.images]
        return None if any(v is None for v in values) else sum(v or 0 for v in values)


@dataclass(frozen=True)
class StorageReport:
    conf: str
    status: ClusterStatus
    pools: tuple[PoolRow, ...]
    missing: tuple[tuple[str, str], ...]  # (VM, POOL/IMAGE) whose image is not there

    @property
    def images(self) -> tuple[ImageRow, ...]:
        return tuple(image for pool in self.pools for image in pool.images)

    def to_json(self) -> dict[str, Any]:
        st = self.status
        return {
            "conf": self.conf,
            "fsid": st.fsid,
            "health": st.health,
            "checks": list(st.checks),
            "mons": st.mons, "quorum": st.quorum,
            "osds": st.osds, "osds_up": st.osds_up, "osds_in": st.osds_in,
            "mgr": st.mgr,
            "bytes_total": st.bytes_total, "bytes_used": st.bytes_used,
            "pools": [{"name": p.name, "images": len(p.images),
                       "provisioned_bytes": p.provisioned, "used_bytes": p.used}
                      for p in self.pools],
            "missing_images": [{"vm": vm, "image": image} for vm, image in self.missing],
        }


def cluster_conf(ctx: Context, conf: str | None = None) -> str:
    """``conf``, else the configured cluster (raises the "no cluster" error)."""
    if conf:
        return str(os.path.abspath(os.path.expanduser(conf)))
    return rbd_disks.conf_for(ctx)


def _vm_uses(ctx: Context, conf: str) -> dict[tuple[str, str], list[VmUse]]:
    """(pool, image) -> the VMs of this home whose disk it is, on the cluster of ``conf``."""
    uses: dict[tuple[str, str], list[VmUse]] = {}
    real = os.path.realpath(conf)
    for name in registry.vm_names(ctx):
        try:
            spec = registry.load(ctx, name)
            if not spec.disk.is_rbd or spec.disk.pool is None or spec.disk.image is None:
                continue
            if os.path.realpath(rbd_disks.conf_for(ctx, spec.disk)) != real:
                continue
        except HypercoreError:
            continue
        state, _ = vmstate.process_state(ctx.vm_paths(name))
        uses.setdefault((spec.disk.pool, spec.disk.image), []).append(
            VmUse(name=name, state=state, owned=spec.disk.owned))
    return uses


def _collect(conf: str, uses: dict[tuple[str, str], list[VmUse]]) -> StorageReport:
    with connect(conf) as session:
        status = session.status()
        pools = []
        seen: set[tuple[str, str]] = set()
        for pool in session.pools():
            try:
                names = session.image_names(pool)
            except HypercoreError as exc:  # not an RBD pool (no rbd_directory) etc.
                if isinstance(exc, ClusterUnavailable):
                    raise
                log.info("pool %s: no RBD images listed (%s)", pool, exc)
                names = []
            rows = []
            for name in names:
                try:
                    info = session.stat(pool, name, usage=len(names) <= USAGE_LIMIT)
                except NotFound:  # removed while we listed
                    continue
                seen.add((pool, name))
                parent = info.parent.split("@", 1)[0] if info.parent else None
                rows.append(ImageRow(
                    pool=pool, name=name, size=info.size, used=info.used,
                    snapshots=tuple(s.name for s in info.snapshots), parent=parent,
                    clones=info.children, clients=info.watchers,
                    vms=tuple(uses.get((pool, name), ()))))
            pools.append(PoolRow(name=pool, images=tuple(rows)))
    missing = tuple(sorted((vm.name, f"{pool}/{image}")
                           for (pool, image), vms in uses.items() if (pool, image) not in seen
                           for vm in vms))
    return StorageReport(conf=conf, status=status, pools=tuple(pools), missing=missing)


async def storage_report(ctx: Context, conf: str | None = None) -> StorageReport:
    """Health, pools and images of the cluster (``conf`` or the configured one)."""
    conf = cluster_conf(ctx, conf)
    uses = _vm_uses(ctx, conf)
    return await bounded.arun(lambda: _collect(conf, uses), conf=conf, limit=REPORT_LIMIT)


async def cluster_status(ctx: Context, conf: str | None = None) -> tuple[str, ClusterStatus]:
    """(conf, status) of the cluster: health, monitors, OSDs, capacity."""
    conf = cluster_conf(ctx, conf)

    def work() -> ClusterStatus:
        with connect(conf) as session:
            return session.status()

    return conf, await bounded.arun(work, conf=conf)
