"""Full and linked clones against real QEMU (TCG) booting the real test guest."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from hypercore_tui.core.errors import InvalidState
from hypercore_tui.services import bases, clones, registry

from ..conftest import GuestImage, HcEnv, create_guest_vm
from ..helpers import one_error_line
from .snapshot_env import boot, disk_of, qemu_img_check, read_disk_marker, write_disk_marker

pytestmark = pytest.mark.qemu


def definition(env: HcEnv, name: str) -> dict[str, Any]:
    data = json.loads((env.home / "vms" / name / "vm.json").read_text())
    assert isinstance(data, dict)
    return data


def image_head(path: Path) -> bytes:
    """The first 16 guest-visible bytes of a qcow2 image (read-only, lock-sharing)."""
    out = path.with_name(path.name + ".head")
    subprocess.run(["qemu-img", "dd", "-U", "-f", "qcow2", "-O", "raw", "bs=16", "count=1",
                    f"if={path}", f"of={out}"], check=True, capture_output=True)
    try:
        return out.read_bytes()[:16]
    finally:
        out.unlink()


def vm_dirs(env: HcEnv) -> list[str]:
    return sorted(p.name for p in (env.home / "vms").iterdir())


def make_base(env: HcEnv, guest: GuestImage, name: str, marker: str) -> None:
    create_guest_vm(env, guest, name, "--no-shared")
    boot(env, name)
    write_disk_marker(env, name, marker)
    env.run("stop-vm", name, "--force", check=True)


def test_linked_clone_shares_a_frozen_base(hc_env: HcEnv, test_guest: GuestImage) -> None:
    make_base(hc_env, test_guest, "base1", "BASE")
    base_disk = disk_of(hc_env, "base1")

    proc = hc_env.run("clone-vm", "base1", "lc1", "--linked")
    assert proc.returncode == 0, proc.stderr
    assert b"linked clone" in proc.stdout and b"cannot be booted or deleted" in proc.stdout
    clone, base = definition(hc_env, "lc1"), definition(hc_env, "base1")
    assert clone["linked_to"] == "base1" and base["base_of"] == ["lc1"]
    assert clone["mac"] != base["mac"] and clone["base_of"] == []
    clone_disk = Path(clone["disk"]["path"])
    assert clone_disk == hc_env.home / "vms" / "lc1" / "disk.qcow2"
    info = json.loads(subprocess.run(["qemu-img", "info", "-U", "--output=json",
                                      str(clone_disk)], capture_output=True, check=True,
                                     text=True).stdout)
    assert info["backing-filename"] == str(base_disk)
    assert info["backing-filename-format"] == "qcow2"
    assert os.path.getsize(clone_disk) < 1024 * 1024  # an overlay, not a copy

    # The clone boots on the shared base, its agent answers, it sees the base's data.
    boot(hc_env, "lc1")
    assert read_disk_marker(hc_env, "lc1") == "BASE"
    write_disk_marker(hc_env, "lc1", "CLONE")
    assert read_disk_marker(hc_env, "lc1") == "CLONE"
    assert image_head(base_disk).decode().strip() == "BASE"  # writes went to the overlay

    # The base is frozen: no boot, no delete, no snapshot changes.
    for args, words in ((("boot-vm", "base1"), "booting it would change"),
                        (("delete-vm", "base1", "--yes"), "delete them first"),
                        (("snapshot", "create", "base1", "s1"), "must not change"),
                        (("snapshot", "restore", "base1", "s1"), "would change")):
        refused = hc_env.run(*args)
        assert refused.returncode == 1, (args, refused.stderr)
        err = one_error_line(refused)
        assert "base1 is the base of linked clones (lc1)" in err and words in err, err
    assert definition(hc_env, "base1")["base_of"] == ["lc1"]
    # Deleting the running clone is refused too (and leaves the base's record alone).
    running = hc_env.run("delete-vm", "lc1", "--yes")
    assert running.returncode == 1 and "stop it first" in one_error_line(running)
    assert definition(hc_env, "base1")["base_of"] == ["lc1"]
    # Snapshots of the clone live in its overlay.
    hc_env.run("snapshot", "create", "lc1", "c1", "--disk-only", check=True)
    hc_env.run("stop-vm", "lc1", "--force", check=True)
    qemu_img_check(clone_disk)

    # Deleting the clone frees the base.
    hc_env.run("delete-vm", "lc1", "--yes", check=True)
    assert definition(hc_env, "base1")["base_of"] == []
    assert vm_dirs(hc_env) == ["base1"]
    boot(hc_env, "base1")
    assert read_disk_marker(hc_env, "base1") == "BASE"
    hc_env.run("stop-vm", "base1", "--force", check=True)
    hc_env.run("delete-vm", "base1", "--yes", check=True)
    assert vm_dirs(hc_env) == []


def test_full_clone_is_independent(hc_env: HcEnv, test_guest: GuestImage) -> None:
    make_base(hc_env, test_guest, "src1", "ORIG")
    hc_env.run("snapshot", "create", "src1", "s1", check=True)
    proc = hc_env.run("clone-vm", "src1", "fc1")
    assert proc.returncode == 0, proc.stderr
    assert b"full copy" in proc.stdout and proc.stderr == b""  # no progress off a TTY
    src, clone = definition(hc_env, "src1"), definition(hc_env, "fc1")
    assert src["base_of"] == [] and clone["linked_to"] is None
    assert clone["mac"] != src["mac"]
    fc_disk = Path(clone["disk"]["path"])
    info = json.loads(subprocess.run(["qemu-img", "info", "-U", "--output=json", str(fc_disk)],
                                     capture_output=True, check=True, text=True).stdout)
    assert "backing-filename" not in info and info["format"] == "qcow2"
    assert not list(fc_disk.parent.glob("*.part"))

    # Both at once: each has its own disk and MAC.
    boot(hc_env, "src1")
    boot(hc_env, "fc1")
    assert read_disk_marker(hc_env, "fc1") == "ORIG"
    write_disk_marker(hc_env, "fc1", "COPY")
    write_disk_marker(hc_env, "src1", "SOURCE")
    assert read_disk_marker(hc_env, "fc1") == "COPY"
    assert read_disk_marker(hc_env, "src1") == "SOURCE"
    listed = {r["name"]: r for r in json.loads(hc_env.run("list", "--json", check=True).stdout)}
    assert listed["src1"]["state"] == listed["fc1"]["state"] == "running"
    assert listed["src1"]["agent"] is True and listed["fc1"]["agent"] is True
    macs = hc_env.run("exec", "fc1", "--", "/bin/cat", "/sys/class/net/eth0/address")
    assert macs.stdout.decode().strip() == clone["mac"]

    # A running source is refused, and nothing is left behind.
    refused = hc_env.run("clone-vm", "src1", "fc2")
    assert refused.returncode == 1 and "stop it first" in one_error_line(refused)
    refused = hc_env.run("clone-vm", "src1", "lc2", "--linked")
    assert refused.returncode == 1 and "stop it first" in one_error_line(refused)
    assert vm_dirs(hc_env) == ["fc1", "src1"]
    assert definition(hc_env, "src1")["base_of"] == []

    hc_env.run("stop-vm", "src1", "--force", check=True)
    hc_env.run("stop-vm", "fc1", "--force", check=True)
    # The clone is independent: deleting the source leaves it whole.
    hc_env.run("delete-vm", "src1", "--yes", check=True)
    qemu_img_check(fc_disk)
    boot(hc_env, "fc1")
    assert read_disk_marker(hc_env, "fc1") == "COPY"
    hc_env.run("stop-vm", "fc1", "--force", check=True)


def test_clone_refusals_and_no_half_made_clone(hc_env: HcEnv, test_guest: GuestImage) -> None:
    create_guest_vm(hc_env, test_guest, "cs1", "--no-shared")
    create_guest_vm(hc_env, test_guest, "taken", "--no-shared")
    for args, code, words in ((("cs1", "taken"), 2, "already exists"),
                              (("cs1", "cs1"), 2, "name of its own"),
                              (("cs1", "../x"), 2, "invalid VM name"),
                              (("nosuch", "new1"), 2, "no VM named"),
                              (("cs1",), 2, "")):
        proc = hc_env.run("clone-vm", *args)
        assert proc.returncode == code, (args, proc.stderr)
        assert words in one_error_line(proc)
    assert vm_dirs(hc_env) == ["cs1", "taken"]

    # Failures part-way (after the disk exists / after base_of was recorded) roll back.
    ctx = hc_env.ctx

    def boom(stage: str, done: float | None, total: float) -> None:
        raise RuntimeError("injected failure")

    for linked in (False, True):
        with pytest.raises(RuntimeError, match="injected"):
            asyncio.run(clones.clone_vm(ctx, "cs1", "half1", linked=linked, progress=boom))
        assert vm_dirs(hc_env) == ["cs1", "taken"]
        assert definition(hc_env, "cs1")["base_of"] == []

    # A source with a missing disk: a clear error, nothing made.
    disk = disk_of(hc_env, "taken")
    disk.rename(disk.with_name("moved.qcow2"))
    proc = hc_env.run("clone-vm", "taken", "half2")
    assert proc.returncode == 2 and "is missing" in one_error_line(proc)
    assert vm_dirs(hc_env) == ["cs1", "taken"]


def test_stale_base_entries_do_not_lock_a_base_forever(hc_env: HcEnv,
                                                       test_guest: GuestImage) -> None:
    """A crash between recording a clone and making it leaves a stale entry: ignored."""
    create_guest_vm(hc_env, test_guest, "b2", "--no-shared")
    ctx = hc_env.ctx
    bases.add_clone(ctx, "b2", "ghost")
    assert registry.load(ctx, "b2").base_of == ("ghost",)
    spec = bases.check_not_base(ctx, registry.load(ctx, "b2"), "unused")
    assert spec.base_of == () and registry.load(ctx, "b2").base_of == ()
    # A real clone is not stale.
    asyncio.run(clones.clone_vm(ctx, "b2", "real", linked=True))
    with pytest.raises(InvalidState, match=r"base of linked clones \(real\)"):
        bases.check_not_base(ctx, registry.load(ctx, "b2"), "no")
    hc_env.run("delete-vm", "real", "--yes", check=True)
    hc_env.run("delete-vm", "b2", "--yes", check=True)
    assert vm_dirs(hc_env) == []
