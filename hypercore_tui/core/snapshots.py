"""Snapshots as Hypercore sees them, and the pure decisions around them.

Parsing QEMU's snapshot records (``query-block``'s ``image.snapshots`` and
``qemu-img info --output=json`` share one shape), ordering the devices of a
``snapshot-save`` job, naming tags and jobs, reading ``qemu-img convert -p``
progress and turning QEMU's reasons into one-line messages. No I/O here.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from hypercore_tui.core.errors import says_no_space
from hypercore_tui.core.models import DiskKind
from hypercore_tui.core.sizes import format_bytes

#: Prefix of the QMP job ids Hypercore creates (stale ones are dismissed on sight).
JOB_PREFIX = "hc-snap-"
#: Job states after which a job does nothing more (``null`` = already dismissed).
FINAL_JOB_STATES = frozenset({"concluded", "null"})


@dataclass(frozen=True)
class SnapshotInfo:
    """One internal snapshot of a VM's disk (with or without the VM's RAM)."""

    tag: str
    date: dt.datetime  # when it was taken (aware, UTC)
    vm_clock_seconds: float  # guest run time at the snapshot
    vmstate_bytes: int  # size of the saved RAM/device state, 0 for disk-only
    has_ram: bool
    id: str  # QEMU's numeric id inside the image

    def to_json(self) -> dict[str, Any]:
        """The ``snapshot list --json`` record."""
        return {
            "tag": self.tag,
            "date": self.date.isoformat(),
            "vm_clock_seconds": round(self.vm_clock_seconds, 3),
            "vmstate_bytes": self.vmstate_bytes,
            "has_ram": self.has_ram,
        }


def _int(record: Mapping[str, Any], key: str) -> int:
    value = record.get(key, 0)
    if isinstance(value, bool) or not isinstance(value, int):
        return 0
    return value


def snapshot_from_qemu(record: Mapping[str, Any]) -> SnapshotInfo:
    """A QAPI ``SnapshotInfo`` (``id, name, vm-state-size, date-sec, ...``) as ours."""
    seconds = _int(record, "date-sec") + _int(record, "date-nsec") / 1e9
    vmstate = _int(record, "vm-state-size")
    return SnapshotInfo(
        tag=str(record.get("name", "")),
        date=dt.datetime.fromtimestamp(seconds, dt.UTC),
        vm_clock_seconds=_int(record, "vm-clock-sec") + _int(record, "vm-clock-nsec") / 1e9,
        vmstate_bytes=vmstate,
        has_ram=vmstate > 0,
        id=str(record.get("id", "")),
    )


def snapshots_from_qemu(records: Iterable[Any]) -> list[SnapshotInfo]:
    """All well-formed records, oldest first (QEMU lists them in creation order)."""
    out = [snapshot_from_qemu(r) for r in records if isinstance(r, Mapping) and r.get("name")]
    return sorted(out, key=lambda s: s.date)


def snapshots_from_json(rows: Any) -> list[SnapshotInfo]:
    """``snapshot list --json`` as another host wrote it (untrusted): the well-formed
    records, each field checked; anything else left out."""
    out = []
    for row in rows if isinstance(rows, list) else []:
        if not isinstance(row, Mapping):
            continue
        tag, when = row.get("tag"), row.get("date")
        clock, ram = row.get("vm_clock_seconds"), _int(row, "vmstate_bytes")
        if not isinstance(tag, str) or not tag or not isinstance(when, str):
            continue
        try:
            date = dt.datetime.fromisoformat(when)
        except ValueError:
            continue
        if date.tzinfo is None:
            date = date.replace(tzinfo=dt.UTC)
        seconds = float(clock) if isinstance(clock, int | float) and not isinstance(
            clock, bool) and clock >= 0 else 0.0
        out.append(SnapshotInfo(tag=tag, date=date, vm_clock_seconds=seconds,
                                vmstate_bytes=max(0, ram), has_ram=row.get("has_ram") is True,
                                id=""))
    return out


def find_snapshot(snapshots: Iterable[SnapshotInfo], tag: str) -> SnapshotInfo | None:
    for snap in snapshots:
        if snap.tag == tag:
            return snap
    return None


def order_snapshot_devices(devices: Iterable[tuple[str, DiskKind]]) -> list[str]:
    """Node names for a ``snapshot-save``/``-load``/``-delete`` job: RBD nodes first.

    With qcow2 and RBD disks in one VM the job fails unless the RBD node comes
    first (DESIGN.md §4); otherwise the order given is kept. Duplicates are dropped.
    """
    seen: set[str] = set()
    unique = []
    for node, kind in devices:
        if node not in seen:
            seen.add(node)
            unique.append((node, kind))
    return [node for node, kind in unique if kind is DiskKind.RBD] + \
        [node for node, kind in unique if kind is not DiskKind.RBD]


def generate_tag(now: dt.datetime, taken: Iterable[str] = ()) -> str:
    """``snap-20261126-221500`` from ``now``; ``-2``, ``-3``... if that tag is taken."""
    base = "snap-" + now.strftime("%Y%m%d-%H%M%S")
    used = set(taken)
    tag, n = base, 1
    while tag in used:
        n += 1
        tag = f"{base}-{n}"
    return tag


def job_id(operation: str, token: str) -> str:
    """A QMP job id: letters, digits and '-' only, starting with a letter."""
    return f"{JOB_PREFIX}{operation}-{token}"


def find_job(jobs: Any, wanted: str) -> Mapping[str, Any] | None:
    """The ``query-jobs`` entry with id ``wanted``."""
    if not isinstance(jobs, Sequence):
        return None
    for job in jobs:
        if isinstance(job, Mapping) and job.get("id") == wanted:
            return job
    return None


def job_progress(job: Mapping[str, Any]) -> float | None:
    """``current-progress / total-progress`` in 0..1, None when unknown."""
    current, total = job.get("current-progress"), job.get("total-progress")
    if not isinstance(current, int) or not isinstance(total, int) or total <= 0:
        return None
    return max(0.0, min(1.0, current / total))


_PROGRESS = re.compile(r"\(\s*(\d+(?:\.\d+)?)/100%\)")


def parse_convert_progress(chunk: str) -> float | None:
    """The last ``(42.00/100%)`` of ``qemu-img convert -p`` output, as 0..1."""
    found = _PROGRESS.findall(chunk)
    if not found:
        return None
    return max(0.0, min(1.0, float(found[-1]) / 100.0))


#: Least free space a live snapshot is started with. With less, QEMU fails part-way (it
#: writes the L1 table copy and the snapshot table to new clusters) and may leave a
#: leaked cluster in the image that only ``qemu-img check -r leaks`` on the stopped VM
#: gives back.
MIN_SNAPSHOT_FREE = 1 << 20


def snapshot_space_error(name: str, free_bytes: int | None, *,
                         ram_bytes: int | None = None) -> str | None:
    """The one-line refusal of a live snapshot with too little space left (else None)."""
    if free_bytes is None or free_bytes >= MIN_SNAPSHOT_FREE:
        return None
    need = f"at least {format_bytes(MIN_SNAPSHOT_FREE)}"
    if ram_bytes:
        need += f", and up to {format_bytes(ram_bytes)} for the RAM state"
    return (f"{name}: no space left on device for a snapshot: {format_bytes(free_bytes)} "
            f"free where its disk image lies ({need}); free some space first")


def explain_save_failure(name: str, reason: str, *, free_bytes: int | None = None,
                         ram_bytes: int | None = None) -> str:
    """One line for a failed RAM snapshot, with what to do about the usual causes.

    ``free_bytes``: space left where the disk image lies (local disks), ``ram_bytes``:
    the guest's RAM (a vmstate is at most about that big). QEMU reports a vmstate write
    refused for want of space as a plain I/O error: with less room left than the RAM,
    the full disk is named as the cause.
    """
    reason = " ".join(reason.split())
    if (free_bytes is not None and ram_bytes is not None and free_bytes < ram_bytes
            and ("Input/output error" in reason or says_no_space(reason))):
        return (f"{name}: snapshot failed: no space left on device for the RAM state "
                f"({format_bytes(free_bytes)} free where its disk image lies, up to "
                f"{format_bytes(ram_bytes)} needed; QEMU: {reason}); free some space, or "
                "take a --disk-only snapshot")
    if "VirtFS" in reason or "vhost-user-fs" in reason or "virtiofs" in reason.lower():
        return (f"{name}: cannot save the RAM state while the shared folder is mounted in the "
                f"guest (QEMU: {reason}); unmount it in the guest first, or take a "
                "--disk-only snapshot")
    if "does not support snapshots" in reason or "does not support internal" in reason:
        return (f"{name}: QEMU cannot snapshot this disk: {reason} "
                "(raw images hold no snapshots; convert the disk to qcow2)")
    return f"{name}: snapshot failed: {reason}"


# Reasons with which ``snapshot-load`` fails in its checks, before it touches a disk
# or the RAM (QEMU 7.2 ``load_snapshot``): the VM can safely run on after them.
_LOAD_PRECHECK_FAILURES = (
    "does not exist",
    "disk-only snapshot",
    "does not support snapshots",
    "No block device can accept snapshots",
    "Could not find",
    "is not writable",
)


def load_failure_left_vm_intact(reason: str) -> bool:
    """True when a failed ``snapshot-load`` changed nothing (so the VM may resume)."""
    return any(marker in reason for marker in _LOAD_PRECHECK_FAILURES)
