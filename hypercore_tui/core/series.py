"""Metric samples and bounded series: the pure arithmetic behind monitoring.

A :class:`VmSample` is one reading of a VM; a :class:`VmHistory` keeps the last
few minutes of them in fixed-size deques, so memory never grows with uptime.
Rates (CPU %, bytes/s) are computed here from two raw counter readings, so the
same code serves the dashboard and ``hypercore stats``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field

#: QEMU reports a balloon statistic the guest did not provide as 2**64-1.
UNREPORTED = 2**64 - 1
#: History kept per VM.
HISTORY_SECONDS = 300


def reported(value: object) -> int | None:
    """A balloon statistic as an int, or None when the guest did not report it."""
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    if value < 0 or value >= UNREPORTED:
        return None
    return value


def rate(previous: float | None, current: float | None, seconds: float) -> float | None:
    """Per-second rate of a monotonic counter; None when unknown or when it went back
    (a counter reset: QEMU restarted, the guest's interface came up again)."""
    if previous is None or current is None or seconds <= 0:
        return None
    delta = current - previous
    if delta < 0:
        return None
    return delta / seconds


def cpu_percent(previous_cpu_s: float | None, current_cpu_s: float | None,
                seconds: float) -> float | None:
    """CPU use in percent of one core between two readings of consumed CPU seconds."""
    per_second = rate(previous_cpu_s, current_cpu_s, seconds)
    return None if per_second is None else per_second * 100.0


class Series:
    """The last ``maxlen`` values of one metric (None = no value at that time)."""

    __slots__ = ("_values",)

    def __init__(self, maxlen: int) -> None:
        if maxlen <= 0:
            raise ValueError("maxlen must be positive")
        self._values: deque[float | None] = deque(maxlen=maxlen)

    def append(self, value: float | None) -> None:
        self._values.append(value)

    def __len__(self) -> int:
        return len(self._values)

    def __iter__(self) -> Iterator[float | None]:
        return iter(self._values)

    @property
    def maxlen(self) -> int:
        maxlen = self._values.maxlen
        assert maxlen is not None
        return maxlen

    def last(self, count: int) -> list[float]:
        """A new list of the last ``count`` values, unknown ones as 0.0 (for drawing)."""
        if count <= 0:
            return []
        values = list(self._values)[-count:]
        return [0.0 if v is None else float(v) for v in values]

    def peak(self, count: int | None = None) -> float | None:
        """Largest known value among the last ``count`` (all when None)."""
        values = list(self._values)
        if count is not None:
            values = values[-count:] if count > 0 else []
        known = [v for v in values if v is not None]
        return max(known) if known else None


@dataclass(frozen=True)
class VmSample:
    """One reading of a running VM. Counters are cumulative; ``*_bps`` are rates."""

    timestamp: float  # monotonic seconds
    cpu_percent: float | None = None  # QEMU process, % of one core
    vcpu_percent: tuple[float | None, ...] = ()  # per vCPU thread, % of one core
    rss_bytes: int | None = None
    guest_mem_total_bytes: int | None = None
    guest_mem_used_bytes: int | None = None
    guest_mem_available_bytes: int | None = None
    disk_rd_bytes: int | None = None
    disk_wr_bytes: int | None = None
    disk_rd_bps: float | None = None
    disk_wr_bps: float | None = None
    net_rx_bytes: int | None = None
    net_tx_bytes: int | None = None
    net_rx_bps: float | None = None
    net_tx_bps: float | None = None
    uptime_seconds: float | None = None

    def as_json(self) -> dict[str, object]:
        """The ``hypercore stats --json`` fields (DESIGN §3), None as null."""
        return {
            "cpu_percent": _round(self.cpu_percent),
            "vcpu_percent": [_round(v) for v in self.vcpu_percent],
            "rss_bytes": self.rss_bytes,
            "guest_mem_total_bytes": self.guest_mem_total_bytes,
            "guest_mem_used_bytes": self.guest_mem_used_bytes,
            "guest_mem_available_bytes": self.guest_mem_available_bytes,
            "disk_rd_bytes": self.disk_rd_bytes,
            "disk_wr_bytes": self.disk_wr_bytes,
            "disk_rd_bps": _round(self.disk_rd_bps),
            "disk_wr_bps": _round(self.disk_wr_bps),
            "net_rx_bytes": self.net_rx_bytes,
            "net_tx_bytes": self.net_tx_bytes,
            "net_rx_bps": _round(self.net_rx_bps),
            "net_tx_bps": _round(self.net_tx_bps),
            "uptime_seconds": _round(self.uptime_seconds),
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def guest_memory(stats: Mapping[str, object]) -> tuple[int | None, int | None, int | None]:
    """(total, used, available) bytes from a balloon ``guest-stats`` ``stats`` object.

    Used is total minus available (what the guest could still hand out) when the
    guest reports available memory, else total minus free.
    """
    total = reported(stats.get("stat-total-memory"))
    available = reported(stats.get("stat-available-memory"))
    free = reported(stats.get("stat-free-memory"))
    used: int | None = None
    if total is not None:
        spare = available if available is not None else free
        if spare is not None and spare <= total:
            used = total - spare
    return total, used, available


@dataclass(frozen=True)
class RawCounters:
    """What one poll read, before rates: the input of :func:`build_sample`."""

    timestamp: float
    cpu_seconds: float | None = None
    thread_cpu_seconds: tuple[float | None, ...] = ()  # per vCPU, in cpu-index order
    rss_bytes: int | None = None
    disk_rd_bytes: int | None = None
    disk_wr_bytes: int | None = None
    guest_memory: tuple[int | None, int | None, int | None] = (None, None, None)
    net_rx_bytes: int | None = None
    net_tx_bytes: int | None = None
    # Interface counters come from the guest agent every few seconds, so their rates
    # are computed when the agent answers and carried here as they are.
    net_rx_bps: float | None = None
    net_tx_bps: float | None = None
    uptime_seconds: float | None = None


def build_sample(previous: RawCounters | None, current: RawCounters) -> VmSample:
    """A sample from this reading and the one before it (rates need two)."""
    seconds = current.timestamp - previous.timestamp if previous else 0.0
    prev = previous or RawCounters(timestamp=current.timestamp)
    vcpus: list[float | None] = []
    for index, now in enumerate(current.thread_cpu_seconds):
        before = prev.thread_cpu_seconds[index] if index < len(prev.thread_cpu_seconds) else None
        vcpus.append(cpu_percent(before, now, seconds))
    total, used, available = current.guest_memory
    return VmSample(
        timestamp=current.timestamp,
        cpu_percent=cpu_percent(prev.cpu_seconds, current.cpu_seconds, seconds),
        vcpu_percent=tuple(vcpus),
        rss_bytes=current.rss_bytes,
        guest_mem_total_bytes=total,
        guest_mem_used_bytes=used,
        guest_mem_available_bytes=available,
        disk_rd_bytes=current.disk_rd_bytes,
        disk_wr_bytes=current.disk_wr_bytes,
        disk_rd_bps=rate(prev.disk_rd_bytes, current.disk_rd_bytes, seconds),
        disk_wr_bps=rate(prev.disk_wr_bytes, current.disk_wr_bytes, seconds),
        net_rx_bytes=current.net_rx_bytes,
        net_tx_bytes=current.net_tx_bytes,
        net_rx_bps=current.net_rx_bps,
        net_tx_bps=current.net_tx_bps,
        uptime_seconds=current.uptime_seconds,
    )


@dataclass
class VmHistory:
    """The last :data:`HISTORY_SECONDS` of one VM's samples, one series per graph."""

    maxlen: int = HISTORY_SECONDS
    cpu: Series = field(init=False)
    mem_used: Series = field(init=False)
    disk_rd_bps: Series = field(init=False)
    disk_wr_bps: Series = field(init=False)
    net_rx_bps: Series = field(init=False)
    net_tx_bps: Series = field(init=False)

    def __post_init__(self) -> None:
        for name in ("cpu", "mem_used", "disk_rd_bps", "disk_wr_bps", "net_rx_bps",
                     "net_tx_bps"):
            setattr(self, name, Series(self.maxlen))

    def add(self, sample: VmSample) -> None:
        self.cpu.append(sample.cpu_percent)
        # Guest view when the balloon reports it, else what the host gave the process.
        mem = sample.guest_mem_used_bytes
        self.mem_used.append(float(mem) if mem is not None else None)
        self.disk_rd_bps.append(sample.disk_rd_bps)
        self.disk_wr_bps.append(sample.disk_wr_bps)
        self.net_rx_bps.append(sample.net_rx_bps)
        self.net_tx_bps.append(sample.net_tx_bps)

    def extend(self, samples: Iterable[VmSample]) -> None:
        for sample in samples:
            self.add(sample)

    def __len__(self) -> int:
        return len(self.cpu)


def format_rate(value: float | None) -> str:
    """``1536.0`` -> ``1.5 KiB/s``; None -> ``—``."""
    if value is None:
        return "—"
    size = float(value)
    for unit in ("B/s", "KiB/s", "MiB/s", "GiB/s"):
        if abs(size) < 1024 or unit == "GiB/s":
            return f"{int(size)} {unit}" if unit == "B/s" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def format_percent(value: float | None) -> str:
    return "—" if value is None else f"{value:.0f}%"


def format_duration(seconds: float | None) -> str:
    """``93784`` -> ``1d 2h``; ``3725`` -> ``1h 2m``; ``65`` -> ``1m 5s``."""
    if seconds is None or seconds < 0:
        return "—"
    total = int(seconds)
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    if minutes:
        return f"{minutes}m {secs}s"
    return f"{secs}s"
