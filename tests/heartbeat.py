"""An event-loop heartbeat: a short timer that measures its own lateness.

The dashboard runs its monitor, its message handlers and its rendering on one asyncio
loop. A task that sleeps ``period`` seconds and notes how late it wakes up sees every
stretch during which that loop could not run anything else: a UI stall (a key press
would have waited as long). Each tick also reads the loop thread's scheduler statistics
(``/proc/thread-self/schedstat``): the time it spent on a CPU, and the time it was ready
to run but waiting for one (the run queue). A stall is the tick's lateness; the part of
it this process is answerable for (``own``) excludes the run-queue wait: the machine
being busy with other processes. A blocking call in the loop (a sleep, a synchronous
socket read) or our own threads holding the GIL still count, since the thread is then
asleep, not queued. Figures are kept in fixed-size histograms, so a long soak does not
grow the very memory it measures.

``HYPERCORE_STALL_STACKS=MS``: a thread also samples the loop thread's stack every 5 ms
while a tick is MS ms late, and the most frequent stacks are printed at the end (where
stalls come from).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path


class Histogram:
    """Counts of values in ``step``-wide buckets up to ``top`` (larger ones in the last);
    the exact maximum is kept aside."""

    def __init__(self, step: float, top: float) -> None:
        self.step = step
        self.counts = [0] * (int(top / step) + 1)
        self.n = 0
        self.max = float("-inf")
        self.min = float("inf")

    def add(self, value: float) -> None:
        index = min(len(self.counts) - 1, max(0, int(value / self.step)))
        self.counts[index] += 1
        self.n += 1
        self.max = max(self.max, value)
        self.min = min(self.min, value)

    def percentile(self, fraction: float) -> float:
        """Upper edge of the bucket holding that fraction (0.0 when empty)."""
        if not self.n:
            return 0.0
        wanted, seen = fraction * self.n, 0
        for index, count in enumerate(self.counts):
            seen += count
            if seen >= wanted and count:
                return min((index + 1) * self.step, self.max)
        return self.max


@dataclass
class Stall:
    late: float  # seconds past the timer's deadline
    cpu: float  # CPU seconds the loop's thread used during that tick
    queued: float  # seconds it was runnable but waiting for a CPU (other processes)
    at: float  # time.monotonic() when it ended

    @property
    def own(self) -> float:
        """The lateness without the run-queue wait: what this process caused."""
        return max(0.0, self.late - self.queued)


def _no_stall() -> Stall:
    return Stall(0.0, 0.0, 0.0, 0.0)


class SchedStat:
    """The calling thread's /proc schedstat: (seconds on a CPU, seconds run-queued)."""

    def __init__(self) -> None:
        self._file = open("/proc/thread-self/schedstat", "rb")  # noqa: SIM115 - kept open

    def read(self) -> tuple[float, float]:
        self._file.seek(0)
        on_cpu, queued, _ = self._file.read().split()
        return int(on_cpu) / 1e9, int(queued) / 1e9

    def close(self) -> None:
        self._file.close()


@dataclass
class Window:
    """The ticks of one stretch of time (see :meth:`Heartbeat.window`)."""

    started: float
    lates: Histogram = field(default_factory=lambda: Histogram(0.001, 5.0))
    worst: Stall = field(default_factory=_no_stall)  # by lateness
    worst_own: Stall = field(default_factory=_no_stall)  # by own lateness

    @property
    def max_stall(self) -> float:
        return self.worst.late

    @property
    def max_own_stall(self) -> float:
        return self.worst_own.own

    def add(self, tick: Stall) -> None:
        self.lates.add(tick.late)
        if tick.late > self.worst.late:
            self.worst = tick
        if tick.own > self.worst_own.own:
            self.worst_own = tick

    def summary(self) -> str:
        w, o = self.worst, self.worst_own
        return (f"{self.lates.n} ticks, lateness p50 {self.lates.percentile(.5)*1000:.0f} ms "
                f"p99 {self.lates.percentile(.99)*1000:.0f} ms; max stall {w.late*1000:.0f} ms"
                f" (loop thread on CPU {w.cpu*1000:.0f} ms, run-queued {w.queued*1000:.0f} ms"
                f"); max own stall {o.own*1000:.0f} ms (of {o.late*1000:.0f} ms, on CPU "
                f"{o.cpu*1000:.0f} ms)")


class Heartbeat:
    """``async with Heartbeat(0.025) as beat:`` ticks on the running loop until exit."""

    def __init__(self, period: float = 0.025, *, stacks: bool | None = None) -> None:
        self.period = period
        late_ms = os.environ.get("HYPERCORE_STALL_STACKS", "")
        if stacks is None:
            stacks = late_ms.isdigit()
        self.stack_sampler = StallStacks(self, int(late_ms or 60) / 1000) if stacks else None
        self.current = Window(time.monotonic())
        self.total = Window(time.monotonic())
        self.stalls: list[Stall] = []  # the 50 longest ticks over 50 ms, for the report
        self._task: asyncio.Task[None] | None = None
        self.last_tick = time.monotonic()
        #: Called on every tick (cheap checks that must run continuously).
        self.on_tick: list[Callable[[], None]] = []

    async def __aenter__(self) -> Heartbeat:
        self._task = asyncio.create_task(self._run(), name="heartbeat")
        if self.stack_sampler is not None:
            self.stack_sampler.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.stack_sampler is not None:
            self.stack_sampler.stop()
            for line in self.stack_sampler.report():
                print(line)

    def window(self) -> Window:
        """Close the current window (returned) and open a new one."""
        closed, self.current = self.current, Window(time.monotonic())
        return closed

    async def _run(self) -> None:
        sched = SchedStat()
        try:
            await self._ticks(sched)
        finally:
            sched.close()

    async def _ticks(self, sched: SchedStat) -> None:
        while True:
            started = time.monotonic()
            cpu, queued = sched.read()
            await asyncio.sleep(self.period)
            now = self.last_tick = time.monotonic()
            late = max(0.0, now - started - self.period)
            cpu_after, queued_after = sched.read()
            tick = Stall(late, cpu_after - cpu, queued_after - queued, now)
            for window in (self.current, self.total):
                window.add(tick)
            if late > 0.05:
                self.stalls.append(tick)
                self.stalls.sort(key=lambda s: -s.late)
                del self.stalls[50:]
            for callback in self.on_tick:
                callback()


class StallStacks:
    """A thread that looks at the loop thread's stack while the heartbeat is late."""

    def __init__(self, beat: Heartbeat, late: float = 0.06) -> None:
        self.beat = beat
        self.late = late
        self.loop_thread = threading.get_ident()
        self.counts: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="stall-stacks")

    def start(self) -> None:
        self.loop_thread = threading.get_ident()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(0.005):
            if time.monotonic() - self.beat.last_tick < self.beat.period + self.late:
                continue
            frame = sys._current_frames().get(self.loop_thread)
            if frame is None:
                continue
            stack = traceback.extract_stack(frame)
            key = " < ".join(f"{Path(f.filename).name}:{f.lineno}:{f.name}"
                             for f in reversed(stack[-16:]))
            self.counts[key] = self.counts.get(key, 0) + 1

    def report(self, top: int = 15) -> list[str]:
        ranked = sorted(self.counts.items(), key=lambda kv: -kv[1])[:top]
        return [f"stall stack x{count} (5 ms each): {key}" for key, count in ranked]
