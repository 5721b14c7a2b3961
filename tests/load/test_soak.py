"""Load soak: 50 running VMs watched by the real dashboard for 10 minutes.

50 lightweight VMs (as ``scripts/bench_dashboard.py`` makes them: 32 MB, 1 vCPU, a
1 MiB qcow2 disk, no network, no shared folder, no kernel: SeaBIOS finds nothing to boot
and the vCPU idles) run under TCG. The real dashboard (``HypercoreApp`` with the real
``LiveBackend``, headless, 120x36) is open for 10 minutes: a 60 s warm-up, then
``HYPERCORE_SOAK_SECONDS`` (540 by default, what CI runs) measured, while things keep
happening: the selection
moves through the list every second, the tabs change, VMs are paused and resumed (QMP
STOP/RESUME events, state changes, notifications), and twice a QEMU is killed with
SIGKILL and booted again from the dashboard.

Measured all along: a 25 ms event-loop heartbeat (UI stalls), the age of the last
list/host-line repaint, every message pump's queue length (Textual message hook), every
VM's QMP event queues (4 times a second), and each VM's poll times (the monitor's
notices). Every 10 s: RSS, asyncio tasks, open fds, threads, history series lengths,
event-log lines. Run with ``-s`` to see the figures.
"""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import statistics
import sys
import threading
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psutil
import pytest
from textual._context import active_message_pump
from textual.message import Message
from textual.pilot import Pilot

from hypercore_tui.adapters.qmp import EVENT_QUEUE_MAX
from hypercore_tui.core.models import VmState
from hypercore_tui.services import boot, create
from hypercore_tui.services import monitor as monitor_service
from hypercore_tui.services.context import Context
from hypercore_tui.services.monitor import Monitor
from hypercore_tui.ui.app import HypercoreApp
from hypercore_tui.ui.backend import LiveBackend
from hypercore_tui.ui.messages import MonitorUpdate
from hypercore_tui.ui.screens.dashboard import ROW_FLUSH

from ..conftest import HcEnv
from ..heartbeat import Heartbeat, Histogram

#: Measured after the warm-up: with it, the dashboard is open for 10 minutes.
SOAK_SECONDS = float(os.environ.get("HYPERCORE_SOAK_SECONDS", "540"))
#: HYPERCORE_SOAK_DIAG=types: also print the object types whose counts grew (gc, two
#: pauses); =alloc: the allocation sites that grew (tracemalloc: several times slower, the
#: other figures are then meaningless). HYPERCORE_STALL_STACKS=MS prints where the loop's
#: thread was during stalls (tests/heartbeat.py).
DIAG = set(os.environ.get("HYPERCORE_SOAK_DIAG", "").split(","))
VM_COUNT = 50
#: Start-up: 50 QMP attaches, the first probes of the (absent) guest agents, which back
#: off to once a minute, Textual's first layouts. The assertions start after it.
WARM_UP = 60.0
SAMPLE_EVERY = 10.0
SIZE = (120, 36)

# -- bounds (generous: the machine has 2 cores shared with other test runs) -----------
#: Everything that grows with time is bounded. The event log (1000 lines, ~8 MiB when full:
#: each wrapped line is a Strip with its caches) is filled to its bound during the warm-up,
#: so the baseline includes it. What still fills during the soak: the history series
#: (50 VMs x 6 series x at most 300 samples; ~40 B each, ~1.2 MiB over 10 minutes at one
#: sample per 5 s) and Textual's LRU caches (e.g. 1024 style caches of removed widgets, a
#: few MiB, full after a few minutes). Measured: +6.4 MiB over 10 minutes, with the Python
#: heap flat over the second half. The Footer leak fixed here grew it by ~5 MiB a minute;
#: a leak of 1 KiB per poll would add ~6.5 MiB over the 10 minutes (~11 polls a second).
RSS_GROWTH_MAX = 12 * 2**20
#: Over the second half of the soak, when the caches are full and only the series still
#: fill (~0.6 MiB): catches a leak of ~1.5 KiB per poll.
RSS_LATE_GROWTH_MAX = 4 * 2**20
#: Tasks/fds/threads above their warm-up level at any sample (worker threads of an
#: action, a VM being re-attached) and at the end, once everything settled.
TRANSIENT_SLACK = {"tasks": 40, "fds": 24, "threads": 12}
FINAL_SLACK = {"tasks": 4, "fds": 4, "threads": 8}
#: Polls land on a 1 s grid (up to 0.5 s either way) and the machine is shared.
POLL_P95_LATE_MAX = 1.0
#: "Starved": a VM not sampled within 2x its interval plus this.
STARVE_SLACK = 2.0
#: The loop's longest stall caused by this process (tests/heartbeat.py: not counting the
#: time the machine left the loop thread queued for a CPU). The goal is 100 ms; with 50
#: rows, a full repaint of the screen (a tab, a toast) costs Textual 100-200 ms of CPU
#: here. A blocking call (a synchronous QMP round trip, a sleep) fails it.
UI_STALL_MAX = 0.5
#: Including the machine's queueing: only a sanity bound (a hung loop).
UI_LATE_MAX = 2.0
#: Textual's queues are unbounded: the app must keep them short (samples coalesce into
#: one message; an event burst of 50 VMs is a few hundred messages at most).
MESSAGE_QUEUE_MAX = 500
#: The list and host line are repainted every ROW_FLUSH (1 s).
FLUSH_AGE_MAX = ROW_FLUSH + 2.0
CRASH_SHOWN_MAX = 2.0

pytestmark = [pytest.mark.qemu, pytest.mark.load,
              pytest.mark.timeout(int(WARM_UP + SOAK_SECONDS + 900))]


def log(text: str) -> None:
    print(f"soak {time.strftime('%H:%M:%S')}: {text}", flush=True)


# -- VMs -----------------------------------------------------------------------------------


async def make_vms(ctx: Context, count: int) -> list[str]:
    """Like scripts/bench_dashboard.py: 32 MB, 1 vCPU, 1 MiB disk, no net/share/kernel."""
    gate = asyncio.Semaphore(4)
    names = [f"s{index:02d}" for index in range(count)]

    async def one(name: str) -> None:
        await asyncio.to_thread(create.create_vm, ctx, create.CreateRequest(
            name=name, ram_mb=32, cpus=1, disk_size="1M", net="none", shared=False))
        async with gate:
            await boot.boot_vm(ctx, name)

    await asyncio.gather(*(one(name) for name in names))
    return names


def qemu_pid(ctx: Context, name: str) -> int:
    return int(ctx.vm_paths(name).pidfile.read_text().strip())


# -- what is measured -------------------------------------------------------------------------


@dataclass
class PollWatch:
    """Each VM's samples, from the monitor's notices: gaps against the interval the
    monitor had chosen for the VM when it took the previous sample."""

    monitor: Monitor
    last: dict[str, tuple[float, float]] = field(default_factory=dict)  # name: (t, interval)
    late: Histogram = field(default_factory=lambda: Histogram(0.01, 60.0))
    starved: list[str] = field(default_factory=list)
    excluded: dict[str, tuple[float, float]] = field(default_factory=dict)  # kill windows
    counting: bool = False

    def wrap(self, sink: Callable[[Any], None]) -> Callable[[Any], None]:
        def recording(notice: Any) -> None:
            if isinstance(notice, monitor_service.VmSampled):
                self.sampled(notice.name)
            sink(notice)
        return recording

    def _excluded(self, name: str, start: float, end: float) -> bool:
        window = self.excluded.get(name)
        return window is not None and start <= window[1] and end >= window[0]

    def sampled(self, name: str) -> None:
        now = time.monotonic()
        previous = self.last.get(name)
        self.last[name] = (now, self.monitor.interval_for(name))
        if previous is None or not self.counting or self._excluded(name, previous[0], now):
            return
        gap, interval = now - previous[0], previous[1]
        self.late.add(gap - interval)
        if gap > 2 * interval + STARVE_SLACK:
            self.starved.append(f"{name}: {gap:.1f}s between samples (interval {interval:g}s)")

    def check_silent(self, names: list[str]) -> None:
        """A VM no longer sampled at all shows no gap: look for it too."""
        now = time.monotonic()
        for name in names:
            last = self.last.get(name)
            if last is None or self._excluded(name, last[0], now):
                continue
            if now - last[0] > 2 * last[1] + STARVE_SLACK:
                self.starved.append(f"{name}: not sampled for {now - last[0]:.1f}s "
                                    f"(interval {last[1]:g}s)")


@dataclass
class QueueWatch:
    """The longest queue seen: Textual pumps (at every message) and QMP sessions."""

    message_max: int = 0
    message_max_pump: str = ""
    messages: int = 0
    qmp_events_max: int = 0
    qmp_listener_max: int = 0
    qmp_pending_max: int = 0
    default_listener_max: int = 0

    kinds: dict[str, int] = field(default_factory=dict)

    def hook(self, message: Message) -> None:
        self.messages += 1
        kind = type(message).__name__
        if isinstance(message, MonitorUpdate):
            kind = f"{kind}({type(message.notice).__name__})"
        self.kinds[kind] = self.kinds.get(kind, 0) + 1
        try:
            pump = active_message_pump.get()
        except LookupError:
            return
        size = pump.message_queue_size
        if size > self.message_max:
            self.message_max, self.message_max_pump = size, type(pump).__name__

    def sample_qmp(self, monitor: Monitor) -> None:
        for watcher in list(monitor._watchers.values()):  # noqa: SLF001 - diagnostics
            session = watcher._session  # noqa: SLF001
            if session is None:
                continue
            self.qmp_events_max = max(self.qmp_events_max, session._events.qsize())
            listener = session._listener
            if listener is not None:
                self.qmp_listener_max = max(self.qmp_listener_max, listener._queue.qsize())
            client = session._client
            self.qmp_pending_max = max(self.qmp_pending_max, len(client._pending))
            self.default_listener_max = max(self.default_listener_max,
                                            client.events._queue.qsize())


@dataclass
class Sample:
    t: float
    rss: int
    tasks: int
    fds: int
    threads: int
    history_max: int
    history_bound: int
    log_lines: int
    log_bound: int
    app_queue: int
    blocks: int  # Python objects' memory blocks (sys.getallocatedblocks)

    def line(self, start: float) -> str:
        return (f"t={self.t - start:5.0f}s rss={self.rss / 2**20:6.1f}MiB tasks={self.tasks} "
                f"fds={self.fds} threads={self.threads} history={self.history_max}/"
                f"{self.history_bound} log={self.log_lines}/{self.log_bound} "
                f"appq={self.app_queue} blocks={self.blocks}")


def take_sample(app: HypercoreApp, process: psutil.Process) -> Sample:
    views = app.monitor.views.values()
    series = [getattr(v.history, n) for v in views for n in
              ("cpu", "mem_used", "disk_rd_bps", "disk_wr_bps", "net_rx_bps", "net_tx_bps")]
    return Sample(
        t=time.monotonic(), rss=process.memory_info().rss, tasks=len(asyncio.all_tasks()),
        fds=len(os.listdir("/proc/self/fd")), threads=threading.active_count(),
        history_max=max((len(s) for s in series), default=0),
        history_bound=min((s.maxlen for s in series), default=0),
        log_lines=len(app.dashboard.event_log.lines),
        log_bound=app.dashboard.event_log.max_lines or 0,
        app_queue=app.message_queue_size, blocks=sys.getallocatedblocks())


# -- what happens meanwhile --------------------------------------------------------------------


@dataclass
class Activity:
    app: HypercoreApp
    pilot: Pilot[None]
    ctx: Context
    names: list[str]
    polls: PollWatch
    crash_shown: list[float] = field(default_factory=list)
    reboots: list[float] = field(default_factory=list)
    presses: int = 0
    pauses: int = 0

    async def press(self, *keys: str) -> None:
        await self.pilot.press(*keys)
        self.presses += len(keys)

    async def wait_state(self, name: str, states: tuple[VmState, ...], timeout: float
                         ) -> float:
        started = time.monotonic()
        while (view := self.app.monitor.view(name)) is None or view.state not in states:
            assert time.monotonic() - started < timeout, \
                f"{name} not {states} after {timeout}s (is {view and view.state})"
            await asyncio.sleep(0.01)
        return time.monotonic() - started

    async def kill_and_reboot(self, name: str) -> None:
        """SIGKILL a QEMU: shown crashed (row text too) within 2 s; booted again with `b`."""
        pid = qemu_pid(self.ctx, name)
        self.polls.excluded[name] = (time.monotonic() - 0.1, float("inf"))
        killed = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        await self.wait_state(name, (VmState.CRASHED,), 10)
        while "crashed" not in self.app.dashboard.vm_list.row_text(name):
            assert time.monotonic() - killed < 10, self.app.dashboard.vm_list.row_text(name)
            await asyncio.sleep(0.01)
        shown = time.monotonic() - killed
        self.crash_shown.append(shown)
        log(f"killed {name} (pid {pid}): shown crashed after {shown * 1000:.0f} ms")
        await self.press("1")
        self.app.dashboard.select_vm(name)
        await self.pilot.pause()
        started = time.monotonic()
        await self.press("b")
        await self.wait_state(name, (VmState.RUNNING,), 60)
        self.reboots.append(time.monotonic() - started)
        # Gaps count again from the first sample after the re-attach.
        self.polls.excluded[name] = (killed - 0.1, time.monotonic() + 2 * 5.0 + 1)
        log(f"{name} booted again from the dashboard in {self.reboots[-1]:.1f}s")

    async def run(self, until: float, kills_at: list[float]) -> None:
        step, index, direction = 0, 0, 1
        paused_by_key: str | None = None
        batch: list[str] = []
        app = self.app
        kills = sorted(kills_at)
        while time.monotonic() < until:
            tick = time.monotonic()
            if kills and tick >= kills[0]:
                kills.pop(0)
                candidates = [n for n in self.names[::-7] if n != app.dashboard.selected
                              and n not in batch and n != paused_by_key]
                victim = candidates[len(self.crash_shown) % len(candidates)]
                await self.kill_and_reboot(victim)
                step += 1
                continue
            phase = step % 30
            if phase == 20:
                await self.press("2")  # snapshots: lists the VM's snapshots (QMP, worker)
            elif phase == 24:
                await self.press("3")  # events
            elif phase == 27:
                await self.press("1")  # overview (focus back on the list)
            elif phase < 20 or phase > 27:
                index += direction
                if not 0 <= index < len(self.names):
                    direction = -direction
                    index += 2 * direction
                await self.press("down" if direction > 0 else "up")
            if step % 20 == 5 and app.dashboard.selected is not None:
                view = app.monitor.view(app.dashboard.selected)
                if view is not None and view.state is VmState.RUNNING:
                    paused_by_key = app.dashboard.selected
                    await self.press("p")  # pause the selected VM
                    self.pauses += 1
            elif step % 20 == 9 and paused_by_key is not None:
                app.dashboard.select_vm(paused_by_key)
                await self.pilot.pause()
                await self.press("p")  # resume it
                paused_by_key = None
            if step % 60 == 30:  # pause five VMs in the background, resume them 15 s later
                batch = [n for n in self.names[step // 60 % 8 * 5:][:5]
                         if n != paused_by_key and n != app.dashboard.selected]
                for name in batch:
                    app.run_job(name, "pause", lambda n=name: app.backend.pause_vm(n))
                self.pauses += len(batch)
            elif step % 60 == 45:
                for name in batch:
                    app.run_job(name, "resume", lambda n=name: app.backend.resume_vm(n))
                batch = []
            step += 1
            await asyncio.sleep(max(0.0, 1.0 - (time.monotonic() - tick)))
        await self.press("1")
        for name in [*batch, *([paused_by_key] if paused_by_key else [])]:
            app.run_job(name, "resume", lambda n=name: app.backend.resume_vm(n))


async def fill_event_log(app: HypercoreApp, pilot: Pilot[None]) -> None:
    """Fill the event log to its bound (lines like the ones it shows), so that its growth
    to the bound is part of the baseline; it is shown once, so its lines are rendered."""
    log_widget = app.dashboard.event_log
    bound = log_widget.max_lines or 0
    await pilot.press("3")
    added = 0
    while len(log_widget.lines) < bound or added < bound:
        log_widget.add(f"s{added % VM_COUNT:02d}", "STATE", "running → paused (STOP event "
                       f"from QEMU, guest paused by the host; filler line {added})")
        added += 1
        if added % 50 == 0:
            await pilot.pause()
    await pilot.press("1")
    await pilot.pause()
    log(f"event log filled to {len(log_widget.lines)}/{bound} lines ({added} entries)")


# -- diagnostics (HYPERCORE_SOAK_DIAG=1) ------------------------------------------------------


def type_counts() -> dict[str, int]:
    gc.collect()
    counts: dict[str, int] = {}
    for obj in gc.get_objects():
        kind = type(obj)
        key = f"{kind.__module__}.{kind.__qualname__}"
        counts[key] = counts.get(key, 0) + 1
    return counts


def type_report(before: dict[str, int], after: dict[str, int]) -> None:
    grown = sorted(((after.get(k, 0) - before.get(k, 0), k) for k in after), reverse=True)
    for diff, key in grown[:25]:
        log(f"type {key}: {before.get(key, 0)} -> {after[key]} ({diff:+d})")


def allocation_report(before: tracemalloc.Snapshot, after: tracemalloc.Snapshot) -> None:
    for stat in after.compare_to(before, "lineno")[:20]:
        log(f"alloc {stat}")
    for stat in after.compare_to(before, "traceback")[:4]:
        log(f"alloc traceback {stat.size_diff / 1024:+.0f} KiB {stat.count_diff:+d}:")
        for line in stat.traceback.format()[-16:]:
            log(f"    {line}")


# -- the test --------------------------------------------------------------------------------


def spread(values: list[int]) -> tuple[int, int]:
    return min(values), max(values)


async def test_fifty_vms_ten_minutes(hc_env: HcEnv) -> None:
    """1 soak of HYPERCORE_SOAK_SECONDS (540) after the warm-up, 50 running VMs: RSS growth,
    queue bounds (Textual pumps, QMP event queues, history series, event log), tasks/fds/threads,
    poll lateness and starvation, UI stalls, repaint age, and 2 SIGKILLed QEMUs shown
    crashed within 2 s and booted again from the dashboard."""
    ctx = hc_env.ctx
    if "alloc" in DIAG:
        tracemalloc.start(16)
    started = time.monotonic()
    names = await make_vms(ctx, VM_COUNT)
    log(f"{VM_COUNT} VMs created and booted in {time.monotonic() - started:.0f}s")

    app = HypercoreApp(LiveBackend(ctx), environ=hc_env.environ)
    monitor = app.monitor
    assert isinstance(monitor, Monitor)
    polls = PollWatch(monitor)
    monitor.sink = polls.wrap(monitor.sink)
    queues = QueueWatch()
    process = psutil.Process()
    samples: list[Sample] = []
    flush_age = Histogram(0.01, 60.0)

    async with app.run_test(size=SIZE, notifications=True, message_hook=queues.hook) as pilot, \
            Heartbeat(0.025) as beat:

        def check_flush() -> None:
            if app.dashboard._last_flush and polls.counting:  # noqa: SLF001
                flush_age.add(time.monotonic() - app.dashboard._last_flush)  # noqa: SLF001

        beat.on_tick.append(check_flush)

        async def watch_qmp() -> None:
            while True:
                queues.sample_qmp(monitor)
                await asyncio.sleep(0.25)

        async def sampler(until: float) -> None:
            while time.monotonic() < until:
                sample = take_sample(app, process)
                samples.append(sample)
                polls.check_silent([n for n in names if n not in polls.excluded])
                log(sample.line(soak_start))
                await asyncio.sleep(SAMPLE_EVERY)

        qmp_task = asyncio.create_task(watch_qmp())
        soak_start = time.monotonic()
        activity = Activity(app, pilot, ctx, names, polls)
        # Warm-up: the dashboard attaches to every VM; the selection already moves.
        await activity.run(soak_start + WARM_UP, [])
        await fill_event_log(app, pilot)
        await pilot.pause()
        warm = take_sample(app, process)
        warm_stall = beat.window()
        traced = tracemalloc.take_snapshot() if "alloc" in DIAG else None
        types = type_counts() if "types" in DIAG else None
        log(f"warm-up done: {warm.line(soak_start)}; warm-up loop: {warm_stall.summary()}")
        deadline = time.monotonic() + 30  # (the last resume jobs of the warm-up)
        while not all(v.state is VmState.RUNNING and v.watch == "events"
                      for v in monitor.views.values()):
            assert time.monotonic() < deadline, {
                n: (v.state.value, v.watch) for n, v in monitor.views.items()
                if v.state is not VmState.RUNNING or v.watch != "events"}
            await asyncio.sleep(0.1)
        polls.counting = True
        queues.message_max = 0
        end = time.monotonic() + SOAK_SECONDS
        kills = [time.monotonic() + SOAK_SECONDS * f for f in (1 / 3, 2 / 3)]
        sampling = asyncio.create_task(sampler(end))
        await activity.run(end, kills)
        await sampling
        # Let the last jobs finish and the QMP sessions settle before the final count.
        await asyncio.sleep(8)
        final = take_sample(app, process)
        polls.check_silent(names)
        soak = beat.window()
        qmp_task.cancel()
        log(f"messages by type: {sorted(queues.kinds.items(), key=lambda kv: -kv[1])[:12]}")
        if traced is not None:
            allocation_report(traced, tracemalloc.take_snapshot())
        if types is not None:
            type_report(types, type_counts())
        # The monitor stops first: a notice handled while run_test() removes the widgets
        # would find none (a real exit ends the message loop before that).
        app.workers.cancel_group(app, "monitor")
        await pilot.pause()
        paused = [n for n, v in monitor.views.items() if v.state is not VmState.RUNNING]

    after = samples + [final]
    rss_growth = final.rss - warm.rss
    second_half = [s for s in after if s.t >= warm.t + SOAK_SECONDS / 2]
    rss_late_growth = final.rss - second_half[0].rss
    late = polls.late
    log("== figures")
    log(f"VMs {VM_COUNT}, soak {SOAK_SECONDS:.0f}s after {WARM_UP:.0f}s warm-up, "
        f"{activity.presses} key presses, {activity.pauses} pauses, "
        f"{queues.messages} Textual messages")
    log(f"Python memory blocks warm-up {warm.blocks}, end {final.blocks}")
    log(f"RSS warm-up {warm.rss / 2**20:.1f} MiB, end {final.rss / 2**20:.1f} MiB, growth "
        f"{rss_growth / 2**20:+.1f} MiB (bound {RSS_GROWTH_MAX / 2**20:.0f}), over the second "
        f"half {rss_late_growth / 2**20:+.1f} MiB (bound {RSS_LATE_GROWTH_MAX / 2**20:.0f}); "
        f"min/max after "
        f"warm-up {min(s.rss for s in after) / 2**20:.1f}/{max(s.rss for s in after) / 2**20:.1f}"
        f" MiB")
    log(f"tasks warm-up {warm.tasks} range {spread([s.tasks for s in after])} end "
        f"{final.tasks}; fds {warm.fds} {spread([s.fds for s in after])} {final.fds}; threads "
        f"{warm.threads} {spread([s.threads for s in after])} {final.threads}")
    log(f"queues: Textual max {queues.message_max} ({queues.message_max_pump}, bound "
        f"{MESSAGE_QUEUE_MAX}); QMP events max {queues.qmp_events_max}, listener "
        f"{queues.qmp_listener_max} (bound {EVENT_QUEUE_MAX}), pending replies "
        f"{queues.qmp_pending_max}, default listener {queues.default_listener_max}; history "
        f"max {max(s.history_max for s in after)}/{final.history_bound}; event log max "
        f"{max(s.log_lines for s in after)}/{final.log_bound}")
    log(f"poll lateness (gap - interval) over {late.n} gaps: p50 {late.percentile(.5):.2f}s "
        f"p95 {late.percentile(.95):.2f}s max {late.max:.2f}s; starved: {len(polls.starved)}")
    log(f"UI loop after warm-up: {soak.summary()}; repaint age p50 "
        f"{flush_age.percentile(.5):.2f}s max {flush_age.max:.2f}s")
    log("longest stalls: " + ", ".join(
        f"{s.late * 1000:.0f}ms (own {s.own * 1000:.0f}, cpu {s.cpu * 1000:.0f}) at "
        f"t={s.at - soak_start:.0f}s" for s in beat.stalls[:8]))
    log(f"crash shown after {', '.join(f'{t * 1000:.0f} ms' for t in activity.crash_shown)};"
        f" reboot from the dashboard {', '.join(f'{t:.1f}s' for t in activity.reboots)}")
    log(f"SUMMARY vms={VM_COUNT} soak={SOAK_SECONDS:.0f}s rss_warm={warm.rss / 2**20:.1f}MiB "
        f"rss_end={final.rss / 2**20:.1f}MiB rss_late={rss_late_growth / 2**20:+.1f}MiB "
        f"textual_q_max={queues.message_max} "
        f"qmp_q_max={max(queues.qmp_events_max, queues.qmp_listener_max)}/{EVENT_QUEUE_MAX} "
        f"poll_late_p50={late.percentile(.5):.2f}s p95={late.percentile(.95):.2f}s "
        f"max={late.max:.2f}s ui_stall_own_max={soak.max_own_stall * 1000:.0f}ms "
        f"ui_stall_max={soak.max_stall * 1000:.0f}ms "
        f"crash_shown_ms={[round(t * 1000) for t in activity.crash_shown]}")

    assert not paused, f"VMs left paused or not running: {paused}"
    assert rss_growth <= RSS_GROWTH_MAX, f"RSS grew {rss_growth / 2**20:.1f} MiB"
    assert rss_late_growth <= RSS_LATE_GROWTH_MAX, \
        f"RSS grew {rss_late_growth / 2**20:.1f} MiB over the second half"
    assert queues.message_max <= MESSAGE_QUEUE_MAX
    assert queues.qmp_events_max <= EVENT_QUEUE_MAX
    assert queues.qmp_listener_max <= EVENT_QUEUE_MAX
    assert queues.default_listener_max == 0  # the history-keeping listener takes nothing
    assert all(s.history_max <= s.history_bound for s in after)
    assert all(s.log_lines <= s.log_bound for s in after)
    for what in ("tasks", "fds", "threads"):
        base = getattr(warm, what)
        worst = max(getattr(s, what) for s in after)
        assert worst <= base + TRANSIENT_SLACK[what], f"{what}: {base} -> max {worst}"
        assert getattr(final, what) <= base + FINAL_SLACK[what], \
            f"{what}: {base} at warm-up, {getattr(final, what)} at the end"
    assert not polls.starved, polls.starved[:10]
    assert late.n >= VM_COUNT * SOAK_SECONDS / 5 * 0.8, f"only {late.n} polls measured"
    assert late.percentile(0.95) <= POLL_P95_LATE_MAX
    assert soak.max_own_stall <= UI_STALL_MAX, soak.summary()
    assert soak.max_stall <= UI_LATE_MAX, soak.summary()
    assert flush_age.max <= FLUSH_AGE_MAX
    assert len(activity.crash_shown) == 2
    assert max(activity.crash_shown) <= CRASH_SHOWN_MAX
    assert statistics.median(activity.reboots) < 60
