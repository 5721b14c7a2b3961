"""Live monitoring of every VM: one self-rescheduling poller per VM, QMP events,
crash detection, guest-agent facts and the host summary. No Textual in here:
whoever runs a :class:`Monitor` receives plain notices through a callback.

Per VM (a :class:`VmWatcher`):

* a long-lived QMP session on the VM's *second* monitor socket
  (``qmp-monitor.sock``) with events on, so the CLI's ``qmp.sock`` stays free.
  Events (STOP, RESUME, SHUTDOWN, RESET, JOB_STATUS_CHANGE...) change the state
  at once; the per-second queries use the same session;
* a poll loop that schedules the next poll only after the previous one ended
  (every QMP call has a timeout), so a hung QEMU never piles up requests and
  never delays another VM. The selected VM is polled every ``interval`` with
  per-vCPU times; the others every ``background_interval`` (stretched so that
  they take at most ``background_polls_per_second`` polls a second: 2 s for up to 20
  VMs, 5 s for 50);
* QEMU's jobs (``query-jobs``): read on attach (so a dashboard started after another
  one died sees the jobs it left), on ``JOB_STATUS_CHANGE`` and with every poll while
  a job is not concluded. While QEMU saves RAM its monitor is silent: the job record
  the snapshot service leaves beside the VM stands in (shown as "QEMU busy");
* a VM that QEMU paused by itself after a failed disk write (``werror=enospc``: the
  host's disk is full): the reason comes from ``BLOCK_IO_ERROR`` and, on attach (a
  dashboard started later), from run state ``io-error`` + ``query-block``'s io-status;
  it is cleared when the VM runs again;
* leftovers of a killed hypercore: a shared folder left unmounted by a RAM save is
  mounted again (holding the VM's lock, once no job runs), else shown;
* an agent loop: every ``agent_interval`` (the selected VM; the others every
  ``background_agent_interval``) a short qemu-ga session (its socket serves one
  client at a time, and the CLI needs it too) reads hostname, OS, addresses, users
  and interface counters. A silent agent is asked again after 3, 6, 12... s (at
  most a minute); the guest opening the agent's port (VSERPORT_CHANGE) or a resume
  wakes the loop at once.

The monitor itself rescans ``vms/`` every few seconds (VMs created or booted by
the CLI appear on their own) and checks every VM's pidfile and process every
second: a QEMU killed with SIGKILL shows as crashed within that second.

If another dashboard already holds a VM's monitor socket, this one falls back
to short sessions on ``qmp.sock`` (skipping a round when the CLI holds it).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from hypercore_tui.adapters.fs import locked_async
from hypercore_tui.adapters.process import process_alive
from hypercore_tui.adapters.procstats import ProcessGone, ProcessReader
from hypercore_tui.adapters.qga import AgentClient, agent_session
from hypercore_tui.adapters.qmp import QmpEvent, QmpSession, qmp_session
from hypercore_tui.core.argv import BALLOON_ID, DISK_NODE
from hypercore_tui.core.errors import (
    AgentUnavailable,
    Busy,
    HypercoreError,
    InvalidState,
    OperationFailed,
    Timeout,
)
from hypercore_tui.core.jobs import (
    SOURCE_QEMU,
    JobInfo,
    apply_status_event,
    finished_since,
    jobs_from_qemu,
    unfinished,
)
from hypercore_tui.core.layout import VmPaths
from hypercore_tui.core.models import VmSpec, VmState
from hypercore_tui.core.series import (
    HISTORY_SECONDS,
    RawCounters,
    VmHistory,
    VmSample,
    build_sample,
    guest_memory,
    rate,
)
from hypercore_tui.services import registry, shared, vmstate
from hypercore_tui.services.context import Context
from hypercore_tui.services.host import HostSummary, HostWatch
from hypercore_tui.services.records import finish_job_record, read_job_record

log = logging.getLogger("hypercore.monitor")
log.addHandler(logging.NullHandler())

QMP_TIMEOUT = 2.0
AGENT_TIMEOUT = 1.5
#: The balloon refreshes guest stats every 2 s (set at boot): reading faster is waste.
GUEST_STATS_EVERY = 2.0
#: Longest guest-provided string kept (hostname, OS name, user...).
MAX_GUEST_TEXT = 200
MAX_ADDRESSES = 16
ATTACH_RETRY = 2.0
#: Shortest time between two samples of a VM (rates over less are noise).
MIN_SAMPLE_GAP = 0.5
#: Polls are aligned on this grid (seconds) so that they run together.
POLL_GRID = 1.0
SHARED_RETRY = 10.0
#: After a failed attempt to mount a share left unmounted, wait 10, 20, 40... s (at most
#: 5 minutes: a guest that cannot mount it is not asked every few seconds forever).
RECOVER_RETRY = 10.0
RECOVER_RETRY_MAX = 300.0
SHARE_SAVING = "unmounted in the guest for a RAM snapshot"

#: QMP events shown to the user; the rest (RTC_CHANGE...) only go to the debug log.
QUIET_EVENTS = frozenset({"RTC_CHANGE", "NIC_RX_FILTER_CHANGED", "BALLOON_CHANGE"})


class AgentStatus(enum.StrEnum):
    UNKNOWN = "unknown"
    ANSWERING = "answering"
    SILENT = "silent"


@dataclass(frozen=True)
class GuestInfo:
    """What the guest agent said about the guest. Every string is guest-provided:
    untrusted, shown literally, never interpreted."""

    hostname: str | None = None
    os_name: str | None = None
    kernel: str | None = None
    addresses: tuple[str, ...] = ()
    users: tuple[str, ...] = ()


@dataclass(frozen=True)
class PauseReason:
    """QEMU paused the VM by itself: a disk request failed (``nospace``: the host's disk
    is full; QEMU retries the request on resume)."""

    nospace: bool

    @property
    def short(self) -> str:
        return "host disk full" if self.nospace else "disk I/O error"

    @property
    def remedy(self) -> str:
        return "free space" if self.nospace else "fix the disk"

    def describe(self) -> str:
        cause = ("no space left on the host's device for its disk" if self.nospace
                 else "a disk I/O error")
        return f"QEMU paused it: {cause}; {self.remedy}, then resume it"


@dataclass
class VmView:
    """Everything the dashboard shows about one VM; updated in place by the monitor."""

    name: str
    state: VmState = VmState.STOPPED
    pid: int | None = None
    ram_mb: int | None = None
    cpus: int | None = None
    disk: str | None = None
    disk_owned: bool = True  # deleted with the VM
    display: str = "vnc"
    sample: VmSample | None = None
    history: VmHistory = field(default_factory=VmHistory)
    guest: GuestInfo | None = None
    agent: AgentStatus = AgentStatus.UNKNOWN
    error: str | None = None
    watch: str = ""  # "events" (own monitor session), "shared" (short sessions), ""
    vnc_socket: str | None = None
    serial_socket: str | None = None
    #: QEMU's jobs (query-jobs, JOB_STATUS_CHANGE; Hypercore's record while QEMU is silent)
    jobs: tuple[JobInfo, ...] = ()
    #: The shared folder is not mounted in the guest although it should be (why)
    share_note: str | None = None
    #: Why QEMU paused the VM by itself (a failed disk write); None otherwise
    pause_reason: PauseReason | None = None

    def apply_spec(self, spec: VmSpec, paths: VmPaths) -> None:
        self.ram_mb, self.cpus = spec.ram_mb, spec.cpus
        self.disk, self.display = spec.disk.describe(), spec.display
        self.disk_owned = spec.disk.owned
        self.vnc_socket = None if spec.display == "none" else str(paths.vnc_socket)
        self.serial_socket = str(paths.serial_socket)


# -- notices ------------------------------------------------------------------------


@dataclass(frozen=True)
class VmSampled:
    name: str


@dataclass(frozen=True)
class VmStateChanged:
    name: str
    old: VmState
    new: VmState
    reason: str


@dataclass(frozen=True)
class VmEventSeen:
    """A QMP event (or a monitor observation) worth a line in the event log."""

    name: str
    event: str
    detail: str
    timestamp: float  # epoch seconds


@dataclass(frozen=True)
class GuestInfoChanged:
    name: str


@dataclass(frozen=True)
class VmJobsChanged:
    """The VM's jobs (or its share note) changed; ``finished``: a job ended, so its
    snapshot list may have changed too."""

    name: str
    finished: bool = False


@dataclass(frozen=True)
class VmsChanged:
    names: tuple[str, ...]


@dataclass(frozen=True)
class HostSampled:
    summary: HostSummary


MonitorNotice = (VmSampled | VmStateChanged | VmEventSeen | GuestInfoChanged | VmsChanged
                 | HostSampled | VmJobsChanged)
Sink = Callable[[MonitorNotice], None]


@dataclass(frozen=True)
class MonitorSettings:
    interval: float = 1.0  # the selected VM
    background_interval: float = 2.0  # every other VM (at least)
    background_polls_per_second: float = 10.0  # budget for them all; 0: no limit
    agent_interval: float = 10.0  # the selected VM
    background_agent_interval: float = 60.0  # the others (their port events still count)
    agent_retry: float = 3.0  # while the agent is silent: 3, 6, 12... s
    agent_retry_max: float = 60.0
    rescan_interval: float = 3.0
    liveness_interval: float = 1.0
    host_interval: float = 2.0
    history_seconds: int = HISTORY_SECONDS


# -- QMP reading helpers (shared with `hypercore stats`) ----------------------------


def _disk_counters(blockstats: Any) -> tuple[int | None, int | None]:
    """(read, written) bytes of the VM's main disk from ``query-blockstats``."""
    if not isinstance(blockstats, list):
        return None, None
    fallback: tuple[int | None, int | None] = (None, None)
    for entry in blockstats:
        if not isinstance(entry, dict):
            continue
        stats = entry.get("stats")
        if not isinstance(stats, dict):
            continue
        pair = (_int(stats.get("rd_bytes")), _int(stats.get("wr_bytes")))
        qdev = str(entry.get("qdev", ""))
        if entry.get("node-name") == DISK_NODE or f"/{DISK_NODE}dev/" in qdev + "/":
            return pair
        if fallback == (None, None):
            fallback = pair
    return fallback


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


async def _read_guest_memory(qmp: QmpSession) -> tuple[int | None, int | None, int | None]:
    reply = await qmp.execute("qom-get", {"path": f"/machine/peripheral/{BALLOON_ID}",
                                          "property": "guest-stats"}, timeout=QMP_TIMEOUT)
    if not isinstance(reply, dict) or not reply.get("last-update"):
        return None, None, None  # the guest has not reported yet
    stats = reply.get("stats")
    return guest_memory(stats) if isinstance(stats, dict) else (None, None, None)


async def _vcpu_threads(qmp: QmpSession) -> tuple[int, ...]:
    cpus = await qmp.execute("query-cpus-fast", timeout=QMP_TIMEOUT)
    if not isinstance(cpus, list):
        return ()
    ordered = sorted((c for c in cpus if isinstance(c, dict)),
                     key=lambda c: int(c.get("cpu-index", 0)))
    return tuple(int(c["thread-id"]) for c in ordered if isinstance(c.get("thread-id"), int))


async def _read_status(qmp: QmpSession) -> tuple[VmState, PauseReason | None]:
    """The state, and why QEMU paused the VM by itself (run state ``io-error``: a disk
    request failed; ``query-block``'s io-status says whether for lack of space)."""
    status = await qmp.execute("query-status", timeout=QMP_TIMEOUT)
    runstate = str(status.get("status"))
    state = vmstate.RUNSTATE_TO_STATE.get(runstate, VmState.RUNNING)
    if runstate != "io-error":
        return state, None
    blocks = await qmp.execute("query-block", timeout=QMP_TIMEOUT)
    return state, PauseReason(nospace=vmstate.io_error_nospace(blocks))


async def _runstate(qmp: QmpSession) -> VmState:
    status = await qmp.execute("query-status", timeout=QMP_TIMEOUT)
    # lifecycle's table of QEMU run states (private there; shared, not copied).
    return vmstate.RUNSTATE_TO_STATE.get(str(status.get("status")), VmState.RUNNING)


def _clip(value: object) -> str | None:
    if not isinstance(value, str) or not value:
        return None
    return value[:MAX_GUEST_TEXT]


@dataclass(frozen=True)
class AgentFacts:
    guest: GuestInfo
    net_rx_bytes: int | None
    net_tx_bytes: int | None


async def read_agent_facts(agent: AgentClient) -> AgentFacts:
    """Hostname, OS, addresses, users and interface counters; a command the agent
    refuses leaves its field empty, a lost connection raises AgentUnavailable."""

    async def ask(command: str) -> Any:
        try:
            return await agent.execute(command, timeout=AGENT_TIMEOUT,
                                       sync_timeout=AGENT_TIMEOUT)
        except AgentUnavailable:
            raise
        except OperationFailed as exc:  # refused, unsupported, timed out: skip this one
            log.debug("%s: %s: %s", agent.vm_name, command, exc)
            return None

    host = await ask("guest-get-host-name")
    osinfo = await ask("guest-get-osinfo")
    ifaces = await ask("guest-network-get-interfaces")
    users = await ask("guest-get-users")
    addresses: list[str] = []
    rx = tx = None
    if isinstance(ifaces, list):
        rx = tx = 0
        for iface in ifaces:
            if not isinstance(iface, dict) or iface.get("name") == "lo":
                continue
            for addr in iface.get("ip-addresses") or []:
                ip = _clip(addr.get("ip-address")) if isinstance(addr, dict) else None
                if ip and not ip.startswith("fe80:") and len(addresses) < MAX_ADDRESSES:
                    addresses.append(ip)
            stats = iface.get("statistics")
            if isinstance(stats, dict):
                rx += _int(stats.get("rx-bytes")) or 0
                tx += _int(stats.get("tx-bytes")) or 0
    addresses.sort(key=lambda a: (":" in a, a))  # IPv4 first
    names: list[str] = []
    if isinstance(users, list):
        for user in users:
            name = _clip(user.get("user")) if isinstance(user, dict) else None
            if name and name not in names:
                names.append(name)
    guest = GuestInfo(
        hostname=_clip(host.get("host-name")) if isinstance(host, dict) else None,
        os_name=_clip(osinfo.get("pretty-name") or osinfo.get("name"))
        if isinstance(osinfo, dict) else None,
        kernel=_clip(osinfo.get("kernel-release")) if isinstance(osinfo, dict) else None,
        addresses=tuple(addresses), users=tuple(names[:MAX_ADDRESSES]),
    )
    return AgentFacts(guest, rx, tx)


# -- one VM -------------------------------------------------------------------------


class VmWatcher:
    """Watches one VM: its QMP session, poll loop, event pump and agent loop."""

    def __init__(self, monitor: Monitor, name: str) -> None:
        self.monitor = monitor
        self.name = name
        self.paths: VmPaths = monitor.ctx.vm_paths(name)
        self.view = VmView(name=name, history=VmHistory(monitor.settings.history_seconds))
        self.log = logging.getLogger(f"hypercore.vm.{name}")
        self._session: QmpSession | None = None
        self._pump: asyncio.Task[None] | None = None
        self._reader: ProcessReader | None = None
        self._vcpus: tuple[int, ...] = ()
        self._previous: RawCounters | None = None
        self._memory: tuple[int | None, int | None, int | None] = (None, None, None)
        self._memory_read_at = 0.0
        self._net: tuple[int | None, int | None, float] | None = None
        self._net_rates: tuple[float | None, float | None] = (None, None)
        self._attach_after = 0.0
        self._wake = asyncio.Event()
        self._agent_wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._jobs_due = True  # read query-jobs at the next chance
        self._jobs_known = False  # view.jobs is what QEMU said last (not a record, not stale)
        self._recovery: asyncio.Task[None] | None = None
        #: (inode, mtime) of the job record at the last poll; False: not looked yet
        self._record_stamp: tuple[int, int] | None | bool = False
        self._record_open = False  # the record names a job not marked finished
        self._recover_after = 0.0
        self._recover_failures = 0
        self.polls = 0

    # -- life -----------------------------------------------------------------------

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._poll_loop(), name=f"poll {self.name}"),
                       asyncio.create_task(self._agent_loop(), name=f"agent {self.name}")]

    async def close(self) -> None:
        tasks = [*self._tasks, *([self._recovery] if self._recovery else [])]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task
        self._tasks, self._recovery = [], None
        await self._detach()

    def wake(self) -> None:
        self._wake.set()

    def wake_agent(self) -> None:
        self._agent_wake.set()

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
        if not new.is_active:
            self.view.sample = None
            self.set_jobs(())
            self._set_share_note(None)
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

    # -- jobs and leftovers ----------------------------------------------------------

    def set_jobs(self, jobs: tuple[JobInfo, ...]) -> None:
        old = self.view.jobs
        if jobs == old:
            return
        self.view.jobs = jobs
        finished = finished_since(old, jobs)
        self.log.info("jobs: %s", "; ".join(j.describe() for j in jobs) or "none")
        self.monitor.emit(VmJobsChanged(self.name, finished))
        if finished:
            self._recover_after = 0.0
            self.recover_soon()

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

    def _set_share_note(self, note: str | None) -> None:
        if note != self.view.share_note:
            self.view.share_note = note
            self.monitor.emit(VmJobsChanged(self.name))

    def _check_leftovers(self) -> None:
        """Each poll (two stat calls): a job record that changed means a snapshot job
        ended or started (maybe unseen: another process may hold the monitor); a note
        about the share while it is unmounted for a RAM save; what a killed hypercore
        left behind (share unmounted, a job record never finished) is dealt with."""
        try:
            info = self.paths.job_record.stat()
            stamp: tuple[int, int] | None = (info.st_ino, info.st_mtime_ns)
        except OSError:
            stamp = None
        if stamp != self._record_stamp:
            first = self._record_stamp is False
            self._record_stamp = stamp
            record = read_job_record(self.paths) if stamp is not None else None
            self._record_open = record is not None and not record.finished
            if not first and not self._record_open:
                self.monitor.emit(VmJobsChanged(self.name, finished=True))
        left = self.paths.share_unmount.exists()
        if not left:
            self._set_share_note(None)
        elif self.view.share_note is None:
            self._set_share_note(SHARE_SAVING)
        if left or self._record_open:
            self.recover_soon()

    def recover_soon(self) -> None:
        """Mount the share again where a RAM save left it unmounted (the process doing
        it died) and mark finished a job record whose writer died: in the background,
        holding the VM's lock (an operation holding it is left alone), once QEMU said
        that no job runs."""
        if self._recovery is not None and not self._recovery.done():
            return
        if time.monotonic() < self._recover_after or self.view.state is not VmState.RUNNING:
            return
        if not self._jobs_known or unfinished(self.view.jobs):
            return  # only once QEMU said that no job runs
        self._recovery = asyncio.create_task(self._recover(), name=f"recover {self.name}")

    async def _recover(self) -> None:
        name = self.name
        try:
            async with locked_async(self.paths.lock, what=f"{name}: mount the shared folder "
                                    "again", timeout=0):
                if not self._jobs_known or unfinished(self.view.jobs):
                    return
                record = read_job_record(self.paths)
                if record is not None and not record.finished:
                    # Under the VM's lock no live operation owns it, and QEMU says the job
                    # no longer runs: its writer died.
                    finish_job_record(self.paths, record.job_id)
                state = await shared.remount_left_unmounted(
                    registry.load(self.monitor.ctx, name), self.paths)
        except Busy:
            return  # an operation runs: it mounts the share itself (or we try later)
        except HypercoreError as exc:
            state = shared.ShareState(shared.ShareStatus.FAILED, message=str(exc))
        if state is None:
            self._set_share_note(None)
            return
        if state.mounted:
            self._recover_failures = 0
            self._set_share_note(None)
            self.monitor.emit(VmEventSeen(
                name, "SHARE", f"shared folder mounted again at {state.mountpoint} (an "
                "interrupted snapshot had left it unmounted)", time.time()))
            return
        self._recover_after = time.monotonic() + min(
            RECOVER_RETRY * 2 ** self._recover_failures, RECOVER_RETRY_MAX)
        self._recover_failures += 1
        note = ("not mounted (an interrupted snapshot left it unmounted): "
                f"{state.message or state.describe()}")
        if note != self.view.share_note:
            self.log.warning("shared folder %s", note)
            self.monitor.emit(VmEventSeen(name, "SHARE", note, time.time()))
        self._set_share_note(note)

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
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._next_delay())

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
        self._check_leftovers()
        if self._reader is None or self._reader.pid != pid:
            self._reader = ProcessReader(pid)
            self._previous = None
            self._net = None
            self._net_rates = (None, None)
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
        counters = RawCounters(
            timestamp=reading.timestamp,
            cpu_seconds=reading.cpu_seconds,
            thread_cpu_seconds=tuple(reading.thread_cpu_seconds.get(t) for t in self._vcpus)
            if focused else (),
            rss_bytes=reading.rss_bytes,
            disk_rd_bytes=disk[0], disk_wr_bytes=disk[1],
            guest_memory=self._memory,
            net_rx_bytes=self._net[0] if self._net else None,
            net_tx_bytes=self._net[1] if self._net else None,
            net_rx_bps=self._net_rates[0], net_tx_bps=self._net_rates[1],
            uptime_seconds=reading.uptime_seconds,
        )
        sample = build_sample(self._previous, counters)
        self._previous = counters
        self.view.sample = sample
        self.view.history.add(sample)
        self.view.error = None
        self.polls += 1
        self.monitor.emit(VmSampled(self.name))
        return sample

    async def _query(self, session: QmpSession) -> tuple[int | None, int | None]:
        try:
            disk = _disk_counters(await session.execute("query-blockstats",
                                                        timeout=QMP_TIMEOUT))
            if self._memory_due():
                self._memory = await _read_guest_memory(session)
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
                state, paused_by = await _read_status(qmp)
                self.set_pause_reason(paused_by)
                self.set_state(state, "QEMU status")
                if not self._vcpus:
                    self._vcpus = await _vcpu_threads(qmp)
                disk = _disk_counters(await qmp.execute("query-blockstats",
                                                        timeout=QMP_TIMEOUT))
                if self._memory_due():
                    self._memory = await _read_guest_memory(qmp)
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
            state, paused_by = await _read_status(session)
            self._vcpus = await _vcpu_threads(session)
            await self._ensure_balloon_polling(session)
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
        self.recover_soon()
        return session

    async def _ensure_balloon_polling(self, session: QmpSession) -> None:
        """Guest memory stats need a polling interval (lifecycle sets 2 s at boot;
        a VM started by something else may have none)."""
        path = f"/machine/peripheral/{BALLOON_ID}"
        with contextlib.suppress(HypercoreError):
            current = await session.execute("qom-get", {
                "path": path, "property": "guest-stats-polling-interval"},
                timeout=QMP_TIMEOUT)
            if not current:
                await session.execute("qom-set", {
                    "path": path, "property": "guest-stats-polling-interval",
                    "value": int(GUEST_STATS_EVERY)}, timeout=QMP_TIMEOUT)

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
        detail = _event_detail(name, data)
        self.log.info("event %s %s", name, detail)
        if name == "VSERPORT_CHANGE":  # the agent's port is the guest's only one
            if data.get("open"):
                self.wake_agent()
            else:
                self.view.agent = AgentStatus.SILENT
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
        new = _EVENT_STATES.get(name)
        if new is not None:
            why = detail or name.lower()
            if name == "STOP" and self.view.pause_reason is not None:
                why = self.view.pause_reason.short  # BLOCK_IO_ERROR came just before
            self.set_state(new, why)
        if name in ("RESUME", "STOP", "RESET", "SHUTDOWN"):
            self.wake()

    # -- agent ----------------------------------------------------------------------

    async def _agent_loop(self) -> None:
        """Ask the agent every ``agent_interval``; while it is silent, back off up to
        ``agent_retry_max`` (the guest opening the agent's port, VSERPORT_CHANGE, or a
        resume wakes this loop at once)."""
        settings = self.monitor.settings
        silent_for = 0
        while True:
            self._agent_wake.clear()
            delay = (settings.agent_interval if self.monitor.is_focused(self.name)
                     else settings.background_agent_interval)
            if self.view.state is VmState.RUNNING:
                try:
                    if await self.poll_agent():
                        silent_for = 0
                    else:
                        delay = min(settings.agent_retry * 2 ** silent_for,
                                    settings.agent_retry_max)
                        silent_for += 1
                except asyncio.CancelledError:
                    raise
                except Exception:  # noqa: BLE001 - never let the agent loop die
                    self.log.exception("agent poll failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._agent_wake.wait(), delay)

    async def poll_agent(self) -> bool:
        """One short agent session; False when the agent does not answer."""
        try:
            async with agent_session(self.paths.qga_socket, vm_name=self.name,
                                     timeout=AGENT_TIMEOUT, lock_timeout=0.3) as agent:
                facts = await read_agent_facts(agent)
        except Busy:
            return True  # the CLI is using it: it is there, ask again later
        except HypercoreError as exc:
            if self.view.state is not VmState.RUNNING:
                return False  # paused or gone meanwhile: not the agent's fault
            if self.view.agent is not AgentStatus.SILENT:
                self.log.info("agent silent: %s", exc)
                self.view.agent = AgentStatus.SILENT
                self.monitor.emit(GuestInfoChanged(self.name))
            return False
        now = time.monotonic()
        if self._net is not None and facts.net_rx_bytes is not None:
            seconds = now - self._net[2]
            self._net_rates = (rate(self._net[0], facts.net_rx_bytes, seconds),
                               rate(self._net[1], facts.net_tx_bytes, seconds))
        self._net = (facts.net_rx_bytes, facts.net_tx_bytes, now)
        changed = facts.guest != self.view.guest or self.view.agent is not AgentStatus.ANSWERING
        self.view.guest = facts.guest
        self.view.agent = AgentStatus.ANSWERING
        if changed:
            self.monitor.emit(GuestInfoChanged(self.name))
        return True


_EVENT_STATES: Mapping[str, VmState] = {
    "STOP": VmState.PAUSED,
    "RESUME": VmState.RUNNING,
    "SHUTDOWN": VmState.SHUTTING_DOWN,
    "SUSPEND": VmState.PAUSED,
    "WAKEUP": VmState.RUNNING,
    "GUEST_PANICKED": VmState.PAUSED,
}


def _event_detail(name: str, data: Mapping[str, Any]) -> str:
    """A short, plain description of an event's data (no guest text beyond 200 chars)."""
    if name in ("SHUTDOWN", "RESET"):
        who = "guest" if data.get("guest") else "host"
        reason = data.get("reason")
        return f"{who}: {reason}" if reason else who
    if name == "JOB_STATUS_CHANGE":
        return f"job {data.get('id')}: {data.get('status')}"
    if name.startswith("BLOCK_JOB"):
        return f"{data.get('type')} job {data.get('device')}: {data.get('error') or 'ok'}"
    if name == "VSERPORT_CHANGE":
        return f"guest {'opened' if data.get('open') else 'closed'} a serial port"
    if name == "GUEST_PANICKED":
        return "the guest kernel panicked"
    if name == "BLOCK_IO_ERROR":
        device = data.get("node-name") or data.get("device") or "?"
        why = "no space" if data.get("nospace") is True else data.get("reason") or "error"
        return f"{data.get('operation')} on {device}: {why}; {data.get('action')}"[
            :MAX_GUEST_TEXT]
    parts = [f"{k}={v}" for k, v in list(data.items())[:4]]
    return ", ".join(parts)[:MAX_GUEST_TEXT]


# -- all VMs ------------------------------------------------------------------------


class Monitor:
    """Watches every VM of one HYPERCORE_HOME; notices go to ``sink``."""

    def __init__(self, ctx: Context, sink: Sink, settings: MonitorSettings | None = None
                 ) -> None:
        self.ctx = ctx
        self.sink = sink
        self.settings = settings or MonitorSettings()
        self._watchers: dict[str, VmWatcher] = {}
        self._focus: str | None = None
        self._started = False
        self.host: HostSummary | None = None
        self._host_watch = HostWatch(ctx)

    # -- what the UI reads and says -------------------------------------------------

    @property
    def views(self) -> dict[str, VmView]:
        return {name: w.view for name, w in self._watchers.items()}

    def view(self, name: str) -> VmView | None:
        watcher = self._watchers.get(name)
        return watcher.view if watcher else None

    def set_focus(self, name: str | None) -> None:
        """The VM whose detail pane is visible: polled faster, with per-vCPU times."""
        if name == self._focus:
            return
        self._focus = name
        if name in self._watchers:
            self._watchers[name].wake()
            self._watchers[name].wake_agent()

    def is_focused(self, name: str) -> bool:
        return name == self._focus

    def interval_for(self, name: str) -> float:
        settings = self.settings
        if name == self._focus:
            return settings.interval
        interval = settings.background_interval
        if settings.background_polls_per_second > 0:
            interval = max(interval, len(self._watchers) / settings.background_polls_per_second)
        return interval

    def poke(self, name: str) -> None:
        """Look at a VM now (after an action on it)."""
        watcher = self._watchers.get(name)
        if watcher is not None:
            watcher.check_liveness()
            watcher.wake()
            watcher.wake_agent()

    def emit(self, notice: MonitorNotice) -> None:
        try:
            self.sink(notice)
        except Exception:  # noqa: BLE001 - a broken sink must not stop monitoring
            log.exception("monitor sink failed on %r", notice)

    # -- running --------------------------------------------------------------------

    async def run(self) -> None:
        """Watch until cancelled; VM sessions are closed on the way out."""
        self._started = True
        settings = self.settings
        last_rescan = last_host = 0.0
        try:
            while True:
                now = time.monotonic()
                if now - last_rescan >= settings.rescan_interval:
                    last_rescan = now
                    await self.rescan()
                if now - last_host >= settings.host_interval:
                    last_host = now
                    await self._sample_host()
                for watcher in list(self._watchers.values()):
                    watcher.check_liveness()
                await asyncio.sleep(settings.liveness_interval)
        finally:
            await self.close()

    async def rescan(self) -> None:
        """Pick up VMs defined (or removed) since the last look."""
        try:
            names = registry.vm_names(self.ctx)
        except OSError as exc:
            log.warning("cannot list VMs: %s", exc)
            return
        added = [n for n in names if n not in self._watchers]
        removed = [n for n in self._watchers if n not in names]
        for name in removed:
            await self._watchers.pop(name).close()
        for name in added:
            watcher = VmWatcher(self, name)
            try:
                watcher.view.apply_spec(registry.load(self.ctx, name), watcher.paths)
            except HypercoreError as exc:
                watcher.view.error = str(exc)
            state, pid = vmstate.process_state(watcher.paths)
            watcher.view.state, watcher.view.pid = state, pid
            self._watchers[name] = watcher
            if self._started:
                watcher.start()
        if added or removed:
            self.emit(VmsChanged(tuple(sorted(self._watchers))))

    async def _sample_host(self) -> None:
        try:
            self.host = await asyncio.to_thread(self._host_watch.read)
        except HypercoreError as exc:
            log.warning("host summary: %s", exc)
            return
        self.emit(HostSampled(self.host))

    async def refresh_all(self) -> float:
        """Poll every VM once, concurrently; returns the wall time in seconds."""
        started = time.perf_counter()
        results = await asyncio.gather(*(w.poll_once() for w in self._watchers.values()),
                                       return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException) and not isinstance(result, Exception):
                raise result
        return time.perf_counter() - started

    async def close(self) -> None:
        """Close every VM's session (one after the other: each takes milliseconds, and
        a cancellation arriving meanwhile leaves no orphaned gather behind)."""
        for watcher in list(self._watchers.values()):
            try:
                await watcher.close()
            except Exception:  # noqa: BLE001 - closing the others matters more
                log.exception("closing %s", watcher.name)


# -- one-shot sampling (the `stats` command) ----------------------------------------


@dataclass(frozen=True)
class StatsResult:
    name: str
    state: VmState
    pid: int
    sample: VmSample
    guest: GuestInfo | None
    agent: bool

    def as_json(self) -> dict[str, object]:
        data: dict[str, object] = {"name": self.name, "state": self.state.value,
                                   "pid": self.pid, "agent": self.agent}
        data.update(self.sample.as_json())
        guest = self.guest
        data["guest"] = None if guest is None else {
            "hostname": guest.hostname, "os": guest.os_name, "kernel": guest.kernel,
            "addresses": list(guest.addresses), "users": list(guest.users),
        }
        return data


async def sample_once(ctx: Context, name: str, *, gap: float = 0.5,
                      agent_timeout: float = 1.0) -> StatsResult:
    """Two readings ``gap`` seconds apart over a short session on ``qmp.sock``."""
    registry.load(ctx, name)
    paths = ctx.vm_paths(name)
    state, pid = vmstate.process_state(paths)
    if state is not VmState.RUNNING or pid is None:
        raise InvalidState(f"{name} is not running ({state.value})")
    agent_task = asyncio.create_task(_agent_facts_once(paths, agent_timeout))
    try:
        reader = ProcessReader(pid)
        async with qmp_session(paths.qmp_socket, vm_name=name, timeout=3.0) as qmp:
            state = await _runstate(qmp)
            vcpus = await _vcpu_threads(qmp)
            readings: list[RawCounters] = []
            for index in range(2):
                if index:
                    await asyncio.sleep(gap)
                reading = await asyncio.to_thread(reader.read, threads=vcpus)
                disk = _disk_counters(await qmp.execute("query-blockstats"))
                readings.append(RawCounters(
                    timestamp=reading.timestamp, cpu_seconds=reading.cpu_seconds,
                    thread_cpu_seconds=tuple(reading.thread_cpu_seconds.get(t) for t in vcpus),
                    rss_bytes=reading.rss_bytes, disk_rd_bytes=disk[0], disk_wr_bytes=disk[1],
                    guest_memory=await _read_guest_memory(qmp),
                    uptime_seconds=reading.uptime_seconds,
                ))
    except ProcessGone:
        raise InvalidState(f"{name} stopped while being sampled") from None
    finally:
        facts = await agent_task
    first, second = readings
    if facts is not None:
        second = _with_net(second, facts)
    sample = build_sample(first, second)
    return StatsResult(name=name, state=state, pid=pid, sample=sample,
                       guest=facts.guest if facts else None, agent=facts is not None)


def _with_net(counters: RawCounters, facts: AgentFacts) -> RawCounters:
    return replace(counters, net_rx_bytes=facts.net_rx_bytes, net_tx_bytes=facts.net_tx_bytes)


async def _agent_facts_once(paths: VmPaths, timeout: float) -> AgentFacts | None:
    if not paths.qga_socket.exists():
        return None
    try:
        async with agent_session(paths.qga_socket, vm_name=paths.name, timeout=timeout,
                                 lock_timeout=timeout) as agent:
            return await read_agent_facts(agent)
    except HypercoreError:
        return None


def describe_vms(views: Sequence[VmView]) -> str:
    """``3 VMs: 1 paused, 2 running``."""
    counts: dict[str, int] = {}
    for view in views:
        counts[view.state.value] = counts.get(view.state.value, 0) + 1
    parts = ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))
    noun = "VM" if len(views) == 1 else "VMs"
    return f"{len(views)} {noun}" + (f": {parts}" if parts else "")
