"""A connection to a Ceph cluster and the RBD operations done through it.

Everything here blocks: services call it from a thread (:func:`.bounded.run`,
:func:`.bounded.arun`), never from an event loop. Library exceptions leave a
:class:`CephSession` translated (:mod:`.errors`).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import json
import logging
import os
from collections.abc import Callable, Iterator
from typing import Any

from hypercore_tui.adapters.rbd.conf import check_conf
from hypercore_tui.adapters.rbd.errors import short_message, translate, unavailable
from hypercore_tui.adapters.rbd.library import CLIENT_TIMEOUT, bindings, client_settings
from hypercore_tui.adapters.rbd.results import (
    ClusterStatus,
    ImageStat,
    RbdSnapshot,
    parse_cluster_status,
)
from hypercore_tui.core.errors import (
    ClusterUnavailable,
    HypercoreError,
    InvalidState,
    NotFound,
    OperationFailed,
)
from hypercore_tui.core.progress import Progress

log = logging.getLogger("hypercore.ceph")
log.addHandler(logging.NullHandler())


def _progress_callback(progress: Progress | None) -> Callable[[int, int], int] | None:
    if progress is None:
        return None

    def report(offset: int, total: int) -> int:
        with contextlib.suppress(Exception):
            progress("copying disk", offset if total else 1.0, total or 1.0)
        return 0

    return report


class CephSession:
    """One connection to a cluster (blocking; use it from one thread at a time)."""

    def __init__(self, cluster: Any, conf: str, timeout: int) -> None:
        self._cluster = cluster
        self.conf = conf
        self.timeout = timeout
        self._ioctxs: dict[str, Any] = {}
        self._rados, self._rbd = bindings()

    # plumbing

    @contextlib.contextmanager
    def _op(self, what: str) -> Iterator[None]:
        try:
            yield
        except HypercoreError:
            raise
        except (self._rados.Error, self._rbd.Error) as exc:
            raise translate(exc, self.conf, what, self.timeout) from None

    def close(self) -> None:
        for ioctx in self._ioctxs.values():
            with contextlib.suppress(Exception):
                ioctx.close()
        self._ioctxs.clear()
        with contextlib.suppress(Exception):
            self._cluster.shutdown()

    def _ioctx(self, pool: str) -> Any:
        if pool not in self._ioctxs:
            try:
                self._ioctxs[pool] = self._cluster.open_ioctx(pool)
            except self._rados.ObjectNotFound:
                raise NotFound(f"Ceph pool {pool!r} does not exist in the cluster at "
                               f"{self.conf} (create it: ceph osd pool create {pool} && "
                               f"rbd pool init {pool})") from None
            except self._rados.Error as exc:
                raise translate(exc, self.conf, f"pool {pool}", self.timeout) from None
        return self._ioctxs[pool]

    @contextlib.contextmanager
    def _image(self, pool: str, image: str, *, snapshot: str | None = None,
               read_only: bool = False) -> Iterator[Any]:
        ioctx = self._ioctx(pool)
        with self._op(f"{pool}/{image}"):
            handle = self._rbd.Image(ioctx, image, snapshot=snapshot, read_only=read_only)
        try:
            yield handle
        finally:
            with contextlib.suppress(Exception):
                handle.close()

    # cluster

    def status(self) -> ClusterStatus:
        with self._op("status"):
            ret, out, err = self._cluster.mon_command(
                json.dumps({"prefix": "status", "format": "json"}), b"", timeout=self.timeout)
        if ret == -errno.ETIMEDOUT:
            raise unavailable(self.conf, self.timeout)
        if ret != 0:
            raise OperationFailed(f"Ceph: status failed: {err or os.strerror(-ret)}")
        try:
            data = json.loads(out)
        except ValueError:
            raise OperationFailed("Ceph: the monitor's status is not JSON") from None
        return parse_cluster_status(data)

    def pools(self) -> list[str]:
        with self._op("listing pools"):
            return sorted(str(p) for p in self._cluster.list_pools())

    def pool_exists(self, pool: str) -> bool:
        with self._op(f"pool {pool}"):
            return bool(self._cluster.pool_exists(pool))

    # images

    def image_names(self, pool: str) -> list[str]:
        ioctx = self._ioctx(pool)
        with self._op(f"listing images of pool {pool}"):
            return sorted(str(n) for n in self._rbd.RBD().list(ioctx))

    def image_exists(self, pool: str, image: str) -> bool:
        """Whether ``pool/image`` exists (a missing pool raises :class:`NotFound`)."""
        ioctx = self._ioctx(pool)
        with self._op(f"{pool}/{image}"):
            try:
                handle = self._rbd.Image(ioctx, image, read_only=True)
            except self._rbd.ImageNotFound:
                return False
            handle.close()
        return True

    def create_image(self, pool: str, image: str, size: int) -> None:
        ioctx = self._ioctx(pool)
        with self._op(f"{pool}/{image}"):
            self._rbd.RBD().create(ioctx, image, size)

    def stat(self, pool: str, image: str, *, usage: bool = True) -> ImageStat:
        with self._image(pool, image, read_only=True) as img, self._op(f"{pool}/{image}"):
            size = int(img.size())
            snaps = self._snapshots(img)
            parent = None
            with contextlib.suppress(self._rbd.ImageNotFound):
                spec = img.get_parent_image_spec()
                parent = f"{spec['pool_name']}/{spec['image_name']}@{spec['snap_name']}"
            children = tuple(sorted(f"{c['pool']}/{c['image']}"
                                    for c in img.list_children2()))
            watchers = len(list(img.watchers_list()))
            used = self._used(img, size) if usage else None
        return ImageStat(pool=pool, name=image, size=size, used=used, snapshots=snaps,
                         parent=parent, children=children, watchers=watchers)

    def _used(self, img: Any, size: int) -> int | None:
        used = 0

        def count(_offset: int, length: int, exists: bool) -> int:
            nonlocal used
            if exists:
                used += length
            return 0

        try:
            img.diff_iterate(0, size, None, count, include_parent=False, whole_object=True)
        except self._rbd.Error as exc:
            if getattr(exc, "errno", None) == errno.ETIMEDOUT:
                raise
            return None
        return used

    def _snapshots(self, img: Any) -> tuple[RbdSnapshot, ...]:
        out = []
        for snap in img.list_snaps():
            if snap.get("namespace", 0) != 0:  # clone-v2 trash / group snapshots
                continue
            stamp: dt.datetime | None = None
            with contextlib.suppress(self._rbd.Error):
                stamp = img.get_snap_timestamp(snap["id"]).replace(tzinfo=dt.UTC)
            out.append(RbdSnapshot(name=str(snap["name"]), id=int(snap["id"]),
                                   size=int(snap["size"]), timestamp=stamp,
                                   protected=bool(img.is_protected_snap(snap["name"]))))
        return tuple(sorted(out, key=lambda s: s.id))

    def watchers(self, pool: str, image: str) -> int:
        with self._image(pool, image, read_only=True) as img, self._op(f"{pool}/{image}"):
            return len(list(img.watchers_list()))

    def remove_image(self, pool: str, image: str) -> None:
        """Remove an image; refuses while it has snapshots, clones or open clients."""
        blocker = self.removal_blocker(pool, image)
        if blocker:
            raise InvalidState(blocker)
        ioctx = self._ioctx(pool)
        with self._op(f"{pool}/{image}"):
            self._rbd.RBD().remove(ioctx, image)

    def removal_blocker(self, pool: str, image: str) -> str | None:
        """Why ``pool/image`` cannot be removed now, or None."""
        info = self.stat(pool, image, usage=False)
        if info.children:
            return (f"RBD image {info.spec} has clones ({', '.join(info.children)}) that "
                    "depend on it; delete those first")
        if info.snapshots:
            names = ", ".join(s.name for s in info.snapshots)
            return f"RBD image {info.spec} has snapshots ({names}); delete them first"
        if info.watchers:
            return (f"RBD image {info.spec} is open by {info.watchers} client(s) (a running "
                    "VM?); stop it first")
        return None

    def read(self, pool: str, image: str, offset: int, length: int) -> bytes:
        with self._image(pool, image, read_only=True) as img, self._op(f"{pool}/{image}"):
            return bytes(img.read(offset, length))

    def write(self, pool: str, image: str, offset: int, data: bytes) -> None:
        with self._image(pool, image) as img, self._op(f"{pool}/{image}"):
            img.write(data, offset)
            img.flush()

    # snapshots

    def snapshots(self, pool: str, image: str) -> list[RbdSnapshot]:
        with self._image(pool, image, read_only=True) as img, self._op(f"{pool}/{image}"):
            return list(self._snapshots(img))

    def create_snapshot(self, pool: str, image: str, name: str) -> None:
        with self._image(pool, image) as img, self._op(f"{pool}/{image}@{name}"):
            img.create_snap(name)

    def rollback(self, pool: str, image: str, name: str) -> None:
        with self._image(pool, image) as img, self._op(f"{pool}/{image}@{name}"):
            img.rollback_to_snap(name)

    def snapshot_children(self, pool: str, image: str, name: str) -> list[str]:
        with self._image(pool, image, snapshot=name, read_only=True) as img, \
                self._op(f"{pool}/{image}@{name}"):
            return sorted(f"{c['pool']}/{c['image']}" for c in img.list_children2())

    def remove_snapshot(self, pool: str, image: str, name: str) -> None:
        """Remove a snapshot (unprotecting it first); refuses while clones use it."""
        children = self.snapshot_children(pool, image, name)
        if children:
            raise InvalidState(f"snapshot {name!r} of RBD image {pool}/{image} has clones "
                               f"({', '.join(children)}); delete those first")
        with self._image(pool, image) as img, self._op(f"{pool}/{image}@{name}"):
            if img.is_protected_snap(name):
                img.unprotect_snap(name)
            img.remove_snap(name)

    def release_snapshot(self, pool: str, image: str, name: str) -> None:
        """Remove a snapshot that clone v2 children still use: librbd moves it to the
        image's trash namespace and deletes it with its last clone."""
        with self._image(pool, image) as img, self._op(f"{pool}/{image}@{name}"):
            img.remove_snap(name)

    # clones

    def clone(self, pool: str, image: str, snapshot: str, new_pool: str, new_image: str
              ) -> bool:
        """Clone ``pool/image@snapshot`` as ``new_pool/new_image``.

        Clone v2 needs no protected snapshot (cluster min-compat-client >= mimic); an
        older cluster refuses an unprotected parent, so the snapshot is protected and
        the clone retried. Returns whether the snapshot had to be protected.
        """
        src, dst = self._ioctx(pool), self._ioctx(new_pool)
        with self._op(f"{new_pool}/{new_image}"):
            try:
                self._rbd.RBD().clone(src, image, snapshot, dst, new_image)
                return False
            except self._rbd.InvalidArgument:
                log.info("%s/%s@%s: clone v2 refused; protecting the snapshot", pool, image,
                         snapshot)
        with self._image(pool, image) as img, self._op(f"{pool}/{image}@{snapshot}"):
            img.protect_snap(snapshot)
        with self._op(f"{new_pool}/{new_image}"):
            self._rbd.RBD().clone(src, image, snapshot, dst, new_image)
        return True

    def flatten(self, pool: str, image: str, progress: Progress | None = None) -> None:
        with self._image(pool, image) as img, self._op(f"{pool}/{image}"):
            img.flatten(on_progress=_progress_callback(progress))


@contextlib.contextmanager
def connect(conf: str, *, timeout: int = CLIENT_TIMEOUT) -> Iterator[CephSession]:
    """A session with the cluster of ``conf`` (checked first by :func:`check_conf`)."""
    conf = check_conf(conf)
    rados, _ = bindings()
    try:
        cluster = rados.Rados(conffile=conf, conf=client_settings(timeout))
    except rados.Error as exc:
        raise ClusterUnavailable(f"cannot use Ceph config {conf}: {short_message(exc)}") from None
    try:
        cluster.connect()
    except rados.Error as exc:
        with contextlib.suppress(Exception):
            cluster.shutdown()
        if getattr(exc, "errno", None) in (errno.ETIMEDOUT, errno.ECONNREFUSED):
            raise unavailable(conf, timeout) from None
        raise ClusterUnavailable(f"cannot connect to the Ceph cluster at {conf}: "
                                 f"{short_message(exc)}") from None
    session = CephSession(cluster, conf, timeout)
    try:
        yield session
    finally:
        session.close()
