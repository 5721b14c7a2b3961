"""Pick the host a VM migrates to: the other configured hosts, one digit key each (the
first nine), or a button."""

from __future__ import annotations

from collections.abc import Sequence

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Static

from hypercore_tui.ui.text import safe

#: Hosts beyond this many get a button only.
KEYED = 9


class PickHostScreen(ModalScreen[str | None]):
    """Dismisses with the host picked, or None (cancelled)."""

    BINDINGS = [
        *(Binding(str(n), f"choose({n - 1})", f"Host {n}", show=False, id=f"host.{n}")
          for n in range(1, KEYED + 1)),
        Binding("escape", "choose(-1)", "Cancel", id="host.cancel"),
    ]

    DEFAULT_CSS = """
    PickHostScreen {
        align: center middle;
    }
    PickHostScreen > Vertical {
        width: 72;
        max-width: 100%;
        height: auto;
        max-height: 100%;
        border: thick $accent;
        background: $surface;
        padding: 0 1;
    }
    PickHostScreen Horizontal {
        height: auto;
        margin-top: 1;
    }
    PickHostScreen Button {
        margin-right: 1;
    }
    """

    def __init__(self, vm_name: str, hosts: Sequence[str]) -> None:
        super().__init__()
        self.vm_name, self.hosts = vm_name, list(hosts)

    def compose(self) -> ComposeResult:
        with Vertical():
            title = Text("Migrate ", style="bold")
            title.append_text(safe(self.vm_name, "bold", limit=40))
            title.append(" to which host?", style="bold")
            yield Static(title, id="host-title")
            yield Static(Text("It keeps running while its RAM goes over; a confirmation "
                              "follows.", style="dim"))
            lines = []
            for index, host in enumerate(self.hosts):
                line = Text(f"{index + 1:<3}" if index < KEYED else "   ", style="bold")
                line.append_text(safe(host, limit=60))
                lines.append(line)
            yield Static(Text("\n").join(lines), id="host-list")
            with Horizontal():
                for index, host in enumerate(self.hosts):
                    label = safe(host, limit=20)
                    if index < KEYED:
                        label.append(f" ({index + 1})")
                    yield Button(label, id=f"host-{index}", compact=True)
                yield Button("Cancel", id="host-cancel", compact=True)

    def action_choose(self, index: int) -> None:
        self.dismiss(self.hosts[index] if 0 <= index < len(self.hosts) else None)

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        picked = (event.button.id or "").removeprefix("host-")
        self.action_choose(int(picked) if picked.isdigit() else -1)
