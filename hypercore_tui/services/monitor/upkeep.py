"""What a watched guest needs once its agent answers (:class:`GuestUpkeep`): the shared
folder mounted, the first time the agent answers after the dashboard attached and again
after the guest rebooted (a reboot the guest started itself: no Hypercore command saw
it); and its clock set to the host's again after the VM stood paused (a pause, a RAM
snapshot saved or loaded).

The work runs in a task of its own, never inside the agent's poll, one at a time. Each
outcome gets one line in the event log: the share mounted, the share not mounted and why
(a failure is said once, not at every answer), the clock set forward."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from hypercore_tui.core.errors import Busy, HypercoreError
from hypercore_tui.services import guest_clock, share_mounter, shared
from hypercore_tui.services.monitor.notices import VmEventSeen

if TYPE_CHECKING:
    from hypercore_tui.services.monitor.watcher import VmWatcher

#: How long the mount waits for the VM's lock (an operation holding it longer: later).
LOCK_WAIT = 2.0
#: After that, the agent is asked again (and the mount tried) this many seconds later.
BUSY_RETRY = 5.0


class GuestUpkeep:
    """The share and the clock of one watched guest."""

    def __init__(self, watcher: VmWatcher) -> None:
        self.watcher = watcher
        #: look at the share when the agent answers (first answer, after a guest reboot)
        self.share_due = True
        #: compare the guest's clock with the host's when the agent answers (after a pause)
        self.clock_due = False
        self._task: asyncio.Task[None] | None = None
        self._last_failure: str | None = None

    def take_task(self) -> list[asyncio.Task[None]]:
        """The work in progress, if any, for the watcher to cancel on close."""
        task, self._task = self._task, None
        return [task] if task is not None else []

    def guest_restarted(self) -> None:
        """The guest rebooted (or its agent went away, or QEMU ended): the share may not be
        mounted when the agent answers again."""
        self.share_due = True

    def vm_paused(self) -> None:
        """The guest's clock stands still from now until it runs again."""
        self.clock_due = True

    def agent_answered(self) -> None:
        """The agent just answered a poll: do what is due (in the background)."""
        if not (self.share_due or self.clock_due):
            return
        if self._task is not None and not self._task.done():
            return
        self._task = asyncio.create_task(self._run(), name=f"upkeep {self.watcher.name}")

    async def _run(self) -> None:
        try:
            if self.clock_due:
                self.clock_due = False
                await self._correct_clock()
            if self.share_due:
                await self._mount_share()
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - never let an upkeep failure go unseen or loop
            self.watcher.log.exception("guest upkeep failed")

    async def _correct_clock(self) -> None:
        watcher = self.watcher
        correction = await guest_clock.correct_guest_clock(watcher.paths)
        if correction is not None:
            watcher.log.info("%s", correction.describe())
            watcher.monitor.emit(VmEventSeen(watcher.name, "CLOCK", correction.describe(),
                                             time.time()))

    async def _mount_share(self) -> None:
        watcher = self.watcher
        if watcher.paths.share_unmount.exists():
            self.share_due = False  # a RAM save's: .leftovers mounts it again, or says why
            return
        try:
            outcome = await share_mounter.mount_unattended(watcher.monitor.ctx, watcher.name,
                                                    lock_wait=LOCK_WAIT)
        except Busy:
            # Another operation on the VM (a snapshot...): ask again a little later.
            asyncio.get_running_loop().call_later(BUSY_RETRY, watcher.wake_agent)
            return
        except HypercoreError as exc:
            outcome = share_mounter.MountOutcome(shared.ShareState(
                shared.ShareStatus.FAILED, message=str(exc)), was_unmounted=True)
        if outcome.agent_missing:
            return  # (still due: tried again at the next answer)
        self.share_due = False
        state = outcome.state
        if outcome.mounted_now:
            self._last_failure = None
            line = f"shared folder mounted at {state.mountpoint}"
            watcher.log.info("%s", line)
            watcher.monitor.emit(VmEventSeen(watcher.name, "SHARE", line, time.time()))
        elif outcome.failed:
            line = f"shared folder not mounted: {state.message or state.describe()}"
            watcher.log.warning("%s", line)
            if line != self._last_failure:
                self._last_failure = line
                watcher.monitor.emit(VmEventSeen(watcher.name, "SHARE", line, time.time()))
        elif state.mounted:
            self._last_failure = None
