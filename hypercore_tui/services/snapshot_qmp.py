"""A running VM's snapshots through QMP: its session, its list, and QEMU's snapshot jobs.

``snapshot-save`` / ``snapshot-load`` / ``snapshot-delete`` run as QEMU jobs:
:func:`run_job` runs one to its conclusion with a deadline (cancelled when it passes),
reads its error and dismisses it, and the VM's job record (services.records) names it
while it runs. A job an earlier, killed hypercore left is dismissed, or refused while it
still runs; a VM a failed job left stopped is resumed. Every QMP call has a timeout. The
verbs that decide what to run are in services.snapshots.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, replace
from typing import Any

from hypercore_tui.adapters.qmp import QmpCommandError, QmpSession, qmp_session
from hypercore_tui.core.argv import DISK_NODE
from hypercore_tui.core.errors import (
    Busy,
    HypercoreError,
    InvalidInput,
    OperationFailed,
    Timeout,
)
from hypercore_tui.core.layout import VmPaths
from hypercore_tui.core.models import VmSpec
from hypercore_tui.core.progress import Progress
from hypercore_tui.core.snapshots import (
    FINAL_JOB_STATES,
    JOB_PREFIX,
    SnapshotInfo,
    find_job,
    job_id,
    job_progress,
    snapshots_from_qemu,
)
from hypercore_tui.services import records
from hypercore_tui.services.context import Context

log = logging.getLogger("hypercore.snapshots")
log.addHandler(logging.NullHandler())

#: How long a RAM save/load job may take (a big guest under TCG is slow);
#: ``HYPERCORE_SNAPSHOT_TIMEOUT`` (seconds) or the ``timeout`` argument override it.
DEFAULT_JOB_TIMEOUT = 600.0
QMP_TIMEOUT = 10.0
_EVENT_POLL = 0.05
_JOB_POLL = 2.0
_CANCEL_GRACE = 10.0


def job_timeout(ctx: Context, timeout: float | None = None) -> float:
    if timeout is not None:
        return timeout
    text = ctx.environ.get("HYPERCORE_SNAPSHOT_TIMEOUT", "").strip()
    if not text:
        return DEFAULT_JOB_TIMEOUT
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if value <= 0:
        raise InvalidInput(f"HYPERCORE_SNAPSHOT_TIMEOUT must be a positive number of seconds, "
                           f"not {text!r}")
    return value


def report(progress: Progress | None, stage: str, fraction: float | None) -> None:
    """Tell ``progress``, if any, a stage and a fraction (the jobs' and the verbs' helper)."""
    if progress is not None:
        progress(stage, fraction, 1.0)


@contextlib.asynccontextmanager
async def session(paths: VmPaths) -> AsyncIterator[QmpSession]:
    async with qmp_session(paths.qmp_socket, vm_name=paths.name, timeout=5.0,
                           lock_timeout=10.0, events=True) as qmp:
        yield qmp


async def live_list(qmp: QmpSession, spec: VmSpec) -> list[SnapshotInfo]:
    """Snapshots from ``query-block`` (the format node's image holds them)."""
    blocks = await qmp.execute("query-block", timeout=QMP_TIMEOUT)
    for block in blocks if isinstance(blocks, list) else []:
        inserted = block.get("inserted") if isinstance(block, Mapping) else None
        if isinstance(inserted, Mapping) and inserted.get("node-name") == DISK_NODE:
            image = inserted.get("image")
            records = image.get("snapshots", []) if isinstance(image, Mapping) else []
            snaps = snapshots_from_qemu(records if isinstance(records, list) else [])
            if spec.disk.is_rbd:
                # QEMU's rbd driver reports the image size as vm-state-size (and no date):
                # RBD snapshots never hold RAM (raw over rbd cannot store a vmstate).
                snaps = [replace(s, has_ram=False, vmstate_bytes=0) for s in snaps]
            return snaps
    raise OperationFailed(f"{spec.name}: QEMU reports no disk node {DISK_NODE!r}")


async def is_running(qmp: QmpSession) -> bool:
    status = await qmp.execute("query-status", timeout=QMP_TIMEOUT)
    return isinstance(status, Mapping) and status.get("status") == "running"


async def resume(qmp: QmpSession, name: str) -> None:
    """``cont`` a VM that a failed job left stopped (best effort, logged)."""
    try:
        if not await is_running(qmp):
            await qmp.execute("cont", timeout=QMP_TIMEOUT)
            log.info("%s: resumed after a failed snapshot job", name)
    except HypercoreError as exc:
        log.warning("%s: could not resume after a failed snapshot job: %s", name, exc)


async def dismiss_stale_jobs(qmp: QmpSession, name: str) -> None:
    """Dismiss finished jobs an earlier (killed) hypercore left; refuse if one still runs."""
    jobs = await qmp.execute("query-jobs", timeout=QMP_TIMEOUT)
    for job in jobs if isinstance(jobs, list) else []:
        jid = str(job.get("id", ""))
        if not jid.startswith(JOB_PREFIX):
            continue
        if job.get("status") == "concluded":
            log.info("%s: dismissing stale job %s (%s)", name, jid, job.get("error", "ok"))
            await qmp.execute("job-dismiss", {"id": jid}, timeout=QMP_TIMEOUT)
        else:
            raise Busy(f"{name}: an earlier snapshot job ({jid}) is still running in QEMU; "
                       "try again when it has finished")


@dataclass(frozen=True)
class JobResult:
    error: str | None  # QEMU's reason when the job failed
    paused_seconds: float | None  # STOP -> RESUME while the job ran (QEMU's clock)


async def run_job(qmp: QmpSession, paths: VmPaths, command: str, arguments: dict[str, Any],
                  *, what: str, timeout: float, progress: Progress | None) -> JobResult:
    """Start a snapshot job and wait for it to conclude; read its error, dismiss it.

    JOB_STATUS_CHANGE events say when it is done; ``query-jobs`` polling is the
    fallback (and gives progress). While QEMU saves RAM its monitor does not answer,
    so a poll that times out just means "still busy" until the job deadline. At the
    deadline the job is cancelled and gets a short grace period to conclude; a job
    that still runs then is left to QEMU (the next snapshot operation dismisses it).

    The VM's job record names the job from just before it starts, and says when it
    concluded, for dashboards (QEMU's monitor is silent while it saves RAM, and a
    dashboard without the monitor socket gets no events).
    """
    name = paths.name
    jid = job_id(command.removeprefix("snapshot-"), secrets.token_hex(4))
    # QEMU may run the job's first part (the whole RAM save) before its reply to the
    # start command goes out: that reply gets the job's time, not a command's.
    report(progress, what, None)
    records.write_job_record(paths, jid, command)
    try:
        await qmp.execute(command, {"job-id": jid, **arguments},
                          timeout=max(QMP_TIMEOUT, timeout))
    except QmpCommandError:
        records.finish_job_record(paths, jid)  # refused: no job was created
        raise
    start = time.monotonic()
    deadline = start + timeout
    last_poll = start
    stopped_at: float | None = None
    paused = 0.0
    cancelled = False
    concluded = False

    def take_events() -> bool:
        nonlocal stopped_at, paused
        done = False
        for event in qmp.pending_events():
            if event.name == "STOP":
                stopped_at = event.timestamp
            elif event.name == "RESUME" and stopped_at is not None:
                paused += max(0.0, event.timestamp - stopped_at)
                stopped_at = None
            elif (event.name == "JOB_STATUS_CHANGE" and event.data.get("id") == jid
                  and event.data.get("status") in FINAL_JOB_STATES):
                done = True
        return done

    while not concluded:
        if take_events():
            break
        now = time.monotonic()
        if now >= deadline:
            if cancelled:
                raise Timeout(f"{name}: {what} did not finish within {timeout:g}s and QEMU "
                              f"has not cancelled it yet (job {jid}); check "
                              f"`hypercore snapshot list {name}` later")
            cancelled = True
            log.warning("%s: %s job %s timed out; cancelling", name, command, jid)
            with contextlib.suppress(HypercoreError):
                await qmp.execute("job-cancel", {"id": jid}, timeout=_CANCEL_GRACE / 2)
            deadline = time.monotonic() + _CANCEL_GRACE
            last_poll = 0.0  # poll right away
            continue
        if now - last_poll >= _JOB_POLL:
            last_poll = now
            try:
                jobs = await qmp.execute("query-jobs",
                                         timeout=max(0.5, min(5.0, deadline - now)))
            except Timeout:
                continue  # the monitor is busy (saving RAM): keep waiting
            job = find_job(jobs, jid)
            if job is None or job.get("status") in FINAL_JOB_STATES:
                concluded = True
                continue
            fraction = job_progress(job)
            if fraction is not None:
                report(progress, what, fraction)
        await asyncio.sleep(_EVENT_POLL)

    jobs = await qmp.execute("query-jobs",
                             timeout=max(QMP_TIMEOUT, deadline - time.monotonic()))
    job = find_job(jobs, jid)
    # Concluded (or gone): QEMU tells the truth from here on.
    records.finish_job_record(paths, jid)
    error: str | None
    if job is None:
        error = "QEMU dropped the job before its result could be read"
    else:
        raw_error = job.get("error")
        error = str(raw_error) if raw_error else None
        try:
            await qmp.execute("job-dismiss", {"id": jid}, timeout=QMP_TIMEOUT)
        except HypercoreError as exc:  # dismissed on the next run (dismiss_stale_jobs)
            log.warning("%s: job-dismiss %s failed: %s", name, jid, exc)
    take_events()  # a RESUME that came with the conclusion
    log.info("%s: %s job %s %s (guest paused %.3fs)", name, command, jid,
             f"failed: {error}" if error else "done", paused)
    if cancelled and error:
        raise Timeout(f"{name}: {what} did not finish within {timeout:g}s and was cancelled "
                      "(set HYPERCORE_SNAPSHOT_TIMEOUT for bigger guests)")
    return JobResult(error=error, paused_seconds=paused if stopped_at is None else None)
