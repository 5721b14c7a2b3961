"""Fixtures of the integration tests: the real Ceph cluster the RBD tests run against.

``scripts/test.sh`` starts a memstore cluster (scripts/ceph-dev.sh) before pytest and
exports its conf as ``HYPERCORE_TEST_CEPH_CONF``; without that variable the session
fixture starts (and purges) one of its own, so ``pytest tests/integration/test_rbd.py``
works alone. A cluster that is not usable fails the tests: they never skip.

A test asks for ``ceph_cluster``, ``rbd_env`` or ``image_names`` by parameter; the
cluster's helpers (``CephCluster``, ``POOL``, ``unique``...) are imported from here.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from hypercore_tui.adapters.rbd.results import ImageStat
from hypercore_tui.adapters.rbd.session import CephSession, connect
from hypercore_tui.core.errors import HypercoreError

from ..conftest import ROOT, HcEnv
from ..helpers import QemuImgTripwire
from .clipsync_env import release_shared_pair, shared_pair
from .storage_env import host_qemu_ga

CEPH_CONF_ENV = "HYPERCORE_TEST_CEPH_CONF"
CEPH_DEV = ROOT / "scripts" / "ceph-dev.sh"
POOL = "vm-pool"
MiB = 1024 * 1024


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class CephCluster:
    """A cluster's conf, with the small helpers tests use to look behind Hypercore."""

    conf: str
    pool: str = POOL

    def session(self) -> contextlib.AbstractContextManager[CephSession]:
        return connect(self.conf)

    def exists(self, image: str) -> bool:
        with self.session() as s:
            return s.image_exists(self.pool, image)

    def read(self, image: str, length: int, offset: int = 0) -> bytes:
        with self.session() as s:
            return s.read(self.pool, image, offset, length)

    def write(self, image: str, data: bytes, offset: int = 0) -> None:
        with self.session() as s:
            s.write(self.pool, image, offset, data)

    def create(self, image: str, size: int = 32 * MiB) -> None:
        with self.session() as s:
            s.create_image(self.pool, image, size)

    def stat(self, image: str) -> ImageStat:
        with self.session() as s:
            return s.stat(self.pool, image)

    def purge(self, image: str) -> None:
        """Best effort: remove ``image`` with its clones' snapshots and its own."""
        with contextlib.suppress(HypercoreError), self.session() as s:
            if not s.image_exists(self.pool, image):
                return
            for snap in s.snapshots(self.pool, image):
                with contextlib.suppress(HypercoreError):
                    s.remove_snapshot(self.pool, image, snap.name)
            s.remove_image(self.pool, image)


def start_cluster(directory: Path, port: int, *, address: str | None = None) -> str:
    """``scripts/ceph-dev.sh up --memory``; returns the conf path. ``address``: the
    daemons bind there instead of 127.0.0.1."""
    env = dict(os.environ, HYPERCORE_CEPH_PORT=str(port))
    if address is not None:
        env["HYPERCORE_CEPH_ADDR"] = address
    proc = subprocess.run(["bash", str(CEPH_DEV), "up", "--memory", "--dir", str(directory)],
                          capture_output=True, text=True, timeout=180, env=env, check=False,
                          stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        pytest.fail(f"scripts/ceph-dev.sh up failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc.stdout.strip().splitlines()[-1]


def stop_cluster(directory: Path, *, purge: bool = True) -> None:
    subprocess.run(["bash", str(CEPH_DEV), "purge" if purge else "down", "--dir",
                    str(directory)], capture_output=True, timeout=120, check=False,
                   stdin=subprocess.DEVNULL)


def _check_usable(conf: str) -> None:
    try:
        with connect(conf) as s:
            s.image_names(POOL)
    except HypercoreError as exc:
        pytest.fail(f"the Ceph test cluster ({conf}) is not usable: {exc}")


@pytest.fixture(scope="session")
def ceph_cluster() -> Iterator[CephCluster]:
    """The cluster of ``HYPERCORE_TEST_CEPH_CONF``, else one this session starts, shares
    among its tests and purges at its end."""
    conf = os.environ.get(CEPH_CONF_ENV)
    if conf:
        _check_usable(conf)
        yield CephCluster(conf)
        return
    directory = Path(tempfile.mkdtemp(prefix="hc-ceph-", dir="/tmp"))
    try:
        started = time.monotonic()
        conf = start_cluster(directory, free_port())
        print(f"Ceph test cluster up in {time.monotonic() - started:.1f}s ({conf})")
        _check_usable(conf)
        yield CephCluster(conf)
    finally:
        stop_cluster(directory)
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def rbd_env(hc_env: HcEnv, ceph_cluster: CephCluster) -> Iterator[HcEnv]:
    """``hc_env`` with the test cluster configured (HYPERCORE_CEPH_CONF).

    A tripwire ``qemu-img`` comes first on PATH: no qemu-img command may ever touch an
    RBD-backed VM's disk (no image lock protects RBD), so any call fails the test.
    """
    tripwire = QemuImgTripwire(hc_env.home.parent / "tripwire")
    hc_env.environ["PATH"] = tripwire.path_for(hc_env.environ)
    hc_env.environ["HYPERCORE_CEPH_CONF"] = ceph_cluster.conf
    yield hc_env
    tripwire.assert_never_ran()


@pytest.fixture
def image_names(ceph_cluster: CephCluster) -> Iterator[list[str]]:
    """Unique image names for one test (``names.append(...)``); purged afterwards."""
    names: list[str] = []
    yield names
    for name in reversed(names):  # clones before their parents
        ceph_cluster.purge(name)


def unique(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


# -- the desktop pair of the real-guest clipboard modules -----------------------------------


@pytest.fixture
def agent_sock() -> Iterator[Path]:
    """A real qemu-ga on the host (its socket), stopped after the test."""
    with host_qemu_ga() as sock:
        yield sock


@pytest.fixture(scope="session")
def desktop_pair() -> Iterator[HcEnv]:
    """Two real Debian desktop guests (rsa, rsb), booted once for every module that asks
    (about 50 s of boots saved per module after the first); stopped as soon as the next
    test does not ask for them (:func:`pytest_runtest_teardown`), or at the end."""
    yield shared_pair()
    release_shared_pair()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None
                            ) -> Iterator[None]:
    yield  # (the test's own fixtures first: a sync using the pair ends before it)
    if nextitem is None or "desktop_pair" not in getattr(nextitem, "fixturenames", ()):
        release_shared_pair()
