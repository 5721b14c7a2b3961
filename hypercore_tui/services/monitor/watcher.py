"""One VM, watched (:class:`VmWatcher`): its QMP session, poll loop and events.

* a long-lived QMP session on the VM's *second* monitor socket (``qmp-monitor.sock``)
  with events on, so the CLI's ``qmp.sock`` stays free. Events (STOP, RESUME,
  SHUTDOWN, RESET, JOB_STATUS_CHANGE...) change the state at once; the per-second
  queries use the same session. If another dashboard already holds that socket, this
  one falls back to short sessions on ``qmp.sock`` (skipping a round when the CLI
  holds it);
* a poll loop that schedules the next poll only after the previous one ended (every
  QMP call has a timeout), so a hung QEMU never piles up requests and never delays
  another VM. The selected VM is polled every ``interval`` with per-vCPU times; the
  others every ``background_interval`` (stretched so that they take at most
  ``background_polls_per_second`` polls a second: 2 s for up to 20 VMs, 5 s for 50);
* QEMU's jobs (``query-jobs``): read on attach (so a dashboard started after another
  one died sees the jobs it left), on ``JOB_STATUS_CHANGE`` and with every poll while
  a job is not concluded. While QEMU saves RAM its monitor is silent: the job record
  the snapshot service leaves beside the VM stands in (shown as "QEMU busy");
* a VM that QEMU paused by itself after a failed disk write (``werror=enospc``: the
  host's disk is full): the reason comes from ``BLOCK_IO_ERROR`` and, on attach (a
  dashboard started later), from run state ``io-error`` + ``query-block``'s io-status;
  it is cleared when the VM runs again.

The guest agent has its own loop (:mod:`.agent`), and what a guest needs once its agent
answers (the share mounted, the clock set again) is :mod:`.upkeep`'s; what a killed
hypercore left beside the VM is dealt with by :mod:`.leftovers`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING

from hypercore_tui.adapters.process import process_alive
from hypercore_tui.adapters.procstats import ProcessGone, ProcessReader
from hypercore_tui.adapters.qmp import QmpEvent, QmpSession, qmp_session
from hypercore_tui.core.errors import Busy, HypercoreError, OperationFailed, Timeout
from hypercore_tui.core.jobs import (
    SOURCE_QEMU,
    JobInfo,
    apply_status_event,
    finished_since,
    jobs_from_qemu,
    unfinished,
)
from hypercore_tui.core.layout import VmPaths
from hypercore_tui.core.models import VmState
from hypercore_tui.core.series import RawCounters, VmHistory, VmSample, build_sample
from hypercore_tui.services import vmstate
from hypercore_tui.services.monitor.agent import AgentWatch
from hypercore_tui.services.monitor.leftovers import Leftovers
from hypercore_tui.services.monitor.liveness import LifeWatch
from hypercore_tui.services.monitor.notices import (
    VmEventSeen,
    VmJobsChanged,
    VmSampled,
    VmStateChanged,
)
from hypercore_tui.services.monitor.readings import (
    EVENT_STATES,
    GUEST_STATS_EVERY,
    QMP_TIMEOUT,
    QUIET_EVENTS,
    disk_counters,
    ensure_balloon_polling,
    event_detail,
    read_guest_memory,
    read_status,
    vcpu_threads,
)
from hypercore_tui.services.monitor.upkeep import GuestUpkeep
from hypercore_tui.services.monitor.view import AgentStatus, PauseReason, VmView
from hypercore_tui.services.records import read_job_record
from hypercore_tui.services.tasks import reap_all, wait_set

if TYPE_CHECKING:
    from hypercore_tui.services.monitor.fleet import Monitor

ATTACH_RETRY = 2.0
#: Shortest time between two samples of a VM (rates over less are noise).
MIN_SAMPLE_GAP = 0.5
#: Polls are aligned on this grid (seconds) so that they run together.
POLL_GRID = 1.0
SHARED_RETRY = 10.0
#: Seconds a closed watcher's tasks get to end.
CLOSE_GRACE = 5.0


class VmWatcher:
    """Watches one VM: its QMP session, poll loop, event pump and agent loop."""

    def __init__(self, monitor: Monitor, name: str) -> None:
        self.monitor = monitor
        self.name = name
        self.paths: VmPaths = monitor.ctx.vm_paths(name)
        self.view = VmView(name=name, history=VmHistory(monitor.settings.history_seconds))
        #: (inode, mtime) of vm.json when the view last read it (the rescan reads it again
        #: when it changes); None: not read
        self.definition_stamp: tuple[int, int] | None = None
        self.log = logging.getLogger(f"hypercore.vm.{name}")
        self.agent = AgentWatch(self)
        self.upkeep = GuestUpkeep(self)
        self.leftovers = Leftovers(self)
        self.life = LifeWatch(self)
        self._session: QmpSession | None = None
        self._pump: asyncio.Task[None] | None = None
        self._reader: ProcessReader | None = None
        self._vcpus: tuple[int, ...] = ()
        self._previous: RawCounters | None = None
        self._memory: tuple[int | None, int | None, int | None] = (None, None, None)
        self._memory_read_at = 0.0
        self._attach_after = 0.0
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._jobs_due = True  # read query-jobs at the next chance
        self._jobs_known = False  # view.jobs is what QEMU said last (not a record, not stale)
        self.polls = 0

    # -- life -----------------------------------------------------------------------

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._poll_loop(), name=f"poll {self.name}"),
                       asyncio.create_task(self.agent.run(), name=f"agent {self.name}")]

    async def close(self) -> None:
        tasks = [*self._tasks, *self.leftovers.take_task(), *self.upkeep.take_task()]
        # (cancelled again every second, and waited for a bounded time: a task that
        # swallowed one cancellation must not hold up the rescan that drops the VM)
        left = await reap_all(tasks, grace=CLOSE_GRACE)
        if left:
            self.log.warning("%d task(s) still running after close: %r", len(left), left)
        self._tasks = []
        await self._detach()

    def wake(self) -> None:
        self._wake.set()

    def wake_agent(self) -> None:
        self.agent.wake()

    # -- state ----------------------------------------------------------------------

    def set_state(self, new: VmState, reason: str) -> None:
        old = self.view.state
        if new is old:
            return
        self.view.state = new
        if new is not VmState.PAUSED:
            self.view.pause_reason = None  # running again (or gone): the reason is over
        self.log.info("state %s -> %s (%s)", old.value, new.value, reason)
        self.monitor.emit(VmStateChanged(self.name, old, new, reason))
        if new is not VmState.RUNNING:
            self.view.agent = AgentStatus.UNKNOWN  # a paused guest cannot answer: not "no"
        if new is VmState.PAUSED:
            self.upkeep.vm_paused()
        if not new.is_active:
            self.upkeep.guest_restarted()  # (the next boot)
            self.view.sample = None
            self.set_jobs(())
            self.set_share_note(None)
            self._jobs_due, self._jobs_known = True, False
        if new is VmState.RUNNING and old is not VmState.RUNNING:
            self.wake_agent()

    def set_pause_reason(self, reason: PauseReason | None, detail: str = "") -> None:
        """Why QEMU paused the VM; a new reason gets one line in the event log (QEMU sends
        ``BLOCK_IO_ERROR`` for every failed request). Set before the state changes to
        paused, so that the state change shows it."""
        if reason == self.view.pause_reason:
            return
        self.view.pause_reason = reason
        if reason is not None:
            line = reason.describe() + (f" ({detail})" if detail else "")
            self.log.warning("%s", line)
            self.monitor.emit(VmEventSeen(self.name, "IO_ERROR", line, time.time()))

    def set_share_note(self, note: str | None) -> None:
        if note != self.view.share_note:
            self.view.share_note = note
            self.monitor.emit(VmJobsChanged(self.name))

    def check_liveness(self) -> None:
        """Pidfile + process check: a dead QEMU is noticed within a second.

        While the monitor session is up QEMU is alive (its death closes the socket, and
        the session notices at once), so the check is skipped then.
        """
        if self._session is not None and self._session.connected:
            return
        state, pid = vmstate.process_state(self.paths)
        current = self.view.state
        if state is VmState.RUNNING:
            self.view.pid = pid
            if not current.is_active:
                self.set_state(VmState.STARTING, "QEMU process found")
                self.wake()
            elif self._session is not None:
                self.wake()  # monitor connection lost while QEMU lives: re-attach
            return
        if current is not state:
            if state is VmState.CRASHED:
                reason = f"QEMU (pid {pid}) died without a clean stop"
            else:
                reason = "QEMU exited"
            self.view.pid = pid if state is VmState.CRASHED else None
            self.set_state(state, reason)
            self.wake()  # the poller drops the session and the process handle

    # -- jobs -----------------------------------------------------------------------

    def set_jobs(self, jobs: tuple[JobInfo, ...]) -> None:
        old = self.view.jobs
        if jobs == old:
            return
        self.view.jobs = jobs
        finished = finished_since(old, jobs)
        self.log.info("jobs: %s", "; ".join(j.describe() for j in jobs) or "none")
        self.monitor.emit(VmJobsChanged(self.name, finished))
        if finished:
            self.leftovers.recover_now()

    def no_job_running(self) -> bool:
        """QEMU said (last time it was asked, or by its events since) that no job runs."""
        return self._jobs_known and not unfinished(self.view.jobs)

    async def _read_jobs(self, qmp: QmpSession) -> None:
        self.set_jobs(jobs_from_qemu(await qmp.execute("query-jobs", timeout=QMP_TIMEOUT)))
        self._jobs_due, self._jobs_known = False, True

    def _jobs_wanted(self) -> bool:
        return self._jobs_due or unfinished(self.view.jobs)

    def _jobs_from_record(self, *, qemu_silent: bool) -> None:
        """QEMU cannot say (its monitor is silent, or another process holds it): the job
        a hypercore process recorded stands in for ``query-jobs``. With the monitor merely
        held by someone else, a record whose writer died is not trusted."""
        self._jobs_known = False
        record = read_job_record(self.paths)
        known = tuple(j for j in self.view.jobs if j.source == SOURCE_QEMU)
        if (record is None or record.finished
                or (not qemu_silent and not process_alive(record.pid))):
            self.set_jobs(known)
            return
        if any(j.id == record.job_id and not j.finished for j in known):
            self.set_jobs(known)  # the events already tell
            return
        self.set_jobs((*(j for j in known if j.id != record.job_id), record.as_job()))
        self._jobs_due = True

    def _silent(self, exc: HypercoreError) -> OperationFailed:
        """The error for QEMU not answering: busy with a job when one is known."""
        job = next((j for j in self.view.jobs if not j.finished), None)
        if isinstance(exc, Timeout) and job is not None:
            return OperationFailed(f"{self.name}: QEMU busy with {job.type}: its monitor "
                                   "answers when the job ends")
        return OperationFailed(f"{self.name}: cannot watch QEMU: {exc}")

    # -- polling --------------------------------------------------------------------

    async def _poll_loop(self) -> None:
        while True:
            self._wake.clear()
            try:
                await self.poll_once()
            except asyncio.CancelledError:
                raise
            except HypercoreError as exc:
                self.view.error = str(exc)
                self.log.debug("poll: %s", exc)
            except Exception:  # noqa: BLE001 - a poller must never die
                self.log.exception("poll failed")
            await wait_set(self._wake, self._next_delay())

    def _next_delay(self) -> float:
        """Seconds to the next poll: ``interval`` from now, moved to the nearest whole
        ``POLL_GRID`` second, so the polls of all VMs fall on the same ticks and share
        the event loop's wake-ups (each VM still waits only on its own poll)."""
        interval = self.monitor.interval_for(self.name)
        now = time.monotonic()
        aligned = round((now + interval) / POLL_GRID) * POLL_GRID
        return max(aligned - now, MIN_SAMPLE_GAP)

    async def poll_once(self) -> VmSample | None:
        """Read the VM once; returns the new sample (None when it is not running)."""
        state: VmState
        pid: int | None
        if self._session is not None and self._session.connected and self._reader is not None:
            state, pid = VmState.RUNNING, self._reader.pid  # alive: its monitor socket is open
        else:
            state, pid = vmstate.process_state(self.paths)
        if state is not VmState.RUNNING or pid is None:
            await self._detach()
            self.view.pid = pid if state is VmState.CRASHED else None
            if self.view.state is not state:
                self.set_state(state, "QEMU exited" if state is VmState.STOPPED else
                               f"QEMU (pid {pid}) died without a clean stop")
            return None
        self.view.pid = pid
        self.leftovers.check()
        if self._reader is None or self._reader.pid != pid:
            self._reader = ProcessReader(pid)
            self._previous = None
            self.agent.forget_net()
            self.life.forget()
        session = await self._ensure_session()
        previous = self._previous
        if previous is not None and time.monotonic() - previous.timestamp < MIN_SAMPLE_GAP:
            # Woken early (focus, an action): CPU times tick in 10 ms steps, so rates
            # over a few milliseconds are noise. State came from events; keep the sample.
            return self.view.sample
        focused = self.monitor.is_focused(self.name)
        try:
            reading = self._reader.read(threads=self._vcpus if focused else None)
        except ProcessGone:
            self.check_liveness()
            return None
        disk: tuple[int | None, int | None] = (None, None)
        if session is not None:
            disk = await self._query(session)
        else:
            disk = await self._query_shared()
        net_bytes, net_rates = self.agent.net_bytes, self.agent.net_rates
        counters = RawCounters(
            timestamp=reading.timestamp,
            cpu_seconds=reading.cpu_seconds,
            thread_cpu_seconds=tuple(reading.thread_cpu_seconds.get(t) for t in self._vcpus)
            if focused else (),
            rss_bytes=reading.rss_bytes,
            disk_rd_bytes=disk[0], disk_wr_bytes=disk[1],
            guest_memory=self._memory,
            net_rx_bytes=net_bytes[0], net_tx_bytes=net_bytes[1],
            net_rx_bps=net_rates[0], net_tx_bps=net_rates[1],
            uptime_seconds=reading.uptime_seconds,
        )
        sample = build_sample(self._previous, counters)
        self._previous = counters
        self.view.sample = sample
        self.view.history.add(sample)
        self.view.error = None
        self.polls += 1
        self.monitor.emit(VmSampled(self.name))
        # After the sample is in the view: a verdict never shows beside an older uptime.
        self.life.check(reading)
        return sample

    async def _query(self, session: QmpSession) -> tuple[int | None, int | None]:
        try:
            disk = disk_counters(await session.execute("query-blockstats",
                                                       timeout=QMP_TIMEOUT))
            if self._memory_due():
                self._memory = await read_guest_memory(session)
                self._memory_read_at = time.monotonic()
            if self._jobs_wanted():
                await self._read_jobs(session)
        except HypercoreError as exc:
            if not session.connected:
                await self._detach()
                self.check_liveness()
            if isinstance(exc, Timeout):
                if not unfinished(self.view.jobs):
                    self._jobs_from_record(qemu_silent=True)
                raise self._silent(exc) from None
            raise OperationFailed(f"{self.name}: {exc}") from None
        return disk

    async def _query_shared(self) -> tuple[int | None, int | None]:
        """Another dashboard holds the monitor socket: a short session on qmp.sock,
        skipped (psutil figures only) while the CLI holds that one."""
        try:
            async with qmp_session(self.paths.qmp_socket, vm_name=self.name,
                                   timeout=QMP_TIMEOUT, lock_timeout=0.2) as qmp:
                state, paused_by = await read_status(qmp)
                self.set_pause_reason(paused_by)
                self.set_state(state, "QEMU status")
                if not self._vcpus:
                    self._vcpus = await vcpu_threads(qmp)
                disk = disk_counters(await qmp.execute("query-blockstats",
                                                       timeout=QMP_TIMEOUT))
                if self._memory_due():
                    self._memory = await read_guest_memory(qmp)
                    self._memory_read_at = time.monotonic()
                await self._read_jobs(qmp)  # no events on this session: every time
                return disk
        except Busy:
            self._jobs_from_record(qemu_silent=False)
            return (self._previous.disk_rd_bytes, self._previous.disk_wr_bytes) \
                if self._previous else (None, None)
        except Timeout as exc:
            self._jobs_from_record(qemu_silent=True)
            raise self._silent(exc) from None

    def _memory_due(self) -> bool:
        # Paused too: the balloon keeps the guest's last report.
        return (self.view.state.is_active
                and time.monotonic() - self._memory_read_at >= GUEST_STATS_EVERY - 0.05)

    async def _ensure_session(self) -> QmpSession | None:
        session = self._session
        if session is not None and session.connected:
            return session
        if session is not None:
            await self._detach()
            self.log.info("monitor connection lost")
        if time.monotonic() < self._attach_after:
            return None
        session = QmpSession(self.paths.qmp_monitor_socket, vm_name=self.name)
        try:
            await session.connect(timeout=QMP_TIMEOUT, lock_timeout=0.2, events=True)
            state, paused_by = await read_status(session)
            self._vcpus = await vcpu_threads(session)
            await ensure_balloon_polling(session)
            jobs = jobs_from_qemu(await session.execute("query-jobs", timeout=QMP_TIMEOUT))
        except Busy:
            await session.close()
            self._attach_after = time.monotonic() + SHARED_RETRY
            if self.view.watch != "shared":
                self.log.info("monitor socket held by another process: short sessions")
            self.view.watch = "shared"
            return None
        except HypercoreError as exc:
            await session.close()
            self._attach_after = time.monotonic() + ATTACH_RETRY
            self.view.watch = ""
            if isinstance(exc, Timeout):  # e.g. saving RAM: a recorded job says which
                self._jobs_from_record(qemu_silent=True)
            raise self._silent(exc) from None
        self._session = session
        self.view.watch = "events"
        self._pump = asyncio.create_task(self._pump_events(session), name=f"events {self.name}")
        self.set_pause_reason(paused_by)
        self.set_state(state, "attached")
        self.set_jobs(jobs)
        self._jobs_due, self._jobs_known = False, True
        self.leftovers.recover_soon()
        return session

    async def _detach(self) -> None:
        pump, self._pump = self._pump, None
        if pump is not None:
            pump.cancel()
            with contextlib.suppress(BaseException):
                await pump
        session, self._session = self._session, None
        if session is not None:
            await session.close()
        if self.view.watch == "events":
            self.view.watch = ""
        if vmstate.process_state(self.paths)[0] is not VmState.RUNNING:
            self._reader = None

    # -- events ---------------------------------------------------------------------

    async def _pump_events(self, session: QmpSession) -> None:
        async for event in session.events():
            try:
                self.on_event(event)
            except Exception:  # noqa: BLE001 - one odd event must not stop the pump
                self.log.exception("handling %s", event.name)

    def on_event(self, event: QmpEvent) -> None:
        name, data = event.name, event.data
        if name in QUIET_EVENTS:
            self.log.debug("event %s %s", name, dict(data))
            return
        stamp = event.timestamp or time.time()
        detail = event_detail(name, data)
        self.log.info("event %s %s", name, detail)
        if name == "VSERPORT_CHANGE":  # the agent's port is the guest's only one
            if data.get("open"):
                self.wake_agent()
            else:
                self.view.agent = AgentStatus.SILENT
                self.upkeep.guest_restarted()
        if name == "RESET":  # the guest rebooted (by itself, or reset-vm)
            self.upkeep.guest_restarted()
        if name == "BLOCK_IO_ERROR" and data.get("action") == "stop":
            # QEMU pauses the VM (STOP follows): the reason, logged once per pause.
            self.set_pause_reason(PauseReason(nospace=data.get("nospace") is True), detail)
            return
        if name == "JOB_STATUS_CHANGE":
            self._jobs_due = True  # type, progress and error come from query-jobs
            self.set_jobs(apply_status_event(self.view.jobs, data))
            if data.get("status") in ("concluded", "null", "aborting"):
                self.wake()
        self.monitor.emit(VmEventSeen(self.name, name, detail, stamp))
        new = EVENT_STATES.get(name)
        if new is not None:
            why = detail or name.lower()
            if name == "STOP" and self.view.pause_reason is not None:
                why = self.view.pause_reason.short  # BLOCK_IO_ERROR came just before
            self.set_state(new, why)
        if name in ("RESUME", "STOP", "RESET", "SHUTDOWN"):
            self.wake()
