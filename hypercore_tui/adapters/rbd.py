"""Ceph RBD through the ``rados``/``rbd`` Python bindings (Debian's python3-rados/-rbd).

Everything here blocks: services call it from a thread (:func:`arun`, :func:`run`),
never from an event loop. Every call is bounded twice:

* librados' own timeouts (:data:`CLIENT_TIMEOUT`): ``client_mount_timeout`` bounds
  ``connect()`` (``Rados.connect(timeout=...)`` is ignored), ``rados_mon_op_timeout``
  and ``rados_osd_op_timeout`` bound each monitor/OSD operation. A stopped cluster
  gives ``TimedOut`` after 5 s instead of librados' default 300 s or forever.
* a wall-clock limit on the thread doing the work (:func:`run`/:func:`arun`), the
  safety net should librados ever not honour its own timeouts.

Library exceptions become :class:`~hypercore_tui.core.errors.HypercoreError`
subclasses with one-line messages at this boundary. ``mon_command`` does not raise
on a timeout (it returns ``-110``): return codes are checked.

librados prints some configuration errors straight to stdout/stderr (an unresolvable
monitor host, a conf naming no monitor), which would garble the dashboard and
``--json`` output: :func:`check_conf` finds those cases first.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import datetime as dt
import errno
import ipaddress
import json
import logging
import os
import re
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

from hypercore_tui.core.errors import (
    AlreadyExists,
    ClusterUnavailable,
    HypercoreError,
    InvalidState,
    NotFound,
    OperationFailed,
)
from hypercore_tui.core.progress import Progress

log = logging.getLogger("hypercore.ceph")
log.addHandler(logging.NullHandler())

T = TypeVar("T")

#: Seconds librados waits for the monitors (connect) and for each monitor/OSD operation.
CLIENT_TIMEOUT = 5
#: Wall-clock limit for a short operation (connect + a few metadata calls).
SHORT_LIMIT = 10.0
STATUS_HINT = "(scripts/ceph-dev.sh status)"

def _client_settings(timeout: int) -> dict[str, str]:
    seconds = str(timeout)
    return {
        "client_mount_timeout": seconds,
        "rados_mon_op_timeout": seconds,
        "rados_osd_op_timeout": seconds,
        # Errors go to the (disabled) log, never to the terminal the dashboard draws on.
        "log_to_stderr": "false",
        "err_to_stderr": "false",
        "log_to_file": "false",
        "log_file": "",
        "admin_socket": "",
    }


def _bindings() -> tuple[ModuleType, ModuleType]:
    try:
        import rados
        import rbd
    except ImportError:
        raise OperationFailed("the Ceph Python bindings are missing: apt-get install "
                              "python3-rados python3-rbd (and use the system Python 3)") from None
    return rados, rbd


# -- results --------------------------------------------------------------------------


@dataclass(frozen=True)
class RbdSnapshot:
    name: str
    id: int
    size: int
    timestamp: dt.datetime | None  # aware, UTC
    protected: bool


@dataclass(frozen=True)
class ImageStat:
    pool: str
    name: str
    size: int
    used: int | None  # allocated bytes (object granularity, like `rbd du`); None: unknown
    snapshots: tuple[RbdSnapshot, ...]  # user snapshots (not clone-v2 trash)
    parent: str | None  # POOL/IMAGE@SNAP of a clone
    children: tuple[str, ...]  # POOL/IMAGE of clones made from any snapshot
    watchers: int  # clients that have the image open (a running QEMU is one)

    @property
    def spec(self) -> str:
        return f"{self.pool}/{self.name}"


@dataclass(frozen=True)
class ClusterStatus:
    fsid: str
    health: str  # HEALTH_OK / HEALTH_WARN / HEALTH_ERR
    checks: tuple[str, ...]  # one line per health check
    mons: int
    quorum: int
    osds: int
    osds_up: int
    osds_in: int
    mgr: bool  # a manager is active (else capacity is unknown)
    bytes_total: int | None
    bytes_used: int | None


# -- configuration --------------------------------------------------------------------


_MON_KEYS = {"mon_host", "mon_addr"}
_SECTION = re.compile(r"\s*\[(?P<name>[^\]]*)\]\s*")
_KEY_VALUE = re.compile(r"\s*(?P<key>[^=#;]+?)\s*=\s*(?P<value>.*)")


def _monitor_hosts(text: str) -> list[str] | None:
    """Monitor addresses named in a ceph.conf (None: it names none)."""
    found: list[str] | None = None
    for raw in text.splitlines():
        line = re.split(r"[#;]", raw, maxsplit=1)[0]  # Ceph's comment characters
        if not line.strip() or _SECTION.fullmatch(line):
            continue
        match = _KEY_VALUE.fullmatch(line)
        if not match:
            continue
        key = re.sub(r"[\s-]+", "_", match["key"].strip().lower())
        if key in _MON_KEYS:
            found = (found or []) + _address_hosts(match["value"])
    return found


def _address_hosts(value: str) -> list[str]:
    hosts = []
    for token in re.split(r"[\s,;\[\]]+", value):
        token = re.sub(r"^v[12]:", "", token).split("/", 1)[0]
        if not token:
            continue
        host = token.rsplit(":", 1)[0] if token.count(":") == 1 else token
        hosts.append(host)
    return hosts


def check_conf(conf: str) -> str:
    """``conf`` as an absolute path of a readable ceph.conf naming resolvable monitors."""
    path = Path(conf).expanduser().absolute()
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        raise ClusterUnavailable(f"Ceph config {path} does not exist: start the development "
                                 "cluster with `scripts/ceph-dev.sh up` or set "
                                 "HYPERCORE_CEPH_CONF") from None
    except OSError as exc:
        raise ClusterUnavailable(f"cannot read Ceph config {path}: {exc.strerror}") from None
    hosts = _monitor_hosts(text)
    if not hosts:
        raise ClusterUnavailable(f"Ceph config {path} names no monitor (mon_host)")
    for host in hosts:
        try:
            ipaddress.ip_address(host)
            continue
        except ValueError:
            pass
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9.-]*", host):
            continue  # an address form we do not parse: librados will judge it
        try:
            socket.getaddrinfo(host, None)
        except (socket.gaierror, UnicodeError):
            raise ClusterUnavailable(f"cannot resolve the Ceph monitor host {host!r} named in "
                                     f"{path}") from None
    return str(path)


# -- error translation ----------------------------------------------------------------


_ERRNO_TEXT = re.compile(r"\[errno \d+\]\s*(?P<text>[^(]*)")


def _short(exc: BaseException) -> str:
    match = _ERRNO_TEXT.match(str(exc))
    text = match["text"].strip() if match else str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def unavailable(conf: str, seconds: float) -> ClusterUnavailable:
    return ClusterUnavailable(f"Ceph cluster at {conf} did not answer within {seconds:g} s: "
                              f"is it running? {STATUS_HINT}")


def _translate(exc: BaseException, conf: str, what: str, timeout: float) -> HypercoreError:
    rados, rbd = _bindings()
    code = getattr(exc, "errno", None)
    if isinstance(exc, (rados.TimedOut, rbd.Timeout)) or code == errno.ETIMEDOUT:
        return unavailable(conf, timeout)
    if isinstance(exc, rbd.ImageNotFound):
        return NotFound(f"RBD image {what} does not exist")
    if isinstance(exc, rbd.ImageExists):
        return AlreadyExists(f"RBD image {what} already exists")
    if isinstance(exc, rbd.ImageHasSnapshots):
        return InvalidState(f"RBD image {what} has snapshots; delete them first")
    if isinstance(exc, rbd.ImageBusy):
        return InvalidState(f"RBD image {what} is busy: a client has it open or clones "
                            "depend on it")
    if code in (errno.EACCES, errno.EPERM):
        return OperationFailed(f"Ceph refused access to {what}: permission denied (check the "
                               "keyring and caps of the client in the conf)")
    if code in (errno.ENOSPC, errno.EDQUOT):
        return OperationFailed(f"Ceph cluster at {conf} is full (or the pool quota is reached)")
    if code in (errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH):
        return unavailable(conf, timeout)
    return OperationFailed(f"Ceph: {what}: {_short(exc)}")


# -- bounded calls --------------------------------------------------------------------


def _start(fn: Callable[[], T], name: str) -> concurrent.futures.Future[T]:
    future: concurrent.futures.Future[T] = concurrent.futures.Future()

    def body() -> None:
        if not future.set_running_or_notify_cancel():
            return
        try:
            result = fn()
        except BaseException as exc:  # handed to the waiting caller
            future.set_exception(exc)
        else:
            future.set_result(result)

    # A daemon thread: if librados ever hangs past our limit, the caller gets its error
    # and the process can still exit.
    threading.Thread(target=body, name=name, daemon=True).start()
    return future


def run(fn: Callable[[], T], *, conf: str, limit: float | None = SHORT_LIMIT) -> T:
    """Call blocking ``fn`` in a thread; at most ``limit`` seconds (None: no limit)."""
    future = _start(fn, "hypercore-ceph")
    try:
        return future.result(timeout=limit)
    except concurrent.futures.TimeoutError:
        raise unavailable(conf, limit or 0) from None


def _mark_retrieved(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


async def arun(fn: Callable[[], T], *, conf: str, limit: float | None = SHORT_LIMIT) -> T:
    """:func:`run` for the event loop: the loop keeps running meanwhile.

    Cancelling the caller does not stop ``fn`` (librados cannot be interrupted): with
    no ``limit`` the caller waits for it to finish so its clean-up is never racing.
    """
    future = asyncio.wrap_future(_start(fn, "hypercore-ceph"))
    # A caller that stopped waiting (cancelled, timed out) never reads the call's error:
    # mark it read, or asyncio logs "Future exception was never retrieved" with a
    # traceback on stderr whenever the future is garbage-collected.
    future.add_done_callback(_mark_retrieved)
    if limit is None:
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            with contextlib.suppress(BaseException):
                await future
            raise
    try:
        return await asyncio.wait_for(asyncio.shield(future), limit)
    except TimeoutError:
        raise unavailable(conf, limit) from None


# -- the session ----------------------------------------------------------------------


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
        self._rados, self._rbd = _bindings()

    # plumbing

    @contextlib.contextmanager
    def _op(self, what: str) -> Iterator[None]:
        try:
            yield
        except HypercoreError:
            raise
        except (self._rados.Error, self._rbd.Error) as exc:
            raise _translate(exc, self.conf, what, self.timeout) from None

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
                raise _translate(exc, self.conf, f"pool {pool}", self.timeout) from None
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
        return _cluster_status(data)

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


def _cluster_status(data: Any) -> ClusterStatus:
    def section(name: str) -> dict[str, Any]:
        value = data.get(name) if isinstance(data, dict) else None
        return value if isinstance(value, dict) else {}

    def number(sec: dict[str, Any], key: str) -> int:
        value = sec.get(key, 0)
        return value if isinstance(value, int) and not isinstance(value, bool) else 0

    health = section("health")
    checks = []
    raw_checks = health.get("checks")
    for name, check in (raw_checks.items() if isinstance(raw_checks, dict) else []):
        summary = check.get("summary", {}) if isinstance(check, dict) else {}
        message = summary.get("message") if isinstance(summary, dict) else None
        checks.append(f"{name}: {message or check}")
    monmap, osdmap, pgmap, mgrmap = (section(n) for n in ("monmap", "osdmap", "pgmap",
                                                          "mgrmap"))
    nested = osdmap.get("osdmap")  # releases before Pacific nest the counts one level down
    if isinstance(nested, dict):
        osdmap = nested
    quorum = data.get("quorum_names") if isinstance(data, dict) else None
    mgr = bool(mgrmap.get("available"))
    total = number(pgmap, "bytes_total")
    return ClusterStatus(
        fsid=str(data.get("fsid", "")) if isinstance(data, dict) else "",
        health=str(health.get("status", "unknown")),
        checks=tuple(checks),
        mons=number(monmap, "num_mons"),
        quorum=len(quorum) if isinstance(quorum, list) else 0,
        osds=number(osdmap, "num_osds"),
        osds_up=number(osdmap, "num_up_osds"),
        osds_in=number(osdmap, "num_in_osds"),
        mgr=mgr,
        bytes_total=total if mgr and total else None,
        bytes_used=number(pgmap, "bytes_used") if mgr and total else None,
    )


@contextlib.contextmanager
def connect(conf: str, *, timeout: int = CLIENT_TIMEOUT) -> Iterator[CephSession]:
    """A session with the cluster of ``conf`` (checked first by :func:`check_conf`)."""
    conf = check_conf(conf)
    rados, _ = _bindings()
    try:
        cluster = rados.Rados(conffile=conf, conf=_client_settings(timeout))
    except rados.Error as exc:
        raise ClusterUnavailable(f"cannot use Ceph config {conf}: {_short(exc)}") from None
    try:
        cluster.connect()
    except rados.Error as exc:
        with contextlib.suppress(Exception):
            cluster.shutdown()
        if getattr(exc, "errno", None) in (errno.ETIMEDOUT, errno.ECONNREFUSED):
            raise unavailable(conf, timeout) from None
        raise ClusterUnavailable(f"cannot connect to the Ceph cluster at {conf}: "
                                 f"{_short(exc)}") from None
    session = CephSession(cluster, conf, timeout)
    try:
        yield session
    finally:
        session.close()
