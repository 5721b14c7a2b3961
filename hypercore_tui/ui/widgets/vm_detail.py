"""The selected VM: state line, CPU/memory/disk graphs, guest facts and how to reach it."""

from __future__ import annotations

from collections.abc import Mapping

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.widgets import Static

from hypercore_tui.core.models import ClipboardMode, VmState
from hypercore_tui.core.series import Series, format_duration, format_percent
from hypercore_tui.ui.backend import (
    AgentStatus,
    PauseReason,
    VmView,
    laptop_steps,
)
from hypercore_tui.ui.text import fit_path, joined, safe
from hypercore_tui.ui.widgets.metric_row import MetricRow
from hypercore_tui.ui.widgets.readout import Readout
from hypercore_tui.ui.widgets.vm_list import short_bytes, state_text

MIN_RATE_SCALE = 64 * 1024.0  # bytes/s: below this, the disk graphs stay flat-ish
LABEL = 9
#: Columns of VmDetail that values cannot use: the padding and the scrollbar.
FRAME = 3

FIRST_RUN = ("No VMs yet.\n\n"
             "Press d to create and boot a small demo VM (the test guest: 128 MB, "
             "boots in seconds under TCG), or n to define your own.\n\n"
             "? lists every key; ctrl+p searches every command.")


def rate_text(value: float | None) -> str:
    return "—" if value is None else short_bytes(value) + "/s"


def _line(label: str, value: Text | str, style: str = "") -> Text:
    text = Text(f"{label:<{LABEL}}", style="dim", no_wrap=False)
    text.append_text(value if isinstance(value, Text) else safe(value, style))
    return text


class VmDetail(VerticalScroll):
    """Overview of one VM; :meth:`show` redraws it from the monitor's view."""

    DEFAULT_CSS = """
    VmDetail {
        padding: 0 1;
        scrollbar-size-vertical: 1;
    }
    VmDetail > #detail-title {
        height: auto;
        margin-bottom: 1;
    }
    VmDetail > .detail--facts {
        height: auto;
        margin-top: 1;
    }
    VmDetail > #detail-extra {
        height: 2;
    }
    """

    def __init__(self, *, id: str | None = None) -> None:  # noqa: A002 - Textual API
        super().__init__(id=id)
        self.environ: Mapping[str, str] = {}
        self._shown: dict[str, Text | str] = {}
        self._view: VmView | None = None

    def compose(self) -> ComposeResult:
        yield Static(FIRST_RUN, id="detail-title", markup=False)
        yield MetricRow("CPU", id="metric-cpu")
        yield MetricRow("Memory", id="metric-mem")
        yield MetricRow("Disk rd", id="metric-disk-rd")
        yield MetricRow("Disk wr", id="metric-disk-wr")
        yield Readout(id="detail-extra")
        yield Static("", id="detail-guest", classes="detail--facts", markup=False)
        yield Static("", id="detail-access", classes="detail--facts", markup=False)

    def _update(self, widget_id: str, content: Text | str) -> None:
        """Static.update() relayouts the screen: only when the text really changed."""
        if self._shown.get(widget_id) != content:
            self._shown[widget_id] = content
            self.query_one(f"#{widget_id}", Static).update(content)

    def show(self, view: VmView | None, *, any_vms: bool = True,
             host: str | None = None, migration: Text | None = None) -> None:
        """``host``: the other host ``view`` is on (its stream's figures; the actions
        that work there said instead of this host's console and clipboard);
        ``migration``: the line of its migration under way."""
        metrics = list(self.query(MetricRow))
        extra = self.query_one("#detail-extra", Readout)
        facts = [self.query_one(f"#{i}", Static) for i in ("detail-guest", "detail-access")]
        self._view = view
        if view is None:
            self._update("detail-title", FIRST_RUN if not any_vms else "No VM selected.")
            for widget in (*metrics, extra, *facts):
                widget.display = False
            return
        for widget in (*metrics, *facts):
            widget.display = True
        self._update("detail-title", self._title(view, host, migration))
        self._graphs(view, metrics)
        active = view.state.is_active
        extra.display = facts[0].display = active
        if host is not None:
            extra.display = facts[0].display = False
            self._update("detail-access", self._remote_hint(view, host))
        elif active:
            extra.show(self._extra(view))
            self._update("detail-guest", self._guest(view))
            self._update("detail-access", self._access(view))
        else:
            self._update("detail-access", self._offline_hint(view))

    # -- pieces -----------------------------------------------------------------------

    def _title(self, view: VmView, host: str | None = None,
               migration: Text | None = None) -> Text:
        parts: list[tuple[object, str]] = [(view.name, "bold"), ("  ", "")]
        if host is not None:
            parts[1:1] = [(" on ", "dim"), (host, "bold cyan")]
        text = joined(parts, limit=64)
        text.append_text(state_text(view.state, long=True))
        sample = view.sample
        if sample and sample.uptime_seconds is not None and view.state.is_active:
            text.append(f"  up {_uptime(sample.uptime_seconds)}", style="dim")
        bits = []
        if view.pid and view.state.is_active:
            bits.append(f"pid {view.pid}")
        if view.cpus:
            bits.append(f"{view.cpus} vCPU")
        if view.ram_mb:
            bits.append(f"{view.ram_mb} MB")
        if bits:
            text.append("\n" + " · ".join(bits), style="dim")
        if view.pause_reason is not None and view.state is VmState.PAUSED:
            text.append("\n")
            text.append_text(pause_line(view.pause_reason))
        if view.error:
            text.append("\n")
            text.append_text(safe(view.error, "yellow", limit=200))
        for job in view.jobs:  # QEMU's words (ids, errors): shown literally
            text.append("\n")
            text.append("job ", style="dim")
            style = "red" if job.failed else ("dim" if job.finished else "cyan")
            text.append_text(safe(job.describe(), style, limit=300))
        if migration is not None:
            text.append("\n")
            text.append_text(migration)
        if view.share_note:
            text.append("\n")
            text.append("shared folder ", style="dim")
            text.append_text(safe(view.share_note, "yellow", limit=300))
        return text

    def _graphs(self, view: VmView, rows: list[MetricRow]) -> None:
        cpu_row, mem_row, rd_row, wr_row = rows
        width = max(cpu_row.trend.size.width, 1)
        history, sample = view.history, view.sample

        cpu_scale = 100.0 * (view.cpus or 1)
        cpu_now = sample.cpu_percent if sample else None
        cpu_row.show(history.cpu.last(width), cpu_scale,
                     _value(format_percent(cpu_now), f"of {cpu_scale:.0f}%"))

        ram = float(view.ram_mb * 1024 * 1024) if view.ram_mb else None
        guest_total = sample.guest_mem_total_bytes if sample else None
        mem_scale = float(guest_total or ram or 1.0)
        mem_now = sample.guest_mem_used_bytes if sample else None
        mem_row.show(history.mem_used.last(width), mem_scale,
                     _value(short_bytes(mem_now), f"of {short_bytes(mem_scale)}"
                            if guest_total or ram else ""))

        for row, series, now in ((rd_row, history.disk_rd_bps,
                                  sample.disk_rd_bps if sample else None),
                                 (wr_row, history.disk_wr_bps,
                                  sample.disk_wr_bps if sample else None)):
            peak = _peak(series, width)
            row.show(series.last(width), max(peak, MIN_RATE_SCALE),
                     _value(rate_text(now), f"max {short_bytes(peak)}" if peak else ""))

    def _extra(self, view: VmView) -> Text:
        sample = view.sample
        text = Text(no_wrap=True, overflow="ellipsis")
        text.append(f"{'vCPUs':<{LABEL}}", style="dim")
        if sample and sample.vcpu_percent:
            text.append("  ".join(f"{i}:{format_percent(v)}"
                                  for i, v in enumerate(sample.vcpu_percent)))
        else:
            text.append("—")
        text.append("\n")
        text.append(f"{'RSS':<{LABEL}}", style="dim")
        text.append(short_bytes(sample.rss_bytes) if sample else "—")
        text.append("   net ", style="dim")
        if sample and sample.net_rx_bps is not None:
            text.append(f"rx {rate_text(sample.net_rx_bps)} tx {rate_text(sample.net_tx_bps)}")
        elif sample and sample.net_rx_bytes is not None:
            text.append(f"rx {short_bytes(sample.net_rx_bytes)} "
                        f"tx {short_bytes(sample.net_tx_bytes)} total")
        else:
            text.append("—")
        return text

    def _guest(self, view: VmView) -> Text:
        guest = view.guest
        agent = {AgentStatus.ANSWERING: ("answering", "green"),
                 AgentStatus.SILENT: ("not answering", "yellow"),
                 AgentStatus.UNKNOWN: ("—", "dim")}[view.agent]
        lines = [_line("Agent", agent[0], agent[1])]
        if view.agent is AgentStatus.SILENT and view.no_sign_of_life is not None:
            # Not even a byte on the serial console: do not blame the agent.
            sample = view.sample
            since = _uptime(sample.uptime_seconds) if sample and sample.uptime_seconds else "long"
            lines.append(_line("", safe(view.no_sign_of_life.describe(since), "yellow",
                                        limit=300)))
        elif view.agent is AgentStatus.SILENT:
            # What it said before may no longer hold (hung, restarted, uninstalled).
            hint = ("guest facts hidden until it answers again" if guest is not None
                    else "is qemu-ga installed and running in the guest?")
            lines.append(_line("", hint, "dim"))
        elif guest is not None:
            os_line = Text()
            os_line.append_text(safe(guest.os_name or "—"))
            if guest.kernel:
                os_line.append(" · ", style="dim")
                os_line.append_text(safe(guest.kernel))
            lines += [
                _line("Host", guest.hostname or "—"),
                _line("OS", os_line),
                _line("IPs", safe("  ".join(guest.addresses) or "—", limit=200)),
                _line("Users", safe(", ".join(guest.users) or "—", limit=200)),
            ]
        return Text("\n").join(lines)

    @staticmethod
    def _offline_hint(view: VmView) -> Text:
        text = Text()
        if view.disk:
            text.append_text(_line("Disk", safe(view.disk, limit=300)))
            text.append("\n")
        text.append_text(clipboard_line(view.clipboard))
        text.append("\n")
        if view.state.value == "crashed":
            text.append("QEMU died without a clean stop. b starts it again (its leftovers "
                        "are cleaned up first); D deletes it.", style="yellow")
        else:
            text.append("b starts it · D deletes it · n creates another VM", style="dim")
        return text

    @staticmethod
    def _remote_hint(view: VmView, host: str) -> Text:
        text = Text()
        if view.disk:
            text.append_text(_line("Disk", safe(view.disk, limit=300)))
            text.append("\n")
        text.append_text(_line("Host", safe(host, "bold", limit=64)))
        text.append("\n")
        text.append("b start · s stop · p pause/resume · R reset · palette: snapshot, run "
                    "there through SSH; other actions: not on a remote VM yet", style="dim")
        return text

    def _access(self, view: VmView) -> Text:
        """How to reach the guest. The display's socket and the ssh forward stay on one
        line each (the path shortened to fit); ``v`` opens the viewer here when this host
        has a graphical session, else shows the whole line to copy."""
        lines = []
        width = max(self.size.width - FRAME - LABEL, 1) if self.size.width else 0
        if view.display_socket:
            sock = view.display_socket
            tunnel, viewer = laptop_steps(view.display, sock, view.name, self.environ)
            before, found, after = tunnel.partition(sock)
            if found and width and len(tunnel) > width:  # (cut at the end if still long)
                room = width - len(before) - len(after)
                tunnel = before + (fit_path(sock, room) if room > 1 else "…") + after
            lines.append(_line(view.display.value.upper(),
                               safe(fit_path(sock, width), limit=width or 300)))
            lines.append(_line("Tunnel", safe(tunnel, limit=width or 400)))
            lines.append(_line("", safe(f"then {viewer}", "dim", limit=width or 400)))
            lines.append(_line("", safe("v: the viewer, or the whole line", "dim")))
        lines.append(_line("Console", safe("c opens the serial console", "dim")))
        lines.append(clipboard_line(view.clipboard))
        return Text("\n").join(lines)

    def on_resize(self) -> None:
        """The access lines are fitted to the width: fit them again."""
        view = self._view
        if view is not None and view.state.is_active:
            self._update("detail-access", self._access(view))


#: How the detail pane shows each clipboard mode (m changes it).
CLIPBOARD_SHOWN: dict[ClipboardMode, tuple[str, str]] = {
    ClipboardMode.SYNC: ("sync: both ways", "green"),
    ClipboardMode.PUSH_ONLY: ("push-only: written, never read", "yellow"),
    ClipboardMode.OFF: ("off: never read nor written", "yellow"),
}


def clipboard_line(mode: ClipboardMode) -> Text:
    shown, style = CLIPBOARD_SHOWN[mode]
    value = Text(shown, style=style, no_wrap=True, overflow="ellipsis")
    value.append(" · m changes it", style="dim")
    return _line("Clip", value)


def pause_line(reason: PauseReason) -> Text:
    """One line (45 columns at 80x24): why QEMU paused the VM and what to do."""
    text = Text(reason.short, style="bold yellow", no_wrap=True, overflow="ellipsis")
    text.append(f": {reason.remedy}, then press p", style="yellow")
    return text


def _uptime(seconds: float) -> str:
    """Uptime to the minute (to the second in the first minute): the title seldom changes."""
    if seconds < 60:
        return f"{int(seconds)}s"
    if seconds < 3600:
        return f"{int(seconds // 60)}m"
    return format_duration(seconds)


def _value(now: str, scale: str) -> Text:
    text = Text(now, style="bold", no_wrap=True, overflow="ellipsis")
    if scale:
        text.append(" " + scale, style="dim")
    return text


def _peak(series: Series, width: int) -> float:
    peak = series.peak(width)
    return float(peak) if peak else 0.0
