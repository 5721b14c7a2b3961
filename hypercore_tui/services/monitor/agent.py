"""The guest agent of one watched VM: every ``agent_interval`` (the selected VM; the
others every ``background_agent_interval``) a short qemu-ga session (its socket serves
one client at a time, and the CLI needs it too) reads hostname, OS, addresses, users and
interface counters. A silent agent is asked again after 3, 6, 12... s (at most a
minute); the guest opening the agent's port (VSERPORT_CHANGE) or a resume wakes the loop
at once (and the backoff starts again from 3 s). After each answer the watcher's
:mod:`.upkeep` does what is due (share, clock)."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from hypercore_tui.adapters.qga import agent_session
from hypercore_tui.core.errors import Busy, HypercoreError
from hypercore_tui.core.models import VmState
from hypercore_tui.core.series import rate
from hypercore_tui.services.monitor.notices import GuestInfoChanged
from hypercore_tui.services.monitor.readings import AGENT_TIMEOUT, read_agent_facts
from hypercore_tui.services.monitor.view import AgentStatus
from hypercore_tui.services.tasks import wait_set

if TYPE_CHECKING:
    from hypercore_tui.services.monitor.watcher import VmWatcher


class AgentWatch:
    """Asks one VM's guest agent, and keeps its interface counters for the samples."""

    def __init__(self, watcher: VmWatcher) -> None:
        self.watcher = watcher
        self._wake = asyncio.Event()
        self._net: tuple[int | None, int | None, float] | None = None
        #: (received, sent) bytes a second between the last two answers
        self.net_rates: tuple[float | None, float | None] = (None, None)

    def wake(self) -> None:
        self._wake.set()

    @property
    def net_bytes(self) -> tuple[int | None, int | None]:
        """(received, sent) bytes of the guest's interfaces at the last answer."""
        return (self._net[0], self._net[1]) if self._net else (None, None)

    def forget_net(self) -> None:
        """A new QEMU process: its counters start again."""
        self._net = None
        self.net_rates = (None, None)

    async def run(self) -> None:
        """Ask the agent every ``agent_interval``; while it is silent, back off up to
        ``agent_retry_max`` (the guest opening the agent's port, VSERPORT_CHANGE, or a
        resume wakes this loop at once)."""
        watcher = self.watcher
        settings = watcher.monitor.settings
        silent_for = 0
        while True:
            self._wake.clear()
            delay = (settings.agent_interval if watcher.monitor.is_focused(watcher.name)
                     else settings.background_agent_interval)
            if watcher.view.state is VmState.RUNNING:
                try:
                    if await self.poll():
                        silent_for = 0
                    else:
                        delay = min(settings.agent_retry * 2 ** silent_for,
                                    settings.agent_retry_max)
                        silent_for += 1
                except asyncio.CancelledError:
                    raise
                except Exception:  # noqa: BLE001 - never let the agent loop die
                    watcher.log.exception("agent poll failed")
            await wait_set(self._wake, delay)
            if self._wake.is_set():
                silent_for = 0  # woken (the port opened, a resume): ask soon again

    async def poll(self) -> bool:
        """One short agent session; False when the agent does not answer."""
        watcher, view = self.watcher, self.watcher.view
        try:
            async with agent_session(watcher.paths.qga_socket, vm_name=watcher.name,
                                     timeout=AGENT_TIMEOUT, lock_timeout=0.3) as agent:
                facts = await read_agent_facts(agent)
        except Busy:
            return True  # the CLI is using it: it is there, ask again later
        except HypercoreError as exc:
            if view.state is not VmState.RUNNING:
                return False  # paused or gone meanwhile: not the agent's fault
            if view.agent is not AgentStatus.SILENT:
                watcher.log.info("agent silent: %s", exc)
                view.agent = AgentStatus.SILENT
                watcher.upkeep.guest_restarted()  # (maybe rebooting)
                watcher.monitor.emit(GuestInfoChanged(watcher.name))
            return False
        now = time.monotonic()
        if self._net is not None and facts.net_rx_bytes is not None:
            seconds = now - self._net[2]
            self.net_rates = (rate(self._net[0], facts.net_rx_bytes, seconds),
                              rate(self._net[1], facts.net_tx_bytes, seconds))
        self._net = (facts.net_rx_bytes, facts.net_tx_bytes, now)
        changed = facts.guest != view.guest or view.agent is not AgentStatus.ANSWERING
        view.guest = facts.guest
        view.agent = AgentStatus.ANSWERING
        if changed:
            watcher.monitor.emit(GuestInfoChanged(watcher.name))
        watcher.upkeep.agent_answered()
        return True
