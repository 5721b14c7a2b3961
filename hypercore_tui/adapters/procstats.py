"""Process and host statistics from psutil (procfs on Linux).

Reads are cheap (a few small procfs files: ~40 µs per process, ~150 µs with the
per-thread times), but they are blocking file reads: callers decide whether to
run them inline or in a thread. Every psutil error is wrapped at this boundary.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import psutil

from hypercore_tui.core.errors import OperationFailed


class ProcessGone(OperationFailed):
    """The process exited (or the pid now belongs to another process)."""


@dataclass(frozen=True)
class ProcessReading:
    pid: int
    timestamp: float  # time.monotonic() of the reading
    cpu_seconds: float  # user + system since the process started
    rss_bytes: int
    started_at: float  # epoch seconds
    thread_cpu_seconds: dict[int, float]  # thread id -> user + system (when asked for)

    @property
    def uptime_seconds(self) -> float:
        return max(0.0, time.time() - self.started_at)


class ProcessReader:
    """Reads one process repeatedly; keeps the psutil handle to skip re-validation."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        try:
            self._proc = psutil.Process(pid)
            self._started = self._proc.create_time()
        except psutil.Error as exc:
            raise ProcessGone(f"process {pid} is gone: {exc}") from None

    def read(self, *, threads: Iterable[int] | None = None) -> ProcessReading:
        """CPU time and RSS; with ``threads``, the CPU time of those thread ids too."""
        proc = self._proc
        try:
            with proc.oneshot():
                times = proc.cpu_times()
                rss = proc.memory_info().rss
            per_thread: dict[int, float] = {}
            if threads is not None:
                wanted = set(threads)
                for thread in proc.threads():
                    if thread.id in wanted:
                        per_thread[thread.id] = thread.user_time + thread.system_time
        except psutil.Error as exc:
            raise ProcessGone(f"process {self.pid} is gone: {exc}") from None
        return ProcessReading(
            pid=self.pid, timestamp=time.monotonic(), cpu_seconds=times.user + times.system,
            rss_bytes=int(rss), started_at=self._started, thread_cpu_seconds=per_thread,
        )


@dataclass(frozen=True)
class HostReading:
    cpu_percent: float  # all cores, 0-100, since the previous reading
    cpu_count: int
    mem_total_bytes: int
    mem_available_bytes: int
    load: tuple[float, float, float]
    disk_free_bytes: int | None
    disk_total_bytes: int | None


class HostProbe:
    """Reads the host; CPU % is measured between two consecutive reads of one probe."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self._busy_idle: tuple[float, float] | None = None

    def read(self) -> HostReading:
        try:
            times = psutil.cpu_times()
        except psutil.Error as exc:
            raise OperationFailed(f"cannot read host statistics: {exc}") from None
        idle = times.idle + getattr(times, "iowait", 0.0)
        busy = sum(times) - idle - getattr(times, "guest", 0.0) - getattr(times, "guest_nice", 0.0)
        cpu = 0.0
        if self._busy_idle is not None:
            d_busy, d_idle = busy - self._busy_idle[0], idle - self._busy_idle[1]
            if d_busy + d_idle > 0:
                cpu = max(0.0, min(100.0, 100.0 * d_busy / (d_busy + d_idle)))
        self._busy_idle = (busy, idle)
        return read_host(self.data_dir, cpu_percent=cpu)


def read_host(data_dir: Path, *, cpu_percent: float = 0.0) -> HostReading:
    """Host memory, load and free disk (CPU % comes from a :class:`HostProbe`)."""
    try:
        mem = psutil.virtual_memory()
        count = psutil.cpu_count() or 1
    except psutil.Error as exc:
        raise OperationFailed(f"cannot read host statistics: {exc}") from None
    try:
        load = os.getloadavg()
    except OSError:
        load = (0.0, 0.0, 0.0)
    free = total = None
    probe = data_dir
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent  # HYPERCORE_HOME may not exist yet: report its filesystem
    try:
        usage = psutil.disk_usage(str(probe))
        free, total = int(usage.free), int(usage.total)
    except (psutil.Error, OSError):
        pass
    return HostReading(
        cpu_percent=cpu_percent, cpu_count=int(count), mem_total_bytes=int(mem.total),
        mem_available_bytes=int(mem.available), load=(load[0], load[1], load[2]),
        disk_free_bytes=free, disk_total_bytes=total,
    )


@dataclass(frozen=True)
class ThreadActivity:
    """One thread as the scheduler saw it (``/proc/PID/task/TID/schedstat`` and ``stat``):
    nanoseconds on a CPU, times put on a CPU, and whether it sleeps now (state ``S``)."""

    run_ns: int
    slices: int
    sleeping: bool


def thread_activity(pid: int, tids: Iterable[int]) -> list[ThreadActivity]:
    """The activity of threads ``tids`` of process ``pid`` (a few small procfs reads, tens
    of microseconds); :class:`ProcessGone` when one is gone, :class:`OperationFailed`
    when procfs cannot be read."""
    out = []
    for tid in tids:
        base = Path(f"/proc/{pid}/task/{tid}")
        try:
            run_ns, _wait, slices = (base / "schedstat").read_text().split()[:3]
            state = (base / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            raise ProcessGone(f"thread {tid} of process {pid} is gone") from None
        except (OSError, ValueError, IndexError) as exc:
            raise OperationFailed(f"cannot read thread {tid} of process {pid}: {exc}"
                                  ) from None
        try:
            out.append(ThreadActivity(int(run_ns), int(slices), state == "S"))
        except ValueError:
            raise OperationFailed(f"unreadable schedstat of thread {tid} of process {pid}"
                                  ) from None
    return out
