"""The host summary line: CPU, memory, load, free disk of HYPERCORE_HOME, VM counts, and
TCG when KVM guests do not run here."""

from __future__ import annotations

from collections.abc import Sequence

from rich.text import Text

from hypercore_tui.ui.backend import HostSummary, VmView
from hypercore_tui.ui.widgets.readout import Readout
from hypercore_tui.ui.widgets.vm_list import STATE_LOOK, short_bytes

#: Shown first when VMs boot under TCG because KVM guests do not run on this host.
ACCEL_LABEL = "TCG: KVM guests do not run"


class HostBar(Readout):
    DEFAULT_CSS = """
    HostBar {
        height: 1;
        background: $panel;
        color: $text;
        padding: 0 1;
    }
    """

    def __init__(self, *, id: str | None = None) -> None:  # noqa: A002 - Textual API
        super().__init__(Text("hypercore", style="bold"), id=id)
        self._summary: HostSummary | None = None
        self._views: Sequence[VmView] = ()
        self._clip: str | None = None
        self._osc52 = False

    def show_clip(self, label: str | None) -> None:
        """``clip sync`` (``clip sync pid N`` when another process runs it), or None."""
        if label != self._clip:
            self._clip = label
            self.show(self.summary_text())

    def show_osc52(self, on: bool) -> None:
        """``osc52`` beside the sync: new entries go to the user's terminal clipboard."""
        if on != self._osc52:
            self._osc52 = on
            self.show(self.summary_text())

    def show_host(self, summary: HostSummary | None = None,
                  views: Sequence[VmView] | None = None) -> None:
        if summary is not None:
            self._summary = summary
        if views is not None:
            self._views = views
        self.show(self.summary_text())

    def summary_text(self) -> Text:
        text = Text(no_wrap=True, overflow="ellipsis")
        text.append("hypercore", style="bold")
        host = self._summary
        if host is not None and host.accel_note:
            # Short: the full sentence is in boot-vm's note and check-env.
            text.append(" │ ", style="dim")
            text.append(ACCEL_LABEL, style="bold yellow")
        if self._clip or self._osc52:
            text.append(" │ ", style="dim")
        if self._clip:
            text.append(self._clip, style="bold green")
        if self._osc52:
            text.append(" osc52" if self._clip else "osc52", style="bold yellow")
        if host is not None:
            used = host.mem_total_bytes - host.mem_available_bytes
            narrow = self.size.width < 100
            load = host.load[:1] if narrow else host.load
            parts = [
                ("cpu ", f"{host.cpu_percent:.0f}%"),
                ("mem ", f"{short_bytes(used)}/{short_bytes(host.mem_total_bytes)}"),
                ("load ", " ".join(f"{x:.2f}" for x in load)),
            ]
            if narrow and host.accel_note:
                del parts[-1]  # room for the TCG label
            if host.disk_free_bytes is not None:
                parts.append(("free ", short_bytes(host.disk_free_bytes)))
            for label, value in parts:
                text.append(" │ ", style="dim")
                text.append(label, style="dim")
                text.append(value)
        text.append(" │ ", style="dim")
        if self.size.width and self.size.width < 100:
            text.append_text(vm_counts(self._views))
        else:
            text.append(describe_vms(list(self._views)))
        return text


def describe_vms(views: Sequence[VmView]) -> str:
    """``3 VMs: 1 paused, 2 running``."""
    counts: dict[str, int] = {}
    for view in views:
        counts[view.state.value] = counts.get(view.state.value, 0) + 1
    parts = ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))
    noun = "VM" if len(views) == 1 else "VMs"
    return f"{len(views)} {noun}" + (f": {parts}" if parts else "")


def vm_counts(views: Sequence[VmView]) -> Text:
    """``5 VMs ▶2 ‖1 ■1 ✗1``: the compact form for narrow terminals."""
    text = Text(f"{len(views)} VM{'' if len(views) == 1 else 's'}")
    for state, (symbol, _, style) in STATE_LOOK.items():
        count = sum(1 for v in views if v.state is state)
        if count:
            text.append(" ")
            text.append(f"{symbol}{count}", style=style)
    return text
