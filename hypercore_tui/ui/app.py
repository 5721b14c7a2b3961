"""The Hypercore dashboard: every VM, live, driven from the keyboard.

The app owns no I/O and shows nothing itself: what the user sees is the
:class:`DashboardScreen` (and the dialogs it opens). The app holds the backend, runs
the monitor service on its event loop (its notices go to the dashboard as messages),
calls every other service from worker threads (results and errors come back as
messages and become notifications and event-log lines), and hands terminal pastes to
the dashboard.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import TypeVar

from textual import events
from textual.app import App
from textual.worker import Worker, WorkerState

from hypercore_tui.core.errors import HypercoreError
from hypercore_tui.start import release_collector
from hypercore_tui.ui.backend import Backend, ClipNotice, FleetLike, MonitorNotice, RemoteChange
from hypercore_tui.ui.commands import DashboardCommands, Palette
from hypercore_tui.ui.messages import ActionFailed, ActionSucceeded, SnapshotJobFinished
from hypercore_tui.ui.screens.dashboard import DashboardScreen

log = logging.getLogger("hypercore.ui")
log.addHandler(logging.NullHandler())

T = TypeVar("T")


def stylesheet() -> Path:
    """styles/dashboard.tcss: inside the wheel (hypercore_tui/styles) or the checkout."""
    package = Path(__file__).resolve().parent.parent
    for candidate in (package / "styles", package.parent / "styles"):
        if (candidate / "dashboard.tcss").is_file():
            return candidate / "dashboard.tcss"
    return package.parent / "styles" / "dashboard.tcss"


class HypercoreApp(App[None]):
    TITLE = "hypercore"
    CSS_PATH = stylesheet()
    COMMANDS = App.COMMANDS | {DashboardCommands}

    def __init__(self, backend: Backend, *, environ: Mapping[str, str] | None = None) -> None:
        super().__init__()
        self.backend = backend
        self.environ = dict(os.environ if environ is None else environ)
        if "TEXTUAL_ANIMATIONS" not in self.environ:
            # Keys answer at once: a tab's underline sliding for 0.3 s repaints the
            # screen ~18 times after every tab switch (TEXTUAL_ANIMATIONS=full brings it
            # back).
            self.animation_level = "none"
        self.monitor = backend.make_monitor(self._from_monitor)
        #: the other hosts' streams (None: no other host configured)
        self.fleet: FleetLike | None = None
        if backend.remote is not None:
            self.fleet = backend.remote.make_fleet(self._from_fleet)
        self.dashboard = DashboardScreen(backend, self.monitor, self, environ=self.environ,
                                         fleet=self.fleet)

    def get_default_screen(self) -> DashboardScreen:
        return self.dashboard

    def on_mount(self) -> None:
        self.run_worker(self.monitor.run(), name="monitor", group="monitor", exclusive=True,
                        exit_on_error=False)
        if self.fleet is not None:  # (cancelled at exit: each stream's ssh is ended)
            self.run_worker(self.fleet.run(), name="hosts", group="hosts", exclusive=True,
                            exit_on_error=False)
        if self.backend.clipsync is not None:
            self.run_worker(self.backend.clipsync.run(self._from_clipsync), name="clipsync",
                            group="clipsync", exclusive=True, exit_on_error=False)

    def on_ready(self) -> None:
        release_collector(freeze=True)  # (the first frame is shown: see hypercore_tui.start)

    def _from_clipsync(self, notice: ClipNotice) -> None:
        self.dashboard.clip_notice(notice)

    def _from_fleet(self, change: RemoteChange) -> None:
        self.dashboard.remote_change(change)

    def _from_monitor(self, notice: MonitorNotice) -> None:
        self.dashboard.monitor_notice(notice)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.worker.group == "monitor" and event.state is WorkerState.ERROR:
            log.error("monitor stopped: %r", event.worker.error)
            self.notify(f"monitoring stopped: {event.worker.error}", severity="error",
                        timeout=30, markup=False)
        if event.worker.group == "hosts" and event.state is WorkerState.ERROR:
            log.error("remote hosts stopped: %r", event.worker.error)
            self.notify(f"other hosts' streams stopped: {event.worker.error}",
                        severity="error", timeout=30, markup=False)
        if event.worker.group == "clipsync" and event.state is WorkerState.ERROR:
            log.error("clipboard sync stopped: %r", event.worker.error)
            self.notify(f"clipboard sync stopped: {event.worker.error}", severity="error",
                        timeout=30, markup=False)

    async def on_event(self, event: events.Event) -> None:
        """While the dashboard's keyboard mode is on, every key goes to it before any
        binding (the app's and the palette's included): Ctrl+C, Ctrl+P, Tab reach the VM."""
        if isinstance(event, events.Key) and not event.is_forwarded \
                and self.screen is self.dashboard and self.dashboard.keyboard_mode is not None \
                and self.dashboard.keyboard_mode.active:
            event.stop()
            self.dashboard.keyboard_key(event)
            return
        await super().on_event(event)

    def action_command_palette(self) -> None:
        """Textual's palette, as Textual opens it (see :class:`Palette`)."""
        if self.use_command_palette and not self.screen.has_class("--textual-command-palette"):
            self.push_screen(Palette(id="--command-palette"))

    def on_paste(self, event: events.Paste) -> None:
        """Text pasted into the terminal and not taken by a text field (bracketed
        paste): the dashboard sends it to the selected VM."""
        self.dashboard.paste(event.text)

    # -- action results ---------------------------------------------------------------

    def on_action_succeeded(self, message: ActionSucceeded) -> None:
        self.notify(message.summary, markup=False)
        self.dashboard.event_log.add(message.name, "DONE", message.summary)
        self._after_action(message.name)

    def on_action_failed(self, message: ActionFailed) -> None:
        self.notify(message.error, severity="error", timeout=8, markup=False)
        self.dashboard.event_log.add(message.name, "ERROR", f"{message.verb}: {message.error}")
        self._after_action(message.name)

    def on_snapshot_job_finished(self, message: SnapshotJobFinished) -> None:
        if message.error is not None:
            self.on_action_failed(ActionFailed(message.name, "snapshot", message.error))
        elif message.summary is not None:
            self.on_action_succeeded(ActionSucceeded(message.name, "snapshot",
                                                     message.summary))

    def _after_action(self, name: str | None) -> None:
        if name is not None and "/" in name:
            return  # a remote VM: its host's stream shows what changed
        if name is not None:
            self.monitor.poke(name)
        # The coroutine function, not a coroutine: a worker replaced (exclusive) before
        # it started would leave a coroutine never awaited (a RuntimeWarning). Annotated:
        # mypy cannot infer the result type of a coroutine function's worker.
        _rescan: Worker[None] = self.run_worker(self.monitor.rescan, group="rescan",
                                                exclusive=True, exit_on_error=False)

    # -- running services -------------------------------------------------------------

    def run_job(self, name: str | None, verb: str, call: Callable[[], T],
                done: Callable[[T], None] | None = None) -> bool:
        """Run ``call`` in a worker thread; one job per VM at a time (False: refused, the
        VM is busy).

        Lifecycle jobs are never cancelled half-way (a boot or a stop interrupted
        leaves a VM half-started), so a second job on a busy VM is refused instead
        of replacing the first (``exclusive`` would cancel it).
        """
        group = f"vm-{name}" if name else f"job-{verb}"
        running = [w for w in self.workers if w.group == group and w.is_running]
        if running:
            self.notify(f"{name or verb}: busy ({running[0].name} in progress)",
                        severity="warning", markup=False)
            return False

        def body() -> None:
            try:
                result = call()
            except Exception as exc:  # noqa: BLE001 - one line for the user, details logged
                self._job_failed(name, verb, exc)
                return
            if done is None:
                self.post_message(ActionSucceeded(name, verb, str(result)))
            else:
                self.call_from_thread(done, result)

        self.run_worker(body, thread=True, group=group, name=f"{verb} {name or ''}".strip(),
                        exit_on_error=False)
        return True

    def run_async_job(self, name: str | None, verb: str,
                      call: Callable[[], Awaitable[str]]) -> None:
        """Run a coroutine of a service that lives on the app's loop (the clipboard
        sync) as a worker; its result or error comes back like :meth:`run_job`'s."""

        async def body() -> None:
            try:
                summary = await call()
            except Exception as exc:  # noqa: BLE001 - one line for the user, details logged
                self._job_failed(name, verb, exc)
                return
            self.post_message(ActionSucceeded(name, verb, summary))

        self.run_worker(body(), group=f"async-{verb}", name=verb, exit_on_error=False)

    def _job_failed(self, name: str | None, verb: str, exc: Exception) -> None:
        """A job's failure as one line: a Hypercore error as it is, anything else as an
        internal error (its traceback logged)."""
        if isinstance(exc, HypercoreError):
            self.post_message(ActionFailed(name, verb, str(exc)))
            return
        log.error("%s %s failed", verb, name, exc_info=exc)
        self.post_message(ActionFailed(
            name, verb, f"{verb}: internal error: {type(exc).__name__}: {exc}"))
