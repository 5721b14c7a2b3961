"""core.jobs: QEMU's query-jobs replies, JOB_STATUS_CHANGE events and Hypercore's job and
share records, parsed without trusting them."""

from __future__ import annotations

from hypercore_tui.core.jobs import (
    MAX_JOB_TEXT,
    MAX_JOBS,
    SOURCE_RECORD,
    JobInfo,
    JobRecord,
    ShareUnmount,
    apply_status_event,
    finished_since,
    jobs_from_qemu,
    type_from_id,
    unfinished,
)

SAVE = {"id": "hc-snap-save-1a2b3c4d", "type": "snapshot-save", "status": "running",
        "current-progress": 42, "total-progress": 100}


def test_query_jobs_reply_parsed_and_described() -> None:
    """7 cases: running with progress, without, concluded ok / with error, a foreign job,
    malformed entries skipped, a non-list reply."""
    (job,) = jobs_from_qemu([SAVE])
    assert job == JobInfo("hc-snap-save-1a2b3c4d", "snapshot-save", "running", 42, 100)
    assert job.describe() == "snapshot-save running 42 %" and not job.finished
    (plain,) = jobs_from_qemu([{**SAVE, "total-progress": 0}])
    assert plain.describe() == "snapshot-save running" and plain.percent is None
    (done,) = jobs_from_qemu([{**SAVE, "status": "concluded", "current-progress": 1,
                               "total-progress": 1}])
    assert done.finished and not done.failed
    assert done.describe() == "snapshot-save concluded: ok (the next snapshot dismisses it)"
    (bad,) = jobs_from_qemu([{**SAVE, "status": "concluded", "error": "No space\nleft"}])
    assert bad.failed and bad.describe() == "snapshot-save concluded: error No space left"
    (other,) = jobs_from_qemu([{"id": "backup0", "type": "backup", "status": "concluded"}])
    assert other.describe() == "backup concluded: ok" and not other.ours
    odd = jobs_from_qemu([None, 3, {"type": "x"}, {"id": 5}, {"id": "j", "status": True,
                                                             "current-progress": -1,
                                                             "total-progress": "9"}])
    assert odd == (JobInfo("j", "job", "undefined"),)
    assert jobs_from_qemu({"return": []}) == () and jobs_from_qemu(None) == ()


def test_hostile_values_are_bounded() -> None:
    """2 cases: a huge error text is cut; a flood of jobs is capped."""
    (job,) = jobs_from_qemu([{**SAVE, "error": "x" * 100_000, "status": "concluded"}])
    assert job.error is not None and len(job.error) == MAX_JOB_TEXT
    many = jobs_from_qemu([{"id": f"j{i}", "status": "running"} for i in range(1000)])
    assert len(many) == MAX_JOBS


def test_status_events_update_the_jobs() -> None:
    """6 cases: a new job (type from Hypercore's id), a status change, null removes,
    malformed data, record-sourced jobs dropped, which changes count as finished."""
    jobs = apply_status_event((), {"id": "hc-snap-load-00ff00ff", "status": "created"})
    assert jobs == (JobInfo("hc-snap-load-00ff00ff", "snapshot-load", "created"),)
    running = apply_status_event(jobs, {"id": "hc-snap-load-00ff00ff", "status": "running"})
    assert running[0].status == "running" and unfinished(running)
    concluded = apply_status_event(running, {"id": "hc-snap-load-00ff00ff",
                                             "status": "concluded"})
    assert not unfinished(concluded) and finished_since(running, concluded)
    assert apply_status_event(concluded, {"id": "hc-snap-load-00ff00ff", "status": "null"}) == ()
    assert apply_status_event(running, {"status": "running"}) == running
    assert finished_since(running, ()) and not finished_since(concluded, ())
    assert not finished_since((), running)
    recorded = JobRecord("hc-snap-save-1", "snapshot-save", 10, 0.0).as_job()
    assert recorded.source == SOURCE_RECORD and not recorded.finished
    assert recorded.describe() == "snapshot-save running (QEMU busy until it ends)"
    assert apply_status_event((recorded,), {"id": "x", "status": "running"}) == \
        (JobInfo("x", "job", "running"),)
    assert type_from_id("hc-snap-delete-9") == "snapshot-delete"
    assert type_from_id("hc-snap-evil-9") is None and type_from_id("mirror0") is None


def test_records_round_trip_and_refuse_garbage() -> None:
    """7 cases: both records round-trip (a job record finished or not); garbage, missing
    fields, a relative or NUL mountpoint are refused."""
    record = JobRecord("hc-snap-save-1", "snapshot-save", 1234, 17.5)
    assert JobRecord.from_json(record.to_json()) == record and not record.finished
    done = JobRecord("hc-snap-save-1", "snapshot-save", 1234, 17.5, finished=True)
    assert JobRecord.from_json(done.to_json()) == done
    assert JobRecord.from_json({**done.to_json(), "finished": "yes"}) == record
    assert JobRecord.from_json({"job_id": "a", "command": "b", "pid": 1,
                                "started": "x"}) == JobRecord("a", "b", 1, 0.0)
    assert JobRecord.from_json([1]) is None and JobRecord.from_json({"job_id": "a"}) is None
    share = ShareUnmount("/shared", 99)
    assert ShareUnmount.from_json(share.to_json()) == share
    assert ShareUnmount.from_json({"mountpoint": "shared", "pid": 1}) is None
    assert ShareUnmount.from_json({"mountpoint": "/a\0b", "pid": 1}) is None
    assert ShareUnmount.from_json("nope") is None
    # why it is unmounted: a migration's note says so; an unknown or missing one is read
    # as a RAM snapshot's (a note written before the field existed)
    moved = ShareUnmount("/shared", 99, "for a migration")
    assert ShareUnmount.from_json(moved.to_json()) == moved
    assert ShareUnmount.from_json({"mountpoint": "/s", "pid": 1, "why": "[red]x"}) == \
        ShareUnmount("/s", 1, "for a RAM snapshot")
    assert ShareUnmount.from_json({"mountpoint": "/s", "pid": 1}).why == "for a RAM snapshot"
