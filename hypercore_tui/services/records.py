"""The small records a hypercore process leaves beside a VM for the next one to find.

Each is written and read here only:

* ``job.json`` (``VmPaths.job_record``, runtime dir): the QEMU job a snapshot operation
  started, written before the job and marked finished after it. QEMU's monitor is silent
  while ``snapshot-save`` runs, so a dashboard attaching then shows this record.
* ``share-unmounted.json`` (``VmPaths.share_unmount``, runtime dir): the guest's share was
  unmounted for a RAM save; whoever finds it with no job running mounts the share again.
* ``unclean-stop.json`` (``VmPaths.unclean_stop``, the VM's directory): QEMU died without
  a clean stop; kept past the clean-up of the runtime dir, so the next boot checks the disk.

The files are untrusted input: an unreadable or odd record is read as the safe reading
(an owed share at the usual place, an unclean stop without a job name), never repeated
to the user as it is. Writing one is never a reason to fail: a full disk only loses the hint.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import time
from dataclasses import dataclass
from typing import Any

from hypercore_tui.adapters import process
from hypercore_tui.adapters.fs import atomic_write_json, read_json
from hypercore_tui.core.errors import HypercoreError
from hypercore_tui.core.jobs import JobRecord, ShareUnmount
from hypercore_tui.core.layout import VmPaths
from hypercore_tui.core.models import GUEST_MOUNTPOINT

log = logging.getLogger("hypercore.records")
log.addHandler(logging.NullHandler())


# -- job.json -------------------------------------------------------------------------


def read_job_record(paths: VmPaths) -> JobRecord | None:
    """The last snapshot job a hypercore process started on this running VM (its
    writer may have died meanwhile): what a dashboard shows while QEMU cannot answer."""
    try:
        return JobRecord.from_json(read_json(paths.job_record))
    except (FileNotFoundError, HypercoreError):
        return None


def write_job_record(paths: VmPaths, jid: str, command: str, *, finished: bool = False
                     ) -> None:
    try:
        atomic_write_json(paths.job_record, JobRecord(jid, command, os.getpid(), time.time(),
                                                      finished).to_json())
    except (HypercoreError, OSError) as exc:  # only a dashboard's hint: never a reason to fail
        log.warning("cannot record job %s: %s", jid, exc)


def finish_job_record(paths: VmPaths, jid: str | None = None) -> None:
    """Mark the recorded job finished (only if it is ``jid``, when given): dashboards
    stop showing it and read the snapshot list again."""
    current = read_job_record(paths)
    if current is None or current.finished or (jid is not None and current.job_id != jid):
        return
    write_job_record(paths, current.job_id, current.command, finished=True)


# -- share-unmounted.json ----------------------------------------------------------------


def read_share_unmount(paths: VmPaths) -> ShareUnmount | None:
    """The note left while the share is unmounted for a RAM save (None: nothing owed)."""
    try:
        data = read_json(paths.share_unmount)
    except FileNotFoundError:
        return None
    except HypercoreError:
        data = None
    # Unreadable: the share is still owed, at the usual place.
    return ShareUnmount.from_json(data) or ShareUnmount(GUEST_MOUNTPOINT, 0)


def note_share_unmount(paths: VmPaths, mountpoint: str) -> None:
    try:
        atomic_write_json(paths.share_unmount, ShareUnmount(mountpoint, os.getpid()).to_json())
    except (HypercoreError, OSError) as exc:
        log.warning("%s: cannot note the shared folder's unmount: %s", paths.name, exc)


def clear_share_unmount(paths: VmPaths) -> None:
    with contextlib.suppress(OSError):
        paths.share_unmount.unlink()


# -- unclean-stop.json --------------------------------------------------------------------
#
# QEMU killed while it writes a qcow2 image (above all during a RAM snapshot, which writes
# hundreds of MiB into it) leaves clusters allocated that nothing references (leaks:
# wasted space, no harm) and, rarely, refcounts that disagree with the tables (errors:
# later writes can destroy data). The boot after such a stop checks the image.

#: A job name worth repeating to the user (the record is a file: anything else is dropped).
_JOB_NAME = re.compile(r"[a-z][a-z0-9-]{0,63}")


@dataclass(frozen=True)
class UncleanStop:
    """QEMU stopped without a clean exit; ``job``: the snapshot job it was running."""

    job: str | None = None

    @property
    def cause(self) -> str:
        return f"QEMU died during {self.job}" if self.job else "QEMU did not stop cleanly"

    @classmethod
    def from_json(cls, data: Any) -> UncleanStop:
        job = data.get("job") if isinstance(data, dict) else None
        return cls(job if isinstance(job, str) and _JOB_NAME.fullmatch(job) else None)


def _unclean_in_runtime(paths: VmPaths) -> UncleanStop | None:
    """From the runtime files: a pidfile whose QEMU is gone (a clean exit removes it), or
    a snapshot job a hypercore process started and never saw end."""
    job = None
    record = read_job_record(paths)
    if record is not None and not record.finished:
        job = record.command if _JOB_NAME.fullmatch(record.command) else "a QEMU job"
    pid = process.read_pidfile(paths.pidfile)
    died = pid is not None and not process.process_alive(pid, pidfile=paths.pidfile)
    return UncleanStop(job) if died or job is not None else None


def _unclean_recorded(paths: VmPaths) -> UncleanStop | None:
    try:
        return UncleanStop.from_json(read_json(paths.unclean_stop))
    except FileNotFoundError:
        return None
    except HypercoreError:
        return UncleanStop()  # unreadable: still an unclean stop


def unclean_stop(paths: VmPaths) -> UncleanStop | None:
    """How the last QEMU of a stopped VM ended, when not cleanly (None after a clean stop):
    its runtime files, or the record an earlier clean-up left in the VM's directory."""
    found = [u for u in (_unclean_in_runtime(paths), _unclean_recorded(paths)) if u]
    return next((u for u in found if u.job), found[0] if found else None)


def remember_unclean_stop(paths: VmPaths) -> None:
    """Before the runtime files go: an unclean stop is kept in the VM's directory (so a
    ``stop-vm`` cleaning up after a crash does not hide it from the next boot)."""
    now = _unclean_in_runtime(paths)
    if now is None or (now.job is None and _unclean_recorded(paths) is not None):
        return
    try:
        atomic_write_json(paths.unclean_stop, {"job": now.job, "recorded": time.time()})
    except (HypercoreError, OSError) as exc:  # (a full disk) the boot path still sees it
        log.warning("%s: cannot record the unclean stop: %s", paths.name, exc)


def clear_unclean_stop(paths: VmPaths) -> None:
    """The disk was checked (or needs no check): the next boot starts clean."""
    with contextlib.suppress(OSError):
        paths.unclean_stop.unlink(missing_ok=True)
