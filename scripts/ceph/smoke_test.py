#!/usr/bin/python3
"""Smoke test for a ceph-dev.sh cluster through the python-rados/python-rbd bindings.

Run with the system interpreter (the Debian bindings only import there):

    /usr/bin/python3 scripts/ceph/smoke_test.py up   DIR/ceph.conf   # full RBD round trip
    /usr/bin/python3 scripts/ceph/smoke_test.py down DIR/ceph.conf   # expect a fast failure
    /usr/bin/python3 scripts/ceph/smoke_test.py nosd DIR/ceph.conf   # mon up, OSD stopped

Exit status 0 when the behaviour matches the mode.
"""

import sys
import time
import uuid

import rados
import rbd

POOL = "vm-pool"
MiB = 1024 * 1024

# Fail-fast client settings: without them librados waits 300 s for the monitors
# (client_mount_timeout) and forever for mon commands and OSD ops (0 = no timeout).
FAST_FAIL = {
    "client_mount_timeout": "5",
    "rados_mon_op_timeout": "5",
    "rados_osd_op_timeout": "5",
}


def connect(conf):
    cluster = rados.Rados(conffile=conf, conf=dict(FAST_FAIL))
    t0 = time.monotonic()
    try:
        cluster.connect()
    except BaseException:
        cluster.shutdown()
        raise
    return cluster, time.monotonic() - t0


def mode_up(conf):
    cluster, t_conn = connect(conf)
    print(f"connect: {t_conn:.3f}s fsid={cluster.get_fsid()}")
    suffix = uuid.uuid4().hex[:8]
    base, clone = f"smoke-base-{suffix}", f"smoke-clone-{suffix}"
    try:
        with cluster.open_ioctx(POOL) as ioctx:
            r = rbd.RBD()
            t0 = time.monotonic()
            r.create(ioctx, base, 64 * MiB)
            payload = bytes(range(256)) * 4096  # 1 MiB
            with rbd.Image(ioctx, base) as img:
                img.write(payload, 0)
                img.write(payload, 63 * MiB)
                assert img.read(0, len(payload)) == payload
                assert img.read(63 * MiB, len(payload)) == payload
                assert img.size() == 64 * MiB
                img.create_snap("s1")
                img.write(b"\0" * len(payload), 0)  # change head after the snapshot
                print(f"snapshots: {[s['name'] for s in img.list_snaps()]}, "
                      f"protected: {img.is_protected_snap('s1')}")
            # clone v2 from an UNPROTECTED snapshot (needs min-compat-client >= mimic)
            r.clone(ioctx, base, "s1", ioctx, clone)
            with rbd.Image(ioctx, clone) as img:
                assert img.read(0, len(payload)) == payload, "clone does not see the snapshot data"
                parent = img.get_parent_image_spec()
                where = f"{parent['pool_name']}/{parent['image_name']}@{parent['snap_name']}"
                print(f"clone parent: {where}")
            images = r.list(ioctx)
            assert base in images and clone in images
            print(f"list: {sorted(images)}")
            # cleanup: clone, then the (v2) snapshot, then the base image
            r.remove(ioctx, clone)
            with rbd.Image(ioctx, base) as img:
                img.remove_snap("s1")
            r.remove(ioctx, base)
            print(f"create/write/read/snap/clone/list/remove: {time.monotonic() - t0:.3f}s")
    finally:
        cluster.shutdown()
    return 0


def expect_failure(label, fn):
    t0 = time.monotonic()
    try:
        fn()
    except Exception as exc:  # report the exact type; callers map these to their own errors
        dt = time.monotonic() - t0
        mro = " < ".join(c.__module__ + "." + c.__name__ for c in type(exc).__mro__[:4])
        print(f"{label}: {type(exc).__module__}.{type(exc).__name__} after {dt:.2f}s "
              f"errno={getattr(exc, 'errno', None)} msg={exc!s} [{mro}]")
        return dt
    print(f"{label}: unexpectedly succeeded after {time.monotonic() - t0:.2f}s")
    return None


def mode_down(conf):
    dt = expect_failure("connect (cluster down)", lambda: connect(conf))
    return 0 if dt is not None and dt < 10 else 1


def mode_nosd(conf):
    cluster, t_conn = connect(conf)
    print(f"connect (mon only): {t_conn:.3f}s")
    try:
        ioctx = cluster.open_ioctx(POOL)
        dts = [
            expect_failure("rbd.RBD().list (osd down)", lambda: rbd.RBD().list(ioctx)),
            expect_failure("rbd.RBD().create (osd down)",
                           lambda: rbd.RBD().create(ioctx, "smoke-nosd", 1 * MiB)),
            expect_failure("ioctx.stat (osd down)", lambda: ioctx.stat("rbd_directory")),
        ]
        ioctx.close()
    finally:
        cluster.shutdown()
    return 0 if all(d is not None and d < 10 for d in dts) else 1


def main(argv):
    if len(argv) != 3 or argv[1] not in ("up", "down", "nosd"):
        print(__doc__, file=sys.stderr)
        return 2
    return {"up": mode_up, "down": mode_down, "nosd": mode_nosd}[argv[1]](argv[2])


if __name__ == "__main__":
    sys.exit(main(sys.argv))
