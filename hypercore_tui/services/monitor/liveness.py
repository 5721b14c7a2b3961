"""Whether a running VM's guest has shown any sign of life since its QEMU started (an
answer from its agent, a byte on its serial console), for one honest line when it has
not: under KVM on a nested host a guest can sit at 100 % CPU without ever running, and
"is qemu-ga installed?" would send the user the wrong way.

Cheap: nothing is read while the agent answers, before ``no_sign_of_life_after``, or once
this QEMU's guest has shown life; otherwise one ``stat`` of the serial log (and of the
pidfile) every ``LOOK_EVERY`` seconds, and QEMU's command line once per process.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from hypercore_tui.adapters.process import process_argv
from hypercore_tui.adapters.procstats import ProcessReading
from hypercore_tui.core.argv import accel_of
from hypercore_tui.core.layout import VmPaths
from hypercore_tui.core.models import VmState
from hypercore_tui.services.monitor.notices import GuestInfoChanged
from hypercore_tui.services.monitor.view import AgentStatus, NoSignOfLife

if TYPE_CHECKING:
    from hypercore_tui.services.monitor.watcher import VmWatcher

#: Seconds between two looks at the serial log of a VM that has shown nothing yet.
LOOK_EVERY = 5.0


def serial_output_since_start(paths: VmPaths, started_at: float) -> bool:
    """Whether the guest wrote to its serial console since this QEMU started. The log
    is appended to across boots, so it counts only if written after QEMU wrote its
    pidfile (both are file times: one clock; ``started_at``, the process's start time
    from psutil, only when the pidfile is gone)."""
    try:
        log = paths.serial_log.stat()
    except OSError:
        return False
    try:
        start = paths.pidfile.stat().st_mtime
    except OSError:
        start = started_at
    return log.st_size > 0 and log.st_mtime > start


class LifeWatch:
    """Follows one watched VM's QEMU process until its guest shows life."""

    def __init__(self, watcher: VmWatcher) -> None:
        self.watcher = watcher
        self._alive = False
        self._next_look = 0.0

    def forget(self) -> None:
        """A new QEMU process: its guest has shown nothing yet."""
        self._alive = False
        self._next_look = 0.0
        self._show(None)

    def check(self, reading: ProcessReading) -> None:
        """After each sample of a running VM."""
        if self._alive:
            return
        view = self.watcher.view
        if view.agent is AgentStatus.ANSWERING:
            self._alive_now()
            return
        now = time.monotonic()
        if (view.state is not VmState.RUNNING or view.agent is not AgentStatus.SILENT
                or now < self._next_look
                or reading.uptime_seconds < self.watcher.monitor.settings.no_sign_of_life_after):
            return
        self._next_look = now + LOOK_EVERY
        if serial_output_since_start(self.watcher.paths, reading.started_at):
            self._alive_now()
        elif view.no_sign_of_life is None:
            argv = process_argv(reading.pid)
            self._show(NoSignOfLife(accel=accel_of(argv) if argv else None))

    def _alive_now(self) -> None:
        self._alive = True
        self._show(None)

    def _show(self, verdict: NoSignOfLife | None) -> None:
        view = self.watcher.view
        if verdict != view.no_sign_of_life:
            view.no_sign_of_life = verdict
            if verdict is not None:
                self.watcher.log.info("no sign of life: no serial output, no agent answer")
            self.watcher.monitor.emit(GuestInfoChanged(self.watcher.name))
