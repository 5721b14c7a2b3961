"""Every VM of one HYPERCORE_HOME: one :class:`VmWatcher` per VM, the rescan of
``vms/`` (VMs created or booted by the CLI appear on their own), a pidfile and process
check of every VM each second (a QEMU killed with SIGKILL shows as crashed within that
second) and the host summary."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from hypercore_tui.core.errors import HypercoreError
from hypercore_tui.core.series import HISTORY_SECONDS
from hypercore_tui.services import registry, vmstate
from hypercore_tui.services.context import Context
from hypercore_tui.services.host import HostSummary, HostWatch
from hypercore_tui.services.monitor.notices import (
    HostSampled,
    MonitorNotice,
    Sink,
    VmDefinitionChanged,
    VmsChanged,
)
from hypercore_tui.services.monitor.view import VmView
from hypercore_tui.services.monitor.watcher import VmWatcher

log = logging.getLogger("hypercore.monitor")
log.addHandler(logging.NullHandler())


@dataclass(frozen=True)
class MonitorSettings:
    interval: float = 1.0  # the selected VM
    background_interval: float = 2.0  # every other VM (at least)
    background_polls_per_second: float = 10.0  # budget for them all; 0: no limit
    agent_interval: float = 10.0  # the selected VM
    background_agent_interval: float = 60.0  # the others (their port events still count)
    agent_retry: float = 3.0  # while the agent is silent: 3, 6, 12... s
    agent_retry_max: float = 60.0
    #: A running VM with no serial output and no agent answer this long after its QEMU
    #: started is shown as showing no sign of life (instead of "is qemu-ga installed?")
    no_sign_of_life_after: float = 60.0
    rescan_interval: float = 3.0
    liveness_interval: float = 1.0
    host_interval: float = 2.0
    history_seconds: int = HISTORY_SECONDS


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
        """Pick up VMs defined (or removed) since the last look, and definitions written
        again since (``hypercore set``)."""
        try:
            names = registry.vm_names(self.ctx)
        except OSError as exc:
            log.warning("cannot list VMs: %s", exc)
            return
        added = [n for n in names if n not in self._watchers]
        removed = [n for n in self._watchers if n not in names]
        for name in removed:
            await self._watchers.pop(name).close()
        for name, watcher in self._watchers.items():
            if _definition_stamp(watcher) != watcher.definition_stamp:
                try:
                    self._read_definition(watcher)
                except HypercoreError as exc:  # (half-edited by hand?) keep what it said
                    log.warning("%s: %s", name, exc)
                    continue
                self.emit(VmDefinitionChanged(name))
        for name in added:
            watcher = VmWatcher(self, name)
            try:
                self._read_definition(watcher)
            except HypercoreError as exc:
                watcher.view.error = str(exc)
            state, pid = vmstate.process_state(watcher.paths)
            watcher.view.state, watcher.view.pid = state, pid
            self._watchers[name] = watcher
            if self._started:
                watcher.start()
        if added or removed:
            self.emit(VmsChanged(tuple(sorted(self._watchers))))

    def _read_definition(self, watcher: VmWatcher) -> None:
        """Show what the VM's definition says; one that cannot be read is read again
        only once it changes."""
        # Stamped first: a write after this stat is seen at the next rescan.
        watcher.definition_stamp = _definition_stamp(watcher)
        watcher.view.apply_spec(registry.load(self.ctx, watcher.name), watcher.paths)

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


def _definition_stamp(watcher: VmWatcher) -> tuple[int, int] | None:
    """(inode, mtime) of the VM's vm.json: definitions are replaced by a rename, so a new
    one has a new inode even within the clock's resolution."""
    try:
        info = watcher.paths.definition.stat()
    except OSError:
        return None
    return info.st_ino, info.st_mtime_ns
