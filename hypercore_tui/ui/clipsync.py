"""The clipboard sync as the dashboard sees it (issue 13): run it here, stop it, or show
and use the one another process runs (``hypercore clip sync`` in a tmux window).

:class:`LiveClipSync` lives on the app's event loop: :meth:`LiveClipSync.run` is one
long worker (like the monitor) that runs the sync engine while it is switched on here,
and otherwise follows a sync of another process through its control socket (looked
for again every :data:`RECONNECT` seconds). The ``C`` toggle is remembered in the
settings (``clipboard.dashboard_sync``): a dashboard started after one that left it on
starts the sync itself, unless another process runs one. What happens reaches the app as
:class:`ClipNotice` through the sink it gives. Widgets and screens get these types
from :mod:`hypercore_tui.ui.backend`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hypercore_tui.core.clip import KIND_TEXT
from hypercore_tui.core.errors import Busy, HypercoreError, OperationFailed
from hypercore_tui.core.hosts import Host
from hypercore_tui.services import clipsettings
from hypercore_tui.services.clipsync import control
from hypercore_tui.services.clipsync.engine import SyncEngine, SyncEvent, holder
from hypercore_tui.services.context import Context
from hypercore_tui.services.hosts import registry as hosts_registry

log = logging.getLogger("hypercore.ui")
log.addHandler(logging.NullHandler())

#: While no sync runs (or another process's went away), looked for this often.
RECONNECT = 2.0
#: Where a paste into the dashboard comes from, in the history.
SOURCE = "dashboard"


@dataclass(frozen=True)
class ClipEntry:
    """One entry of the hub's history (no content: the preview is already escaped)."""

    id: int
    kind: str
    size: int
    source: str
    at: float
    preview: str

    @classmethod
    def from_meta(cls, meta: Mapping[str, Any]) -> ClipEntry:
        """From ``ClipItem.meta()`` (here or read from the control socket)."""
        def num(key: str) -> float:
            value = meta.get(key)
            return float(value) if isinstance(value, int | float) else 0.0

        return cls(id=int(num("id")), kind=str(meta.get("kind", "?"))[:20],
                   size=int(num("size")), source=str(meta.get("source", "?"))[:80],
                   at=num("at"), preview=str(meta.get("preview", ""))[:200])


@dataclass(frozen=True)
class ClipVm:
    """One VM in the sync: its mode (sync, push-only, off) and state (watching...)."""

    name: str
    mode: str
    state: str
    note: str | None = None


@dataclass(frozen=True)
class ClipSyncView:
    """The sync now: off, running here, or running in process ``pid``."""

    running: bool = False
    here: bool = False
    pid: int | None = None
    vms: tuple[ClipVm, ...] = ()
    entries: tuple[ClipEntry, ...] = ()  # newest first
    #: the host's own clipboards in the sync ("host:tmux"...; mode "host") and the
    #: other hosts linked ("link:rack2"...; a sync started with ``clip sync --link``)
    hosts: tuple[ClipVm, ...] = ()

    @property
    def elsewhere(self) -> bool:
        return self.running and not self.here


@dataclass(frozen=True)
class ClipNotice:
    """Something happened: ``kind`` is one of the engine's ("change", "push", "vm",
    "fault") or "state" (the sync started, stopped, was found in another process or
    went away); ``view`` is the sync after it."""

    kind: str
    message: str
    view: ClipSyncView
    vm: str | None = None
    entry: ClipEntry | None = None


ClipSink = Callable[[ClipNotice], None]


def _vms(status: Mapping[str, Any], key: str = "vms") -> tuple[ClipVm, ...]:
    vms = status.get(key)
    if not isinstance(vms, list):
        return ()
    return tuple(ClipVm(str(v.get("name", "?"))[:64], str(v.get("mode", "host"))[:20],
                        str(v.get("state", "?"))[:40],
                        str(v["note"])[:200] if v.get("note") else None)
                 for v in vms if isinstance(v, dict))


class LiveClipSync:
    """The sync of one ``HYPERCORE_HOME`` for the dashboard (see the module)."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.engine: SyncEngine | None = None  # running here
        self._want_here = False
        self._wake = asyncio.Event()
        self._sink: ClipSink = lambda notice: None
        self._remote_status: dict[str, Any] | None = None  # another process's sync
        self._remote_entries: list[ClipEntry] = []
        self._saving = asyncio.Lock()  # the C toggle written to the settings, in order
        self._saves: set[asyncio.Task[None]] = set()

    # -- what the dashboard shows ------------------------------------------------------

    def view(self) -> ClipSyncView:
        engine = self.engine
        if engine is not None:
            here = engine.status()
            return ClipSyncView(True, True, os.getpid(), _vms(here),
                                tuple(ClipEntry.from_meta(i.meta()) for i in engine.history),
                                _vms(here, "host") + _vms(here, "links"))
        status = self._remote_status
        if status is not None:
            pid = status.get("pid")
            return ClipSyncView(True, False, pid if isinstance(pid, int) else None,
                                _vms(status), tuple(self._remote_entries),
                                _vms(status, "host") + _vms(status, "links"))
        return ClipSyncView()

    def _notify(self, kind: str, message: str, *, vm: str | None = None,
                entry: ClipEntry | None = None) -> None:
        self._sink(ClipNotice(kind, message, self.view(), vm=vm, entry=entry))

    # -- switching it on and off -------------------------------------------------------

    def start(self) -> str:
        """Run the sync in this process (every VM); :class:`Busy` when another runs it."""
        pid = holder(self.ctx)
        if pid is not None and pid != os.getpid():
            raise Busy(f"clipboard sync runs in pid {pid} (hypercore clip sync)")
        self._want_here = True
        self._wake.set()
        self._remember()
        return "clipboard sync starting (every VM)"

    def stop(self) -> str:
        if not self._want_here:
            return "the clipboard sync does not run in this dashboard"
        self._want_here = False
        self._wake.set()
        self._remember()
        return "clipboard sync stopping"

    def _remember(self) -> None:
        """The C toggle kept in the settings (``clipboard.dashboard_sync``): the next
        dashboard starts the sync when it was on. Written in a thread (the settings'
        lock may wait), the latest state last."""
        async def save() -> None:
            async with self._saving:
                try:
                    await asyncio.to_thread(clipsettings.remember_dashboard_sync, self.ctx,
                                            self._want_here)
                except HypercoreError as exc:
                    self._notify("fault", f"clipboard sync on/off not remembered: {exc}")

        try:
            task = asyncio.get_running_loop().create_task(save())
        except RuntimeError:  # (no loop: a caller outside the app)
            return
        self._saves.add(task)
        task.add_done_callback(self._saves.discard)

    async def _remembered(self) -> bool:
        """Whether the last dashboard left the sync on (and no other process runs one)."""
        try:
            on = await asyncio.to_thread(clipsettings.dashboard_sync, self.ctx)
        except HypercoreError as exc:
            self._notify("fault", f"clipboard sync setting not read: {exc}")
            return False
        return on and holder(self.ctx) is None

    # -- using it ------------------------------------------------------------------------

    async def offer(self, text: str) -> str:
        """Pasted text becomes the current entry (and goes to every VM)."""
        engine = self.engine
        if engine is not None:
            item = engine.offer_text(text, SOURCE)
            meta = item.meta() if item is not None else None
        else:
            reply = await self._ask("offer", text=text, source=SOURCE)
            meta = reply.get("item")
        if not isinstance(meta, dict):
            return "pasted text: the clipboard already holds it"
        entry = ClipEntry.from_meta(meta)
        return f"pasted text is clipboard entry {entry.id} ({entry.size} B), sent to the VMs"

    async def offer_files(self, paths: Sequence[Path]) -> str:
        """Host files and folders (a drop) become the current entry, offered on every
        VM's clipboard: copied into the share here, then taken by the sync (this one, or
        another process's through its socket)."""
        engine = self.engine
        if engine is not None:
            meta = (await engine.offer_host_files(paths)).meta()
        else:
            meta = await control.offer_files(self.ctx, paths)
        entry = ClipEntry.from_meta(meta)
        return f"clipboard entry {entry.id}: {entry.preview}; offered on every VM's clipboard"

    async def text_of(self, entry_id: int) -> str | None:
        engine = self.engine
        if engine is not None:
            item = engine.history.get(entry_id)
            return item.text if item is not None and item.kind == KIND_TEXT else None
        reply = await control.request(self.ctx, "text", id=entry_id)
        text = (reply or {}).get("text")
        return text if isinstance(text, str) else None

    async def again(self, entry_id: int) -> str:
        """An entry of the history made current again and written into every VM."""
        engine = self.engine
        if engine is not None:
            meta = engine.again(entry_id, "history").meta()
        else:
            meta = (await self._ask("again", id=entry_id)).get("item") or {}
        return (f"clipboard entry {entry_id} is current again (entry "
                f"{ClipEntry.from_meta(meta).id}), sent to the VMs")

    async def push_to(self, entry_id: int, vm: str) -> str:
        """One entry written into one VM now."""
        engine = self.engine
        if engine is not None:
            await engine.push_to(entry_id, vm)
        else:
            await self._ask("push", id=entry_id, vm=vm, timeout=control.PUSH_TIMEOUT)
        return f"{vm}: clipboard entry {entry_id} written"

    async def _ask(self, op: str, **args: Any) -> dict[str, Any]:
        reply = await control.request(self.ctx, op, **args)
        if reply is None:
            raise OperationFailed("no clipboard sync is running (C starts one)")
        return reply

    # -- the worker ----------------------------------------------------------------------

    async def run(self, sink: ClipSink) -> None:
        """Until cancelled: the sync while it is on here, else another process's."""
        self._sink = sink
        try:
            if not self._want_here and await self._remembered():
                self._want_here = True  # (C was on when the last dashboard ended)
            while True:
                self._wake.clear()
                if self._want_here:
                    await self._run_here()
                    continue
                pid = holder(self.ctx)
                if pid is not None and pid != os.getpid():
                    with contextlib.suppress(OSError, HypercoreError):
                        await self._follow(pid)
                    if self._remote_status is not None:
                        self._remote_status, self._remote_entries = None, []
                        self._notify("state", f"the clipboard sync of pid {pid} stopped")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), RECONNECT)
        finally:
            self._sink = lambda notice: None

    async def _run_here(self) -> None:
        links = _other_hosts(self.ctx)
        engine = SyncEngine(self.ctx, None, links=links)
        try:
            # Off the loop: the lock may be held for a moment, or handed over by the sync
            # another host's link runs here (seconds).
            await asyncio.to_thread(engine.acquire)
        except Busy as exc:
            self._want_here = False
            self._notify("fault", str(exc))
            return
        self.engine = engine
        stop_listening = engine.listen(self._engine_event)
        linked = f"; linked to {', '.join(h.name for h in links)}" if links else ""
        task = asyncio.create_task(engine.run(ready=lambda: self._notify(
            "state", f"clipboard sync on (every VM{linked})")), name="clipsync")
        try:
            while self._want_here and not task.done():
                waiter = asyncio.ensure_future(self._wake.wait())
                try:
                    await asyncio.wait([task, waiter], return_when=asyncio.FIRST_COMPLETED)
                finally:
                    waiter.cancel()
                self._wake.clear()
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
            stop_listening()
            self.engine = None
        error = task.exception() if task.done() and not task.cancelled() else None
        if error is not None:
            self._want_here = False
            log.error("clipboard sync stopped: %r", error)
            self._notify("fault", f"clipboard sync stopped: {error}")
        else:
            self._notify("state", "clipboard sync off")

    def _engine_event(self, event: SyncEvent) -> None:
        entry = ClipEntry.from_meta(event.item.meta()) if event.item else None
        self._notify(event.kind, event.message, vm=event.vm, entry=entry)

    async def _follow(self, pid: int) -> None:
        """Show another process's sync until it goes away (or this one is switched on)."""
        stream = control.events(self.ctx)
        try:
            async for obj in stream:
                if self._want_here:
                    return
                if "status" in obj and isinstance(obj["status"], dict):
                    self._remote_status = obj["status"]
                    history = await control.request(self.ctx, "history")
                    entries = (history or {}).get("entries") or []
                    self._remote_entries = [ClipEntry.from_meta(e) for e in entries
                                            if isinstance(e, dict)]
                    self._notify("state", f"clipboard sync runs in pid {pid} "
                                 "(hypercore clip sync)")
                elif isinstance(obj.get("event"), dict):
                    await self._remote_event(obj["event"])
        finally:
            await stream.aclose()

    async def _remote_event(self, event: Mapping[str, Any]) -> None:
        kind = str(event.get("kind", "?"))
        item = event.get("item")
        entry = ClipEntry.from_meta(item) if isinstance(item, dict) else None
        if kind == "change" and entry is not None:
            self._remote_entries = [entry] + [e for e in self._remote_entries
                                              if e.id != entry.id][:49]
        if kind in ("vm", "host", "link"):
            status = await control.request(self.ctx, "status")
            if status is not None:
                self._remote_status = status
        vm = event.get("vm")
        self._notify(kind, str(event.get("message", ""))[:300],
                     vm=str(vm) if isinstance(vm, str) else None, entry=entry)


def _other_hosts(ctx: Context) -> list[Host]:
    """The hosts a dashboard's sync links to: every configured one (``clip sync
    --link-all``); none when the settings do not read (``hosts list`` says why)."""
    try:
        return [h for h in hosts_registry.list_hosts(ctx) if not h.is_local]
    except HypercoreError as exc:
        log.warning("clipboard sync: no links to other hosts: %s", exc)
        return []
