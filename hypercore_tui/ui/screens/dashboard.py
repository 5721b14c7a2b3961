"""The dashboard screen: the host line, the VM list, the selected VM's tabs (overview,
snapshots, events, storage, clipboard, screen) and the key bar; the key table, help and palette
entries.

It shows the monitor's views (updates arrive as :class:`MonitorUpdate` messages) and
reads nothing else while drawing. What the keys do to the selected VM is in its bases,
:class:`~hypercore_tui.ui.screens.vm_keys.VmKeysScreen` (keys and text typed into it) and
:class:`~hypercore_tui.ui.screens.vm_actions.VmActionsScreen`: the screen itself does
no I/O.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import ClassVar

from textual import events, on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.reactive import Reactive
from textual.widget import Widget
from textual.widgets import DataTable, TabbedContent, TabPane

from hypercore_tui.core.errors import HypercoreError
from hypercore_tui.core.models import VmState
from hypercore_tui.core.sizes import format_bytes
from hypercore_tui.ui.backend import (
    Backend,
    ClipEntry,
    ClipNotice,
    ClipSyncView,
    FleetLike,
    GuestInfoChanged,
    HostSampled,
    HostSummary,
    MonitorLike,
    MonitorNotice,
    RemoteChange,
    RemoteSnapshots,
    VmDefinitionChanged,
    VmEventSeen,
    VmJobsChanged,
    VmSampled,
    VmsChanged,
    VmStateChanged,
    VmView,
)
from hypercore_tui.ui.commands import PaletteEntry
from hypercore_tui.ui.keyboard import LEAVE_SHOWN
from hypercore_tui.ui.messages import (
    ClipSyncUpdate,
    KeysSent,
    MonitorUpdate,
    RemoteUpdate,
    VmSelected,
)
from hypercore_tui.ui.screen_image import load as load_screen_rendering
from hypercore_tui.ui.screens.help import HelpRow, HelpScreen
from hypercore_tui.ui.screens.vm_actions import JobRunner
from hypercore_tui.ui.screens.vm_migrate import VmMigrateScreen
from hypercore_tui.ui.widgets.clip_pane import ClipPane
from hypercore_tui.ui.widgets.event_log import EventLog
from hypercore_tui.ui.widgets.host_bar import HostBar
from hypercore_tui.ui.widgets.key_footer import KeyFooter
from hypercore_tui.ui.widgets.keyboard_bar import KeyboardBar
from hypercore_tui.ui.widgets.screen_pane import ScreenPane
from hypercore_tui.ui.widgets.snapshots_pane import SnapshotsPane
from hypercore_tui.ui.widgets.storage_pane import StoragePane
from hypercore_tui.ui.widgets.vm_detail import VmDetail
from hypercore_tui.ui.widgets.vm_list import VmList, split_key

#: OSC 52 payloads above ~100 KB are cut by many terminals: larger texts are not sent.
OSC52_MAX = 74 * 1024

#: The list rows and the host line are repainted together, at most this often (or with
#: the selected VM's sample): one frame a second however many VMs report.
ROW_FLUSH = 1.0


class DashboardScreen(VmMigrateScreen):
    #: Textual repaints the whole screen at each change of focus (a tab switch, the
    #: filter opened or closed); the widgets whose look depends on the focus repaint
    #: themselves (their :focus styles, the list's cursor).
    focused: Reactive[Widget | None] = Reactive(None, repaint=False)

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
        Binding("M", "migrate_vm", "Migrate to another host (live; disks on Ceph)", show=False,
                id="vm.migrate"),
        Binding("escape", "cancel_migration", "Cancel migration", id="vm.migrate-cancel"),
        Binding("i", "push_clipboard", "Paste into VM", id="clipboard.push"),
        Binding("y", "pull_clipboard", "Copy from VM", id="clipboard.pull"),
        Binding("m", "clipboard_mode", "Clipboard: sync / push-only / off", show=False,
                id="clipboard.mode"),
        Binding("k", "keyboard_mode", f"Keyboard mode: every key to the VM ({LEAVE_SHOWN} "
                "leaves)", show=False, id="vm.keyboard"),
        Binding("T", "type_clipboard", "Type the clipboard into the VM as key presses",
                show=False, id="vm.type"),
        Binding("C", "clip_sync", "Clip sync", id="clipboard.sync"),
        Binding("O", "toggle_osc52", "Copy new clipboard entries to my terminal (OSC 52; "
                "off by default)", show=False, id="clipboard.osc52"),
        Binding("slash", "filter", "Filter", id="list.filter"),
        Binding("1", "show_tab('overview')", "Overview", show=False, id="tab.overview"),
        Binding("2", "show_tab('snapshots')", "Snapshots", show=False, id="tab.snapshots"),
        Binding("3", "show_tab('events')", "Events", show=False, id="tab.events"),
        Binding("4", "show_tab('storage')", "Storage", show=False, id="tab.storage"),
        Binding("5", "show_tab('clipboard')", "Clipboard", show=False, id="tab.clipboard"),
        Binding("6", "show_tab('screen')", "Screen", id="tab.screen"),
        Binding("z", "zoom_screen", "Screen tab full size (Esc or z back)", show=False,
                id="screen.zoom"),
        Binding("question_mark", "help", "Help", id="app.help"),
        Binding("q", "app.quit", "Quit", id="app.quit"),
    ]

    #: The key bar shows these first, in this order, as many as fit whole (the demo key
    #: only exists on a first run; the VM keys only while a VM is selected; Esc only while
    #: the selected VM migrates); the help key stays at the right end, beside the palette
    #: key.
    KEY_BAR_RANKING = ("vm.migrate-cancel", "vm.demo", "vm.start", "vm.stop", "vm.console",
                       "vm.display", "clipboard.pull", "tab.screen", "clipboard.push",
                       "vm.pause-resume", "vm.create", "list.filter", "vm.force-stop",
                       "vm.reset", "vm.delete", "app.quit", "clipboard.sync")
    KEY_BAR_PINNED = ("app.help",)

    #: Actions on the selected VM (offered in the palette as "<description>: <VM>").
    VM_ACTIONS = ("start_vm", "stop_vm", "force_stop_vm", "pause_resume", "reset_vm",
                  "delete_vm", "console", "display", "push_clipboard", "pull_clipboard",
                  "clipboard_mode", "keyboard_mode", "type_clipboard")
    #: Actions on the selected VM that need the keyboard (backend.keyboard).
    KEY_ACTIONS = ("keyboard_mode", "type_clipboard")

    def __init__(self, backend: Backend, monitor: MonitorLike, jobs: JobRunner, *,
                 environ: Mapping[str, str], fleet: FleetLike | None = None) -> None:
        super().__init__(backend, monitor, jobs)
        self.environ = environ
        #: the other hosts' streams: the list is grouped by host (None: this host only)
        self.fleet = fleet
        self._dirty: set[str] = set()
        self._last_flush = 0.0
        self._sampled_pending = False
        self._host_summary: HostSummary | None = None
        self._host_shown = False  # a host summary was on the host line already
        self._no_vm_yet = True
        self.host_bar = HostBar(id="host-bar")
        self.vm_list = VmList(id="vm-list")
        self.detail = VmDetail(id="vm-detail")
        self.tabs = TabbedContent(id="tabs", initial="overview")
        self.snapshots_pane = SnapshotsPane(
            backend.snapshots, id="snapshots-pane",
            remote=RemoteSnapshots(backend.remote) if backend.remote is not None else None)
        self.event_log = EventLog(id="event-log")
        self.clip_pane = ClipPane(id="clip-pane")
        #: the selected VM's screen; the keyboard feature calls ``screen_pane.nudge()``
        #: after each key it sends to the selected VM
        self.screen_pane = ScreenPane(backend.screendump, load_screen_rendering(environ),
                                      id="screen-pane")
        #: opt-in: new text entries from a VM or the host go to the user's terminal
        self.osc52 = False
        self._osc52_warned = False
        self._help: HelpScreen | None = None  # (built at the first "?")

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
                if self.backend.clipsync is not None:
                    with TabPane("Clipboard", id="clipboard"):
                        yield self.clip_pane
                with TabPane("Screen", id="screen"):
                    yield self.screen_pane
        yield KeyboardBar(id="keyboard-bar")
        yield KeyFooter(self.KEY_BAR_RANKING, pinned=self.KEY_BAR_PINNED)

    def on_mount(self) -> None:
        self.detail.environ = self.environ
        self.set_focus(self.vm_list.rows_view)
        self.detail.show(None, any_vms=False)
        if self.fleet is not None:
            self.vm_list.set_remote(self.fleet.hosts)
        self.set_interval(ROW_FLUSH, self._flush_stale)
        if self.backend.clipsync is not None:
            self._clip_view(self.backend.clipsync.view())

    def on_descendant_blur(self, event: events.DescendantBlur) -> None:
        """Until the first VM is listed, the (then hidden) list keeps the focus, so that
        the arrows work on it as soon as one appears: Textual blurs a widget as it is
        hidden, and on a first run the list is hidden from the first update on."""
        rows = self.vm_list.rows_view
        if self._no_vm_yet and event.widget is rows and self.focused is None:
            self.set_focus(rows)

    @property
    def views(self) -> Mapping[str, VmView]:
        return self.monitor.views

    def _active_tab(self) -> str:
        return str(self.tabs.active)

    def _show_detail(self) -> None:
        if self._active_tab() == "overview":
            remote = self.selected_remote()
            view = self.selected_view() if remote is None else remote[1]
            migration = self.selected_migration() if remote is None else None
            self.detail.show(view, any_vms=bool(self.views) or remote is not None,
                             host=None if remote is None else remote[0],
                             migration=None if migration is None else migration.describe())
        self._show_screen()

    def selected_remote(self) -> tuple[str, VmView] | None:
        if self.selected is None:
            return None
        picked = self.vm_list.remote_view(self.selected)
        return None if picked is None else (picked[0].name, picked[1])

    def _vm_selected(self) -> str | None:
        """The selected VM, this host's (its name) or another's (``HOST/VM``); a host
        header: None."""
        if self.selected is None or self.selected.endswith("/"):
            return None
        return self.selected

    def _local_selected(self) -> str | None:
        """The selected VM if it is this host's (a remote VM, a header: None)."""
        if self.selected is None or split_key(self.selected)[0] is not None:
            return None
        return self.selected

    # -- other hosts ------------------------------------------------------------------

    def remote_change(self, change: RemoteChange) -> None:
        """The fleet's sink (called on the app's loop): samples are noted and shown with
        the next flush of rows, the rest at once."""
        if change.vm is not None and not change.rows and change.log is None:
            self._dirty.add(f"{change.host}/{change.vm}")
            return
        self.post_message(RemoteUpdate(change))

    def on_remote_update(self, message: RemoteUpdate) -> None:
        change = message.change
        if change.rows:
            self.vm_list.hosts_changed([change.host], rows=True)
            if self.selected is not None and split_key(self.selected)[0] == change.host:
                self._show_detail()
        elif change.vm is not None:
            key = f"{change.host}/{change.vm}"
            self.vm_list.refresh_rows([key])
            if key == self.selected:
                self._show_detail()
        else:
            self.vm_list.hosts_changed([change.host], rows=False)
        if change.log is not None:
            who = f"{change.host}/{change.vm}" if change.vm is not None else None
            self.event_log.add(who, "STATE" if change.vm is not None else "HOST", change.log)

    def _show_screen(self) -> None:
        """The Screen tab follows the selected VM; it takes frames only while visible."""
        self.screen_pane.show(self.selected_view(), visible=self._active_tab() == "screen")

    # -- monitor updates --------------------------------------------------------------

    def monitor_notice(self, notice: MonitorNotice) -> None:
        """The monitor's sink (called on the app's loop): one update per burst of
        samples, the sampled VMs noted meanwhile."""
        if isinstance(notice, VmSampled):
            self._dirty.add(notice.name)
            if self._sampled_pending:
                return
            self._sampled_pending = True
        self.post_message(MonitorUpdate(notice))

    async def on_monitor_update(self, message: MonitorUpdate) -> None:
        match message.notice:
            case VmSampled():
                self._vms_sampled()
            case VmStateChanged() as changed:
                self._state_changed(changed)
            case VmEventSeen(name=name, event=event, detail=detail, timestamp=stamp):
                self.event_log.add(name, event, detail, stamp)
            case GuestInfoChanged(name=name) | VmDefinitionChanged(name=name):
                self.vm_list.refresh_rows([name])
                if name == self.selected:
                    self._show_detail()
            case VmJobsChanged() as jobs:
                self._jobs_changed(jobs)
            case VmsChanged():
                await self._vm_list_changed()
            case HostSampled(summary=summary):
                self._host_summary = summary  # shown with the next flush
                if not self._host_shown:
                    # The first one at once: on a slow start the row timer may have
                    # flushed before it came (the host line then waited a second).
                    self._flush_rows()

    async def _vm_list_changed(self) -> None:
        views = self.views
        self._no_vm_yet = self._no_vm_yet and not views
        await self.vm_list.set_views(views)
        self.host_bar.show_host(views=list(views.values()))
        self._show_detail()
        self.refresh_bindings()

    def _vms_sampled(self) -> None:
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
            if self.selected in dirty and split_key(self.selected)[0] is not None:
                self._show_detail()  # a remote VM's sparklines
        if self.fleet is not None:  # ("down 12s" counts on)
            self.vm_list.hosts_changed(self.fleet.hosts, rows=False)
        if self._host_summary is not None:
            self.host_bar.show_host(self._host_summary, list(self.views.values()))
            self._host_summary = None
            self._host_shown = True

    def _flush_stale(self) -> None:
        """When the selected VM is not sampled (stopped, none), flush on this timer."""
        if time.monotonic() - self._last_flush >= ROW_FLUSH * 0.9:
            self._flush_rows()

    def _state_changed(self, changed: VmStateChanged) -> None:
        self.vm_list.refresh_rows([changed.name])
        self.host_bar.show_host(views=list(self.views.values()))
        if changed.name == self.selected:
            self._show_detail()
        self.leave_keyboard_mode_if(changed.name, changed.new)
        if not (changed.reason == "attached" and changed.old is VmState.RUNNING):
            # (attaching to a VM found running at start-up only refines its state)
            self.event_log.add(changed.name, "STATE", f"{changed.old.value} → "
                               f"{changed.new.value} ({changed.reason})")
        if changed.new is VmState.CRASHED:
            self.notify(f"{changed.name} crashed: {changed.reason}", severity="error",
                        timeout=10, markup=False)

    def _jobs_changed(self, jobs: VmJobsChanged) -> None:
        self.vm_list.refresh_rows([jobs.name])
        if jobs.name == self.selected:
            self._show_detail()
        if jobs.finished:  # a snapshot job ended (here, in another dashboard or the CLI)
            self.snapshots_pane.list_may_have_changed(
                jobs.name, visible=self._active_tab() == "snapshots")

    # -- the clipboard sync -----------------------------------------------------------

    def clip_notice(self, notice: ClipNotice) -> None:
        """The clipboard sync's sink (called on the app's loop)."""
        self.post_message(ClipSyncUpdate(notice))

    def on_clip_sync_update(self, message: ClipSyncUpdate) -> None:
        notice = message.notice
        self._clip_view(notice.view)
        if notice.kind == "fault":  # the engine says each fault once
            self.notify(notice.message, severity="warning", timeout=8, markup=False)
            self.event_log.add(notice.vm, "CLIPBOARD", notice.message)
        elif notice.kind == "state":
            self.notify(notice.message, markup=False)
            self.event_log.add(None, "CLIPBOARD", notice.message)
        elif notice.kind == "change" and notice.entry is not None:
            entry = notice.entry
            source = entry.source[3:] if entry.source.startswith("vm:") else None
            targets = sum(1 for vm in notice.view.vms if vm.name != source and vm.mode != "off")
            self.event_log.add(source, "CLIPBOARD",
                               f"{entry.kind} {format_bytes(entry.size)} copied"
                               + ("" if source else f" ({entry.source})")
                               + f", sent to {targets} VM{'' if targets == 1 else 's'}",
                               entry.at or None)
            if self.osc52:
                self._to_terminal(entry)

    def action_toggle_osc52(self) -> None:
        self.osc52 = not self.osc52
        self._osc52_warned = False
        self.host_bar.show_osc52(self.osc52)
        message = ("OSC 52 on: each new clipboard entry from a VM or the host is copied to "
                   "your terminal's clipboard (O turns it off)" if self.osc52 else
                   "OSC 52 off: clipboard entries stay out of your terminal's clipboard")
        self.notify(message, markup=False)
        self.event_log.add(None, "CLIPBOARD", message)

    def _to_terminal(self, entry: ClipEntry) -> None:
        """A new entry from a VM or the host, copied to the user's terminal (OSC 52:
        Textual sends it base64-encoded, nothing of it reaches the terminal raw)."""
        clipsync = self.backend.clipsync
        if clipsync is None or entry.kind != "text" or \
                not entry.source.startswith(("vm:", "host:")):
            return
        if entry.size > OSC52_MAX:
            if not self._osc52_warned:  # once, not at every large copy
                self._osc52_warned = True
                self.notify(f"clipboard entry too large for OSC 52 ({entry.size // 1024} KiB):"
                            " not copied to your terminal", severity="warning", markup=False)
            return

        async def copy() -> None:
            try:
                text = await clipsync.text_of(entry.id)
            except HypercoreError:
                return  # the sync went away meanwhile
            if text is not None and self.osc52:
                self.app.copy_to_clipboard(text)

        self.run_worker(copy(), group="osc52", exit_on_error=False)

    def _clip_view(self, view: ClipSyncView) -> None:
        self.clip_pane.show(view)
        label = None
        if view.here:
            label = "clip sync"
        elif view.running:
            label = f"clip sync pid {view.pid}"
        self.host_bar.show_clip(label)

    def action_clip_sync(self) -> None:
        clipsync = self.backend.clipsync
        if clipsync is None:
            return
        view = clipsync.view()
        if view.elsewhere:
            self.notify(f"clipboard sync runs in pid {view.pid} (hypercore clip sync): stop "
                        "it there", markup=False)
            return
        try:
            summary = clipsync.stop() if view.here else clipsync.start()
        except HypercoreError as exc:
            self.notify(str(exc), severity="warning", markup=False)
            return
        self.notify(summary, markup=False)

    def on_clip_pane_again(self, message: ClipPane.Again) -> None:
        clipsync = self.backend.clipsync
        if clipsync is not None:
            entry = message.entry_id
            self.jobs.run_async_job(None, "clipboard again", lambda: clipsync.again(entry))

    def on_clip_pane_push_to(self, message: ClipPane.PushTo) -> None:
        clipsync = self.backend.clipsync
        if clipsync is None or (view := self._need_vm()) is None:
            return
        entry, name = message.entry_id, view.name
        self.jobs.run_async_job(name, "clipboard push", lambda: clipsync.push_to(entry, name))

    def migration_changed(self, name: str) -> None:
        self.vm_list.migrating = set(self.migrations)
        self.vm_list.refresh_rows([name])
        if name == self.selected:
            self._show_detail()
            self.refresh_bindings()  # (Esc cancels it)

    def on_vm_selected(self, message: VmSelected) -> None:
        if (self.selected is None) != (message.name is None) or self.migrations:
            self.refresh_bindings()
        self.selected = message.name
        local = self._local_selected()
        self.monitor.set_focus(local)
        self._show_detail()
        self.snapshots_pane.show_vm(self._vm_selected(),
                                    visible=self._active_tab() == "snapshots")

    @on(TabbedContent.TabActivated)
    def _tab_activated(self, event: TabbedContent.TabActivated) -> None:
        tab = event.pane.id
        self._show_screen()
        if tab == "overview":
            self._show_detail()
        elif tab == "snapshots":
            self.snapshots_pane.show_vm(self._vm_selected(), visible=True)

    # -- the keyboard mode ------------------------------------------------------------

    def keyboard_mode_changed(self) -> None:
        """The bar says where the keys go while the mode is on, in the key bar's place."""
        mode = self.keyboard_mode
        bar = self.query_one(KeyboardBar)
        footer = self.query_one(KeyFooter)
        if mode is not None and mode.vm is not None:
            bar.show_on(mode.vm, mode.layout(mode.vm), LEAVE_SHOWN)
            footer.display = False
        else:
            bar.show_off()
            footer.display = True

    def on_keys_sent(self, message: KeysSent) -> None:
        """Keys reached ``message.name``: its screen, if shown, refreshes sooner."""
        if message.name == self.selected:
            self.screen_pane.nudge()

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
        elif tab == "clipboard":
            self.clip_pane.table.focus()
        else:
            self.vm_list.rows_view.focus()

    def action_zoom_screen(self) -> None:
        """The Screen tab alone on the whole terminal (Textual's maximize), or back."""
        if self.maximized is not None:
            self.minimize()
        else:
            if self._active_tab() != "screen":
                self.action_show_tab("screen")
            self.maximize(self.screen_pane, container=False)

    def watch_maximized(self) -> None:
        self.screen_pane.refresh_status()  # (Esc restores too: Textual's own key)

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
        own = {b.id for b in self.BINDINGS if isinstance(b, Binding)}

        def rank(binding: Binding) -> int:
            # Textual's keys (the focused widget's, the screen's, the app's) first, then
            # the dashboard's, the palette's, and the snapshot pane's.
            if binding.id in own:
                return 1
            return 2 if binding.action in ("command_palette", "app.command_palette") else 0

        bindings = sorted((b for _, b, _, _ in self.active_bindings.values()), key=rank)
        bindings += [b for b in SnapshotsPane.BINDINGS if isinstance(b, Binding)]
        # (Esc is active only while the selected VM migrates: listed all the same)
        bindings += [b for b in self.BINDINGS if isinstance(b, Binding)
                     and b.action == "cancel_migration"]
        if self.backend.clipsync is not None:
            bindings += [b for b in ClipPane.BINDINGS if isinstance(b, Binding)]
            rows_enter = ("enter", "Clipboard tab: the entry to every VM")
        else:
            rows_enter = None
        for binding in bindings:
            key = binding.id or binding.action
            if key in seen or not binding.description:
                continue
            seen.add(key)
            rows.append((self.app.get_key_display(binding), binding.description))
        if rows_enter is not None:
            rows.append(rows_enter)
        rows += self.keyboard_help()
        rows.append(("ctrl+p", "Command palette: every action, go to a VM"))
        return rows

    def action_help(self) -> None:
        """The help, built once and shown again (its text changes with the keys)."""
        rows = self.help_rows()
        if self._help is None:
            self._help = HelpScreen(rows)
            self.app.install_screen(self._help, name=f"help-{id(self)}")
        else:
            self._help.show_rows(rows)
        self.app.push_screen(self._help)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "demo":
            return not self.views  # offered with one key on first run; palette otherwise
        if action in ("push_clipboard", "pull_clipboard") and self.backend.clipboard is None:
            return False
        if action in self.KEY_ACTIONS and self.backend.keyboard is None:
            return False
        if action in self.VM_ACTIONS:
            return self.selected is not None  # hidden while there is no VM to act on
        if action == "migrate_vm":
            return self.selected is not None and self.backend.migration is not None
        if action == "cancel_migration":  # (otherwise Esc is left to the others)
            return self.selected_migration() is not None
        if action == "show_tab" and parameters == ("storage",):
            return self.backend.storage is not None
        if action in ("clip_sync", "toggle_osc52") or (action == "show_tab" and
                                                        parameters == ("clipboard",)):
            return self.backend.clipsync is not None
        return True

    def _migration_entries(self, key: str) -> list[PaletteEntry]:
        """Migrate the selected VM of this host (running), or cancel its migration."""
        name, view = self.selected, self.selected_view()
        if name is None or view is None or self.backend.migration is None:
            return []
        if (migration := self.selected_migration()) is not None:
            return [(f"Cancel the migration of {name} to {migration.host}",
                     "key esc: it keeps running here", self.action_cancel_migration)]
        if view.state is not VmState.RUNNING:
            return []
        return [(f"Migrate {name} to another host", f"key {key}: live, its disks on Ceph",
                 self.action_migrate_vm)]

    def palette_entries(self) -> list[PaletteEntry]:
        entries: list[PaletteEntry] = []
        keys = {b.action: (b.description, self.app.get_key_display(b)) for b in self.BINDINGS
                if isinstance(b, Binding)}
        if (remote := self.selected_remote()) is not None:
            entries.append((f"Take a snapshot: {remote[0]}/{remote[1].name}",
                            "snapshot create on that host", self.action_remote_snapshot))
        if self.selected is not None:
            for action in self.VM_ACTIONS:
                description, key = keys[action]
                if action in ("push_clipboard", "pull_clipboard") and \
                        self.backend.clipboard is None:
                    continue
                if action in self.KEY_ACTIONS and self.keyboard_mode is None:
                    continue
                entries.append((f"{description}: {self.selected}", f"key {key}",
                                getattr(self, f"action_{action}")))
            entries += self._migration_entries(keys["migrate_vm"][1])
            if self.keyboard_mode is not None:
                layout = self.keyboard_mode.layout(self.selected)
                entries += [
                    (f"Keyboard layout of {self.selected}: {layout}",
                     "us, de, fr or gb: for keyboard mode and typed text",
                     self.action_keyboard_layout),
                    (f"Send Ctrl+Alt+Del to {self.selected}", "as key presses",
                     self.action_send_ctrl_alt_del),
                    (f"Send keys to {self.selected}…", "ctrl+alt+f2 and others a terminal "
                     "cannot send", self.action_send_key_combo),
                ]
        entries += [
            ("New VM", f"key {keys['create_vm'][1]}", self.action_create_vm),
            ("Create and boot a demo VM", "the small test guest", self.action_demo),
            ("Filter the VM list", f"key {keys['filter'][1]}", self.action_filter),
            ("Show snapshots", "key 2", lambda: self.action_show_tab("snapshots")),
            ("Show events", "key 3", lambda: self.action_show_tab("events")),
            ("Show overview", "key 1", lambda: self.action_show_tab("overview")),
            ("Show the VM's screen", "key 6", lambda: self.action_show_tab("screen")),
        ]
        if self.backend.clipsync is not None:
            entries += [
                ("Clipboard sync on/off", f"key {keys['clip_sync'][1]}", self.action_clip_sync),
                ("Show the clipboard history", "key 5",
                 lambda: self.action_show_tab("clipboard")),
            ]
        entries += [
            ("Keys", f"key {keys['help'][1]}", self.action_help),
        ]
        for name in sorted(self.views):
            entries.append((f"Go to VM {name}", "select it in the list",
                            lambda name=name: self.select_vm(name)))  # type: ignore[misc]
        if self.fleet is not None:
            for host_name, host in sorted(self.fleet.hosts.items()):
                for vm in sorted(host.vms):
                    key = f"{host_name}/{vm}"
                    entries.append((f"Go to VM {vm} on {host_name}", "select it in the list",
                                    lambda key=key: self.select_vm(key)))  # type: ignore[misc]
        return entries
