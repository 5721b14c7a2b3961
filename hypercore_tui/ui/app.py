"""The Hypercore dashboard: every VM, live, driven from the keyboard.

The app owns no I/O. It runs the monitor service on its event loop (results
arrive as messages), calls every other service from worker threads (results and
errors come back as messages and become notifications), and reads nothing but
the monitor's views while drawing.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import ClassVar, TypeVar

from rich.text import Text
from textual import events, on
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.widgets import DataTable, TabbedContent, TabPane
from textual.worker import Worker, WorkerState

from hypercore_tui.core.errors import HypercoreError
from hypercore_tui.core.models import VmState
from hypercore_tui.services import monitor as monitor_service
from hypercore_tui.services.host import ConsoleAccess, DisplayAccess, HostSummary
from hypercore_tui.services.monitor import MonitorNotice, VmView
from hypercore_tui.ui.backend import Backend
from hypercore_tui.ui.commands import DashboardCommands, PaletteEntry
from hypercore_tui.ui.drop import pasted_path
from hypercore_tui.ui.messages import (
    ActionFailed,
    ActionSucceeded,
    GuestInfoChanged,
    HostSampled,
    SnapshotJobFinished,
    VmEventLogged,
    VmJobsChanged,
    VmListChanged,
    VmSampled,
    VmSelected,
    VmStateChanged,
    from_notice,
)
from hypercore_tui.ui.screens.confirm import Confirmation, ConfirmScreen
from hypercore_tui.ui.screens.create_vm import CreateVmScreen
from hypercore_tui.ui.screens.help import HelpRow, HelpScreen
from hypercore_tui.ui.screens.info import InfoScreen
from hypercore_tui.ui.screens.paste_file import PasteFileScreen
from hypercore_tui.ui.text import safe
from hypercore_tui.ui.widgets.event_log import EventLog
from hypercore_tui.ui.widgets.host_bar import HostBar
from hypercore_tui.ui.widgets.key_footer import KeyFooter
from hypercore_tui.ui.widgets.snapshots_pane import SnapshotsPane
from hypercore_tui.ui.widgets.storage_pane import StoragePane
from hypercore_tui.ui.widgets.vm_detail import VmDetail
from hypercore_tui.ui.widgets.vm_list import VmList

log = logging.getLogger("hypercore.ui")
log.addHandler(logging.NullHandler())

T = TypeVar("T")

#: The list rows and the host line are repainted together, at most this often (or with
#: the selected VM's sample): one frame a second however many VMs report.
ROW_FLUSH = 1.0
UNAVAILABLE_CLIPBOARD = "Clipboard sharing is not available in this build"


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
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (110, "-wide")]
    VERTICAL_BREAKPOINTS = [(0, "-short"), (36, "-tall"), (44, "-taller")]

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("b", "start_vm", "Start", id="vm.start"),
        Binding("s", "stop_vm", "Stop", id="vm.stop"),
        Binding("S", "force_stop_vm", "Force stop", id="vm.force-stop"),
        Binding("p", "pause_resume", "Pause/resume", id="vm.pause-resume"),
        Binding("R", "reset_vm", "Reset", id="vm.reset"),
        Binding("n", "create_vm", "New VM", id="vm.create"),
        Binding("D", "delete_vm", "Delete", id="vm.delete"),
        Binding("d", "demo", "Demo VM", id="vm.demo"),
        Binding("c", "console", "Console", id="vm.console"),
        Binding("v", "display", "Display", id="vm.display"),
        Binding("i", "push_clipboard", "Paste into VM", id="clipboard.push"),
        Binding("y", "pull_clipboard", "Copy from VM", id="clipboard.pull"),
        Binding("slash", "filter", "Filter", id="list.filter"),
        Binding("1", "show_tab('overview')", "Overview", show=False, id="tab.overview"),
        Binding("2", "show_tab('snapshots')", "Snapshots", show=False, id="tab.snapshots"),
        Binding("3", "show_tab('events')", "Events", show=False, id="tab.events"),
        Binding("4", "show_tab('storage')", "Storage", show=False, id="tab.storage"),
        Binding("question_mark", "help", "Help", id="app.help"),
        Binding("q", "quit", "Quit", id="app.quit"),
    ]

    #: Actions on the selected VM (offered in the palette as "<description>: <VM>").
    VM_ACTIONS = ("start_vm", "stop_vm", "force_stop_vm", "pause_resume", "reset_vm",
                  "delete_vm", "console", "display", "push_clipboard", "pull_clipboard")

    def __init__(self, backend: Backend, *, environ: Mapping[str, str] | None = None) -> None:
        super().__init__()
        self.backend = backend
        self.environ = dict(os.environ if environ is None else environ)
        self.monitor = backend.make_monitor(self._from_monitor)
        self.selected: str | None = None
        self.last_paste: str | None = None
        self._dirty: set[str] = set()
        self._last_flush = 0.0
        self._sampled_pending = False
        self._host_summary: HostSummary | None = None
        # The app's query_one() searches the active screen, which may be a modal:
        # the main screen's widgets are kept at hand instead.
        self.host_bar = HostBar(id="host-bar")
        self.vm_list = VmList(id="vm-list")
        self.detail = VmDetail(id="vm-detail")
        self.tabs = TabbedContent(id="tabs", initial="overview")
        self.snapshots_pane = SnapshotsPane(backend.snapshots, id="snapshots-pane")
        self.event_log = EventLog(id="event-log")

    # -- layout -----------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield self.host_bar
        with Horizontal(id="main"):
            yield self.vm_list
            with self.tabs:
                with TabPane("Overview", id="overview"):
                    yield self.detail
                with TabPane("Snapshots", id="snapshots"):
                    yield self.snapshots_pane
                with TabPane("Events", id="events"):
                    yield self.event_log
                if self.backend.storage is not None:
                    with TabPane("Storage", id="storage"):
                        yield StoragePane(self.backend.storage, id="storage-pane")
        yield KeyFooter(compact=True)

    def on_mount(self) -> None:
        self.host_bar = self.host_bar
        self.vm_list = self.vm_list
        self.detail = self.detail
        self.tabs = self.tabs
        self.snapshots_pane = self.snapshots_pane
        self.event_log = self.event_log
        self.detail.environ = self.environ
        self.vm_list.rows_view.focus()
        self.detail.show(None, any_vms=False)
        self.set_interval(ROW_FLUSH, self._flush_stale)
        self.run_worker(self.monitor.run(), name="monitor", group="monitor", exclusive=True,
                        exit_on_error=False)

    def _from_monitor(self, notice: MonitorNotice) -> None:
        if isinstance(notice, monitor_service.VmSampled):
            # Called on the app's loop: note the VM; one message per burst of samples.
            self._dirty.add(notice.name)
            if self._sampled_pending:
                return
            self._sampled_pending = True
        self.post_message(from_notice(notice))

    @property
    def views(self) -> Mapping[str, VmView]:
        return self.monitor.views

    def selected_view(self) -> VmView | None:
        return self.monitor.view(self.selected) if self.selected else None

    def _active_tab(self) -> str:
        return str(self.tabs.active)

    def _show_detail(self) -> None:
        if self._active_tab() == "overview":
            self.detail.show(self.selected_view(), any_vms=bool(self.views))

    # -- monitor messages -------------------------------------------------------------

    async def on_vm_list_changed(self, message: VmListChanged) -> None:
        views = self.views
        await self.vm_list.set_views(views)
        self.host_bar.show_host(views=list(views.values()))
        self._show_detail()
        self.refresh_bindings()

    def on_vm_sampled(self, message: VmSampled) -> None:
        self._sampled_pending = False
        if self.selected in self._dirty:
            # One frame a second: the detail, the list rows and the host line together.
            self._show_detail()
            self._flush_rows()

    def _flush_rows(self) -> None:
        """Repaint the list rows and the host line that changed since the last flush."""
        self._last_flush = time.monotonic()
        dirty, self._dirty = self._dirty, set()
        if dirty:
            self.vm_list.refresh_rows(dirty)
        if self._host_summary is not None:
            self.host_bar.show_host(self._host_summary, list(self.views.values()))
            self._host_summary = None

    def _flush_stale(self) -> None:
        """When the selected VM is not sampled (stopped, none), flush on this timer."""
        if time.monotonic() - self._last_flush >= ROW_FLUSH * 0.9:
            self._flush_rows()

    def on_vm_state_changed(self, message: VmStateChanged) -> None:
        self.vm_list.refresh_rows([message.name])
        self.host_bar.show_host(views=list(self.views.values()))
        if message.name == self.selected:
            self._show_detail()
        if not (message.reason == "attached" and message.old is VmState.RUNNING):
            # (attaching to a VM found running at start-up only refines its state)
            self.event_log.add(message.name, "STATE",
                                         f"{message.old.value} → {message.new.value} "
                                         f"({message.reason})")
        if message.new is VmState.CRASHED:
            self.notify(f"{message.name} crashed: {message.reason}", severity="error",
                        timeout=10, markup=False)

    def on_vm_event_logged(self, message: VmEventLogged) -> None:
        self.event_log.add(message.name, message.event, message.detail,
                                     message.timestamp)

    def on_guest_info_changed(self, message: GuestInfoChanged) -> None:
        self.vm_list.refresh_rows([message.name])
        if message.name == self.selected:
            self._show_detail()

    def on_vm_jobs_changed(self, message: VmJobsChanged) -> None:
        self.vm_list.refresh_rows([message.name])
        if message.name == self.selected:
            self._show_detail()
        if message.finished:  # a snapshot job ended (here, in another dashboard or the CLI)
            self.snapshots_pane.list_may_have_changed(
                message.name, visible=self._active_tab() == "snapshots")

    def on_host_sampled(self, message: HostSampled) -> None:
        first = self._last_flush == 0.0
        self._host_summary = message.summary  # shown with the next flush
        if first:
            self._flush_rows()

    def on_vm_selected(self, message: VmSelected) -> None:
        if (self.selected is None) != (message.name is None):
            self.refresh_bindings()
        self.selected = message.name
        self.monitor.set_focus(message.name)
        self._show_detail()
        self.snapshots_pane.show_vm(message.name,
                                              visible=self._active_tab() == "snapshots")

    @on(TabbedContent.TabActivated)
    def _tab_activated(self, event: TabbedContent.TabActivated) -> None:
        tab = event.pane.id
        if tab == "overview":
            self._show_detail()
        elif tab == "snapshots":
            self.snapshots_pane.show_vm(self.selected, visible=True)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.worker.group == "monitor" and event.state is WorkerState.ERROR:
            log.error("monitor stopped: %r", event.worker.error)
            self.notify(f"monitoring stopped: {event.worker.error}", severity="error",
                        timeout=30, markup=False)

    # -- action results ---------------------------------------------------------------

    def on_action_succeeded(self, message: ActionSucceeded) -> None:
        self.notify(message.summary, markup=False)
        self.event_log.add(message.name, "DONE", message.summary)
        self._after_action(message.name)

    def on_action_failed(self, message: ActionFailed) -> None:
        self.notify(message.error, severity="error", timeout=8, markup=False)
        self.event_log.add(message.name, "ERROR", f"{message.verb}: {message.error}")
        self._after_action(message.name)

    def on_snapshot_job_finished(self, message: SnapshotJobFinished) -> None:
        if message.error is not None:
            self.on_action_failed(ActionFailed(message.name, "snapshot", message.error))
        elif message.summary is not None:
            self.on_action_succeeded(ActionSucceeded(message.name, "snapshot",
                                                     message.summary))

    def _after_action(self, name: str | None) -> None:
        if name is not None:
            self.monitor.poke(name)
        # The coroutine function, not a coroutine: a worker replaced (exclusive) before
        # it started would leave a coroutine never awaited (a RuntimeWarning). Annotated:
        # mypy cannot infer the result type of a coroutine function's worker.
        _rescan: Worker[None] = self.run_worker(self.monitor.rescan, group="rescan",
                                                exclusive=True, exit_on_error=False)

    # -- running services -------------------------------------------------------------

    def run_job(self, name: str | None, verb: str, call: Callable[[], T],
                done: Callable[[T], None] | None = None) -> None:
        """Run ``call`` in a worker thread; one job per VM at a time.

        Lifecycle jobs are never cancelled half-way (a boot or a stop interrupted
        leaves a VM half-started), so a second job on a busy VM is refused instead
        of replacing the first (``exclusive`` would cancel it).
        """
        group = f"vm-{name}" if name else f"job-{verb}"
        running = [w for w in self.workers if w.group == group and w.is_running]
        if running:
            self.notify(f"{name or verb}: busy ({running[0].name} in progress)",
                        severity="warning", markup=False)
            return

        def body() -> None:
            try:
                result = call()
            except HypercoreError as exc:
                self.post_message(ActionFailed(name, verb, str(exc)))
                return
            except Exception as exc:  # noqa: BLE001 - one line for the user, details logged
                log.exception("%s %s failed", verb, name)
                self.post_message(ActionFailed(
                    name, verb, f"{verb}: internal error: {type(exc).__name__}: {exc}"))
                return
            if done is None:
                self.post_message(ActionSucceeded(name, verb, str(result)))
            else:
                self.call_from_thread(done, result)

        self.run_worker(body, thread=True, group=group, name=f"{verb} {name or ''}".strip(),
                        exit_on_error=False)

    def _need_vm(self) -> VmView | None:
        view = self.selected_view()
        if view is None:
            self.notify("No VM selected", severity="warning", markup=False)
        return view

    def _confirm(self, view: VmView, verb: str, body: str, run: Callable[[], None], *,
                 mild: bool = False) -> None:
        title = Text(f"{verb} ")
        title.append_text(safe(view.name, "bold"))
        title.append("?")

        def answered(answer: Confirmation | None) -> None:
            if answer is not None:
                run()

        self.push_screen(ConfirmScreen(title, Text(body), verb, mild=mild), answered)

    # -- VM actions -------------------------------------------------------------------

    def action_start_vm(self) -> None:
        if (view := self._need_vm()) is not None:
            name = view.name
            if view.state.is_active:
                self.notify(f"{name} is already {view.state.value}", markup=False)
                return
            self.run_job(name, "start", lambda: self.backend.start_vm(name))

    def action_stop_vm(self) -> None:
        if (view := self._need_vm()) is not None:
            name = view.name
            self._confirm(view, "Stop", "The guest is asked to shut down (guest agent, "
                          "else the ACPI power button).",
                          lambda: self.run_job(name, "stop", lambda: self.backend.stop_vm(name)),
                          mild=True)

    def action_force_stop_vm(self) -> None:
        if (view := self._need_vm()) is not None:
            name = view.name
            self._confirm(view, "Force stop", "QEMU is told to quit at once (then killed): "
                          "like pulling the power cord. Unsaved guest data is lost.",
                          lambda: self.run_job(name, "force stop",
                                               lambda: self.backend.force_stop_vm(name)))

    def action_pause_resume(self) -> None:
        if (view := self._need_vm()) is not None:
            name = view.name
            if view.state is VmState.PAUSED:
                self.run_job(name, "resume", lambda: self.backend.resume_vm(name))
            elif view.state is VmState.RUNNING:
                self.run_job(name, "pause", lambda: self.backend.pause_vm(name))
            else:
                self.notify(f"{name} is {view.state.value}: nothing to pause", markup=False)

    def action_reset_vm(self) -> None:
        if (view := self._need_vm()) is not None:
            name = view.name
            self._confirm(view, "Reset", "The VM restarts at once, like pressing its reset "
                          "button. Unsaved guest data is lost.",
                          lambda: self.run_job(name, "reset", lambda: self.backend.reset_vm(name)))

    def action_delete_vm(self) -> None:
        if (view := self._need_vm()) is not None:
            name = view.name
            if view.state.is_active:
                self.notify(f"{name} is {view.state.value}: stop it before deleting it",
                            severity="warning", markup=False)
                return
            disk = view.disk or "?"
            body = (f"Its definition and its disk {disk} are deleted." if view.disk_owned
                    else f"Its definition is deleted; the disk image {disk} is kept.")
            self._confirm(view, "Delete", body, lambda: self.run_job(
                name, "delete", lambda: self.backend.delete_vm(name)))

    def action_create_vm(self) -> None:
        def created(summary: str | None) -> None:
            if summary:
                self.post_message(ActionSucceeded(None, "create", summary))

        self.push_screen(CreateVmScreen(lambda request, boot: self.backend.create_vm(
            request, boot=boot)), created)

    def action_demo(self) -> None:
        self.notify("Creating the demo VM (building the test guest if needed)…", markup=False)
        self.run_job(None, "demo", self.backend.create_demo_vm)

    def action_console(self) -> None:
        if (view := self._need_vm()) is not None:
            name = view.name
            self.run_job(name, "console", lambda: self.backend.open_console(name),
                         self._console_opened)

    def _console_opened(self, access: ConsoleAccess) -> None:
        if access.opened:
            self.notify(access.message, markup=False)
            return
        title = Text("Serial console of ")
        title.append_text(safe(access.argv[-1].removeprefix("UNIX-CONNECT:"), "bold"))
        self._show_info(title, [("Run", access.command_line),
                                ("Leave", "Ctrl-] (every other key goes to the guest)")],
                        copy_text=access.command_line)

    def action_display(self) -> None:
        if (view := self._need_vm()) is not None:
            name = view.name
            self.run_job(name, "display", lambda: self.backend.display_access(name),
                         self._display_ready)

    def _display_ready(self, access: DisplayAccess) -> None:
        title = Text("Display of ")
        title.append_text(safe(access.name, "bold"))
        if access.socket is None:
            self.notify(f"{access.name} has no display", markup=False)
            return
        rows = [("VNC", str(access.socket)), ("Laptop", access.tunnel_command),
                ("Then", access.viewer_command)]
        if access.local_viewer:
            rows.append(("Here", " ".join(access.local_viewer)))
        name = access.name

        def chosen(choice: str | None) -> None:
            if choice == "copy":
                self.copy_to_clipboard(access.tunnel_command)
                self.notify("ssh tunnel command copied (OSC 52)", markup=False)
            elif choice == "launch":
                self.run_job(name, "viewer", lambda: self.backend.launch_viewer(name))

        self.push_screen(InfoScreen(title, rows, copy_text=access.tunnel_command,
                                    can_launch=access.local_viewer is not None), chosen)

    def _show_info(self, title: Text, rows: list[tuple[str, str]], *, copy_text: str) -> None:
        def chosen(choice: str | None) -> None:
            if choice == "copy":
                self.copy_to_clipboard(copy_text)
                self.notify("command copied (OSC 52)", markup=False)

        self.push_screen(InfoScreen(title, rows, copy_text=copy_text), chosen)

    # -- clipboard --------------------------------------------------------------------

    def on_paste(self, event: events.Paste) -> None:
        """Text pasted into the terminal (bracketed paste) goes to the selected VM; a
        pasted path of an existing host file offers to copy the file instead."""
        if not event.text:
            return
        clipboard = self.backend.clipboard
        if clipboard is None:
            self.notify(f"{UNAVAILABLE_CLIPBOARD}: the pasted text was not sent",
                        severity="warning", markup=False)
            return
        view = self.selected_view()
        running = view is not None and view.state is VmState.RUNNING
        path = pasted_path(event.text)
        if path is not None:
            vm = view.name if view is not None and running else None

            def chosen(choice: str | None) -> None:
                if choice == "text":
                    self._push_text(event.text)
                elif choice in ("vm", "shared"):
                    target = vm if choice == "vm" else None
                    self.run_job(vm if target else None, "copy file", lambda: clipboard.copy_in(
                        path, target, progress=lambda stage, fraction: None))

            self.push_screen(PasteFileScreen(path, vm), chosen)
            return
        self._push_text(event.text)

    def _push_text(self, text: str) -> None:
        self.last_paste = text
        self.action_push_clipboard()

    def action_push_clipboard(self) -> None:
        clipboard = self.backend.clipboard
        if clipboard is None:
            self.notify(UNAVAILABLE_CLIPBOARD, severity="warning", markup=False)
            return
        if self.last_paste is None:
            self.notify("Nothing pasted yet: paste text into the terminal first",
                        severity="warning", markup=False)
            return
        if (view := self._need_vm()) is not None:
            name, text = view.name, self.last_paste
            self.run_job(name, "paste", lambda: clipboard.push(name, text))

    def action_pull_clipboard(self) -> None:
        clipboard = self.backend.clipboard
        if clipboard is None:
            self.notify(UNAVAILABLE_CLIPBOARD, severity="warning", markup=False)
            return
        if (view := self._need_vm()) is not None:
            name = view.name

            def pulled(text: str) -> None:
                self.last_paste = text
                self.copy_to_clipboard(text)
                self.notify(f"copied {len(text)} characters from {name}'s clipboard",
                            markup=False)

            self.run_job(name, "copy", lambda: clipboard.pull(name), pulled)

    # -- navigation -------------------------------------------------------------------

    def action_filter(self) -> None:
        self.vm_list.open_filter()

    def action_show_tab(self, tab: str) -> None:
        self.tabs.active = tab
        if tab == "snapshots":
            self.snapshots_pane.query_one("#snap-table", DataTable).focus()
        elif tab == "events":
            self.event_log.focus()
        elif tab == "storage":
            self.query_one("#storage-images").focus()
        else:
            self.vm_list.rows_view.focus()

    def select_vm(self, name: str) -> None:
        vm_list = self.vm_list
        if name not in vm_list.matching():
            vm_list.action_close_filter()
        vm_list.move_to(name)
        if vm_list.selected != name:
            vm_list.selected = name
            self.post_message(VmSelected(name))

    def help_rows(self) -> list[HelpRow]:
        rows: list[HelpRow] = []
        seen: set[str] = set()
        bindings = [b for _, b, _, _ in self.screen.active_bindings.values()]
        bindings += [b for b in SnapshotsPane.BINDINGS if isinstance(b, Binding)]
        for binding in bindings:
            key = binding.id or binding.action
            if key in seen or not binding.description:
                continue
            seen.add(key)
            rows.append((self.get_key_display(binding), binding.description))
        rows.append(("ctrl+p", "Command palette: every action, go to a VM"))
        return rows

    def action_help(self) -> None:
        self.push_screen(HelpScreen(self.help_rows()))

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "demo":
            return not self.views  # offered with one key on first run; palette otherwise
        if action in ("push_clipboard", "pull_clipboard") and self.backend.clipboard is None:
            return False
        if action in self.VM_ACTIONS:
            return self.selected is not None  # hidden while there is no VM to act on
        if action == "show_tab" and parameters == ("storage",):
            return self.backend.storage is not None
        return True

    def palette_entries(self) -> list[PaletteEntry]:
        entries: list[PaletteEntry] = []
        keys = {b.action: (b.description, self.get_key_display(b)) for b in self.BINDINGS
                if isinstance(b, Binding)}
        if self.selected is not None:
            for action in self.VM_ACTIONS:
                description, key = keys[action]
                if action in ("push_clipboard", "pull_clipboard") and \
                        self.backend.clipboard is None:
                    continue
                entries.append((f"{description}: {self.selected}", f"key {key}",
                                getattr(self, f"action_{action}")))
        entries += [
            ("New VM", f"key {keys['create_vm'][1]}", self.action_create_vm),
            ("Create and boot a demo VM", "the small test guest", self.action_demo),
            ("Filter the VM list", f"key {keys['filter'][1]}", self.action_filter),
            ("Show snapshots", "key 2", lambda: self.action_show_tab("snapshots")),
            ("Show events", "key 3", lambda: self.action_show_tab("events")),
            ("Show overview", "key 1", lambda: self.action_show_tab("overview")),
            ("Keys", f"key {keys['help'][1]}", self.action_help),
        ]
        for name in sorted(self.views):
            entries.append((f"Go to VM {name}", "select it in the list",
                            lambda name=name: self.select_vm(name)))  # type: ignore[misc]
        return entries
