"""The small records a hypercore process leaves beside a VM for the next one to find.

Each is written and read here only:

* ``job.json`` (``VmPaths.job_record``, runtime dir): the QEMU job a snapshot operation
  started, written before the job and marked finished after it. QEMU's monitor is silent
  while ``snapshot-save`` runs, so a dashboard attaching then shows this record.
* ``share-unmounted.json`` (``VmPaths.share_unmount``, runtime dir): the guest's share was
  unmounted for a RAM save; whoever finds it with no job running mounts the share again.
* ``unclean-stop.json`` (``VmPaths.unclean_stop``, the VM's directory): QEMU died without
  a clean stop; kept past the clean-up of the runtime dir, so the next boot checks the disk.
* ``clip-session.json`` (:func:`clip_session_path`, runtime dir): the guest's graphical
  session as the clipboard script last found it, passed back to it as a hint it checks.

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
from pathlib import Path
from typing import Any

from hypercore_tui.adapters import process
from hypercore_tui.adapters.fs import atomic_write_json, read_json
from hypercore_tui.core.errors import HypercoreError
from hypercore_tui.core.jobs import SHARE_UNMOUNT_WHY, JobRecord, ShareUnmount
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


def note_share_unmount(paths: VmPaths, mountpoint: str, why: str = SHARE_UNMOUNT_WHY) -> None:
    """``why``: one of ``SHARE_UNMOUNT_REASONS`` (what the dashboard's note says)."""
    try:
        atomic_write_json(paths.share_unmount,
                          ShareUnmount(mountpoint, os.getpid(), why).to_json())
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


# -- clip-session.json ----------------------------------------------------------------------
#
# The guest's graphical session as the clipboard script last found it (a scan of every
# process's environment costs a few hundred ms under emulation). Passed back to the script
# as a hint, which it checks in the guest as a scan would before using it: nothing here is
# trusted. Kept in the runtime dir, so it lasts one QEMU boot.

#: The record's fields, in the order the clipboard script takes them (after ACTION and
#: FALLBACK_DIR) and names them in its ``hc-found-KEY=VALUE`` lines.
CLIP_SESSION_KEYS = ("pid", "start", "uid", "gid", "kind", "display", "xauthority", "wayland",
                     "runtime", "sockets")
_CLIP_NUMBERS = frozenset(("pid", "start", "uid", "gid"))
#: Longest value kept (paths, display names, the list of display sockets).
MAX_CLIP_VALUE = 4096


def clip_session_path(paths: VmPaths) -> Path:
    return paths.run_dir / "clip-session.json"


@dataclass(frozen=True)
class ClipSession:
    """The session process a scan found: its pid and start time (clock ticks after the
    guest's boot), real uid and gid, display kind (``x11`` or ``wayland``) and
    variables, and the display sockets that existed then."""

    pid: int
    start: int
    uid: int
    gid: int
    kind: str
    display: str = ""
    xauthority: str = ""
    wayland: str = ""
    runtime: str = ""
    sockets: str = ""

    def args(self) -> list[str]:
        """The script's argv after ACTION and FALLBACK_DIR."""
        return [str(getattr(self, key)) for key in CLIP_SESSION_KEYS]

    def to_json(self) -> dict[str, Any]:
        return {key: getattr(self, key) for key in CLIP_SESSION_KEYS}

    @classmethod
    def from_values(cls, values: dict[str, str]) -> ClipSession | None:
        """From the script's ``hc-found-*`` values (all of them, or None)."""
        if set(values) != set(CLIP_SESSION_KEYS):
            return None
        numbers = {}
        for key in _CLIP_NUMBERS:
            if not values[key].isascii() or not values[key].isdigit() or len(values[key]) > 20:
                return None
            numbers[key] = int(values[key])
        return cls.from_json({**values, **numbers})

    @classmethod
    def from_json(cls, data: Any) -> ClipSession | None:
        if not isinstance(data, dict):
            return None
        fields: dict[str, Any] = {}
        for key in CLIP_SESSION_KEYS:
            value = data.get(key)
            if key in _CLIP_NUMBERS:
                if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                    return None
            elif not isinstance(value, str) or len(value) > MAX_CLIP_VALUE or "\0" in value:
                return None
            fields[key] = value
        if fields["kind"] not in ("x11", "wayland"):
            return None
        return cls(**fields)


def read_clip_session(paths: VmPaths) -> ClipSession | None:
    """The session the clipboard script found last in this boot of the VM (a hint)."""
    try:
        return ClipSession.from_json(read_json(clip_session_path(paths)))
    except (FileNotFoundError, HypercoreError):
        return None


def write_clip_session(paths: VmPaths, session: ClipSession) -> None:
    try:
        atomic_write_json(clip_session_path(paths), session.to_json())
    except (HypercoreError, OSError) as exc:  # only a hint: the next push scans again
        log.warning("%s: cannot record the guest's session: %s", paths.name, exc)


def clear_clip_session(paths: VmPaths) -> None:
    with contextlib.suppress(OSError):
        clip_session_path(paths).unlink(missing_ok=True)
