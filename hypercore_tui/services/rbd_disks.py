"""VM disks on Ceph RBD: which cluster, creating or adopting an image, removing it,
and the offline snapshots and clones of a stopped VM's image.

Ownership: an image Hypercore created for a VM is *owned* (``DiskSpec.owned``) and
removed with the VM by default; an image that already existed is adopted
(``owned=False``) and kept unless the user asks for its removal. Removal is refused
while the image has snapshots, clones built on it or clients that have it open.

The cluster of a disk is its ``conf`` (stored as an absolute path when the VM is
created, so a later change of HYPERCORE_CEPH_CONF never points a VM at another
cluster's image of the same name); definitions without one use the configured
cluster (:attr:`Context.ceph_conf`).

RBD images have no lock QEMU's way: nothing stops two writers. So every change to an
image here (snapshot create/rollback/delete, clone source, removal, boot) first checks
that no client has the image open (its watchers), on top of the callers' VM state
check under the VM's lock; and no VM is ever created on an image another VM uses.

All calls are blocking and bounded (adapters.rbd: 5 s librados timeouts, a wall-clock
limit on the thread): the async ones run in threads, the blocking ones are for
``asyncio.to_thread`` callers and the synchronous create/delete of a VM.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from hypercore_tui.adapters.rbd import bounded
from hypercore_tui.adapters.rbd.results import RbdSnapshot
from hypercore_tui.adapters.rbd.session import CephSession, connect
from hypercore_tui.core.errors import (
    AlreadyExists,
    ClusterUnavailable,
    HypercoreError,
    InvalidState,
    NotFound,
    OperationFailed,
)
from hypercore_tui.core.models import DiskKind, DiskSpec, VmSpec
from hypercore_tui.core.names import validate_rbd_component
from hypercore_tui.core.progress import Progress
from hypercore_tui.core.snapshots import SnapshotInfo
from hypercore_tui.services import registry
from hypercore_tui.services.context import Context

__all__ = [
    "NO_CLUSTER", "RbdOffline", "check_bootable", "check_reachable", "clone_vm", "conf_for",
    "discard_disk", "prepare_disk", "remove_vm_image", "users_of",
]

log = logging.getLogger("hypercore.rbd")
log.addHandler(logging.NullHandler())

NO_CLUSTER = ("no Ceph cluster is configured: start the development cluster with "
              "`scripts/ceph-dev.sh up`, or set HYPERCORE_CEPH_CONF to your cluster's ceph.conf")
#: Prefix of the snapshot a clone is made from (``hc-clone-NEW``).
CLONE_SNAPSHOT_PREFIX = "hc-clone-"


# -- which cluster, which image -------------------------------------------------------


def conf_for(ctx: Context, disk: DiskSpec | None = None) -> str:
    """The ceph.conf of ``disk`` (absolute), else of the configured cluster."""
    conf = (disk.conf if disk is not None else None) or ctx.ceph_conf
    if not conf:
        raise ClusterUnavailable(NO_CLUSTER)
    return str(Path(conf).expanduser().absolute())


def _same_conf(a: str, b: str) -> bool:
    return os.path.realpath(a) == os.path.realpath(b)


def _ref(disk: DiskSpec) -> tuple[str, str]:
    if not disk.is_rbd or disk.pool is None or disk.image is None:
        raise OperationFailed(f"{disk.describe()} is not an RBD disk")
    return disk.pool, disk.image


def users_of(ctx: Context, disk: DiskSpec, *, exclude: str | None = None) -> list[str]:
    """Names of the VMs whose disk is the RBD image ``disk`` (same cluster, pool, image)."""
    try:
        conf = conf_for(ctx, disk)
    except ClusterUnavailable:
        return []
    users = []
    for name in registry.vm_names(ctx):
        if name == exclude:
            continue
        try:
            other = registry.load(ctx, name).disk
            if not (other.is_rbd and other.pool == disk.pool and other.image == disk.image):
                continue
            if _same_conf(conf_for(ctx, other), conf):
                users.append(name)
        except HypercoreError:
            continue
    return users


def _closed_or_refuse(session: CephSession, pool: str, image: str, name: str,
                      doing: str) -> None:
    """No RBD lock protects an image: refuse when any client has it open."""
    clients = session.watchers(pool, image)
    if clients:
        raise InvalidState(f"{name}: RBD image {pool}/{image} is open by {clients} client(s) "
                           f"although the VM is stopped (another VM or host using it?); "
                           f"refusing to {doing}")


# -- create / boot / delete -----------------------------------------------------------


def prepare_disk(ctx: Context, disk: DiskSpec, size: int) -> DiskSpec:
    """Create the image of ``disk`` when missing (owned), adopt it when it exists.

    Blocking, at most :data:`adapters.rbd.bounded.SHORT_LIMIT` seconds.
    """
    conf = conf_for(ctx, disk)
    pool, image = _ref(disk)
    others = users_of(ctx, disk)
    if others:
        raise AlreadyExists(f"RBD image {pool}/{image} is already the disk of VM "
                            f"{others[0]!r}; two VMs on one image would corrupt it")

    def work() -> bool:
        with connect(conf) as session:
            if session.image_exists(pool, image):
                clients = session.watchers(pool, image)
                if clients:
                    raise InvalidState(f"RBD image {pool}/{image} is open by {clients} "
                                       "client(s) (a VM elsewhere?); refusing to use it")
                return False
            session.create_image(pool, image, size)
            return True

    created = bounded.run(work, conf=conf)
    log.info("%s image %s/%s on %s", "created" if created else "adopted existing", pool, image,
             conf)
    return DiskSpec(kind=DiskKind.RBD, pool=pool, image=image, conf=conf, owned=created)


def discard_disk(ctx: Context, disk: DiskSpec) -> None:
    """Best effort: remove the image a failed create made (owned images only)."""
    if not disk.is_rbd or not disk.owned:
        return
    conf = conf_for(ctx, disk)
    pool, image = _ref(disk)

    def work() -> None:
        with connect(conf) as session:
            session.remove_image(pool, image)

    try:
        bounded.run(work, conf=conf)
    except HypercoreError as exc:
        log.warning("could not remove RBD image %s/%s after a failed create: %s", pool, image,
                    exc)


async def check_bootable(ctx: Context, spec: VmSpec) -> None:
    """Before QEMU opens the image: the cluster answers, the image exists, nobody has it
    open (QEMU itself would wait up to ``client_mount_timeout`` on a dead cluster)."""
    conf = conf_for(ctx, spec.disk)
    pool, image = _ref(spec.disk)

    def work() -> None:
        with connect(conf) as session:
            try:
                clients = session.watchers(pool, image)
            except NotFound:
                raise NotFound(f"{spec.name}: its disk, RBD image {pool}/{image}, does not "
                               f"exist in the cluster at {conf}") from None
            if clients:
                # A QEMU killed while the cluster was down leaves its watch behind: the
                # OSD drops it only after osd_client_watch_timeout (30 s) once back.
                raise InvalidState(f"{spec.name}: RBD image {pool}/{image} is open by "
                                   f"{clients} client(s) (another VM using it, or a QEMU "
                                   "killed while the cluster was down, whose hold expires "
                                   "within 30 s); refusing to start a second writer")

    await bounded.arun(work, conf=conf)


async def check_reachable(ctx: Context, spec: VmSpec, doing: str) -> None:
    """Before QEMU runs a synchronous librbd call for a running VM (a disk-only
    snapshot, a snapshot delete): QEMU makes it holding its global lock, without a
    timeout, so on a stopped cluster the whole VM and its monitor would freeze until
    the cluster returns (and the operation complete long after the caller gave up).
    The binding finds a stopped cluster out within 5 s instead."""
    conf = conf_for(ctx, spec.disk)
    pool, image = _ref(spec.disk)

    def work() -> None:
        with connect(conf) as session:
            session.image_exists(pool, image)  # a monitor and an OSD answer

    try:
        await bounded.arun(work, conf=conf)
    except ClusterUnavailable as exc:
        raise ClusterUnavailable(f"{spec.name}: {doing} needs its Ceph cluster: {exc}"
                                 ) from None


def removal_blocker(ctx: Context, spec: VmSpec) -> str | None:
    """Why the VM's image cannot be removed now (None: it can, or it is already gone)."""
    conf = conf_for(ctx, spec.disk)
    pool, image = _ref(spec.disk)
    others = users_of(ctx, spec.disk, exclude=spec.name)
    if others:
        return (f"RBD image {pool}/{image} is also the disk of VM {others[0]!r}; keep it "
                "(--keep-image)")

    def work() -> str | None:
        with connect(conf) as session:
            if not _exists(session, pool, image):
                return None
            info = session.stat(pool, image, usage=False)
        if info.children:
            names = ", ".join(_with_vm(ctx, conf, child) for child in info.children)
            return (f"RBD image {info.spec} has clones that depend on it ({names}); delete "
                    "them first, or keep the image (--keep-image)")
        if info.snapshots:
            tags = ", ".join(s.name for s in info.snapshots)
            return (f"RBD image {info.spec} has snapshots ({tags}); delete them first "
                    f"(`hypercore snapshot delete {spec.name} TAG`), or keep the image "
                    "(--keep-image)")
        if info.watchers:
            return (f"RBD image {info.spec} is open by {info.watchers} client(s) (a VM "
                    "elsewhere?); keep it (--keep-image) or close it first")
        return None

    return bounded.run(work, conf=conf)


def _exists(session: CephSession, pool: str, image: str) -> bool:
    """For removal: an image whose pool is gone is gone too."""
    try:
        return session.image_exists(pool, image)
    except NotFound:
        return False


def _with_vm(ctx: Context, conf: str, spec: str) -> str:
    pool, _, image = spec.partition("/")
    disk = DiskSpec(kind=DiskKind.RBD, pool=pool, image=image, conf=conf)
    users = users_of(ctx, disk)
    return f"{spec} of VM {users[0]}" if users else spec


def remove_vm_image(ctx: Context, spec: VmSpec) -> bool:
    """Remove the VM's image (checked by :func:`removal_blocker` first; raises
    :class:`InvalidState` with its reason). False: it was already gone."""
    try:
        blocker = removal_blocker(ctx, spec)
    except ClusterUnavailable as exc:
        raise ClusterUnavailable(f"{exc}; {spec.name} was not deleted (--keep-image deletes "
                                 "it and keeps the image)") from None
    if blocker:
        raise InvalidState(f"cannot remove the disk of {spec.name}: {blocker}")
    conf = conf_for(ctx, spec.disk)
    pool, image = _ref(spec.disk)

    def work() -> bool:
        with connect(conf) as session:
            if not _exists(session, pool, image):
                return False
            session.remove_image(pool, image)
            return True

    # Removing a big image takes a while; librados bounds every single operation.
    removed = bounded.run(work, conf=conf, limit=None)
    log.info("%s: RBD image %s/%s %s", spec.name, pool, image,
             "removed" if removed else "was already gone")
    return removed


# -- offline snapshots ----------------------------------------------------------------


def _snapshot_info(snap: RbdSnapshot) -> SnapshotInfo:
    return SnapshotInfo(
        tag=snap.name,
        date=snap.timestamp or dt.datetime.fromtimestamp(0, dt.UTC),
        vm_clock_seconds=0.0,
        vmstate_bytes=0,
        has_ram=False,
        id=str(snap.id),
    )


class RbdOffline:
    """Snapshots of a stopped VM's RBD image, through the rbd binding.

    The snapshot service's offline backend for RBD disks: blocking (it calls these via
    ``asyncio.to_thread``), with the VM's lock held and the VM checked stopped. RBD
    snapshots are disk-only; they are the same snapshots QEMU's rbd driver lists and
    makes for a running VM, so one namespace serves both.
    """

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    def _where(self, spec: VmSpec) -> tuple[str, str, str]:
        pool, image = _ref(spec.disk)
        return conf_for(self.ctx, spec.disk), pool, image

    def list(self, spec: VmSpec) -> list[SnapshotInfo]:
        conf, pool, image = self._where(spec)

        def work() -> list[RbdSnapshot]:
            with connect(conf) as session:
                return session.snapshots(pool, image)

        return [_snapshot_info(s) for s in bounded.run(work, conf=conf)]

    def create(self, spec: VmSpec, tag: str) -> None:
        conf, pool, image = self._where(spec)

        def work() -> None:
            with connect(conf) as session:
                _closed_or_refuse(session, pool, image, spec.name, "snapshot it")
                session.create_snapshot(pool, image, tag)

        bounded.run(work, conf=conf)

    def apply(self, spec: VmSpec, tag: str) -> None:
        conf, pool, image = self._where(spec)

        def work() -> None:
            with connect(conf) as session:
                _closed_or_refuse(session, pool, image, spec.name, "roll it back")
                session.rollback(pool, image, tag)

        # A rollback copies every changed object: no wall-clock limit, each op is bounded.
        bounded.run(work, conf=conf, limit=None)

    def delete(self, spec: VmSpec, tag: str) -> None:
        conf, pool, image = self._where(spec)

        def work() -> None:
            with connect(conf) as session:
                _closed_or_refuse(session, pool, image, spec.name, "delete its snapshot")
                session.remove_snapshot(pool, image, tag)

        bounded.run(work, conf=conf)


# -- clones ---------------------------------------------------------------------------


@dataclass
class _CloneSteps:
    """What a clone attempt made, so a failure can undo exactly that."""

    snapshot: bool = False
    image: bool = False


def _clone_image(conf: str, pool: str, image: str, new_image: str, *, linked: bool,
                 name: str, progress: Progress | None) -> None:
    """Snapshot ``pool/image``, clone it (v2) as ``pool/new_image``; a full clone is then
    flattened and the snapshot removed. A linked clone's snapshot is removed too: with
    clone v2 librbd keeps it in its trash until the last clone is gone (a protected v1
    snapshot stays, named ``hc-clone-NEW``). On failure, whatever was made is removed."""
    snap = CLONE_SNAPSHOT_PREFIX + new_image
    steps = _CloneSteps()
    with connect(conf) as session:
        try:
            _closed_or_refuse(session, pool, image, name, "clone it")
            if session.image_exists(pool, new_image):
                raise AlreadyExists(f"RBD image {pool}/{new_image} already exists; choose "
                                    "another name for the clone")
            session.create_snapshot(pool, image, snap)
            steps.snapshot = True
            protected = session.clone(pool, image, snap, pool, new_image)
            steps.image = True
            if not linked:
                session.flatten(pool, new_image, progress)
                session.remove_snapshot(pool, image, snap)
                steps.snapshot = False
            elif not protected:
                session.release_snapshot(pool, image, snap)
                steps.snapshot = False
            if progress is not None:
                progress("done", 1.0, 1.0)
        except BaseException:
            _undo_clone(session, pool, image, snap, new_image, steps)
            raise


def _undo_clone(session: CephSession, pool: str, image: str, snap: str, new_image: str,
                steps: _CloneSteps) -> None:
    if steps.image:
        try:
            session.remove_image(pool, new_image)
        except HypercoreError as exc:
            log.warning("could not remove the partial clone %s/%s: %s", pool, new_image, exc)
            return  # the snapshot is still its parent
    if steps.snapshot:
        try:
            session.remove_snapshot(pool, image, snap)
        except HypercoreError as exc:
            log.warning("could not remove snapshot %s/%s@%s: %s", pool, image, snap, exc)


async def clone_vm(ctx: Context, spec: VmSpec, new: str, *, linked: bool, mac: str,
                   progress: Progress | None = None) -> VmSpec:
    """Clone the stopped RBD-backed VM ``spec`` as VM ``new`` (image ``POOL/NEW``).

    ``linked``: a copy-on-write clone (v2) sharing unchanged data with the source
    image; the source stays usable (RBD keeps the clone's parent snapshot, not the
    source's head). Otherwise the clone is flattened into an independent image.
    The caller holds the source's lock and checked it is stopped.
    A failure leaves nothing behind: no VM directory, no clone image, no snapshot.
    """
    conf = conf_for(ctx, spec.disk)
    pool, image = _ref(spec.disk)
    new_image = validate_rbd_component("image", new)
    new_paths = registry.claim_vm_dir(ctx, new)

    loop = asyncio.get_running_loop()
    report: Progress | None = None
    if progress is not None:
        callback = progress

        def report(stage: str, done: float | None, total: float) -> None:
            loop.call_soon_threadsafe(callback, stage, done, total)

    image_made = False
    try:
        await bounded.arun(lambda: _clone_image(conf, pool, image, new_image, linked=linked,
                                            name=spec.name, progress=report),
                       conf=conf, limit=None)
        image_made = True
        clone = spec.with_changes(
            name=new,
            disk=DiskSpec(kind=DiskKind.RBD, pool=pool, image=new_image, conf=conf,
                          owned=True),
            mac=mac,
            created=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            base_of=(),
            linked_to=None,  # RBD keeps the parent snapshot: the source is no frozen base
        )
        src_state = ctx.vm_paths(spec.name).installation_state
        if src_state.is_file():
            shutil.copyfile(src_state, new_paths.installation_state)
        registry.save(ctx, clone)
    except BaseException as exc:
        shutil.rmtree(new_paths.vm_dir, ignore_errors=True)
        if image_made:
            with contextlib.suppress(HypercoreError):
                await asyncio.to_thread(discard_disk, ctx, DiskSpec(
                    kind=DiskKind.RBD, pool=pool, image=new_image, conf=conf, owned=True))
        if isinstance(exc, OSError):
            raise OperationFailed(f"cloning {spec.name} to {new} failed: "
                                  f"{exc.strerror or exc}") from None
        raise
    log.info("cloned %s (%s/%s) to %s (%s)", spec.name, pool, image, new,
             "linked RBD clone" if linked else "flattened RBD clone")
    return clone
