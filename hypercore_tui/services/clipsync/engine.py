"""The clipboard sync's hub: the history, one :class:`VmSync` per VM, and events.

One engine per ``HYPERCORE_HOME``: :meth:`SyncEngine.run` takes ``clipsync.lock`` in the
runtime directory first and refuses to start when another process holds it (a
dashboard started later then shows and uses that one, through :mod:`.control`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hypercore_tui.adapters.fs import FileLock, ensure_private_dir
from hypercore_tui.adapters.qga import agent_session
from hypercore_tui.core.clip import ENTRY_RE, KIND_FILES, KIND_TEXT, ClipItem, History
from hypercore_tui.core.errors import Busy, HypercoreError, InvalidInput, OperationFailed
from hypercore_tui.core.hosts import Host
from hypercore_tui.core.layout import VmPaths
from hypercore_tui.services import (
    clipboard,
    clipfiles,
    clipfiles_host,
    clipwatch,
    records,
    registry,
)
from hypercore_tui.services.clipsync.hostpeer import HostPeer, host_peers
from hypercore_tui.services.clipsync.vmsync import VmSync
from hypercore_tui.services.context import Context
from hypercore_tui.services.tasks import reap_all

if TYPE_CHECKING:
    from hypercore_tui.services.clipsync.remotepeer import RemotePeer

log = logging.getLogger("hypercore.clipsync")
log.addHandler(logging.NullHandler())

#: How often the set of VMs is looked at again (``--all``: VMs created or deleted).
RESCAN_INTERVAL = 5.0
#: What an interrupted sync left in the share is swept this often, this long at most.
SWEEP_EVERY = 0.5
SWEEP_FOR = 120.0
#: How long the VMs' tasks get to end when the sync stops.
STOP_GRACE = 5.0
#: How long a starting sync waits for the lock (someone probing it holds it briefly).
LOCK_WAIT = 2.0
#: Where host files and folders come from in the history (a dropped path, clip push --files).
HOST_SOURCE = "host"
#: What the lock file says of a sync that ``clip link`` runs for another host's link
#: (no sync of this host's own ran then): a sync started here later takes over from it.
LINK_SYNC = "clip sync for a link"
#: The signal that asks a link's sync to hand over; how long the new sync waits for it.
HAND_OVER_SIGNAL = signal.SIGUSR1
HAND_OVER_WAIT = 12.0


def lock_path(ctx: Context) -> Path:
    return ctx.layout.runtime_dir / "clipsync.lock"


def control_path(ctx: Context) -> Path:
    return ctx.layout.runtime_dir / "clipsync.sock"


def _link_sync(lock: FileLock) -> int | None:
    """The pid of the ``clip link`` process whose sync holds ``lock``, else None (a sync
    of this host's own, or a process that is no ``hypercore clip link`` any more)."""
    pid_text, _, what = lock.holder().partition(" ")
    if what != LINK_SYNC or not pid_text.isdigit():
        return None
    pid = int(pid_text)
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return None
    return pid if any(a == b"clip" and b == b"link" for a, b in zip(argv, argv[1:],
                                                                     strict=False)) else None


def holder(ctx: Context) -> int | None:
    """The pid of the process that runs the sync, when one does."""
    path = lock_path(ctx)
    lock = FileLock(path)
    try:
        if lock.try_acquire():
            lock.release()
            return None
    except HypercoreError:
        return None
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return -1


@dataclass(frozen=True)
class SyncEvent:
    """Something the user should see: ``kind`` is "change" (a new entry went round),
    "push" (an entry reached a VM or a host clipboard), "vm" (a VM's sync state
    changed), "host" (a host clipboard's: ``vm`` is then its name, "host:tmux"...),
    "link" (a linked host's link: "link:rack2") or "fault" (said once per fault)."""

    kind: str
    message: str
    vm: str | None = None
    item: ClipItem | None = None
    at: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "message": self.message, "vm": self.vm,
                "item": self.item.meta() if self.item else None, "at": round(self.at, 3)}


class SyncEngine:
    """Keeps every selected VM's clipboard equal to the hub's newest entry."""

    def __init__(self, ctx: Context, names: Sequence[str] | None = None, *,
                 on_event: Callable[[SyncEvent], None] | None = None,
                 host: bool = True, links: Sequence[Host] = (),
                 for_link: bool = False) -> None:
        self.ctx = ctx
        #: run by ``clip link`` for another host: hands over to a sync started here later
        self.for_link = for_link
        self.names = list(dict.fromkeys(names)) if names else None  # None: every VM
        self.history = History()
        self.vms: dict[str, VmSync] = {}
        #: follow the host's own clipboards (tmux buffer, X11/Wayland display) too
        self.host = host
        self.hosts: list[HostPeer] = []
        #: the other hosts linked (``clip sync --link HOST``): one peer each
        self.link_hosts = list(links)
        self.links: list[RemotePeer] = []
        #: files entry → its content's digest on the links (each host names entries anew)
        self.trees: dict[str, str] = {}
        self.started = time.time()
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._host_tasks: list[asyncio.Task[None]] = []
        self._listeners: list[Callable[[SyncEvent], None]] = []
        if on_event is not None:
            self._listeners.append(on_event)
        self._lock: FileLock | None = None
        #: file entries this sync named in the share: being copied, and done
        self._copying: set[str] = set()
        self._entries: set[str] = set()
        self._removals: set[asyncio.Task[None]] = set()
        #: sweeps what an interrupted sync left in the share (while a guest stops copying)
        self._sweeper: asyncio.Task[None] | None = None
        #: set when :meth:`run` ends (the control socket's event streams end with it)
        self.stopped = asyncio.Event()

    # -- events -------------------------------------------------------------------------

    def listen(self, listener: Callable[[SyncEvent], None]) -> Callable[[], None]:
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    def _emit(self, event: SyncEvent) -> None:
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:  # a listener's failure must not stop the sync
                log.exception("clipsync listener failed")

    def fault(self, vm: str, message: str) -> None:
        log.warning("%s", message)
        self._emit(SyncEvent("fault", message, vm=vm, at=time.time()))

    def vm_changed(self, vm: VmSync) -> None:
        note = f" ({vm.note})" if vm.note else ""
        self._emit(SyncEvent("vm", f"{vm.name}: {vm.state.value}{note}", vm=vm.name,
                             at=time.time()))

    def host_changed(self, peer: HostPeer) -> None:
        note = f" ({peer.note})" if peer.note else ""
        self._emit(SyncEvent("host", f"{peer.name}: {peer.state}{note}", vm=peer.name,
                             at=time.time()))

    def link_changed(self, peer: RemotePeer) -> None:
        note = f" ({peer.note})" if peer.note else ""
        self._emit(SyncEvent("link", f"{peer.name}: {peer.state}{note}", vm=peer.name,
                             at=time.time()))

    def pushed(self, vm: VmSync | HostPeer | RemotePeer, item: ClipItem, seconds: float) -> None:
        self._emit(SyncEvent("push", f"{vm.name}: entry {item.id} written in "
                             f"{seconds * 1000:.0f} ms", vm=vm.name, item=item,
                             at=time.time()))

    # -- entries --------------------------------------------------------------------------

    def offer(self, kind: str, data: bytes, source: str, *, at: float | None = None
              ) -> ClipItem | None:
        """A new content from ``source``; it becomes current and goes to every other VM
        unless it changes nothing (see :meth:`History.offer`)."""
        if kind == KIND_TEXT:
            clipboard.check_text(data.decode("utf-8", errors="strict"))
        item = self.history.offer(kind, data, source, at=at)
        if item is not None:
            self._spread(item)
            self._collect()
        return item

    def offer_text(self, text: str, source: str) -> ClipItem | None:
        return self.offer(KIND_TEXT, clipboard.check_text(text), source)

    def again(self, item_id: int, source: str) -> ClipItem:
        """An entry of the history made current again and written into every VM."""
        item = self.history.again(item_id, source)
        if item is None:
            raise InvalidInput(f"no clipboard entry {item_id} in the history")
        self._spread(item)
        self._collect()
        return item

    async def push_to(self, item_id: int, vm: str) -> ClipItem:
        """Write one entry of the history into one VM now (the entry does not become
        current). The outcome is also an event ("push"); :class:`OperationFailed` when
        the VM was not written."""
        item = self.history.get(item_id)
        if item is None:
            raise InvalidInput(f"no clipboard entry {item_id} in the history")
        sync = self.vms.get(vm)
        if sync is None:
            raise InvalidInput(f"{vm[:64]!r} is not in this clipboard sync")
        error = await sync.push_item(item)
        if error is not None:
            message = f"{vm}: entry {item.id} not written: {error}"
            self._emit(SyncEvent("push", message, vm=vm, item=item, at=time.time()))
            raise OperationFailed(message)
        return item

    async def offer_files(self, entry: str, names: Sequence[bytes], source: str, *,
                          at: float | None = None) -> ClipItem:
        """A files entry another part of the host made in the share (``entry``, holding
        ``names``: :mod:`~hypercore_tui.services.clipfiles_host`), checked as one a guest
        copied there, then made current and offered to every VM. :class:`FilesRefused`
        when it fails the checks; the entry directory is removed then (and once it
        leaves the history)."""
        if not ENTRY_RE.fullmatch(entry):
            raise InvalidInput("not a files entry name")
        self.entry_started(entry)
        try:
            files = await asyncio.to_thread(
                lambda: clipfiles.check_entry(self.ctx, entry, names, cut=False,
                                              cap=clipfiles.files_cap(self.ctx)))
            if self._lock is None:  # (stopped meanwhile: the entry goes, nobody offers it)
                raise OperationFailed("the clipboard sync stopped before it took the files")
            item = self.offer(KIND_FILES, files.to_json(), source, at=at)
        finally:
            self.entry_settled(entry)
        if item is None:  # (a clock set back since the current entry came)
            raise OperationFailed("the files were not taken: the current clipboard entry "
                                  "is newer")
        return item

    async def offer_host_files(self, paths: Sequence[str | bytes | os.PathLike[str]]
                               ) -> ClipItem:
        """Host files and folders copied into a new entry in the share, then offered
        (:meth:`offer_files`)."""
        files = await clipfiles_host.build_entry_async(self.ctx, paths)
        return await self.offer_files(files.entry, files.names, HOST_SOURCE)

    def _spread(self, item: ClipItem) -> None:
        self._emit(SyncEvent("change", f"entry {item.id}: {item.describe()}", vm=item.source_vm,
                             item=item, at=time.time()))
        for name, vm in self.vms.items():
            if name != item.source_vm:
                vm.want_push()
        for peer in self.hosts:
            if peer.name != item.source:
                peer.want_push()
        for link in self.links:
            link.want_push()

    # -- file entries in the share ---------------------------------------------------------

    def entry_started(self, entry: str) -> None:
        """A VM's pull is copying files into the share as ``entry``."""
        self._copying.add(entry)

    def entry_settled(self, entry: str) -> None:
        """That pull ended: the entry stays while a history entry names it."""
        self._copying.discard(entry)
        self._entries.add(entry)
        self._collect()

    def _collect(self) -> None:
        """Remove the entry directories this sync made that no history entry names (the
        oldest left the history, or a copy was not carried). Nothing else."""
        kept = {files.entry for item in self.history if (files := item.files) is not None}
        for entry in [e for e in self.trees if e not in kept and e not in self._copying]:
            del self.trees[entry]
        drop = self._entries - kept - self._copying
        if not drop:
            return
        self._entries -= drop
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            for entry in drop:
                clipfiles.forget(self.ctx, entry)
            return
        task = loop.create_task(self._remove(sorted(drop)))
        self._removals.add(task)
        task.add_done_callback(self._removals.discard)

    async def _remove(self, entries: list[str]) -> None:
        for entry in entries:
            await asyncio.to_thread(clipfiles.forget, self.ctx, entry)

    # -- the guest watcher (a seam for tests) ---------------------------------------------

    async def start_watcher(self, paths: VmPaths, replace: bool
                            ) -> tuple[str, str | None] | None:
        """Start the guest's watcher (or find it running): a description ("x11 :0
        uid=1000, watcher pid 812") and its token for writes down the port (None: it takes
        none), or None when the guest has no graphical session (it is polled). Raises why
        it cannot be watched (no python3, no XFixes, ...)."""
        known = records.read_clip_session(paths)
        async with agent_session(paths.qga_socket, vm_name=paths.name, timeout=3.0,
                                 lock_timeout=10.0) as agent:
            started = await clipwatch.start_watcher(agent, session=known, replace=replace)
        if started.found is not None and started.found != known:
            records.write_clip_session(paths, started.found)
        if started.kind == clipwatch.KIND_NONE:
            return None
        if not started.watching:
            raise OperationFailed(started.reason or f"watcher {started.kind}")
        where = started.session or started.kind
        return (f"{where}, watcher pid {started.pid}" if started.pid else where,
                started.token)

    # -- running ----------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        current = self.history.current
        return {
            "running": True, "pid": os.getpid(), "started": round(self.started, 3),
            "all": self.names is None,
            "vms": [vm.status() for vm in self.vms.values()],
            "host": [peer.status() for peer in self.hosts],
            "links": [peer.status() for peer in self.links],
            "current": current.meta() if current else None,
            "entries": len(self.history),
        }

    def _wanted(self) -> list[str]:
        if self.names is not None:
            return self.names
        return registry.vm_names(self.ctx)

    def _refresh(self) -> None:
        wanted = self._wanted()
        for name in wanted:
            if name not in self.vms:
                vm = VmSync(self, name)
                self.vms[name] = vm
                self._tasks[name] = asyncio.create_task(self._guarded(vm),
                                                        name=f"clipsync-{name}")
        for name in list(self.vms):
            if name not in wanted:
                self._tasks.pop(name).cancel()
                del self.vms[name]

    def _start_links(self) -> None:
        from hypercore_tui.services.clipsync.remotepeer import (  # noqa: PLC0415 - cycle
            RemotePeer,
        )

        for host in self.link_hosts:
            peer = RemotePeer(self, host)
            self.links.append(peer)
            self._host_tasks.append(asyncio.create_task(peer.run(),
                                                        name=f"clipsync-{peer.name}"))

    def _start_hosts(self) -> None:
        try:
            self.hosts = host_peers(self)
        except HypercoreError as exc:
            self.fault("host", f"host clipboards not synced: {exc}")
            return
        for peer in self.hosts:
            self._host_tasks.append(asyncio.create_task(self._host(peer),
                                                        name=f"clipsync-{peer.name}"))

    async def _host(self, peer: HostPeer) -> None:
        """A host clipboard's loop: its faults end it (said once); the VMs go on."""
        try:
            await peer.run()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - any bug in one peer
            log.exception("clipsync %s failed", peer.name)
            peer.state, peer.note = "stopped", f"failed: {exc}"
            self.fault(peer.name, f"{peer.name}: clipboard sync failed: {exc}")

    async def _guarded(self, vm: VmSync) -> None:
        """A VM's loop that fails is said once and started again: the others go on."""
        while True:
            try:
                await vm.run()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - any bug in one VM's sync
                log.exception("clipsync %s failed", vm.name)
                vm._fault("loop", f"{vm.name}: clipboard sync failed: {exc}")  # noqa: SLF001
                await asyncio.sleep(5.0)

    def acquire(self) -> None:
        """Become the one sync of this home, or :class:`Busy` naming the running one."""
        ensure_private_dir(self.ctx.layout.runtime_base)
        ensure_private_dir(self.ctx.layout.runtime_dir)
        lock = FileLock(lock_path(self.ctx), LINK_SYNC if self.for_link else "clip sync")
        if lock.try_acquire():
            self._lock = lock
            return
        lender = None if self.for_link else _link_sync(lock)
        if lender is not None:
            # Only another host's link runs it: it ends (the link comes back attached to
            # this one), this sync takes over.
            log.info("clipboard sync: taking over from the sync of a link (pid %d)", lender)
            with contextlib.suppress(OSError):
                os.kill(lender, HAND_OVER_SIGNAL)
            if not lock.acquire(HAND_OVER_WAIT):
                raise Busy(f"a clipboard sync runs for another host's link here (pid "
                           f"{lender}) and did not hand over within {HAND_OVER_WAIT:g} s")
        # (a `clip status` looking whether a sync runs holds the lock for a moment)
        elif not lock.acquire(LOCK_WAIT):
            pid = holder(self.ctx)
            raise Busy(f"a clipboard sync already runs for this home (pid {pid}); "
                       "`hypercore clip status` shows it")
        self._lock = lock

    def release(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    async def _sweep(self, entries: list[str]) -> None:
        """Sweep what an interrupted sync left until it is gone (SWEEP_FOR at most)."""
        until = time.monotonic() + SWEEP_FOR
        while entries and time.monotonic() < until:
            await asyncio.sleep(SWEEP_EVERY)
            entries = await asyncio.to_thread(clipfiles.sweep_leftover_parts, self.ctx,
                                              entries)
        if entries:
            log.warning("clipboard files left half-copied by an earlier sync could not be "
                        "removed from the share: %s", ", ".join(entries))

    async def run(self, *, ready: Callable[[], None] | None = None) -> None:
        """Sync until cancelled. :meth:`acquire` first (or this does)."""
        from hypercore_tui.services.clipsync import control  # noqa: PLC0415 - cycle

        if self._lock is None:
            await asyncio.to_thread(self.acquire)  # (a take-over waits: not on the loop)
        self.stopped.clear()
        server = await control.serve(self)
        try:
            # Copies an earlier sync left half-done (a guest may still be copying into
            # one: it is called off, and swept here until it is gone).
            leftovers = await asyncio.to_thread(clipfiles.call_off_leftover_parts, self.ctx)
            if leftovers:
                self._sweeper = asyncio.create_task(self._sweep(leftovers),
                                                    name="clip-sweep")
            self._refresh()
            if self.host:
                self._start_hosts()
            self._start_links()
            if ready is not None:
                ready()
            while True:
                await asyncio.sleep(RESCAN_INTERVAL)
                with contextlib.suppress(HypercoreError):
                    self._refresh()
        finally:
            self.stopped.set()
            # Bounded: a guest operation that does not end when cancelled (a thread
            # waiting on a loaded guest) must not keep the sync from stopping.
            sweeper = [self._sweeper] if self._sweeper is not None else []
            left = await reap_all([*self._tasks.values(), *self._host_tasks, *sweeper],
                                  grace=STOP_GRACE)
            if left:
                log.warning("stopping with %d VM task(s) still ending", len(left))
            if self._removals:
                await asyncio.wait(self._removals, timeout=STOP_GRACE)
            server.close()
            with contextlib.suppress(Exception):
                await server.wait_closed()
            with contextlib.suppress(OSError):
                control_path(self.ctx).unlink()
            self.release()


def describe_status(status: dict[str, Any]) -> list[str]:
    """``clip status`` as lines (every value from a guest already escaped)."""
    if not status.get("running"):
        return ["no clipboard sync is running (start one: hypercore clip sync)"]
    since = time.strftime("%H:%M:%S", time.localtime(float(status.get("started", 0))))
    vms = status.get("vms") or []
    lines = [f"clipboard sync: pid {status.get('pid')}, since {since}, "
             f"{'every VM' if status.get('all') else 'the VMs named'} ({len(vms)})"]
    current = status.get("current")
    if current:
        at = time.strftime("%H:%M:%S", time.localtime(float(current.get("at", 0))))
        lines.append(f"last change: {at} entry {current.get('id')} {current.get('kind')} "
                     f"{current.get('size')} B from {current.get('source')}: "
                     f"{current.get('preview')}")
    else:
        lines.append("last change: none yet")
    for vm in vms:
        note = f" ({vm.get('note')})" if vm.get("note") else ""
        lines.append(f"  {vm.get('name')}: {vm.get('mode')}, {vm.get('state')}{note}")
    for peer in [*(status.get("host") or []), *(status.get("links") or [])]:
        note = f" ({peer.get('note')})" if peer.get("note") else ""
        lines.append(f"  {peer.get('name')}: {peer.get('state')}{note}")
    return lines


def dumps(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True)
