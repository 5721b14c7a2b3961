"""VM disks on Ceph RBD against a real cluster (scripts/ceph-dev.sh) and real QEMU (TCG).

The test guest sees its disk as /dev/vda: what the guest writes there is read back
through the rbd binding, and what is written through the binding is checked after
snapshots, rollbacks and clones.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

from hypercore_tui.core.errors import OperationFailed
from hypercore_tui.services import registry
from hypercore_tui.services.create import CreateRequest, create_vm

from ..conftest import GuestImage, HcEnv
from ..helpers import one_error_line
from .conftest import POOL, CephCluster, MiB, free_port, start_cluster, stop_cluster, unique

pytestmark = [pytest.mark.ceph]


def vm_json(env: HcEnv, name: str) -> dict[str, Any]:
    data = json.loads((env.home / "vms" / name / "vm.json").read_text())
    assert isinstance(data, dict)
    return data


def storage_rows(env: HcEnv) -> dict[str, dict[str, Any]]:
    proc = env.run("storage", "list", "--json", check=True)
    return {f"{row['pool']}/{row['image']}": row for row in json.loads(proc.stdout)}


# -- create, boot, write through the guest, delete --------------------------------------


@pytest.mark.qemu
def test_vm_on_a_new_rbd_image_boots_and_the_guest_writes_reach_ceph(
        rbd_env: HcEnv, ceph_cluster: CephCluster, test_guest: GuestImage,
        image_names: list[str]) -> None:
    image = unique("boot")
    image_names.append(image)
    assert not ceph_cluster.exists(image)

    created = rbd_env.run("create-vm", "rbdvm", "256", "1", f"rbd:{POOL}/{image}",
                          "--disk-size", "64M", "--kernel", str(test_guest.kernel),
                          "--initrd", str(test_guest.initrd), f"--append={test_guest.append}",
                          "--no-shared")
    assert created.returncode == 0, created.stderr
    assert b"(new image)" in created.stdout
    disk = vm_json(rbd_env, "rbdvm")["disk"]
    assert disk == {"kind": "rbd", "pool": POOL, "image": image, "conf": ceph_cluster.conf,
                    "owned": True}
    assert ceph_cluster.stat(image).size == 64 * MiB

    boot = rbd_env.run("boot-vm", "rbdvm", "--wait-agent", "90")
    assert boot.returncode == 0, boot.stderr
    qemu_argv = (rbd_env.home / "vms" / "rbdvm" / "qemu.log").read_text()
    assert '"driver":"rbd"' in qemu_argv and f'"image":"{image}"' in qemu_argv

    marker = f"hypercore-marker-{image}"
    wrote = rbd_env.run("exec", "rbdvm", "--", "/bin/sh", "-c",
                        f"echo {marker} | dd of=/dev/vda conv=fsync")
    assert wrote.returncode == 0, wrote.stderr
    assert ceph_cluster.read(image, len(marker) + 1) == f"{marker}\n".encode()

    # The guest reads back what the binding writes (same image, no stale cache).
    ceph_cluster.write(image, b"written-through-librbd", 1 * MiB)
    seen = rbd_env.run("exec", "rbdvm", "--", "/bin/sh", "-c",
                       "dd if=/dev/vda bs=1M skip=1 count=1 iflag=direct 2>/dev/null | "
                       "head -c 22")
    assert seen.returncode == 0 and seen.stdout == b"written-through-librbd"

    row = storage_rows(rbd_env)[f"{POOL}/{image}"]
    assert row["vms"] == [{"name": "rbdvm", "state": "running", "owned": True}]
    assert row["clients"] >= 1 and row["size_bytes"] == 64 * MiB
    assert row["used_bytes"] and row["used_bytes"] > 0

    refused = rbd_env.run("delete-vm", "rbdvm", "--yes", "--remove-image")
    assert refused.returncode == 1 and "stop it first" in one_error_line(refused)
    assert ceph_cluster.exists(image)

    # Live: QEMU makes the RBD snapshot (disk only: RBD cannot hold RAM state).
    live = rbd_env.run("snapshot", "create", "rbdvm", "live1", "--disk-only")
    assert live.returncode == 0, live.stderr
    listed = json.loads(rbd_env.run("snapshot", "list", "rbdvm", "--json", check=True).stdout)
    assert [(r["tag"], r["has_ram"]) for r in listed] == [("live1", False)]
    assert listed[0]["date"][:4] != "1970"
    ram = rbd_env.run("snapshot", "create", "rbdvm", "ram1")
    assert ram.returncode == 1 and "cannot hold the VM's RAM state" in one_error_line(ram)
    under = rbd_env.run("snapshot", "restore", "rbdvm", "live1")
    assert under.returncode == 1 and "stop the VM first" in one_error_line(under)
    rbd_env.run("exec", "rbdvm", "--", "/bin/sh", "-c",
                "echo overwritten-after-snapshot | dd of=/dev/vda conv=fsync", check=True)

    rbd_env.run("stop-vm", "rbdvm", "--force", check=True)
    rbd_env.run("snapshot", "restore", "rbdvm", "live1", check=True)  # offline: the binding
    assert ceph_cluster.read(image, len(marker) + 1) == f"{marker}\n".encode()
    rbd_env.run("snapshot", "delete", "rbdvm", "live1", check=True)
    deleted = rbd_env.run("delete-vm", "rbdvm", "--yes", "--remove-image")
    assert deleted.returncode == 0, deleted.stderr
    assert f"RBD image {POOL}/{image} removed".encode() in deleted.stdout
    assert not ceph_cluster.exists(image)
    assert not (rbd_env.home / "vms" / "rbdvm").exists()


def test_an_existing_image_is_adopted_kept_on_delete_and_never_shared(
        hc_env: HcEnv, ceph_cluster: CephCluster, image_names: list[str]) -> None:
    image = unique("adopt")
    image_names.append(image)
    ceph_cluster.create(image, 32 * MiB)
    ceph_cluster.write(image, b"precious user data")
    hc_env.environ.pop("HYPERCORE_CEPH_CONF", None)  # conf= names the cluster instead
    disk_arg = f"rbd:{POOL}/{image}:conf={ceph_cluster.conf}"

    created = hc_env.run("create-vm", "adopter", "128", "1", disk_arg, "--disk-size", "1G")
    assert created.returncode == 0, created.stderr
    assert b"existing image" in created.stdout
    assert vm_json(hc_env, "adopter")["disk"]["owned"] is False
    assert ceph_cluster.stat(image).size == 32 * MiB  # --disk-size does not resize it

    second = hc_env.run("create-vm", "intruder", "128", "1", disk_arg)
    assert second.returncode == 2
    assert "already the disk of VM 'adopter'" in one_error_line(second)
    assert not (hc_env.home / "vms" / "intruder").exists()

    # A client holding the image open (another VM, another host) blocks the boot.
    with ceph_cluster.session() as s:
        from hypercore_tui.adapters.rbd.library import bindings as _bindings

        _, rbd_mod = _bindings()
        holder = rbd_mod.Image(s._ioctx(POOL), image)
        try:
            started = time.monotonic()
            boot = hc_env.run("boot-vm", "adopter")
            assert boot.returncode == 1
            assert "open by 1 client(s)" in one_error_line(boot)
            assert time.monotonic() - started < 10
        finally:
            holder.close()

    deleted = hc_env.run("delete-vm", "adopter", "--yes")
    assert deleted.returncode == 0, deleted.stderr
    assert b"kept" in deleted.stdout
    assert ceph_cluster.read(image, 18) == b"precious user data"

    hc_env.run("create-vm", "adopter2", "128", "1", disk_arg, check=True)
    removed = hc_env.run("delete-vm", "adopter2", "--yes", "--remove-image")
    assert removed.returncode == 0, removed.stderr
    assert not ceph_cluster.exists(image)


def test_delete_flags_apply_to_rbd_disks_only(hc_env: HcEnv) -> None:
    hc_env.run("create-vm", "localvm", "64", "1", "--disk-size", "8M", check=True)
    proc = hc_env.run("delete-vm", "localvm", "--yes", "--keep-image")
    assert proc.returncode == 2 and "apply to RBD disks only" in one_error_line(proc)
    both = hc_env.run("delete-vm", "localvm", "--yes", "--keep-image", "--remove-image")
    assert both.returncode == 2
    assert (hc_env.home / "vms" / "localvm" / "vm.json").is_file()


# -- failures leave nothing behind ------------------------------------------------------


def test_failed_create_removes_only_the_image_it_made(
        rbd_env: HcEnv, ceph_cluster: CephCluster, image_names: list[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    new, existing = unique("fail"), unique("keep")
    image_names += [new, existing]
    ceph_cluster.create(existing)

    def broken_save(*_args: object) -> Path:
        raise OperationFailed("disk full (injected)")

    monkeypatch.setattr(registry, "save", broken_save)
    ctx = rbd_env.ctx
    for image in (new, existing):
        request = CreateRequest(name="doomed", ram_mb=64, cpus=1,
                                disk=f"rbd:{POOL}/{image}", disk_size="16M")
        with pytest.raises(OperationFailed, match="injected"):
            create_vm(ctx, request)
        assert not (rbd_env.home / "vms" / "doomed").exists()
    assert not ceph_cluster.exists(new)  # made in the failed attempt: removed
    assert ceph_cluster.exists(existing)  # adopted: never touched


def test_missing_pool_and_unconfigured_cluster_are_one_line_errors(
        rbd_env: HcEnv, hc_env: HcEnv) -> None:
    nopool = rbd_env.run("create-vm", "p1", "64", "1", "rbd:no-such-pool/img")
    assert nopool.returncode == 2
    assert "Ceph pool 'no-such-pool' does not exist" in one_error_line(nopool)
    assert not (rbd_env.home / "vms" / "p1").exists()

    rbd_env.environ.pop("HYPERCORE_CEPH_CONF")
    for args in (("create-vm", "p2", "64", "1", f"rbd:{POOL}/img"), ("storage", "list"),
                 ("ceph", "status")):
        proc = rbd_env.run(*args)
        assert proc.returncode == 1
        line = one_error_line(proc)
        assert "scripts/ceph-dev.sh up" in line and "HYPERCORE_CEPH_CONF" in line
    assert not (rbd_env.home / "vms" / "p2").exists()


# -- a cluster that does not answer -----------------------------------------------------


def dead_conf(directory: Path, port: int) -> str:
    conf = directory / "dead-ceph.conf"
    conf.write_text(f"[global]\nmon_host = v2:127.0.0.1:{port}\nauth_client_required = none\n"
                    "auth_cluster_required = none\nauth_service_required = none\n")
    return str(conf)


def test_unreachable_cluster_fails_fast_with_one_line(hc_env: HcEnv) -> None:
    conf = dead_conf(hc_env.home.parent, free_port())
    hc_env.environ["HYPERCORE_CEPH_CONF"] = conf
    for args in (("create-vm", "dead1", "64", "1", f"rbd:{POOL}/img", "--disk-size", "8M"),
                 ("storage", "list", "--json"), ("ceph", "status")):
        started = time.monotonic()
        proc = hc_env.run(*args)
        elapsed = time.monotonic() - started
        assert proc.returncode == 1, proc.stderr
        assert proc.stdout == b""
        line = one_error_line(proc)
        assert f"Ceph cluster at {conf} did not answer within 5 s: is it running?" in line
        assert elapsed < 10, f"{args[0]} took {elapsed:.1f}s"
    assert not (hc_env.home / "vms" / "dead1").exists()


def test_a_stopped_cluster_under_a_defined_vm_fails_fast(hc_env: HcEnv) -> None:
    """A second, throwaway cluster: a VM is created on it, then the cluster stops."""
    directory = Path(tempfile.mkdtemp(prefix="hc-ceph2-", dir="/tmp"))
    try:
        conf = start_cluster(directory, free_port())
        hc_env.environ["HYPERCORE_CEPH_CONF"] = conf
        hc_env.run("create-vm", "orphan", "64", "1", f"rbd:{POOL}/orphan", "--disk-size", "8M",
                   check=True)
        stop_cluster(directory, purge=False)

        started = time.monotonic()
        create = hc_env.run("create-vm", "late", "64", "1", f"rbd:{POOL}/late")
        assert time.monotonic() - started < 10
        assert create.returncode == 1
        assert f"Ceph cluster at {conf} did not answer within 5 s" in one_error_line(create)
        assert not (hc_env.home / "vms" / "late").exists()

        started = time.monotonic()
        boot = hc_env.run("boot-vm", "orphan")
        assert time.monotonic() - started < 10
        assert boot.returncode == 1
        assert "did not answer within 5 s" in one_error_line(boot)
        assert not list(hc_env.runtime.glob("*/orphan/qemu.pid"))

        started = time.monotonic()
        delete = hc_env.run("delete-vm", "orphan", "--yes", "--remove-image")
        assert time.monotonic() - started < 10
        assert delete.returncode == 1
        line = one_error_line(delete)
        assert "did not answer within 5 s" in line and "--keep-image" in line
        assert (hc_env.home / "vms" / "orphan" / "vm.json").is_file()  # not half-deleted

        kept = hc_env.run("delete-vm", "orphan", "--yes", "--keep-image")
        assert kept.returncode == 0, kept.stderr
        assert not (hc_env.home / "vms" / "orphan").exists()
    finally:
        stop_cluster(directory)


# -- offline snapshots and clones -------------------------------------------------------


def snapshot_tags(env: HcEnv, name: str) -> list[str]:
    proc = env.run("snapshot", "list", name, "--json", check=True)
    rows = json.loads(proc.stdout)
    assert all(row["has_ram"] is False for row in rows)
    return [row["tag"] for row in rows]


def test_offline_rbd_snapshot_create_rollback_delete(
        rbd_env: HcEnv, ceph_cluster: CephCluster, image_names: list[str]) -> None:
    image = unique("snap")
    image_names.append(image)
    rbd_env.run("create-vm", "snapvm", "64", "1", f"rbd:{POOL}/{image}", "--disk-size", "16M",
                check=True)
    ceph_cluster.write(image, b"state-one")
    ceph_cluster.write(image, b"tail-one", 12 * MiB)

    made = rbd_env.run("snapshot", "create", "snapvm", "s1")
    assert made.returncode == 0, made.stderr
    assert snapshot_tags(rbd_env, "snapvm") == ["s1"]
    assert [s.name for s in ceph_cluster.stat(image).snapshots] == ["s1"]

    ceph_cluster.write(image, b"state-two")
    ceph_cluster.write(image, b"tail-two", 12 * MiB)
    dup = rbd_env.run("snapshot", "create", "snapvm", "s1")
    assert dup.returncode == 2 and "already has a snapshot 's1'" in one_error_line(dup)

    restored = rbd_env.run("snapshot", "restore", "snapvm", "s1")
    assert restored.returncode == 0, restored.stderr
    assert ceph_cluster.read(image, 9) == b"state-one"
    assert ceph_cluster.read(image, 8, 12 * MiB) == b"tail-one"

    # No image lock protects RBD: an image some client has open is never rolled back.
    with ceph_cluster.session() as s:
        from hypercore_tui.adapters.rbd.library import bindings as _bindings

        _, rbd_mod = _bindings()
        holder = rbd_mod.Image(s._ioctx(POOL), image)
        try:
            busy = rbd_env.run("snapshot", "restore", "snapvm", "s1")
            assert busy.returncode == 1
            assert "open by 1 client(s)" in one_error_line(busy)
        finally:
            holder.close()

    blocked = rbd_env.run("delete-vm", "snapvm", "--yes", "--remove-image")
    assert blocked.returncode == 1
    assert "has snapshots (s1)" in one_error_line(blocked)
    assert (rbd_env.home / "vms" / "snapvm" / "vm.json").is_file()

    gone = rbd_env.run("snapshot", "delete", "snapvm", "s1")
    assert gone.returncode == 0, gone.stderr
    assert snapshot_tags(rbd_env, "snapvm") == []
    missing = rbd_env.run("snapshot", "restore", "snapvm", "s1")
    assert missing.returncode == 2 and "has no snapshot 's1'" in one_error_line(missing)

    rbd_env.run("delete-vm", "snapvm", "--yes", check=True)  # owned: removed by default
    assert not ceph_cluster.exists(image)


def test_rbd_clones_linked_and_full(rbd_env: HcEnv, ceph_cluster: CephCluster,
                                    image_names: list[str]) -> None:
    src, linked, full = unique("src"), unique("lnk"), unique("full")
    image_names += [src, linked, full]
    rbd_env.run("create-vm", "src", "64", "1", f"rbd:{POOL}/{src}", "--disk-size", "16M",
                check=True)
    ceph_cluster.write(src, b"source-data")
    ceph_cluster.write(src, b"source-tail", 9 * MiB)

    made = rbd_env.run("clone-vm", "src", linked, "--linked")
    assert made.returncode == 0, made.stderr
    clone_disk = vm_json(rbd_env, linked)["disk"]
    assert clone_disk == {"kind": "rbd", "pool": POOL, "image": linked,
                          "conf": ceph_cluster.conf, "owned": True}
    info = ceph_cluster.stat(linked)
    assert info.parent is not None and info.parent.startswith(f"{POOL}/{src}@")
    assert ceph_cluster.read(linked, 11) == b"source-data"
    assert ceph_cluster.read(linked, 11, 9 * MiB) == b"source-tail"
    ceph_cluster.write(linked, b"clone-change")
    assert ceph_cluster.read(src, 11) == b"source-data"
    # The clone's parent snapshot lives in RBD's trash: the source lists none and stays
    # usable (it is no frozen base), but its image cannot go while the clone exists.
    assert snapshot_tags(rbd_env, "src") == []
    assert ceph_cluster.stat(src).children == (f"{POOL}/{linked}",)

    made = rbd_env.run("clone-vm", "src", full)
    assert made.returncode == 0, made.stderr
    assert ceph_cluster.stat(full).parent is None  # flattened: independent
    assert ceph_cluster.read(full, 11, 9 * MiB) == b"source-tail"
    assert snapshot_tags(rbd_env, "src") == []

    # A clone onto an image name that is taken fails and leaves nothing behind.
    clash_name = unique("clash")
    image_names.append(clash_name)
    ceph_cluster.create(clash_name, 1 * MiB)
    clash = rbd_env.run("clone-vm", full, clash_name)
    assert clash.returncode == 2
    assert f"RBD image {POOL}/{clash_name} already exists" in one_error_line(clash)
    assert not (rbd_env.home / "vms" / clash_name).exists()
    assert ceph_cluster.stat(full).snapshots == ()
    assert ceph_cluster.stat(clash_name).parent is None

    other = unique("other")
    image_names.append(other)
    rbd_env.run("clone-vm", "src", other, "--linked", check=True)

    blocked = rbd_env.run("delete-vm", "src", "--yes", "--remove-image")
    assert blocked.returncode == 1
    line = one_error_line(blocked)
    assert "has clones that depend on it" in line and f"{POOL}/{linked} of VM {linked}" in line
    assert (rbd_env.home / "vms" / "src" / "vm.json").is_file()

    for clone in (linked, other):
        rbd_env.run("delete-vm", clone, "--yes", check=True)
        assert not ceph_cluster.exists(clone)
    rbd_env.run("delete-vm", "src", "--yes", "--remove-image", check=True)
    assert not ceph_cluster.exists(src)
    assert ceph_cluster.read(full, 11) == b"source-data"  # the full clone stands alone
    rbd_env.run("delete-vm", full, "--yes", check=True)
    assert not ceph_cluster.exists(full)
