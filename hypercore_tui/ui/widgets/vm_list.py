"""The VM list: name, state, CPU, memory and agent of every VM, with a filter.

The rows are one Line-API widget (:class:`VmRows`): a VM's new figures repaint that
line only (a ``DataTable`` re-renders every visible row on any cell change), and the
screen's layout passes see one widget, not two per VM. The filter shows only the
matching rows, so the cursor skips the others.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import ClassVar

from rich.style import Style
from rich.text import Text
from textual import events, on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.cache import LRUCache
from textual.containers import Vertical
from textual.events import Resize
from textual.geometry import Size
from textual.message import Message
from textual.scroll_view import ScrollView
from textual.strip import Strip
from textual.widgets import Input, Static

from hypercore_tui.core.models import VmState
from hypercore_tui.core.series import format_percent
from hypercore_tui.ui.backend import AgentStatus, RemoteHost, StreamState, VmView
from hypercore_tui.ui.messages import VmSelected
from hypercore_tui.ui.text import safe
from hypercore_tui.ui.widgets.readout import Readout
from hypercore_tui.ui.widgets.steady_scroll import SteadyScrollbars

#: Symbol, short label and style of each state (the symbol carries it without colour).
STATE_LOOK: Mapping[VmState, tuple[str, str, str]] = {
    VmState.RUNNING: ("▶", "running", "green"),
    VmState.PAUSED: ("‖", "paused", "yellow"),
    VmState.STOPPED: ("■", "stopped", "dim"),
    VmState.STARTING: ("…", "starting", "cyan"),
    VmState.SHUTTING_DOWN: ("↓", "stopping", "cyan"),
    VmState.CRASHED: ("✗", "crashed", "bold red"),
}

AGENT_LOOK: Mapping[AgentStatus, tuple[str, str, str]] = {
    AgentStatus.ANSWERING: ("●", "yes", "green"),
    AgentStatus.SILENT: ("○", "no", "yellow"),
    AgentStatus.UNKNOWN: ("·", "—", "dim"),
}

WIDE_AT = 46  # list width from which the wide columns fit
NARROW_COLUMNS = (10, 10, 5, 5, 1)
WIDE_COLUMNS = (17, 14, 6, 11, 6)
RIGHT_ALIGNED = (2, 3)  # CPU, memory


#: Stands in for the state's symbol while QEMU runs a job / after a job failed.
JOB_RUNNING = ("⟳", "bold cyan")
JOB_FAILED = ("!", "bold red")


def state_text(state: VmState, *, long: bool = False) -> Text:
    symbol, label, style = STATE_LOOK[state]
    return Text(f"{symbol} {state.value if long else label}", style=style, no_wrap=True)


def job_marker(view: VmView) -> tuple[str, str] | None:
    """The list's marker for the VM's jobs: one running, one failed, or none."""
    if any(not job.finished for job in view.jobs):
        return JOB_RUNNING
    if any(job.failed for job in view.jobs):
        return JOB_FAILED
    return None


#: The state's label for a VM that QEMU paused after a failed disk write (wide, narrow).
PAUSED_BY_IO_ERROR = {True: ("disk full", "nospace"), False: ("io-error", "io-err")}


def _state_cell(view: VmView, *, wide: bool) -> Text:
    text = state_text(view.state, long=wide)
    marker = job_marker(view)
    if marker is None and view.pause_reason is not None and view.state is VmState.PAUSED:
        label = PAUSED_BY_IO_ERROR[view.pause_reason.nospace][0 if wide else 1]
        return Text(f"{STATE_LOOK[view.state][0]} {label}", style="bold yellow", no_wrap=True)
    if marker is None:
        return text
    symbol, style = marker
    _, label, state_style = STATE_LOOK[view.state]
    cell = Text(symbol, style=style, no_wrap=True)
    cell.append(f" {view.state.value if wide else label}", style=state_style)
    return cell


def short_bytes(value: float | None) -> str:
    """``188743680`` -> ``180M``: at most 4 characters."""
    if value is None:
        return "—"
    size = float(value)
    for unit in ("B", "K", "M", "G", "T"):
        if size < 1000 or unit == "T":
            if size < 10 and unit != "B":
                return f"{size:.1f}{unit}"
            return f"{size:.0f}{unit}"
        size /= 1024
    raise AssertionError("unreachable")


def _line(cells: Iterable[Text], widths: tuple[int, ...]) -> Text:
    """Cells cut and padded to their column widths, one blank column between them."""
    line = Text(no_wrap=True, overflow="crop")
    for index, (cell, width) in enumerate(zip(cells, widths, strict=True)):
        room = max(width - 1, 1)
        piece = cell.copy()
        piece.truncate(room, overflow="ellipsis")
        if index in RIGHT_ALIGNED:
            piece.pad_left(room - piece.cell_len)
        piece.pad_right(width - piece.cell_len)
        line.append_text(piece)
    return line


# -- rows of other hosts ----------------------------------------------------------------
#
# A row is keyed by a string: a local VM by its name (as before: the list of a single host
# is unchanged), a remote VM by ``HOST/NAME`` and a host's header by ``HOST/``. VM and host
# names never hold a "/" (core.names), so no local VM can take a remote one's key.

LOCAL_HEADER = "local/"


def remote_key(host: str, vm: str) -> str:
    return f"{host}/{vm}"


def header_key(host: str) -> str:
    return f"{host}/"


def split_key(key: str) -> tuple[str | None, str]:
    """(host, VM name) of a row's key: (None, name) for a local VM, (host, "") for a
    host's header."""
    host, sep, vm = key.partition("/")
    return (host, vm) if sep else (None, key)


def since(seconds: float) -> str:
    """How long, short: ``8s``, ``3m``, ``2h``."""
    if seconds < 60:
        return f"{seconds:.0f}s"
    if seconds < 3600:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.0f}h"


HOST_LOOK: Mapping[StreamState, str] = {
    StreamState.LIVE: "green",
    StreamState.CONNECTING: "cyan",
    StreamState.STALLED: "bold yellow",
    StreamState.DOWN: "bold red",
}


def host_state(host: RemoteHost, now: float) -> tuple[str, str]:
    """The header's word for the host's stream and its style: ``live``, ``connecting``,
    ``stalled 5s``, ``down 12s`` (a host that went away stays "down" while it is
    connected again)."""
    state = host.state
    if state is StreamState.CONNECTING and host.out_since is not None:
        state = StreamState.DOWN
    word = state.value
    if state is not StreamState.LIVE and host.out_since is not None:
        word += f" {since(max(0.0, now - host.out_since))}"
    elif state is StreamState.CONNECTING:  # (the first connection: how long so far)
        word += f" {since(max(0.0, now - host.state_since))}"
    return word, HOST_LOOK[state]


def host_header(host: RemoteHost, now: float, *, count: int) -> Text:
    """A host's header line: name, its stream's state, load and free space, VM count."""
    word, style = host_state(host, now)
    line = Text(no_wrap=True, overflow="ellipsis")
    line.append_text(safe(host.name, "bold reverse", limit=64))
    line.append(" ")
    line.append(word, style=style)
    if host.load:
        line.append(f" load {host.load[0]:.2f}", style="dim")
    if host.disk_free_bytes is not None:
        line.append(f" free {short_bytes(host.disk_free_bytes)}", style="dim")
    line.append(f" {count} VM{'' if count == 1 else 's'}", style="dim")
    return line


def local_header(count: int) -> Text:
    line = Text(no_wrap=True, overflow="ellipsis")
    line.append("local", style="bold reverse")
    line.append(" this host", style="green")
    line.append(f" {count} VM{'' if count == 1 else 's'}", style="dim")
    return line


#: The state cell of a VM this dashboard migrates (wide, narrow).
MIGRATING = {True: "migrating", False: "migrate"}


def row_cells(view: VmView, *, wide: bool, migrating: bool = False) -> tuple[Text, ...]:
    sample = view.sample
    cpu = format_percent(sample.cpu_percent) if sample else "—"
    guest = sample.guest_mem_used_bytes if sample else None
    if guest is not None:
        mem = short_bytes(guest)
        if wide and view.ram_mb:
            mem += "/" + short_bytes(view.ram_mb * 1024 * 1024)
    else:  # no balloon report: what the host gave the QEMU process
        mem = short_bytes(sample.rss_bytes if sample else None)
        if wide and sample is not None:
            mem += " rss"
    symbol, word, style = AGENT_LOOK[view.agent]
    agent = word if wide else symbol
    if not view.state.is_active:
        cpu, mem, agent, style = "", "", "", ""
    state = _state_cell(view, wide=wide)
    if migrating:
        state = Text(JOB_RUNNING[0], style=JOB_RUNNING[1], no_wrap=True)
        state.append(f" {MIGRATING[wide]}", style="cyan")
    return (safe(view.name, "bold", limit=64), state, Text(cpu), Text(mem),
            Text(agent, style=style))


class VmRows(SteadyScrollbars, ScrollView, can_focus=True, inherit_bindings=False):
    """The VM rows as one Line-API widget: each visible line is painted from a cached
    strip, a VM's new figures repaint its line only, and a layout pass sees one widget
    instead of two per VM (50 VMs were 100 of the screen's 156 widgets, and every tab
    switch, dialog and filter keystroke laid them all out again)."""

    COMPONENT_CLASSES: ClassVar[set[str]] = {"vm-rows--cursor", "vm-rows--cursor-blurred"}

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("up", "cursor(-1)", "Cursor up", show=False),
        Binding("down", "cursor(1)", "Cursor down", show=False),
        Binding("pageup", "page(-1)", "Page up", show=False),
        Binding("pagedown", "page(1)", "Page down", show=False),
        Binding("home", "first", "First VM", show=False),
        Binding("end", "last", "Last VM", show=False),
    ]

    DEFAULT_CSS = """
    VmRows {
        background: $surface;
        color: $foreground;
        height: 1fr;
        overflow-x: hidden;
        scrollbar-size-vertical: 1;
    }
    VmRows > .vm-rows--cursor-blurred {
        color: $block-cursor-blurred-foreground;
        background: $block-cursor-blurred-background;
        text-style: $block-cursor-blurred-text-style;
    }
    VmRows > .vm-rows--cursor {
        color: $block-cursor-foreground;
        background: $block-cursor-background;
        text-style: $block-cursor-text-style;
    }
    VmRows:focus {
        background-tint: $foreground 5%;
    }
    """

    class Highlighted(Message):
        """The cursor is on another VM (``None``: no rows)."""

        def __init__(self, rows: VmRows, vm_name: str | None) -> None:
            super().__init__()
            self.rows = rows
            self.vm_name = vm_name

        @property
        def control(self) -> VmRows:
            return self.rows

    def __init__(self, *, id: str | None = None) -> None:  # noqa: A002 - Textual API
        super().__init__(id=id)
        self.names: list[str] = []
        self.index: int | None = None
        self._lines: dict[str, Text] = {}
        self._strips: LRUCache[tuple[str, int, Style, int], Strip] = LRUCache(1024)
        self._versions: dict[str, int] = {}

    # -- content --------------------------------------------------------------------

    def set_line(self, name: str, line: Text) -> None:
        """``name``'s line is ``line``: repainted only when it changed and is shown."""
        if self._lines.get(name) == line:
            return
        self._lines[name] = line
        self._versions[name] = self._versions.get(name, 0) + 1
        try:
            row = self.names.index(name)
        except ValueError:
            return
        self.refresh_line(row)

    def line_text(self, name: str) -> str:
        line = self._lines.get(name)
        return "" if line is None else line.plain

    def set_names(self, names: list[str], cursor: str | None) -> None:
        """Show these rows (in this order), the cursor on ``cursor`` if given."""
        if names != self.names:
            self.names = list(names)
            self.virtual_size = Size(self.size.width, len(names))
            self.refresh()
        self.move_to(cursor)

    def move_to(self, name: str | None) -> None:
        vms = [i for i, key in enumerate(self.names) if not key.endswith("/")]
        index = self.names.index(name) if name in self.names else (vms[0] if vms else None)
        self._set_index(index)

    def _set_index(self, index: int | None) -> None:
        if index is not None:
            index = max(0, min(index, len(self.names) - 1)) if self.names else None
        old, self.index = self.index, index
        if old != index:
            for row in (old, index):
                if row is not None:
                    self.refresh_line(row)
        if index is not None:
            self._keep_visible(index)
        self.post_message(self.Highlighted(self, None if index is None else self.names[index]))

    def _keep_visible(self, index: int) -> None:
        top, height = self.scroll_offset.y, self.scrollable_content_region.height
        if index < top:
            self.scroll_to(y=index, animate=False, immediate=True)
        elif height and index >= top + height:
            self.scroll_to(y=index - height + 1, animate=False, immediate=True)

    # -- keys and mouse -------------------------------------------------------------

    def _land(self, index: int, step: int) -> None:
        """Move to ``index``, or past the host headers there in the direction of ``step``
        (then back the other way at the end of the list): the cursor is always on a VM."""
        last = len(self.names) - 1
        index = max(0, min(index, last))
        for direction in (step or 1, -(step or 1)):
            row = index
            while 0 <= row <= last:
                if not self.names[row].endswith("/"):
                    self._set_index(row)
                    return
                row += 1 if direction > 0 else -1
        # headers only: the cursor stays where it is

    def action_cursor(self, step: int) -> None:
        if self.names:
            self._land((self.index or 0) + step if self.index is not None else 0, step)

    def action_page(self, pages: int) -> None:
        if self.names:
            height = max(1, self.scrollable_content_region.height)
            self._land((self.index or 0) + pages * height, pages)

    def action_first(self) -> None:
        if self.names:
            self._land(0, 1)

    def action_last(self) -> None:
        if self.names:
            self._land(len(self.names) - 1, -1)

    def on_click(self, event: events.Click) -> None:
        row = event.y + self.scroll_offset.y
        if 0 <= row < len(self.names) and not self.names[row].endswith("/"):
            self._set_index(row)

    def on_focus(self) -> None:
        if self.index is not None:
            self.refresh_line(self.index)

    def on_blur(self) -> None:
        if self.index is not None:
            self.refresh_line(self.index)

    def on_resize(self, event: events.Resize) -> None:
        self.virtual_size = Size(event.size.width, len(self.names))
        if self.index is not None:
            self._keep_visible(self.index)

    # -- painting -------------------------------------------------------------------

    def render_line(self, y: int) -> Strip:
        row = y + self.scroll_offset.y
        width = self.scrollable_content_region.width
        if not 0 <= row < len(self.names):
            return Strip.blank(width, self.rich_style)
        name = self.names[row]
        style = self.rich_style  # (tinted while focused: both kept in the cache)
        if row == self.index:
            style += self.get_component_rich_style(
                "vm-rows--cursor" if self.has_focus else "vm-rows--cursor-blurred")
        key = (name, self._versions.get(name, 0), style, width)
        strip = self._strips.get(key)
        if strip is None:
            line = self._lines.get(name, Text(name))
            strip = Strip(line.render(self.app.console)).crop_extend(0, width, None)
            strip = strip.apply_style(style)
            self._strips[key] = strip
        return strip


class VmList(Vertical):
    """The VMs; the highlighted row is the selected VM."""

    BINDINGS = [
        Binding("escape", "close_filter", "Clear filter", show=False, id="list.clear-filter"),
    ]

    DEFAULT_CSS = """
    VmList > #vm-header {
        background: $panel;
    }
    VmList > ListView {
        height: 1fr;
        scrollbar-size-vertical: 1;
    }
    VmList > #vm-filter {
        display: none;
    }
    VmList.-filtering > #vm-filter {
        display: block;
    }
    VmList > #vm-empty {
        height: auto;
        padding: 1 1;
        color: $text-muted;
    }
    """

    def __init__(self, *, id: str | None = None) -> None:  # noqa: A002 - Textual API
        super().__init__(id=id)
        self._views: Mapping[str, VmView] = {}
        self._remote: Mapping[str, RemoteHost] | None = None  # None: not grouped
        self._names: list[str] = []
        self._wide = False
        self.selected: str | None = None
        self.filter_text = ""
        #: this host's VMs being migrated (their state cell says so)
        self.migrating: set[str] = set()

    def compose(self) -> ComposeResult:
        yield Readout(id="vm-header")
        yield VmRows(id="vm-rows")
        yield Static("", id="vm-empty", markup=False)
        yield Input(placeholder="filter VMs (Enter keeps, Esc clears)", id="vm-filter",
                    compact=True)

    @property
    def rows_view(self) -> VmRows:
        return self.query_one("#vm-rows", VmRows)

    @property
    def widths(self) -> tuple[int, ...]:
        return WIDE_COLUMNS if self._wide else NARROW_COLUMNS

    # -- data -----------------------------------------------------------------------

    async def set_views(self, views: Mapping[str, VmView]) -> None:
        """Follow the monitor's VMs: rows added and removed, then redrawn."""
        self._views = views
        self._order()
        self.redraw()

    def set_remote(self, hosts: Mapping[str, RemoteHost] | None) -> None:
        """Group the list by host: this host's VMs, then each remote host's (``hosts``
        is the fleet's own mapping, read again at each redraw)."""
        self._remote = hosts
        self._order()
        self.redraw()

    @property
    def grouped(self) -> bool:
        return self._remote is not None

    def _order(self) -> None:
        if self._remote is None:
            self._names = sorted(self._views)
            return
        names = [LOCAL_HEADER, *sorted(self._views)]
        for host in sorted(self._remote):
            names.append(header_key(host))
            names += [remote_key(host, vm) for vm in sorted(self._remote[host].vms)]
        self._names = names

    def remote_view(self, key: str) -> tuple[RemoteHost, VmView] | None:
        """The remote host and VM of a row's key (None: a local VM, a header, gone)."""
        host_name, vm = split_key(key)
        if host_name is None or not vm or self._remote is None:
            return None
        host = self._remote.get(host_name)
        view = None if host is None else host.vms.get(vm)
        return None if host is None or view is None else (host, view)

    def hosts_changed(self, hosts: Iterable[str], *, rows: bool) -> None:
        """These hosts' headers (and, ``rows``, their list of VMs and every row) again."""
        if self._remote is None:
            return
        if rows:
            self._order()
            self.redraw()
            return
        self.refresh_rows(header_key(h) for h in hosts)

    def is_header(self, key: str) -> bool:
        return key.endswith("/")

    def matching(self) -> list[str]:
        needle = self.filter_text.casefold()
        return [n for n in self._names
                if self.is_header(n) or needle in split_key(n)[1].casefold()]

    def visible_names(self) -> list[str]:
        return list(self.rows_view.names)

    def row_text(self, name: str) -> str:
        return self.rows_view.line_text(name)

    def redraw(self) -> None:
        """Header, every row, the filter applied, the cursor kept on the selected VM."""
        self.query_one("#vm-header", Readout).show(_line(
            (Text(t, style="bold") for t in ("VM", "State", "CPU",
                                              "Memory" if self._wide else "Mem",
                                              "Agent" if self._wide else "A")), self.widths))
        shown = self.matching()
        self.refresh_rows(self._names)
        empty = self.query_one("#vm-empty", Static)
        if self.grouped:
            shown_vms = [n for n in shown if not self.is_header(n)]
            target = self.selected if self.selected in shown_vms else \
                next(iter(shown_vms), None)
            empty.display = False
            self.rows_view.display = True
            self.rows_view.set_names(shown, target)
            self._select(target)
            return
        if not self._names:
            empty.update("No VMs yet.\n\nd  boot a demo VM\nn  create a VM")
        elif not shown:
            empty.update(Text.assemble("No VM matches ", safe(self.filter_text, "bold")))
        empty.display = not shown
        self.rows_view.display = bool(shown)
        target = self.selected if self.selected in shown else next(iter(shown), None)
        self.rows_view.set_names(shown, target)
        self._select(target)

    def refresh_rows(self, names: Iterable[str]) -> None:
        """Redraw these VMs' lines (a line repaints only when its text changed)."""
        widths, rows = self.widths, self.rows_view
        now = time.monotonic()
        for name in names:
            view = self._views.get(name)
            if view is not None:
                rows.set_line(name, _line(row_cells(view, wide=self._wide,
                                                    migrating=name in self.migrating), widths))
            elif self._remote is not None:
                self._remote_line(name, now)

    def _remote_line(self, key: str, now: float) -> None:
        assert self._remote is not None
        rows = self.rows_view
        host_name, vm = split_key(key)
        if host_name is None:
            return
        if key == LOCAL_HEADER:
            rows.set_line(key, local_header(len(self._views)))
            return
        host = self._remote.get(host_name)
        if host is None:
            return
        if not vm:
            rows.set_line(key, host_header(host, now, count=len(host.vms)))
            return
        view = host.vms.get(vm)
        if view is None:
            return
        line = _line(row_cells(view, wide=self._wide), self.widths)
        if not host.live:  # greyed: its last known state
            line = Text(line.plain, style="grey50", no_wrap=True, overflow="crop")
        rows.set_line(key, line)

    # -- selection & filter ----------------------------------------------------------

    def _select(self, name: str | None) -> None:
        if name != self.selected:
            self.selected = name
            self.post_message(VmSelected(name))

    @on(VmRows.Highlighted, "#vm-rows")
    def _highlighted(self, event: VmRows.Highlighted) -> None:
        event.stop()
        if event.vm_name is not None:
            self._select(event.vm_name)

    def move_to(self, name: str) -> None:
        if name in self.rows_view.names:
            self.rows_view.move_to(name)

    def on_resize(self, event: Resize) -> None:
        wide = event.size.width >= WIDE_AT
        if wide != self._wide:
            self._wide = wide
            self.redraw()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "close_filter":  # (else Esc is left to the screen: a cancel)
            return self.has_class("-filtering") or bool(self.filter_text)
        return True

    def open_filter(self) -> None:
        self.add_class("-filtering")
        self.query_one("#vm-filter", Input).focus()

    def action_close_filter(self) -> None:
        field = self.query_one("#vm-filter", Input)
        field.value = ""
        self.filter_text = ""
        self.remove_class("-filtering")
        self.redraw()
        self.rows_view.focus()

    @on(Input.Changed, "#vm-filter")
    def _filter_changed(self, event: Input.Changed) -> None:
        event.stop()
        self.filter_text = event.value
        self.redraw()

    @on(Input.Submitted, "#vm-filter")
    def _filter_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        if not event.value:
            self.remove_class("-filtering")
        self.rows_view.focus()
