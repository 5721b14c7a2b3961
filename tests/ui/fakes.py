"""A small in-memory stand-in for the services, for UI unit tests only.

It keeps the contract of ui.backend.Backend: operations run in worker threads,
return a one-line summary or raise a HypercoreError, and state changes reach the
app the way the real monitor reports them (notices through the sink).
Everything is fixed (no clock, no randomness) so SVG snapshots are stable.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import cast

from PIL import Image, ImageDraw

from hypercore_tui.core.errors import (
    AlreadyExists,
    InvalidInput,
    InvalidState,
    NotFound,
    OperationFailed,
)
from hypercore_tui.core.hosts import Host
from hypercore_tui.core.models import ClipboardMode, DisplayKind, VmState
from hypercore_tui.core.series import VmHistory, VmSample
from hypercore_tui.core.snapshots import SnapshotInfo
from hypercore_tui.core.watchwire import WatchLine
from hypercore_tui.services.console import ConsoleAccess
from hypercore_tui.services.context import Context
from hypercore_tui.services.create import CreateRequest
from hypercore_tui.services.display import (
    DisplayAccess,
    DisplayOutcome,
    laptop_command,
    preferred_port,
)
from hypercore_tui.services.host import HostSummary
from hypercore_tui.services.hosts.fleet import VERBS, FleetSink, RemoteFleet
from hypercore_tui.services.hosts.stream import StreamState, StreamStatus
from hypercore_tui.services.migrate import MigrationPlan, MigrationProgress, MigrationResult
from hypercore_tui.services.monitor import (
    AgentStatus,
    GuestInfo,
    HostSampled,
    Sink,
    VmsChanged,
    VmStateChanged,
    VmView,
)
from hypercore_tui.ui.backend import (
    ClipEntry,
    ClipNotice,
    ClipSink,
    ClipSyncView,
    ClipVm,
    Progress,
    PulledText,
)

HOST = HostSummary(cpu_percent=23.0, cpu_count=8, mem_total_bytes=32 * 2**30,
                   mem_available_bytes=20 * 2**30, load=(0.52, 0.61, 0.70),
                   disk_free_bytes=412 * 2**30, disk_total_bytes=900 * 2**30)
HOSTILE_HOSTNAME = "[bold red]pwn[/]\x1b]0;owned\x07"


def _history(seed: int, *, cpu_scale: float, mem: float, disk: float) -> tuple[VmHistory,
                                                                              VmSample]:
    history = VmHistory(300)
    sample = VmSample(timestamp=0.0)
    for i in range(300):
        wave = (math.sin((i + seed) / 7.0) + 1) / 2
        sample = VmSample(
            timestamp=float(i), cpu_percent=cpu_scale * wave, vcpu_percent=(
                cpu_scale * wave * 0.6, cpu_scale * wave * 0.4),
            rss_bytes=int(mem * 1.2), guest_mem_total_bytes=int(mem * 2),
            guest_mem_used_bytes=int(mem * (0.8 + 0.2 * wave)),
            guest_mem_available_bytes=int(mem * (1.2 - 0.2 * wave)),
            disk_rd_bytes=i * 4096, disk_wr_bytes=i * 8192,
            disk_rd_bps=disk * wave, disk_wr_bps=disk * (1 - wave) * 2,
            net_rx_bytes=i * 1000, net_tx_bytes=i * 500, net_rx_bps=1200.0, net_tx_bps=640.0,
            uptime_seconds=11_520.0 + i,
        )
        history.add(sample)
    return history, sample


def sample_views() -> dict[str, VmView]:
    views: dict[str, VmView] = {}

    def add(name: str, state: VmState, cpus: int, ram: int, *, seed: int = 0,
            guest: GuestInfo | None = None, agent: AgentStatus = AgentStatus.UNKNOWN,
            pid: int | None = None) -> None:
        view = VmView(name=name, state=state, pid=pid, ram_mb=ram, cpus=cpus,
                      disk=f"/srv/hypercore/vms/{name}/disk.qcow2", agent=agent, guest=guest,
                      display_socket=f"/run/user/1000/hypercore/ab12cd34/{name}/vnc.sock",
                      serial_socket=f"/run/user/1000/hypercore/ab12cd34/{name}/serial.sock")
        if state.is_active:
            view.history, view.sample = _history(seed, cpu_scale=35.0 * cpus, mem=ram * 2**19,
                                                 disk=3 * 2**20)
        views[name] = view

    add("web1", VmState.RUNNING, 2, 2048, seed=0, pid=4242, agent=AgentStatus.ANSWERING,
        guest=GuestInfo(hostname="web1.example.org", os_name="Debian GNU/Linux 12 (bookworm)",
                        kernel="6.1.0-18-amd64", addresses=("10.0.2.15", "fec0::5054:ff:fe12:3456"),
                        users=("alice",)))
    add("db1", VmState.PAUSED, 4, 8192, seed=11, pid=4343, agent=AgentStatus.SILENT)
    add("build", VmState.STOPPED, 8, 16384)
    add("evil", VmState.RUNNING, 1, 512, seed=23, pid=4444, agent=AgentStatus.ANSWERING,
        guest=GuestInfo(hostname=HOSTILE_HOSTNAME, os_name="[link=http://x]OS[/link]",
                        kernel="\x1b[31mred", addresses=("192.0.2.1",), users=("r\x00oot",)))
    add("old", VmState.CRASHED, 1, 1024, pid=4545)
    return views


class FakeMonitor:
    """Holds fixed views; reports changes the FakeBackend makes through the sink."""

    def __init__(self, sink: Sink, views: dict[str, VmView]) -> None:
        self.sink = sink
        self._views = views
        self.host: HostSummary | None = HOST
        self.focus: str | None = None
        self.pokes: list[str] = []

    @property
    def views(self) -> Mapping[str, VmView]:
        return self._views

    def view(self, name: str) -> VmView | None:
        return self._views.get(name)

    def set_focus(self, name: str | None) -> None:
        self.focus = name

    def poke(self, name: str) -> None:
        self.pokes.append(name)

    async def rescan(self) -> None:
        self.sink(VmsChanged(tuple(sorted(self._views))))

    async def run(self) -> None:
        self.sink(VmsChanged(tuple(sorted(self._views))))
        self.sink(HostSampled(HOST))
        await asyncio.Event().wait()

    def set_state(self, name: str, new: VmState, reason: str) -> None:
        view = self._views[name]
        old, view.state = view.state, new
        self.sink(VmStateChanged(name, old, new, reason))


class FakeSnapshots:
    def __init__(self) -> None:
        self.calls: list[tuple[object, ...]] = []
        when = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
        self.data: dict[str, list[SnapshotInfo]] = {"web1": [
            SnapshotInfo("before-upgrade", when, 3600.0, 300 * 2**20, True, "1"),
            SnapshotInfo("disk-only", when + dt.timedelta(hours=1), 7200.0, 0, False, "2"),
        ]}

    def list(self, name: str) -> list[SnapshotInfo]:
        self.calls.append(("list", name))
        return list(self.data.get(name, []))

    def create(self, name: str, tag: str | None, *, disk_only: bool, progress: Progress) -> str:
        self.calls.append(("create", name, tag, disk_only))
        progress("saving", 0.5)
        tag = tag or "snap-auto"
        snaps = self.data.setdefault(name, [])
        snaps.append(SnapshotInfo(tag, dt.datetime(2026, 1, 3, tzinfo=dt.UTC), 1.0,
                                  0 if disk_only else 2**20, not disk_only, str(len(snaps) + 1)))
        return f"{name}: snapshot {tag} taken"

    def restore(self, name: str, tag: str, *, safety_snapshot: bool, progress: Progress) -> str:
        self.calls.append(("restore", name, tag, safety_snapshot))
        return f"{name}: restored snapshot {tag}"

    def delete(self, name: str, tag: str, *, progress: Progress) -> str:
        self.calls.append(("delete", name, tag))
        self.data[name] = [s for s in self.data.get(name, []) if s.tag != tag]
        return f"{name}: snapshot {tag} deleted"


class FakeClipboard:
    def __init__(self) -> None:
        self.calls: list[tuple[object, ...]] = []
        self.fail: str | None = None  # pull raises OperationFailed(fail)

    def push(self, name: str, text: str) -> str:
        self.calls.append(("push", name, text))
        return f"{name}: {len(text)} characters pasted"

    def pull(self, name: str) -> PulledText:
        self.calls.append(("pull", name))
        if self.fail is not None:
            raise OperationFailed(self.fail)
        text = "text from the guest"
        return PulledText(text, f"{name}: {len(text)} characters copied from its clipboard "
                                "(xclip)")

    def copy_in(self, source: Path, name: str | None, *, progress: Progress) -> str:
        self.calls.append(("copy_in", source, name))
        return f"copied {source.name}"


HOSTILE_CLIP = "[b]x[/b]\x1b]52;c;SGVsbG8=\x07"


class FakeClipSync:
    """The clipboard sync: off until started; ``elsewhere`` makes it another process's."""

    def __init__(self) -> None:
        self.calls: list[tuple[object, ...]] = []
        self.here = False
        self.elsewhere: int | None = None  # the pid of another process's sync
        self.sink: ClipSink | None = None
        self.texts: dict[int, str] = {}  # entry id -> its text (text_of)
        self.entries: list[ClipEntry] = [
            ClipEntry(2, "text", len(HOSTILE_CLIP), "vm:evil", 3600.0,
                      # what ClipItem.preview makes of it: control characters escaped
                      "[b]x[/b]\\x1b]52;c;SGVsbG8=\\x07"),
            ClipEntry(1, "text", 5, "dashboard", 3500.0, "hello"),
        ]

    def view(self) -> ClipSyncView:
        if not (self.here or self.elsewhere):
            return ClipSyncView()
        vms = (ClipVm("web1", "sync", "watching", "x11 :0 uid=1000"),
               ClipVm("db1", "sync", "paused"), ClipVm("evil", "push-only", "push-only"))
        return ClipSyncView(True, self.here, 5151 if self.here else self.elsewhere, vms,
                            tuple(self.entries))

    def say(self, kind: str, message: str, *, vm: str | None = None,
            entry: ClipEntry | None = None) -> None:
        assert self.sink is not None
        self.sink(ClipNotice(kind, message, self.view(), vm=vm, entry=entry))

    def start(self) -> str:
        self.calls.append(("start",))
        self.here = True
        self.say("state", "clipboard sync on (every VM)")
        return "clipboard sync starting (every VM)"

    def stop(self) -> str:
        self.calls.append(("stop",))
        self.here = False
        self.say("state", "clipboard sync off")
        return "clipboard sync stopping"

    async def run(self, sink: ClipSink) -> None:
        self.sink = sink
        await asyncio.Event().wait()

    async def offer(self, text: str) -> str:
        self.calls.append(("offer", text))
        return "pasted text is clipboard entry 3"

    async def offer_files(self, paths: Sequence[Path]) -> str:
        self.calls.append(("offer_files", tuple(paths)))
        return f"clipboard entry 3: {len(paths)} items; offered on every VM's clipboard"

    async def text_of(self, entry_id: int) -> str | None:
        self.calls.append(("text_of", entry_id))
        return self.texts.get(entry_id)

    async def again(self, entry_id: int) -> str:
        self.calls.append(("again", entry_id))
        return f"clipboard entry {entry_id} is current again"

    async def push_to(self, entry_id: int, vm: str) -> str:
        self.calls.append(("push_to", entry_id, vm))
        return f"{vm}: clipboard entry {entry_id} written"


def screen_png(width: int = 720, height: int = 400) -> bytes:
    """A fixed VGA-like screen: black, a grey 'text' line, a red and a blue block."""
    image = Image.new("RGB", (width, height), (0, 0, 0))
    draw = ImageDraw.Draw(image)
    draw.rectangle((0, 0, width * 2 // 3, 15), fill=(168, 168, 168))
    draw.rectangle((width // 8, height // 4, width // 2, height * 3 // 4), fill=(168, 0, 0))
    draw.rectangle((width * 5 // 8, height // 2, width - 9, height - 9), fill=(0, 0, 168))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


SCREEN_PNG = screen_png()


class FakeKeyboard:
    """Keys and typed text, recorded (the thread each call ran in too)."""

    default_layout = "us"
    confirm_above = 2000

    def __init__(self) -> None:
        self.calls: list[tuple[object, ...]] = []
        self.threads: set[str] = set()
        self.fail: str | None = None  # send_keys and type_text raise OperationFailed(fail)
        self.delay = 0.0  # seconds each send_keys call takes

    def send_keys(self, name: str, keys: Sequence[str], layout: str) -> int:
        self.threads.add(threading.current_thread().name)
        if self.delay:
            time.sleep(self.delay)
        if self.fail is not None:
            raise OperationFailed(self.fail)
        self.calls.append(("keys", name, tuple(keys), layout))
        return len(keys)

    def type_text(self, name: str, text: str, layout: str, *, progress: Progress) -> str:
        self.threads.add(threading.current_thread().name)
        if self.fail is not None:
            raise OperationFailed(self.fail)
        self.calls.append(("type", name, text, layout))
        progress("typing", 1.0)
        return f"{name}: typed {len(text)} characters ({layout} keymap, 0.1 s)"

    def keys(self) -> list[str]:
        """Every key sent, in order."""
        return [k for call in self.calls if call[0] == "keys" for k in call[2]]  # type: ignore[attr-defined]


class FakeStream:
    """A remote host's stream that never connects: tests feed the fleet's lines."""

    def __init__(self, ctx: object, host: Host, on_line: object, on_status: object) -> None:
        self.host = host

    async def run(self) -> None:
        await asyncio.Event().wait()


class FakeMigration:
    """Live migration: VMs in ``rbd`` have their disk on Ceph (the others are refused as
    the service refuses them); a migration reports one progress, then waits for ``gate``
    (set by default) while asking ``cancelled``; ``fail`` makes it fail after the gate.
    A success removes the VM from the backend's views (the monitor's rescan drops it)."""

    PROGRESS = MigrationProgress(status="active", elapsed=1.5, transferred=130 << 20,
                                 remaining=136 << 20, total=256 << 20, dirty_rate=3 << 20,
                                 expected_downtime_ms=40)

    def __init__(self, views: dict[str, VmView]) -> None:
        self.views = views
        self.calls: list[tuple[str, ...]] = []
        self.rbd = {"web1"}
        self.gate = threading.Event()
        self.gate.set()
        self.waiting = threading.Event()  # set once a migration reported its progress
        self.fail: str | None = None

    def plan(self, name: str) -> MigrationPlan:
        self.calls.append(("plan", name))
        view = self.views.get(name)
        if view is None:
            raise NotFound(f"no VM named {name!r}")
        if name not in self.rbd:
            raise InvalidInput(f"{name}: its disk {view.disk} is a local file; live migration "
                               "needs every disk on a Ceph cluster both hosts reach (--offline,"
                               " for a stopped VM with local disks, is not implemented yet)")
        return MigrationPlan(name, f"rbd:vm-pool/{name}", view.ram_mb, True)

    def migrate(self, name: str, host: str, *, progress: Callable[[MigrationProgress], None],
                cancelled: Callable[[], bool]) -> MigrationResult:
        self.calls.append(("migrate", name, host))
        progress(self.PROGRESS)
        self.waiting.set()
        while not self.gate.wait(0.01):
            if cancelled():
                raise OperationFailed(f"{name}: the migration to {host} was cancelled; it "
                                      "runs on this host as before")
        if self.fail is not None:
            raise OperationFailed(self.fail)
        del self.views[name]
        return MigrationResult(name=name, source="local", target=host,
                               via=f"ssh user@{host}.example", downtime_ms=84.2,
                               qemu_downtime_ms=80, total_s=3.21, switchover_s=3.0,
                               transferred=300 << 20, share="")


class FakeRemote:
    """Other hosts: the real :class:`RemoteFleet` fed by the test (``feed``, ``status``),
    verbs recorded (and failed on demand)."""

    def __init__(self, hosts: Sequence[str] = ("b",)) -> None:
        self.host_names: tuple[str, ...] = tuple(hosts)
        self.verbs = frozenset(VERBS)
        self.calls: list[tuple[str, ...]] = []
        self.fail: dict[str, str] = {}
        self.fleet: RemoteFleet | None = None
        self.clipboard_text = "copied on b"

    def make_fleet(self, sink: FleetSink) -> RemoteFleet:
        hosts = [Host(name, f"user@{name}.example") for name in self.host_names]
        self.fleet = RemoteFleet(cast(Context, None), hosts, sink, stream_factory=FakeStream)
        return self.fleet

    def run_verb(self, host: str, verb: str, vm: str) -> str:
        self.calls.append((host, verb, vm))
        if verb in self.fail:
            raise OperationFailed(self.fail[verb])
        return f"{host}: {vm}: {verb} done"

    def _call(self, host: str, what: str, vm: str, *extra: str) -> None:
        self.calls.append((host, what, vm, *extra))
        if what in self.fail:
            raise OperationFailed(self.fail[what])

    def clip_push(self, host: str, vm: str, text: str) -> str:
        self._call(host, "clip push", vm, text)
        return f"{host}: {vm}: clipboard set ({len(text)} characters)"

    def clip_pull(self, host: str, vm: str) -> str:
        self._call(host, "clip pull", vm)
        return self.clipboard_text

    def set_clipboard_mode(self, host: str, vm: str, mode: ClipboardMode) -> str:
        self._call(host, "clipboard mode", vm, mode.value)
        return f"{host}: {vm}: clipboard {mode.value}"

    def type_text(self, host: str, vm: str, text: str) -> str:
        self._call(host, "type", vm, text)
        return f"{host}: {vm}: {len(text)} characters typed"

    def open_console(self, host: str, vm: str) -> ConsoleAccess:
        self._call(host, "console", vm)
        line = f"hypercore --host {host} console {vm}"
        return ConsoleAccess(("hypercore", "--host", host, "console", vm), False,
                             f"run in another terminal: {line}", line)

    def display_line(self, host: str, vm: str) -> str:
        self._call(host, "display", vm)
        return f"ssh -L 5999:/run/{vm}/spice.sock {host}.example & remote-viewer spice://127.0.0.1:5999"

    def snapshot_list(self, host: str, vm: str) -> list[SnapshotInfo]:
        self._call(host, "snapshot list", vm)
        when = dt.datetime(2026, 12, 1, 9, 30, tzinfo=dt.UTC)
        return [SnapshotInfo("there-1", when, 61.0, 80 << 20, True, ""),
                SnapshotInfo("[red]x", when, 0.0, 0, False, "")]

    def snapshot_create(self, host: str, vm: str, tag: str | None, *,
                        disk_only: bool) -> str:
        self._call(host, "snapshot create", vm, tag or "", str(disk_only))
        return f"{host}: {vm}: snapshot {tag or 'snap-1'} taken"

    def snapshot_restore(self, host: str, vm: str, tag: str) -> str:
        self._call(host, "snapshot restore", vm, tag)
        return f"{host}: {vm}: restored snapshot {tag}"

    def snapshot_delete(self, host: str, vm: str, tag: str) -> str:
        self._call(host, "snapshot delete", vm, tag)
        return f"{host}: {vm}: snapshot {tag} deleted"

    def migration_targets(self, host: str) -> list[str]:
        self._call(host, "targets", "-")
        return [h for h in ("a", "c") if h != host]

    def migrate(self, host: str, vm: str, target: str) -> str:
        self._call(host, "migrate", vm, target)
        return f"{host}: {vm}: migrated to {target}: downtime 90 ms"

    def feed(self, host: str, kind: str, **fields: object) -> None:
        assert self.fleet is not None
        self.fleet.on_line(host, WatchLine(kind, {"type": kind, **fields}))

    def status(self, host: str, state: StreamState, detail: str = "") -> None:
        assert self.fleet is not None
        self.fleet.on_status(StreamStatus(host, state, detail))


def remote_row(name: str, state: str = "stopped", **extra: object) -> dict[str, object]:
    """A VM row as ``watch --json`` writes it."""
    return {"name": name, "state": state, "pid": None, "ram_mb": 256, "cpus": 1,
            "disk": "/var/lib/x.qcow2", "agent_status": "unknown", **extra}


class FakeBackend:
    def __init__(self, views: dict[str, VmView] | None = None, *,
                 snapshots: bool = True, clipboard: bool = True,
                 keyboard: bool = True, remote: FakeRemote | None = None) -> None:
        self.views = sample_views() if views is None else views
        self.calls: list[tuple[str, ...]] = []
        self.fail: dict[str, str] = {}  # operation -> error message to raise
        self.snapshots: FakeSnapshots | None = FakeSnapshots() if snapshots else None
        self.clipboard: FakeClipboard | None = FakeClipboard() if clipboard else None
        self.clipsync: FakeClipSync | None = FakeClipSync() if clipboard else None
        self.monitor: FakeMonitor | None = None
        self.storage = None  # no Ceph cluster: no storage tab
        self.keyboard: FakeKeyboard | None = FakeKeyboard() if keyboard else None
        self.remote = remote  # None: no other host, the list is not grouped
        self.migration = FakeMigration(self.views)
        self.threads: set[str] = set()
        self.screendumps: list[str] = []  # the VMs whose screen was asked for, in order

    def make_monitor(self, sink: Sink) -> FakeMonitor:
        self.monitor = FakeMonitor(sink, self.views)
        return self.monitor

    def _op(self, op: str, name: str) -> VmView:
        self.calls.append((op, name))
        self.threads.add(threading.current_thread().name)
        if op in self.fail:
            raise OperationFailed(self.fail[op])
        view = self.views.get(name)
        if view is None:
            raise NotFound(f"no VM named {name!r}")
        return view

    def _state(self, name: str, state: VmState, reason: str) -> None:
        assert self.monitor is not None
        self.monitor.set_state(name, state, reason)

    def start_vm(self, name: str) -> str:
        if self._op("start", name).state.is_active:
            raise InvalidState(f"{name} is already running")
        self._state(name, VmState.RUNNING, "started")
        return f"{name} started (pid 5000)"

    def stop_vm(self, name: str) -> str:
        if not self._op("stop", name).state.is_active:
            raise InvalidState(f"{name} is not running")
        self._state(name, VmState.STOPPED, "QEMU exited")
        return f"{name} stopped (guest agent shutdown)"

    def force_stop_vm(self, name: str) -> str:
        self._op("force-stop", name)
        self._state(name, VmState.STOPPED, "QEMU exited")
        return f"{name} stopped (QMP quit)"

    def pause_vm(self, name: str) -> str:
        self._op("pause", name)
        self._state(name, VmState.PAUSED, "STOP")
        return f"{name} paused"

    def resume_vm(self, name: str) -> str:
        self._op("resume", name)
        self._state(name, VmState.RUNNING, "RESUME")
        return f"{name} resumed"

    def reset_vm(self, name: str) -> str:
        self._op("reset", name)
        return f"{name} reset"

    def delete_vm(self, name: str) -> str:
        self._op("delete", name)
        del self.views[name]
        return f"{name} deleted"

    def create_vm(self, request: CreateRequest, *, boot: bool) -> str:
        self.calls.append(("create", request.name))
        if request.name in self.views:
            raise AlreadyExists(f"a VM named {request.name!r} already exists")
        self.views[request.name] = VmView(name=request.name, ram_mb=request.ram_mb,
                                          cpus=request.cpus)
        return f"{request.name} created"

    def create_demo_vm(self) -> str:
        self.calls.append(("demo",))
        self.views["demo"] = VmView(name="demo", state=VmState.RUNNING, ram_mb=128, cpus=1)
        return "demo created and started"

    #: What open_display finds here: a graphical session or not
    graphical: bool = False

    def open_console(self, name: str) -> ConsoleAccess:
        self._op("console", name)
        argv = ("/usr/bin/python3", "-m", "hypercore_tui", "console", name)
        return ConsoleAccess(argv, False, "run it", f"hypercore console {name}")

    def open_display(self, name: str) -> DisplayOutcome:
        self._op("display", name)
        sock = Path(self.views[name].display_socket or "/nonexistent")
        kind = DisplayKind.VNC
        line = laptop_command(kind, sock, name, {"USER": "alice", "SSH_CONNECTION":
                                                 "198.51.100.1 5 198.51.100.7 22"})
        access = DisplayAccess(name, kind, sock, preferred_port(name), line,
                               "DISPLAY=:0" if self.graphical else None, "/usr/bin/remote-viewer")
        if self.graphical:
            return DisplayOutcome(access, True, f"{name}: remote-viewer started")
        return DisplayOutcome(access, False, "no graphical session here")

    def set_clipboard_mode(self, name: str, mode: ClipboardMode) -> str:
        view = self._op("clipboard-mode", name)
        old, view.clipboard = view.clipboard, mode
        if old is mode:
            return f"{name}: clipboard is already {mode.value}"
        return f"{name}: clipboard={mode.value} (was {old.value})"

    async def screendump(self, name: str) -> bytes:
        self.screendumps.append(name)
        if "screendump" in self.fail:
            raise OperationFailed(self.fail["screendump"])
        view = self.views.get(name)
        if view is None or not view.state.is_active:
            raise InvalidState(f"{name} is not running")
        return SCREEN_PNG
