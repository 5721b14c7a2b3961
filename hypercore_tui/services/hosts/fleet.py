"""The other hosts as the dashboard shows them: one :class:`~.stream.HostStream` per
configured remote host, its lines made into :class:`RemoteHost` (the stream's state and
since when, the host's load and free space, its VMs as
:class:`~hypercore_tui.services.monitor.VmView` with their samples' history), and the
lifecycle verbs run there through ``--host`` (:func:`run_verb`).

Everything a remote host sends is data: rows are read field by field (a field of the
wrong type is left out), names are kept as they came and shown through the UI's safe
text helpers, never as markup. A VM row keeps its last known state while its host is
not live.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from hypercore_tui.core import watchwire
from hypercore_tui.core.errors import InvalidInput, OperationFailed
from hypercore_tui.core.hosts import Host
from hypercore_tui.core.models import VmState
from hypercore_tui.core.names import validate_vm_name
from hypercore_tui.core.series import VmSample
from hypercore_tui.core.text import printable
from hypercore_tui.services.context import Context
from hypercore_tui.services.hosts import remote
from hypercore_tui.services.hosts.stream import HostStream, StreamState, StreamStatus
from hypercore_tui.services.monitor import AgentStatus, VmView

#: Seconds a lifecycle verb run on another host may take.
VERB_TIMEOUT = 180.0


@dataclass
class RemoteHost:
    """One remote host as the dashboard shows it."""

    name: str
    state: StreamState = StreamState.CONNECTING
    detail: str = ""
    #: time.monotonic() since when the host is not live (None: live, or never seen yet)
    out_since: float | None = None
    #: time.monotonic() of the stream's last change of state
    state_since: float = field(default_factory=time.monotonic)
    ever_live: bool = False
    load: tuple[float, ...] | None = None
    disk_free_bytes: int | None = None
    vms: dict[str, VmView] = field(default_factory=dict)

    @property
    def live(self) -> bool:
        return self.state is StreamState.LIVE


@dataclass(frozen=True)
class RemoteChange:
    """Something changed on ``host``: its header (``vm`` None, ``rows`` False), one VM's
    figures (``vm``), or its list of VMs (``rows``)."""

    host: str
    vm: str | None = None
    rows: bool = False
    #: a line for the event log (a state change, an event, the stream's state)
    log: str | None = None


FleetSink = Callable[[RemoteChange], None]


class StreamLike(Protocol):
    """What the fleet needs of a stream (:class:`HostStream`; tests pass their own)."""

    @property
    def host(self) -> Host: ...

    async def run(self) -> None: ...


def _num(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _int(value: object) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value


def _name(value: object) -> str | None:
    """A VM name as Hypercore allows it (anything else from a host is skipped: no "/" can
    make a row's key ambiguous, no name is taken for an option)."""
    if not isinstance(value, str):
        return None
    try:
        return validate_vm_name(value)
    except InvalidInput:
        return None


def _state(value: object) -> VmState | None:
    try:
        return VmState(value) if isinstance(value, str) else None
    except ValueError:
        return None


def sample_from(fields: Mapping[str, Any]) -> VmSample:
    """A ``sample`` line's figures (``stats --json``'s fields), each checked."""
    vcpus = fields.get("vcpu_percent")
    return VmSample(
        timestamp=time.monotonic(),
        cpu_percent=_num(fields.get("cpu_percent")),
        vcpu_percent=tuple(_num(v) for v in vcpus[:256]) if isinstance(vcpus, list) else (),
        rss_bytes=_int(fields.get("rss_bytes")),
        guest_mem_total_bytes=_int(fields.get("guest_mem_total_bytes")),
        guest_mem_used_bytes=_int(fields.get("guest_mem_used_bytes")),
        guest_mem_available_bytes=_int(fields.get("guest_mem_available_bytes")),
        disk_rd_bytes=_int(fields.get("disk_rd_bytes")),
        disk_wr_bytes=_int(fields.get("disk_wr_bytes")),
        disk_rd_bps=_num(fields.get("disk_rd_bps")),
        disk_wr_bps=_num(fields.get("disk_wr_bps")),
        net_rx_bytes=_int(fields.get("net_rx_bytes")),
        net_tx_bytes=_int(fields.get("net_tx_bytes")),
        net_rx_bps=_num(fields.get("net_rx_bps")),
        net_tx_bps=_num(fields.get("net_tx_bps")),
        uptime_seconds=_num(fields.get("uptime_seconds")),
    )


def apply_row(view: VmView, row: Mapping[str, Any]) -> None:
    """A stream row's fields onto ``view`` (fields missing or of the wrong type: kept)."""
    state = _state(row.get("state"))
    if state is not None:
        view.state = state
    view.pid = _int(row.get("pid"))
    view.ram_mb = _int(row.get("ram_mb")) or view.ram_mb
    view.cpus = _int(row.get("cpus")) or view.cpus
    disk = row.get("disk")
    view.disk = printable(disk, limit=200) if isinstance(disk, str) else view.disk
    agent = row.get("agent_status")
    with contextlib.suppress(ValueError):
        view.agent = AgentStatus(agent) if isinstance(agent, str) else view.agent
    error = row.get("error")
    view.error = printable(error, limit=300) if isinstance(error, str) else None
    if not view.state.is_active:
        view.sample = None


class RemoteFleet:
    """Every remote host's stream, followed until cancelled; changes to ``sink`` (on the
    event loop)."""

    def __init__(self, ctx: Context, hosts: Sequence[Host], sink: FleetSink, *,
                 stream_factory: Callable[..., StreamLike] = HostStream) -> None:
        self.ctx = ctx
        self.sink = sink
        self.hosts: dict[str, RemoteHost] = {h.name: RemoteHost(h.name) for h in hosts}
        self._streams = [stream_factory(ctx, h, self._liner(h.name), self.on_status)
                         for h in hosts]

    async def run(self) -> None:
        tasks = [asyncio.create_task(s.run(), name=f"stream {s.host.name}")
                 for s in self._streams]
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    # -- the streams' callbacks ---------------------------------------------------------

    def on_status(self, status: StreamStatus) -> None:
        host = self.hosts.get(status.host)
        if host is None:
            return
        old = host.state
        if old is not status.state:
            host.state_since = time.monotonic()
        host.state, host.detail = status.state, status.detail
        if status.state is StreamState.LIVE:
            host.out_since, host.ever_live = None, True
        elif host.out_since is None and (host.ever_live or status.state is StreamState.DOWN):
            host.out_since = time.monotonic()
        log = None
        if old is not status.state and status.state is not StreamState.CONNECTING:
            log = f"host {host.name}: {status.state.value}" + \
                (f" ({status.detail})" if status.detail else "")
        self.sink(RemoteChange(host.name, rows=True, log=log))

    def _liner(self, name: str) -> Callable[[watchwire.WatchLine], None]:
        return lambda line: self.on_line(name, line)

    def on_line(self, name: str, line: watchwire.WatchLine) -> None:
        """A line of ``name``'s stream."""
        host = self.hosts[name]
        f = line.fields
        match line.type:
            case "vms":
                rows = f.get("vms")
                if not isinstance(rows, list):
                    return
                seen: dict[str, VmView] = {}
                for row in rows[:10000]:
                    if isinstance(row, dict) and (vm := _name(row.get("name"))) is not None:
                        view = host.vms.get(vm) or VmView(vm)
                        apply_row(view, row)
                        seen[vm] = view
                host.vms = seen
                self.sink(RemoteChange(name, rows=True))
            case "vm":
                row, vm = f.get("row"), line.vm
                if isinstance(row, dict) and vm is not None and vm in host.vms:
                    apply_row(host.vms[vm], row)
                    self.sink(RemoteChange(name, vm))
            case "state":
                vm, new = line.vm, _state(f.get("new"))
                if vm is not None and new is not None and vm in host.vms:
                    view = host.vms[vm]
                    old, view.state = view.state, new
                    if not new.is_active:
                        view.sample = None
                    reason = f.get("reason")
                    why = printable(reason, limit=200) if isinstance(reason, str) else ""
                    self.sink(RemoteChange(name, vm, log=f"{old.value} → {new.value}"
                                           + (f" ({why})" if why else "")))
            case "sample":
                vm = line.vm
                if vm is not None and vm in host.vms:
                    view = host.vms[vm]
                    view.sample = sample_from(f)
                    view.history.add(view.sample)
                    self.sink(RemoteChange(name, vm))
            case "host":
                load = f.get("load")
                if isinstance(load, list):
                    host.load = tuple(v for v in (_num(x) for x in load[:3]) if v is not None)
                host.disk_free_bytes = _int(f.get("disk_free_bytes"))
                self.sink(RemoteChange(name))
            case _:
                pass  # hello, heartbeat, event, dropped, and what a newer writer adds


#: The dashboard's verbs as the CLI's arguments (``hypercore --host NAME ...``).
VERBS: Mapping[str, Callable[[str], list[str]]] = {
    "start": lambda vm: ["boot-vm", vm],
    "stop": lambda vm: ["stop-vm", vm],
    "force stop": lambda vm: ["stop-vm", "--force", vm],
    "pause": lambda vm: ["pause-vm", vm],
    "resume": lambda vm: ["resume-vm", vm],
    "reset": lambda vm: ["reset-vm", vm],
    "snapshot": lambda vm: ["snapshot", "create", vm],
}


def run_verb(ctx: Context, host: Host, verb: str, vm: str) -> str:
    """Run a lifecycle verb on ``vm`` of ``host`` (blocking: a worker thread's); its
    one-line summary, or ``OperationFailed`` with the remote error line."""
    build = VERBS.get(verb)
    if build is None:
        raise InvalidInput(f"{verb}: not supported on a remote VM yet")
    validate_vm_name(vm)  # (a name no VM can have is never sent as an argument)
    done = remote.run_captured(ctx, host, build(vm), timeout=VERB_TIMEOUT)
    out = [printable(line, limit=300) for line in
           done.stdout.decode(errors="replace").splitlines() if line.strip()]
    if done.returncode != 0:
        said = [printable(line, limit=300) for line in
                done.stderr.decode(errors="replace").splitlines() if line.strip()]
        why = said[-1].removeprefix("hypercore: error: ") if said else \
            f"exit code {done.returncode}"
        raise OperationFailed(f"{host.name}/{printable(vm, limit=64)}: {verb}: {why}")
    last = out[-1] if out else f"{verb} done"
    return f"{host.name}: {last}"
