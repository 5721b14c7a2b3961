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
import json
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn, Protocol

from hypercore_tui.core import watchwire
from hypercore_tui.core.errors import InvalidInput, OperationFailed
from hypercore_tui.core.hosts import LOCAL_HOST, Host
from hypercore_tui.core.models import VmState
from hypercore_tui.core.names import validate_vm_name
from hypercore_tui.core.series import VmSample
from hypercore_tui.core.snapshots import SnapshotInfo, snapshots_from_json
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
    # as the dashboard's own delete: the disk goes with it when Hypercore created it
    "delete": lambda vm: ["delete-vm", "--yes", vm],
}

#: Seconds a clipboard push, pull, setting or typed text on another host may take.
CLIP_TIMEOUT = 120.0
#: Seconds a migration run on another host may take (its own --timeout is shorter).
MIGRATE_TIMEOUT = 3600.0


def _run_there(ctx: Context, host: Host, vm: str, what: str, args: Sequence[str], *,
               timeout: float, stdin: bytes | None = None) -> list[str]:
    """``hypercore ARGS`` on ``host`` about ``vm``: its output lines (printable), or
    ``OperationFailed`` naming host, VM and ``what`` with the remote error line."""
    validate_vm_name(vm)  # (a name no VM can have is never sent as an argument)
    done = remote.run_captured(ctx, host, args, timeout=timeout, stdin=stdin)
    if done.returncode != 0:
        _run_failed(host, vm, what, done)
    return [printable(line, limit=300) for line in
            done.stdout.decode(errors="replace").splitlines() if line.strip()]


def _summary(host: Host, lines: list[str], default: str) -> str:
    return f"{host.name}: {lines[-1] if lines else default}"


def run_verb(ctx: Context, host: Host, verb: str, vm: str) -> str:
    """Run a lifecycle verb on ``vm`` of ``host`` (blocking: a worker thread's); its
    one-line summary, or ``OperationFailed`` with the remote error line."""
    build = VERBS.get(verb)
    if build is None:
        raise InvalidInput(f"{verb}: not supported on a remote VM yet")
    lines = _run_there(ctx, host, vm, verb, build(vm), timeout=VERB_TIMEOUT)
    return _summary(host, lines, f"{verb} done")


def clip_push(ctx: Context, host: Host, vm: str, text: str) -> str:
    """``text`` into the clipboard of ``vm`` on ``host`` (``clip push``, the text on
    stdin: never an argument)."""
    lines = _run_there(ctx, host, vm, "paste", ["clip", "push", vm], timeout=CLIP_TIMEOUT,
                       stdin=text.encode())
    return _summary(host, lines, f"{vm}: clipboard set")


def clip_pull(ctx: Context, host: Host, vm: str) -> str:
    """The text on the clipboard of ``vm`` on ``host``, exactly (``clip pull --raw``):
    untrusted data for the caller."""
    validate_vm_name(vm)
    done = remote.run_captured(ctx, host, ["clip", "pull", "--raw", vm], timeout=CLIP_TIMEOUT)
    if done.returncode != 0:
        _run_failed(host, vm, "copy", done)
    try:
        return done.stdout.decode()
    except UnicodeDecodeError:
        raise OperationFailed(f"{host.name}/{printable(vm, limit=64)}: copy: the clipboard "
                              "text is not valid UTF-8") from None


def _run_failed(host: Host, vm: str, what: str,
                done: subprocess.CompletedProcess[bytes]) -> NoReturn:
    said = [printable(line, limit=300) for line in
            done.stderr.decode(errors="replace").splitlines() if line.strip()]
    why = said[-1].removeprefix("hypercore: error: ") if said else f"exit code {done.returncode}"
    raise OperationFailed(f"{host.name}/{printable(vm, limit=64)}: {what}: {why}")


def set_clipboard_mode(ctx: Context, host: Host, vm: str, mode: str) -> str:
    """The clipboard mode in the definition of ``vm`` on ``host`` (``set NAME
    clipboard=MODE``)."""
    lines = _run_there(ctx, host, vm, "clipboard mode", ["set", vm, f"clipboard={mode}"],
                       timeout=CLIP_TIMEOUT)
    return _summary(host, lines, f"{vm}: clipboard {mode}")


def type_text(ctx: Context, host: Host, vm: str, text: str) -> str:
    """``text`` typed into ``vm`` on ``host`` as key presses, on the keyboard layout the
    VM has there (``type --yes``, the text on stdin; the caller confirmed a long one)."""
    lines = _run_there(ctx, host, vm, "type", ["type", "--yes", vm],
                       timeout=CLIP_TIMEOUT, stdin=text.encode())
    return _summary(host, lines, f"{vm}: text typed")


def display_line(ctx: Context, host: Host, vm: str) -> str:
    """The line that shows the screen of ``vm`` on ``host`` in remote-viewer on the
    user's own machine (``display NAME`` there: an ssh forward of its socket)."""
    lines = _run_there(ctx, host, vm, "display", ["display", vm], timeout=VERB_TIMEOUT)
    if not lines:
        raise OperationFailed(f"{host.name}/{printable(vm, limit=64)}: display: no line "
                              "came back")
    return lines[-1]


def migrate(ctx: Context, host: Host, vm: str, target: str) -> str:
    """Move ``vm`` from ``host`` to ``target`` (a host as ``host`` names it) live: the
    migration runs there (``migrate NAME TARGET``); its last line."""
    lines = _run_there(ctx, host, vm, f"migrate to {printable(target, limit=64)}",
                       ["migrate", vm, target], timeout=MIGRATE_TIMEOUT)
    return _summary(host, lines, f"{vm}: migrated to {target}")


#: Seconds a snapshot taken, restored or deleted on another host may take.
SNAPSHOT_TIMEOUT = 1800.0


def snapshot_list(ctx: Context, host: Host, vm: str) -> list[SnapshotInfo]:
    """The snapshots of ``vm`` on ``host`` (``snapshot list --json`` there)."""
    lines = _run_there(ctx, host, vm, "snapshots", ["snapshot", "list", "--json", vm],
                       timeout=VERB_TIMEOUT)
    try:
        return snapshots_from_json(json.loads("\n".join(lines)))
    except ValueError:
        raise OperationFailed(f"{host.name}/{printable(vm, limit=64)}: snapshots: the list "
                              "is not JSON") from None


def snapshot_create(ctx: Context, host: Host, vm: str, tag: str | None, *,
                    disk_only: bool) -> str:
    args = ["snapshot", "create", *(["--disk-only"] if disk_only else []), vm,
            *([_tag_argument(tag)] if tag else [])]
    lines = _run_there(ctx, host, vm, "snapshot", args, timeout=SNAPSHOT_TIMEOUT)
    return _summary(host, lines, f"{vm}: snapshot taken")


def _tag_argument(tag: str) -> str:
    """A snapshot tag as an argument there: never one that would read as an option."""
    if tag.startswith("-"):
        raise InvalidInput(f"snapshot tag {printable(tag, limit=64)!r} starts with '-'")
    return tag


def snapshot_restore(ctx: Context, host: Host, vm: str, tag: str) -> str:
    lines = _run_there(ctx, host, vm, f"restore {printable(tag, limit=64)}",
                       ["snapshot", "restore", vm, _tag_argument(tag)],
                       timeout=SNAPSHOT_TIMEOUT)
    return _summary(host, lines, f"{vm}: restored snapshot {tag}")


def snapshot_delete(ctx: Context, host: Host, vm: str, tag: str) -> str:
    lines = _run_there(ctx, host, vm, f"delete snapshot {printable(tag, limit=64)}",
                       ["snapshot", "delete", vm, _tag_argument(tag)],
                       timeout=SNAPSHOT_TIMEOUT)
    return _summary(host, lines, f"{vm}: snapshot {tag} deleted")


def other_hosts(ctx: Context, host: Host) -> list[str]:
    """The hosts ``host`` itself reaches (its ``hosts list``), without itself: where a VM
    of ``host`` can migrate to."""
    done = remote.run_captured(ctx, host, ["hosts", "list", "--json"], timeout=VERB_TIMEOUT)
    if done.returncode != 0:
        _run_failed(host, "-", "hosts", done)
    try:
        rows = json.loads(done.stdout)
    except ValueError:
        raise OperationFailed(f"{host.name}: hosts list --json: not JSON") from None
    names = [row.get("name") for row in rows if isinstance(row, dict)] \
        if isinstance(rows, list) else []
    return [name for name in names if isinstance(name, str) and name != LOCAL_HOST]
