"""The VM list: name, state, CPU, memory and agent of every VM, with a filter.

One ``ListView`` item per VM, each a fixed one-line :class:`Readout`: a VM's new
figures repaint that line only (a ``DataTable`` re-renders every visible row on any
cell change, which with 50 VMs was most of the dashboard's CPU). The filter hides
and disables the rows that do not match, so the cursor skips them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.events import Resize
from textual.widgets import Input, ListItem, ListView, Static

from hypercore_tui.core.models import VmState
from hypercore_tui.core.series import format_percent
from hypercore_tui.ui.backend import AgentStatus, VmView
from hypercore_tui.ui.messages import VmSelected
from hypercore_tui.ui.text import safe
from hypercore_tui.ui.widgets.readout import Readout

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


def row_cells(view: VmView, *, wide: bool) -> tuple[Text, ...]:
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
    return (safe(view.name, "bold", limit=64), _state_cell(view, wide=wide), Text(cpu),
            Text(mem), Text(agent, style=style))


class VmRow(ListItem):
    """One VM's line in the list."""

    DEFAULT_CSS = """
    VmRow {
        height: 1;
    }
    """

    def __init__(self, vm_name: str) -> None:
        self.readout = Readout()
        super().__init__(self.readout)
        self.vm_name = vm_name


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
        self._rows: dict[str, VmRow] = {}
        self._wide = False
        self.selected: str | None = None
        self.filter_text = ""

    def compose(self) -> ComposeResult:
        yield Readout(id="vm-header")
        yield ListView(id="vm-rows", initial_index=None)
        yield Static("", id="vm-empty", markup=False)
        yield Input(placeholder="filter VMs (Enter keeps, Esc clears)", id="vm-filter",
                    compact=True)

    @property
    def rows_view(self) -> ListView:
        return self.query_one("#vm-rows", ListView)

    @property
    def widths(self) -> tuple[int, ...]:
        return WIDE_COLUMNS if self._wide else NARROW_COLUMNS

    # -- data -----------------------------------------------------------------------

    async def set_views(self, views: Mapping[str, VmView]) -> None:
        """Follow the monitor's VMs: rows added and removed, then redrawn."""
        self._views = views
        names = sorted(views)
        if names != list(self._rows):
            rows_view = self.rows_view
            await rows_view.clear()
            self._rows = {name: VmRow(name) for name in names}
            await rows_view.extend(self._rows.values())
        self.redraw()

    def matching(self) -> list[str]:
        needle = self.filter_text.casefold()
        return [n for n in self._rows if needle in n.casefold()]

    def visible_names(self) -> list[str]:
        return [name for name, row in self._rows.items() if row.display]

    def row_text(self, name: str) -> str:
        return self._rows[name].readout.content.plain

    def redraw(self) -> None:
        """Header, every row, the filter applied, the cursor kept on the selected VM."""
        self.query_one("#vm-header", Readout).show(_line(
            (Text(t, style="bold") for t in ("VM", "State", "CPU",
                                              "Memory" if self._wide else "Mem",
                                              "Agent" if self._wide else "A")), self.widths))
        shown = set(self.matching())
        for name, row in self._rows.items():
            row.display = name in shown
            row.disabled = name not in shown
        self.refresh_rows(self._rows)
        empty = self.query_one("#vm-empty", Static)
        if not self._rows:
            empty.update("No VMs yet.\n\nd  boot a demo VM\nn  create a VM")
        elif not shown:
            empty.update(Text.assemble("No VM matches ", safe(self.filter_text, "bold")))
        empty.display = not shown
        self.rows_view.display = bool(shown)
        names = list(self._rows)
        target = self.selected if self.selected in shown else next(
            (n for n in names if n in shown), None)
        if target is not None:
            self.rows_view.index = names.index(target)
        self._select(target)

    def refresh_rows(self, names: Iterable[str]) -> None:
        """Redraw these VMs' lines (a line repaints only when its text changed)."""
        widths = self.widths
        for name in names:
            view, row = self._views.get(name), self._rows.get(name)
            if view is not None and row is not None and row.display:
                row.readout.show(_line(row_cells(view, wide=self._wide), widths))

    # -- selection & filter ----------------------------------------------------------

    def _select(self, name: str | None) -> None:
        if name != self.selected:
            self.selected = name
            self.post_message(VmSelected(name))

    @on(ListView.Highlighted, "#vm-rows")
    def _highlighted(self, event: ListView.Highlighted) -> None:
        event.stop()
        if isinstance(event.item, VmRow) and event.item.display:
            self._select(event.item.vm_name)

    def move_to(self, name: str) -> None:
        names = list(self._rows)
        if name in names:
            self.rows_view.index = names.index(name)

    def on_resize(self, event: Resize) -> None:
        wide = event.size.width >= WIDE_AT
        if wide != self._wide:
            self._wide = wide
            self.redraw()

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
