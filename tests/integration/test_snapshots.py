"""Snapshots against real QEMU (TCG) booting the real test guest.

QEMU refuses to save RAM while a VirtFS export is mounted; Hypercore unmounts the
share in the guest for the save and mounts it again (its own test below). The other
guests here are created with --no-shared to keep each test about one thing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from hypercore_tui.adapters import images
from hypercore_tui.adapters.qmp import qmp_session
from hypercore_tui.core.errors import Busy, InvalidState, Timeout
from hypercore_tui.services import snapshot_qmp, snapshots

from ..conftest import HYPERCORE, GuestImage, HcEnv, create_guest_vm
from ..helpers import guest_output, one_error_line
from .snapshot_env import boot, disk_of, qemu_img_check, read_disk_marker, write_disk_marker

pytestmark = pytest.mark.qemu


# -- helpers --------------------------------------------------------------------------


def snap_list(env: HcEnv, name: str) -> list[dict[str, Any]]:
    proc = env.run("snapshot", "list", name, "--json", check=True)
    rows = json.loads(proc.stdout)
    assert isinstance(rows, list)
    return rows


async def qmp(env: HcEnv, name: str, command: str) -> Any:
    paths = env.ctx.vm_paths(name)
    async with qmp_session(paths.qmp_socket, vm_name=name) as session:
        return await session.execute(command)


# -- live -----------------------------------------------------------------------------


def test_live_snapshot_brings_back_guest_ram(hc_env: HcEnv, test_guest: GuestImage) -> None:
    create_guest_vm(hc_env, test_guest, "live1", "--no-shared")
    boot(hc_env, "live1")
    guest_output(hc_env, "live1", "echo one > /tmp/marker")

    # Watch STOP/RESUME on the second QMP monitor while the CLI takes the snapshot.
    async def snapshot_and_watch() -> tuple[int, bytes, list[tuple[str, float]]]:
        paths = hc_env.ctx.vm_paths("live1")
        async with qmp_session(paths.qmp_monitor_socket, vm_name="live1",
                               events=True) as mon:
            started = time.monotonic()
            proc = await asyncio.create_subprocess_exec(
                *HYPERCORE, "snapshot", "create", "live1", "before", env=hc_env.environ,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
            out, err = await asyncio.wait_for(proc.communicate(), 120)
            print(f"snapshot create (CLI, 256 MiB guest, TCG): "
                  f"{time.monotonic() - started:.2f}s")
            await asyncio.sleep(0.2)
            events = [(e.name, e.timestamp) for e in mon.pending_events()
                      if e.name in ("STOP", "RESUME")]
        assert proc.returncode == 0, err
        return proc.returncode, out, events

    _, out, events = asyncio.run(snapshot_and_watch())
    assert b"created snapshot before of live1 (RAM + disk" in out
    assert b"guest was paused" in out  # the CLI reports the pause it caused
    names = [n for n, _ in events]
    assert names == ["STOP", "RESUME"], events
    paused = events[1][1] - events[0][1]
    print(f"guest paused during a live snapshot of a 256 MiB guest (TCG): {paused * 1000:.0f} ms")
    assert 0 < paused < 60

    rows = snap_list(hc_env, "live1")
    assert [r["tag"] for r in rows] == ["before"]
    assert rows[0]["has_ram"] is True and rows[0]["vmstate_bytes"] > 1024 * 1024
    assert rows[0]["vm_clock_seconds"] > 0

    guest_output(hc_env, "live1", "echo two > /tmp/marker")
    assert guest_output(hc_env, "live1", "cat /tmp/marker") == "two\n"
    restore = hc_env.run("snapshot", "restore", "live1", "before")
    assert restore.returncode == 0, restore.stderr
    assert b"(RAM + disk)" in restore.stdout
    # The guest is back in the state it had: the agent answers and the marker is old.
    assert guest_output(hc_env, "live1", "cat /tmp/marker") == "one\n"
    status = asyncio.run(qmp(hc_env, "live1", "query-status"))
    assert status["status"] == "running"

    delete = hc_env.run("snapshot", "delete", "live1", "before")
    assert delete.returncode == 0, delete.stderr
    assert snap_list(hc_env, "live1") == []
    assert asyncio.run(qmp(hc_env, "live1", "query-jobs")) == []
    hc_env.run("stop-vm", "live1", "--force", check=True)
    qemu_img_check(disk_of(hc_env, "live1"))


def test_disk_only_live_snapshot_and_restore_rules(hc_env: HcEnv,
                                                   test_guest: GuestImage) -> None:
    create_guest_vm(hc_env, test_guest, "dsk1", "--no-shared")
    boot(hc_env, "dsk1")
    write_disk_marker(hc_env, "dsk1", "AAAA")
    created = hc_env.run("snapshot", "create", "dsk1", "d1", "--disk-only", "--json")
    assert created.returncode == 0, created.stderr
    info = json.loads(created.stdout)
    assert info["tag"] == "d1" and info["has_ram"] is False and info["vmstate_bytes"] == 0
    write_disk_marker(hc_env, "dsk1", "BBBB")

    # Reverting the disk under the running guest is refused, and nothing changes.
    refused = hc_env.run("snapshot", "restore", "dsk1", "d1")
    assert refused.returncode == 1
    err = one_error_line(refused)
    assert "holds no RAM state" in err and "stop-vm dsk1" in err
    assert read_disk_marker(hc_env, "dsk1") == "BBBB"

    # Stopped: the disk is reverted offline with qemu-img.
    hc_env.run("stop-vm", "dsk1", "--force", check=True)
    restored = hc_env.run("snapshot", "restore", "dsk1", "d1")
    assert restored.returncode == 0, restored.stderr
    assert b"restored dsk1's disk to snapshot d1" in restored.stdout
    boot(hc_env, "dsk1")
    assert read_disk_marker(hc_env, "dsk1") == "AAAA"
    hc_env.run("stop-vm", "dsk1", "--force", check=True)
    qemu_img_check(disk_of(hc_env, "dsk1"))


def test_offline_round_trip(hc_env: HcEnv, test_guest: GuestImage) -> None:
    create_guest_vm(hc_env, test_guest, "off1", "--no-shared")
    boot(hc_env, "off1")
    write_disk_marker(hc_env, "off1", "FIRST")
    hc_env.run("stop-vm", "off1", "--force", check=True)

    created = hc_env.run("snapshot", "create", "off1", "cold")
    assert created.returncode == 0, created.stderr
    assert b"created snapshot cold of off1 (disk only)" in created.stdout
    rows = snap_list(hc_env, "off1")
    assert [(r["tag"], r["has_ram"], r["vmstate_bytes"]) for r in rows] == [("cold", False, 0)]
    table = hc_env.run("snapshot", "list", "off1", check=True).stdout.decode().splitlines()
    assert table[0].split() == ["TAG", "DATE", "VM", "CLOCK", "VMSTATE", "RAM"]
    assert table[1].startswith("cold ") and table[1].endswith(" no")

    boot(hc_env, "off1")
    assert read_disk_marker(hc_env, "off1") == "FIRST"
    write_disk_marker(hc_env, "off1", "SECOND")
    assert read_disk_marker(hc_env, "off1") == "SECOND"
    hc_env.run("stop-vm", "off1", "--force", check=True)

    restored = hc_env.run("snapshot", "restore", "off1", "cold")
    assert restored.returncode == 0, restored.stderr
    boot(hc_env, "off1")
    assert read_disk_marker(hc_env, "off1") == "FIRST"
    hc_env.run("stop-vm", "off1", "--force", check=True)

    deleted = hc_env.run("snapshot", "delete", "off1", "cold")
    assert deleted.returncode == 0, deleted.stderr
    assert snap_list(hc_env, "off1") == []
    missing = hc_env.run("snapshot", "delete", "off1", "cold")
    assert missing.returncode == 2 and "no snapshot 'cold'" in one_error_line(missing)
    qemu_img_check(disk_of(hc_env, "off1"))


def test_ram_snapshot_restored_into_stopped_vm_boots_into_it(
        hc_env: HcEnv, test_guest: GuestImage) -> None:
    create_guest_vm(hc_env, test_guest, "ram1", "--no-shared")
    boot(hc_env, "ram1")
    guest_output(hc_env, "ram1", "echo kept-in-ram > /tmp/marker")
    hc_env.run("snapshot", "create", "ram1", "warm", check=True)
    hc_env.run("stop-vm", "ram1", "--force", check=True)

    restored = hc_env.run("snapshot", "restore", "ram1", "warm")
    assert restored.returncode == 0, restored.stderr
    assert b"booted into the saved state" in restored.stdout
    # /tmp is a RAM filesystem: after a cold boot it would be empty.
    assert guest_output(hc_env, "ram1", "cat /tmp/marker") == "kept-in-ram\n"
    listed = json.loads(hc_env.run("list", "--json", check=True).stdout)
    assert listed[0]["state"] == "running"
    # Restoring again while it runs takes the live path; the snapshot is still there.
    guest_output(hc_env, "ram1", "rm /tmp/marker")
    hc_env.run("snapshot", "restore", "ram1", "warm", check=True)
    assert guest_output(hc_env, "ram1", "cat /tmp/marker") == "kept-in-ram\n"
    hc_env.run("stop-vm", "ram1", "--force", check=True)


# -- refusals and failures ------------------------------------------------------------


def test_tags_validated_and_duplicates_refused(hc_env: HcEnv, test_guest: GuestImage) -> None:
    create_guest_vm(hc_env, test_guest, "tag1", "--no-shared")
    for bad in ("bad tag", "-rf", "123", "a/b", "x" * 65, "tag;reboot", "ünï"):
        proc = hc_env.run("snapshot", "create", "tag1", "--", bad)
        assert proc.returncode == 2, (bad, proc.stderr)
        assert "invalid snapshot tag" in one_error_line(proc)
    for verb in ("restore", "delete"):
        proc = hc_env.run("snapshot", verb, "tag1", "../x")
        assert proc.returncode == 2 and "invalid snapshot tag" in one_error_line(proc)

    hc_env.run("snapshot", "create", "tag1", "s1", check=True)
    dup = hc_env.run("snapshot", "create", "tag1", "s1")
    assert dup.returncode == 2 and "already has a snapshot 's1'" in one_error_line(dup)
    auto = hc_env.run("snapshot", "create", "tag1", "--json", check=True)
    tag = json.loads(auto.stdout)["tag"]
    assert tag.startswith("snap-") and len(tag) == len("snap-20261126-221500")
    assert [r["tag"] for r in snap_list(hc_env, "tag1")] == ["s1", tag]

    usage = hc_env.run("snapshot", "restore", "tag1")
    assert usage.returncode == 2 and one_error_line(usage)
    usage = hc_env.run("snapshot")
    assert usage.returncode == 2 and one_error_line(usage)
    unknown = hc_env.run("snapshot", "list", "nosuchvm")
    assert unknown.returncode == 2 and "no VM named" in one_error_line(unknown)
    missing = hc_env.run("snapshot", "restore", "tag1", "nope")
    assert missing.returncode == 2 and "no snapshot 'nope'" in one_error_line(missing)


def test_qemu_img_never_writes_an_image_a_running_qemu_holds(
        hc_env: HcEnv, test_guest: GuestImage) -> None:
    create_guest_vm(hc_env, test_guest, "held1", "--no-shared")
    boot(hc_env, "held1")
    disk = disk_of(hc_env, "held1")
    paths = hc_env.ctx.vm_paths("held1")
    # Fool the state check: with its pidfile gone the VM looks stopped, so the offline
    # (qemu-img) path is taken; QEMU's image lock must refuse it.
    hidden = paths.pidfile.with_name("qemu.pid.hidden")
    os.rename(paths.pidfile, hidden)
    try:
        for args in (("create", "held1", "x"), ("restore", "held1", "x"),
                     ("delete", "held1", "x"), ("list", "held1")):
            proc = hc_env.run("snapshot", *args)
            assert proc.returncode == 1, (args, proc.stdout, proc.stderr)
            err = one_error_line(proc)
            assert f"image {disk} is in use by a running QEMU" in err, err
        # The adapter on its own refuses as well.
        for write in (images.snapshot_create, images.snapshot_apply, images.snapshot_delete):
            with pytest.raises(InvalidState, match="in use by a running QEMU"):
                write(disk, "x")
    finally:
        os.rename(hidden, paths.pidfile)
    qemu_img_check(disk)
    assert snap_list(hc_env, "held1") == []
    assert guest_output(hc_env, "held1", "echo alive") == "alive\n"
    hc_env.run("stop-vm", "held1", "--force", check=True)
    qemu_img_check(disk)


def test_failed_job_reports_qemu_reason_and_leaves_no_job(
        hc_env: HcEnv, test_guest: GuestImage, tmp_path: Path) -> None:
    raw = tmp_path / "raw.img"
    subprocess.run(["qemu-img", "create", "-q", "-f", "raw", str(raw), "32M"], check=True)
    hc_env.run("create-vm", "raw1", "256", "1", str(raw), "--no-shared",
               "--kernel", str(test_guest.kernel), "--initrd", str(test_guest.initrd),
               f"--append={test_guest.append}", check=True)
    boot(hc_env, "raw1")
    proc = hc_env.run("snapshot", "create", "raw1", "r1")
    assert proc.returncode == 1
    err = one_error_line(proc)
    assert "Device 'disk0' is writable but does not support snapshots" in err, err
    assert asyncio.run(qmp(hc_env, "raw1", "query-jobs")) == []
    assert asyncio.run(qmp(hc_env, "raw1", "query-status"))["status"] == "running"
    assert guest_output(hc_env, "raw1", "echo alive") == "alive\n"

    disk_only = hc_env.run("snapshot", "create", "raw1", "r2", "--disk-only")
    assert disk_only.returncode == 1
    assert "does not support internal snapshots" in one_error_line(disk_only)
    assert snap_list(hc_env, "raw1") == []
    hc_env.run("stop-vm", "raw1", "--force", check=True)
    # Stopped: refused up front with the reason.
    offline = hc_env.run("snapshot", "create", "raw1", "r3")
    assert offline.returncode == 1
    assert "raw image, which cannot hold snapshots" in one_error_line(offline)
    assert snap_list(hc_env, "raw1") == []


def test_ram_snapshot_with_the_share_mounted(hc_env: HcEnv, test_guest: GuestImage) -> None:
    create_guest_vm(hc_env, test_guest, "share1")  # the 9p share is mounted at /shared
    boot(hc_env, "share1")
    assert "hypercore_share" in guest_output(hc_env, "share1", "cat /proc/mounts")
    guest_output(hc_env, "share1", "echo before > /shared/note; echo one > /tmp/marker")
    # The share is unmounted for the save and mounted again afterwards.
    hc_env.run("snapshot", "create", "share1", "s1", check=True)
    assert "hypercore_share" in guest_output(hc_env, "share1", "cat /proc/mounts")
    assert guest_output(hc_env, "share1", "cat /shared/note").strip() == "before"
    guest_output(hc_env, "share1", "echo two > /tmp/marker")
    hc_env.run("snapshot", "restore", "share1", "s1", check=True)
    assert guest_output(hc_env, "share1", "cat /tmp/marker").strip() == "one"
    assert "hypercore_share" in guest_output(hc_env, "share1", "cat /proc/mounts")
    assert asyncio.run(qmp(hc_env, "share1", "query-jobs")) == []

    # Something in the guest keeps the share busy: refused with the reason, nothing lost.
    guest_output(hc_env, "share1", "sleep 600 < /shared/note > /dev/null 2>&1 &")
    proc = hc_env.run("snapshot", "create", "share1", "s2")
    assert proc.returncode == 1
    err = one_error_line(proc)
    assert "unmounting /shared failed" in err and "--disk-only" in err
    assert asyncio.run(qmp(hc_env, "share1", "query-jobs")) == []
    assert asyncio.run(qmp(hc_env, "share1", "query-status"))["status"] == "running"
    assert "hypercore_share" in guest_output(hc_env, "share1", "cat /proc/mounts")
    # Disk-only works regardless.
    hc_env.run("snapshot", "create", "share1", "d1", "--disk-only", check=True)
    assert [(r["tag"], r["has_ram"]) for r in snap_list(hc_env, "share1")] == \
        [("s1", True), ("d1", False)]
    hc_env.run("stop-vm", "share1", "--force", check=True)


async def test_service_api_serialises_on_the_vm_lock(hc_env: HcEnv,
                                                     test_guest: GuestImage) -> None:
    create_guest_vm(hc_env, test_guest, "svc1", "--no-shared")
    ctx = hc_env.ctx
    stages: list[tuple[str, float | None]] = []
    snap = await snapshots.create_snapshot(ctx, "svc1", "a1",
                                           progress=lambda s, f, _t: stages.append((s, f)))
    assert snap.tag == "a1" and not snap.has_ram and stages[-1] == ("done", 1.0)
    # Two operations at once: both finish, one after the other (no lost snapshot); which
    # of the two takes the lock first is not promised.
    await asyncio.gather(snapshots.create_snapshot(ctx, "svc1", "b1"),
                         snapshots.create_snapshot(ctx, "svc1", "b2"))
    tags = [s.tag for s in await snapshots.list_snapshots(ctx, "svc1")]
    assert tags[0] == "a1" and sorted(tags[1:]) == ["b1", "b2"], tags
    # While another process holds the VM lock, the service waits, then says Busy.
    paths = ctx.vm_paths("svc1")
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl,sys,time; f=open(sys.argv[1],'w'); "
         "fcntl.flock(f, fcntl.LOCK_EX); print('held', flush=True); time.sleep(30)",
         str(paths.lock)], stdout=subprocess.PIPE)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == b"held\n"
        original = snapshots.LIST_LOCK_WAIT
        snapshots.LIST_LOCK_WAIT = 0.3
        try:
            with pytest.raises(Busy, match="busy"):
                await snapshots.list_snapshots(ctx, "svc1")
        finally:
            snapshots.LIST_LOCK_WAIT = original
    finally:
        holder.kill()
        holder.wait()
    await snapshots.delete_snapshot(ctx, "svc1", "b1")
    assert [s.tag for s in await snapshots.list_snapshots(ctx, "svc1")] == ["a1", "b2"]


# -- a QEMU whose snapshot job never concludes (fault test: no hang) ------------------


class StuckQemu:
    """A QMP server whose snapshot-save job runs forever.

    ``mode``: "ignores-cancel" (job-cancel is accepted but does nothing),
    "honours-cancel" (the job concludes with an error), "silent" (query-jobs and
    job-cancel get no answer at all, like a monitor blocked by a RAM save).
    """

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.jobs: dict[str, dict[str, Any]] = {}
        self.commands: list[str] = []

    @staticmethod
    async def _messages(reader: asyncio.StreamReader) -> AsyncIterator[dict[str, Any]]:
        """QMP clients send JSON objects back to back, not necessarily one per line."""
        decoder = json.JSONDecoder()
        buffer = ""
        while chunk := await reader.read(4096):
            buffer += chunk.decode()
            while buffer.strip():
                try:
                    msg, end = decoder.raw_decode(buffer.lstrip())
                except ValueError:
                    break
                buffer = buffer.lstrip()[end:]
                yield msg

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        def send(obj: dict[str, Any]) -> None:
            writer.write(json.dumps(obj).encode() + b"\n")

        send({"QMP": {"version": {"qemu": {"major": 7, "minor": 2, "micro": 0},
                                  "package": ""}, "capabilities": []}})
        async for msg in self._messages(reader):
            cmd, args = msg["execute"], msg.get("arguments", {})
            self.commands.append(cmd)
            result: Any = {}
            if cmd == "query-block":
                result = [{"device": "", "qdev": "disk0dev", "inserted": {
                    "node-name": "disk0", "image": {"filename": "/x", "format": "qcow2"}}}]
            elif cmd == "query-status":
                result = {"status": "running", "running": True}
            elif cmd == "query-jobs":
                if self.mode == "silent" and any(j["status"] == "running"
                                                 for j in self.jobs.values()):
                    continue
                result = list(self.jobs.values())
            elif cmd == "snapshot-save":
                self.jobs[args["job-id"]] = {"id": args["job-id"], "type": "snapshot-save",
                                             "status": "running", "current-progress": 0,
                                             "total-progress": 1}
            elif cmd == "job-cancel":
                if self.mode == "silent":
                    continue
                if self.mode == "honours-cancel":
                    self.jobs[args["id"]].update(status="concluded",
                                                 error="Operation cancelled")
                    send({"event": "JOB_STATUS_CHANGE", "data": {"id": args["id"],
                          "status": "concluded"},
                          "timestamp": {"seconds": 0, "microseconds": 0}})
            elif cmd == "job-dismiss":
                self.jobs.pop(args["id"], None)
            send({"return": result, **({"id": msg["id"]} if "id" in msg else {})})
            with contextlib.suppress(ConnectionError):
                await writer.drain()


@pytest.mark.parametrize("mode", ["ignores-cancel", "honours-cancel", "silent"])
async def test_a_job_that_never_concludes_times_out(hc_env: HcEnv, test_guest: GuestImage,
                                                    mode: str, monkeypatch: Any) -> None:
    create_guest_vm(hc_env, test_guest, "stuck1", "--no-shared")
    ctx = hc_env.ctx
    paths = ctx.vm_paths("stuck1")
    ctx.ensure_runtime(paths)
    # Something alive that owns the pidfile, so the VM counts as running.
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)",
                                str(paths.pidfile)])
    paths.pidfile.write_text(f"{sleeper.pid}\n")
    fake = StuckQemu(mode)
    server = await asyncio.start_unix_server(fake.serve, path=str(paths.qmp_socket))
    monkeypatch.setattr(snapshot_qmp, "_CANCEL_GRACE", 1.0)
    monkeypatch.setattr(snapshot_qmp, "_JOB_POLL", 0.2)
    try:
        started = time.monotonic()
        with pytest.raises(Timeout) as err:
            await snapshots.create_snapshot(ctx, "stuck1", "t1", timeout=1.0)
        elapsed = time.monotonic() - started
        message = str(err.value)
        assert "\n" not in message and message.startswith("stuck1: ")
        assert "did not finish within 1s" in message
        assert elapsed < 15, elapsed
        assert "job-cancel" in fake.commands
        if mode == "honours-cancel":
            assert "was cancelled" in message and fake.jobs == {}
        else:
            assert "has not cancelled it yet" in message and len(fake.jobs) == 1
        if mode == "ignores-cancel":
            # The next operation sees the job still running and says so (no second job).
            with pytest.raises(Busy, match="still running in QEMU"):
                await snapshots.create_snapshot(ctx, "stuck1", "t2", timeout=1.0)
            assert len(fake.jobs) == 1
    finally:
        server.close()
        await server.wait_closed()
        sleeper.kill()
        sleeper.wait()
