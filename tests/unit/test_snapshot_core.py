"""Pure snapshot/clone logic: QEMU records, device order, tags, jobs, progress, messages."""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hypercore_tui.adapters.images import _forced_format, _qemu_img_error
from hypercore_tui.core.argv import LaunchPlan, build_qemu_argv
from hypercore_tui.core.errors import InvalidInput, InvalidState, OperationFailed
from hypercore_tui.core.layout import Layout
from hypercore_tui.core.models import DiskKind, DiskSpec, VmSpec
from hypercore_tui.core.names import validate_snapshot_tag
from hypercore_tui.core.snapshots import (
    JOB_PREFIX,
    SnapshotInfo,
    explain_save_failure,
    find_job,
    find_snapshot,
    generate_tag,
    job_id,
    job_progress,
    load_failure_left_vm_intact,
    order_snapshot_devices,
    parse_convert_progress,
    snapshot_from_qemu,
    snapshots_from_json,
    snapshots_from_qemu,
)

# What QEMU 7.2 put in query-block's inserted.image.snapshots for a live snapshot.
RECORD = {"vm-clock-nsec": 225459402, "name": "s1", "date-sec": 1795731322,
          "date-nsec": 111868000, "vm-clock-sec": 6, "id": "1", "vm-state-size": 99172271}


def test_snapshot_from_qemu_record() -> None:
    snap = snapshot_from_qemu(RECORD)
    assert snap == SnapshotInfo(
        tag="s1", date=dt.datetime(2026, 11, 26, 22, 15, 22, 111868, tzinfo=dt.UTC),
        vm_clock_seconds=6 + 225459402 / 1e9, vmstate_bytes=99172271, has_ram=True, id="1")
    data = snap.to_json()
    assert set(data) == {"tag", "date", "vm_clock_seconds", "vmstate_bytes", "has_ram"}
    assert data["date"] == "2026-11-26T22:15:22.111868+00:00"
    assert dt.datetime.fromisoformat(data["date"]) == snap.date
    assert data["vm_clock_seconds"] == 6.225 and data["has_ram"] is True
    json.dumps(data)  # serialisable as is


def test_disk_only_record_has_no_ram() -> None:
    record = dict(RECORD, **{"vm-state-size": 0, "name": "d1", "id": "2"})
    snap = snapshot_from_qemu(record)
    assert snap.has_ram is False and snap.vmstate_bytes == 0


def test_malformed_records_are_skipped_and_sorted_by_date() -> None:
    older = dict(RECORD, name="old", **{"date-sec": 100})
    records = [RECORD, "junk", {"id": "9"}, older, {"name": "weird", "date-sec": "x",
                                                     "vm-state-size": True}]
    snaps = snapshots_from_qemu(records)
    assert [s.tag for s in snaps] == ["weird", "old", "s1"]
    weird = find_snapshot(snaps, "weird")
    assert weird is not None and weird.vmstate_bytes == 0 and not weird.has_ram
    assert find_snapshot(snaps, "nope") is None


def test_rbd_devices_come_first_order_otherwise_kept() -> None:
    devices = [("disk0", DiskKind.QCOW2), ("data1", DiskKind.RBD), ("data2", DiskKind.RAW),
               ("data3", DiskKind.RBD), ("data1", DiskKind.RBD)]
    assert order_snapshot_devices(devices) == ["data1", "data3", "disk0", "data2"]
    assert order_snapshot_devices([("disk0", DiskKind.QCOW2)]) == ["disk0"]
    assert order_snapshot_devices([]) == []


@given(st.lists(st.tuples(st.sampled_from(["a", "b", "c", "d", "e"]),
                          st.sampled_from(list(DiskKind)))))
def test_device_order_is_a_permutation_with_rbd_first(devices: list[tuple[str, DiskKind]]
                                                      ) -> None:
    ordered = order_snapshot_devices(devices)
    first_kind: dict[str, DiskKind] = {}
    for node, kind in devices:
        first_kind.setdefault(node, kind)
    assert sorted(ordered) == sorted(first_kind)
    kinds = [first_kind[n] is DiskKind.RBD for n in ordered]
    assert kinds == sorted(kinds, reverse=True)  # all RBD before any other


def test_generated_tags() -> None:
    now = dt.datetime(2026, 11, 26, 22, 15, 0)
    assert generate_tag(now) == "snap-20261126-221500"
    assert generate_tag(now, ["snap-20261126-221500"]) == "snap-20261126-221500-2"
    assert generate_tag(now, ["snap-20261126-221500", "snap-20261126-221500-2"]) == \
        "snap-20261126-221500-3"
    assert validate_snapshot_tag(generate_tag(now, ["snap-20261126-221500"]))


def test_job_ids_and_lookup() -> None:
    jid = job_id("save", "0a1b2c3d")
    assert jid.startswith(JOB_PREFIX) and re.fullmatch(r"[A-Za-z][A-Za-z0-9-]*", jid)
    jobs = [{"id": "other", "status": "running"},
            {"id": jid, "status": "concluded", "current-progress": 1, "total-progress": 4}]
    job = find_job(jobs, jid)
    assert job is not None and job["status"] == "concluded"
    assert job_progress(job) == 0.25
    assert find_job(jobs, "missing") is None
    assert find_job(None, jid) is None
    assert job_progress({"current-progress": 1, "total-progress": 0}) is None
    assert job_progress({"current-progress": 9, "total-progress": 4}) == 1.0


def test_convert_progress_parsing() -> None:
    assert parse_convert_progress("    (0.00/100%)\r") == 0.0
    assert parse_convert_progress("    (12.50/100%)\r    (42.01/100%)\r") == pytest.approx(0.4201)
    assert parse_convert_progress("    (100.00/100%)\r\n") == 1.0
    assert parse_convert_progress("garbage") is None
    assert parse_convert_progress("(4") is None


def test_save_failure_messages_explain_the_cause() -> None:
    ninep = ("Migration is disabled when VirtFS export path '/h/shared' is mounted in the "
             "guest using mount_tag 'hypercore_share'")
    msg = explain_save_failure("web", ninep)
    assert msg.startswith("web: ") and "shared folder" in msg and "--disk-only" in msg
    assert ninep in msg and "\n" not in msg
    raw = "Device 'disk0' is writable but does not support snapshots"
    msg = explain_save_failure("web", raw)
    assert raw in msg and "qcow2" in msg
    other = explain_save_failure("web", "Error -5\nwhile writing")
    assert other == "web: snapshot failed: Error -5 while writing"


@pytest.mark.parametrize(("reason", "intact"), [
    ("Snapshot 'nope' does not exist in one or more devices", True),
    ("This is a disk-only snapshot. Revert to it  offline using qemu-img", True),
    ("Device 'disk0' is writable but does not support snapshots", True),
    ("Error -22 while loading VM state", False),
    ("Could not open VM state file", False),
])
def test_load_failures_that_changed_nothing(reason: str, intact: bool) -> None:
    assert load_failure_left_vm_intact(reason) is intact


def _spec(**changes: object) -> VmSpec:
    spec = VmSpec(name="web", ram_mb=256, cpus=1, mac="52:54:00:12:34:56",
                  disk=DiskSpec(kind=DiskKind.QCOW2, path="/vms/web/disk.qcow2"))
    return spec.with_changes(**changes)


def test_linked_to_round_trips() -> None:
    clone = _spec(name="web2", linked_to="web")
    data = clone.to_dict()
    assert data["linked_to"] == "web"
    assert VmSpec.from_dict(json.loads(json.dumps(data))) == clone
    base = _spec(base_of=("web2", "web3"))
    assert VmSpec.from_dict(base.to_dict()) == base
    assert VmSpec.from_dict(base.to_dict()).linked_to is None
    old = _spec().to_dict()
    del old["linked_to"]  # definitions written before linked clones existed
    assert VmSpec.from_dict(old).linked_to is None


@pytest.mark.parametrize("bad", ["../etc", "-x", ""])
def test_linked_to_is_validated(bad: str) -> None:
    data = _spec().to_dict()
    data["linked_to"] = bad
    with pytest.raises(InvalidInput):
        VmSpec.from_dict(data)
    data["linked_to"] = 42
    with pytest.raises(InvalidInput):
        VmSpec.from_dict(data)


def test_loadvm_goes_on_the_command_line() -> None:
    layout = Layout(home=Path("/h"), runtime_base=Path("/r"))
    paths = layout.vm("web")
    plan = LaunchPlan(qemu_binary="qemu-system-x86_64", accel="tcg", shared_dir="/h/s")
    argv = build_qemu_argv(_spec(), paths, plan)
    assert "-loadvm" not in argv
    argv = build_qemu_argv(_spec(), paths, LaunchPlan(
        qemu_binary="qemu-system-x86_64", accel="tcg", shared_dir="/h/s", loadvm="snap:1"))
    assert argv[argv.index("-loadvm") + 1] == "snap:1"


def test_qemu_img_lock_failure_is_invalid_state_on_any_line() -> None:
    stderr = ("qemu-img: Could not open '/v/disk.qcow2': Failed to get \"write\" lock\n"
              "Is another process using the image [/v/disk.qcow2]?\n")
    err = _qemu_img_error("snapshot", stderr, 1, "/v/disk.qcow2")
    assert isinstance(err, InvalidState)
    assert "/v/disk.qcow2 is in use by a running QEMU" in str(err) and "\n" not in str(err)
    err = _qemu_img_error("snapshot", "qemu-img: Could not create snapshot 'x': -95\n", 1, None)
    assert isinstance(err, OperationFailed) and not isinstance(err, InvalidState)
    assert str(err) == "qemu-img snapshot failed: Could not create snapshot 'x': -95"
    assert str(_qemu_img_error("info", "", 3, None)) == "qemu-img info failed: exit status 3"


def test_forced_format_filename_never_probes() -> None:
    name = _forced_format("/vms/a,b\"c/disk.qcow2", "qcow2")
    assert name.startswith("json:")
    assert json.loads(name.removeprefix("json:")) == {
        "driver": "qcow2", "file": {"driver": "file", "filename": "/vms/a,b\"c/disk.qcow2"}}
    with pytest.raises(InvalidInput):
        _forced_format("relative.qcow2", "qcow2")


def test_another_hosts_snapshot_list_is_read_field_by_field() -> None:
    """``snapshot list --json`` from another host: round trip, then junk left out."""
    when = dt.datetime(2026, 12, 1, 9, 30, 5, tzinfo=dt.UTC)
    mine = [SnapshotInfo("a", when, 61.5, 80 << 20, True, ""),
            SnapshotInfo("[b]", when, 0.0, 0, False, "")]
    assert snapshots_from_json(json.loads(json.dumps([s.to_json() for s in mine]))) == mine
    junk = [5, "x", {"tag": ""}, {"tag": "t"}, {"tag": "t", "date": "yesterday"},
            {"tag": 7, "date": when.isoformat()},
            {"tag": "ok", "date": "2026-12-01T09:30:05", "vm_clock_seconds": "lots",
             "vmstate_bytes": -5, "has_ram": "yes"}]
    assert snapshots_from_json(junk) == [SnapshotInfo("ok", when, 0.0, 0, False, "")]
    assert snapshots_from_json({"tag": "x"}) == [] and snapshots_from_json(None) == []
