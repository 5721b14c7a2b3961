"""QEMU jobs (``query-jobs``, ``JOB_STATUS_CHANGE``) as the dashboard shows them, and
the small records Hypercore leaves beside a running VM while it works on it.

* :class:`JobInfo`: one QEMU job (id, type, status, progress, error). Parsed from
  ``query-jobs`` replies, updated from ``JOB_STATUS_CHANGE`` events, or inferred from
  a :class:`JobRecord` while QEMU cannot answer (it saves RAM on its main loop: its
  monitor is silent until the save ends).
* :class:`JobRecord`: the last snapshot operation on a running VM, written by the
  snapshot service just before it starts a QEMU job and marked finished once the job
  concluded. A dashboard attaching while QEMU is silent (or while another process
  holds the monitor) still knows a job runs; one that never saw the job (it polls
  another process's monitor) sees the record change and reads the snapshot list again.
* :class:`ShareUnmount`: written just before the shared folder is unmounted in the
  guest for a RAM save and removed once it is mounted again: a process killed in
  between leaves it, and whoever sees it mounts the share again.

Everything QEMU or a file says is untrusted here: strings are bounded, odd values
dropped. No I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from hypercore_tui.core.snapshots import FINAL_JOB_STATES, JOB_PREFIX

#: Longest job id, type or error kept (QEMU's errors can name long paths).
MAX_JOB_TEXT = 200
#: Jobs kept per VM (QEMU has a handful at most; a hostile monitor could send more).
MAX_JOBS = 16

SOURCE_QEMU = "qemu"  # from query-jobs / events
SOURCE_RECORD = "record"  # inferred from Hypercore's job record (QEMU not answering)


def _text(value: object) -> str | None:
    if not isinstance(value, str) or not value:
        return None
    return value[:MAX_JOB_TEXT]


def _count(value: object) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return None
    return value


def type_from_id(job_id: str) -> str | None:
    """``hc-snap-save-1a2b3c4d`` -> ``snapshot-save`` (Hypercore's own ids only)."""
    if not job_id.startswith(JOB_PREFIX):
        return None
    operation = job_id[len(JOB_PREFIX):].split("-", 1)[0]
    return f"snapshot-{operation}" if operation in ("save", "load", "delete") else None


@dataclass(frozen=True)
class JobInfo:
    """One QEMU job."""

    id: str
    type: str = "job"
    status: str = "undefined"
    current: int | None = None
    total: int | None = None
    error: str | None = None
    source: str = SOURCE_QEMU

    @property
    def finished(self) -> bool:
        """Concluded (waiting to be dismissed) or already gone."""
        return self.status in FINAL_JOB_STATES

    @property
    def failed(self) -> bool:
        return self.finished and self.error is not None

    @property
    def ours(self) -> bool:
        return self.id.startswith(JOB_PREFIX)

    @property
    def percent(self) -> int | None:
        if self.current is None or not self.total:
            return None
        return max(0, min(100, self.current * 100 // self.total))

    def describe(self) -> str:
        """``snapshot-save running 42 %`` / ``snapshot-save concluded: error ...``."""
        text = f"{self.type} {self.status}"
        if self.source == SOURCE_RECORD:
            return text + " (QEMU busy until it ends)"
        if self.finished:
            if self.error:
                return f"{text}: error {' '.join(self.error.split())}"
            text += ": ok"
            if self.ours and self.status == "concluded":
                text += " (the next snapshot dismisses it)"
            return text
        percent = self.percent
        return text if percent is None else f"{text} {percent} %"


def job_from_qemu(record: Mapping[str, Any]) -> JobInfo | None:
    """One ``query-jobs`` entry (``id, type, status, current-progress, total-progress,
    error``), or None when it has no usable id."""
    job_id = _text(record.get("id"))
    if job_id is None:
        return None
    return JobInfo(id=job_id, type=_text(record.get("type")) or type_from_id(job_id) or "job",
                   status=_text(record.get("status")) or "undefined",
                   current=_count(record.get("current-progress")),
                   total=_count(record.get("total-progress")),
                   error=_text(record.get("error")))


def jobs_from_qemu(reply: Any) -> tuple[JobInfo, ...]:
    """A ``query-jobs`` reply; anything malformed is skipped."""
    if not isinstance(reply, list):
        return ()
    jobs = []
    for record in reply:
        job = job_from_qemu(record) if isinstance(record, Mapping) else None
        if job is not None:
            jobs.append(job)
        if len(jobs) >= MAX_JOBS:
            break
    return tuple(jobs)


def apply_status_event(jobs: Iterable[JobInfo], data: Mapping[str, Any]
                       ) -> tuple[JobInfo, ...]:
    """The jobs after a ``JOB_STATUS_CHANGE`` (``{"id", "status"}``): a known job gets
    the new status, an unknown one is added (its type guessed from Hypercore's ids),
    ``null`` (dismissed) removes it."""
    job_id, status = _text(data.get("id")), _text(data.get("status"))
    current = [j for j in jobs if j.source == SOURCE_QEMU]
    if job_id is None or status is None:
        return tuple(current)
    if status == "null":
        return tuple(j for j in current if j.id != job_id)
    for index, job in enumerate(current):
        if job.id == job_id:
            current[index] = replace(job, status=status)
            return tuple(current)
    if len(current) >= MAX_JOBS:
        return tuple(current)
    return (*current, JobInfo(id=job_id, type=type_from_id(job_id) or "job", status=status))


def unfinished(jobs: Iterable[JobInfo]) -> bool:
    return any(not job.finished for job in jobs)


def finished_since(before: Iterable[JobInfo], after: Iterable[JobInfo]) -> bool:
    """True when a job that was running in ``before`` concluded or vanished in ``after``."""
    now = {job.id: job for job in after}
    for job in before:
        if job.finished:
            continue
        later = now.get(job.id)
        if later is None or later.finished:
            return True
    return False


@dataclass(frozen=True)
class JobRecord:
    """What a Hypercore process started in QEMU: ``job_id`` of ``command``, by ``pid``;
    ``finished`` once the job concluded (or was refused)."""

    job_id: str
    command: str
    pid: int
    started: float  # epoch seconds
    finished: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"job_id": self.job_id, "command": self.command, "pid": self.pid,
                "started": self.started, "finished": self.finished}

    @classmethod
    def from_json(cls, data: Any) -> JobRecord | None:
        if not isinstance(data, Mapping):
            return None
        job_id, command = _text(data.get("job_id")), _text(data.get("command"))
        pid, started = _count(data.get("pid")), data.get("started")
        if job_id is None or command is None or pid is None:
            return None
        if isinstance(started, bool) or not isinstance(started, int | float):
            started = 0.0
        return cls(job_id, command, pid, float(started), data.get("finished") is True)

    def as_job(self) -> JobInfo:
        """The recorded job as the dashboard shows it while QEMU cannot say."""
        return JobInfo(id=self.job_id, type=self.command, status="running",
                       source=SOURCE_RECORD)


#: Why a guest's share is unmounted (the note's ``why``); the first is the default.
SHARE_UNMOUNT_REASONS = ("for a RAM snapshot", "for a migration")
SHARE_UNMOUNT_WHY = SHARE_UNMOUNT_REASONS[0]


@dataclass(frozen=True)
class ShareUnmount:
    """The shared folder was unmounted at ``mountpoint`` in the guest by ``pid``, ``why``
    (``for a RAM snapshot``, ``for a migration``: the dashboard's note says it)."""

    mountpoint: str
    pid: int
    why: str = SHARE_UNMOUNT_WHY

    def to_json(self) -> dict[str, Any]:
        return {"mountpoint": self.mountpoint, "pid": self.pid, "why": self.why}

    @classmethod
    def from_json(cls, data: Any) -> ShareUnmount | None:
        if not isinstance(data, Mapping):
            return None
        mountpoint, pid = _text(data.get("mountpoint")), _count(data.get("pid"))
        if (mountpoint is None or not mountpoint.startswith("/") or pid is None
                or any(c in mountpoint for c in "\0\n")):
            return None
        why = _text(data.get("why"))
        return cls(mountpoint, pid, why if why in SHARE_UNMOUNT_REASONS else SHARE_UNMOUNT_WHY)
