"""Pasted host paths (files or folders dropped on the terminal): offer them on every VM's
clipboard (the clipboard sync: the default while one runs), copy the one file into the VM
or into the shared folder, or paste the text."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Static

from hypercore_tui.ui.text import safe

CHOICES = ("clipboard", "vm", "shared", "text")
#: Paths listed in the dialog; the rest are counted.
SHOWN = 6


class PasteFileScreen(ModalScreen[str | None]):
    """Dismisses with ``"clipboard"``, ``"vm"``, ``"shared"``, ``"text"`` or None
    (cancelled). ``vm`` and ``shared`` are offered for one file only (a copy of one file);
    ``clipboard`` while a clipboard sync runs (``sync_running``), and then it is the
    default (Enter)."""

    BINDINGS = [
        Binding("c", "choose('clipboard')", "On every VM's clipboard", id="paste.clipboard"),
        Binding("v", "choose('vm')", "Into the VM", id="paste.vm"),
        Binding("s", "choose('shared')", "Into the shared folder", id="paste.shared"),
        Binding("t", "choose('text')", "Paste as text", id="paste.text"),
        Binding("escape", "choose('')", "Cancel", id="paste.cancel"),
    ]

    DEFAULT_CSS = """
    PasteFileScreen {
        align: center middle;
    }
    PasteFileScreen > Vertical {
        width: 76;
        max-width: 100%;
        height: auto;
        border: thick $accent;
        background: $surface;
        padding: 0 1;
    }
    PasteFileScreen .paste-note {
        color: $text-muted;
        margin-top: 1;
    }
    PasteFileScreen #paste-choices {
        height: auto;
        margin-top: 1;
    }
    PasteFileScreen #paste-choices Button {
        width: auto;
        min-width: 0;
    }
    """

    def __init__(self, paths: Path | Sequence[Path], vm_name: str | None, *,
                 sync_running: bool = False) -> None:
        super().__init__()
        self.paths = (paths,) if isinstance(paths, Path) else tuple(paths)
        self.vm_name = vm_name
        self.sync_running = sync_running
        #: one file: it can be copied into the VM or the shared folder
        self.one_file = len(self.paths) == 1 and _is_file(self.paths[0])

    @property
    def path(self) -> Path:
        return self.paths[0]

    def _allowed(self, choice: str) -> bool:
        if choice == "clipboard":
            return self.sync_running
        if choice == "vm":
            return self.one_file and self.vm_name is not None
        if choice == "shared":
            return self.one_file
        return True

    def compose(self) -> ComposeResult:
        count = len(self.paths)
        with Vertical():
            title = ("You pasted a file on this host:" if self.one_file else
                     "You pasted a folder on this host:" if count == 1 else
                     f"You pasted {count} files and folders on this host:")
            yield Static(Text(title, style="bold"))
            for path in self.paths[:SHOWN]:
                line = safe(path, limit=300)
                if not _is_file(path):
                    line.append("/")
                yield Static(line)
            if count > SHOWN:
                yield Static(f"... and {count - SHOWN} more", markup=False)
            with Vertical(id="paste-choices"):
                if self.sync_running:
                    yield Button("Offer on every VM's clipboard (c)", variant="primary",
                                 id="choice-clipboard", compact=True)
                if self._allowed("vm"):
                    assert self.vm_name is not None
                    label = Text("Copy into ")
                    label.append_text(safe(self.vm_name, limit=24))
                    label.append(" (v)")
                    yield Button(label, variant="default" if self.sync_running else "primary",
                                 id="choice-vm", compact=True)
                if self._allowed("shared"):
                    yield Button("Into shared folder (s)", id="choice-shared", compact=True)
                yield Button("Paste as text (t)", id="choice-text", compact=True)
                yield Button("Cancel (Esc)", id="choice-", compact=True)
            if not self.sync_running:
                what = "this file" if self.one_file else "them"
                yield Static(f"To offer {what} on every VM's clipboard (copied into the shared "
                             "folder), start the clipboard sync first: C.",
                             classes="paste-note", markup=False)

    def on_mount(self) -> None:
        # The default (Enter): the clipboard while a sync runs, else the first choice.
        self.query(Button).first().focus()

    def action_choose(self, choice: str) -> None:
        if choice and not self._allowed(choice):
            return
        self.dismiss(choice if choice in CHOICES else None)

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        self.action_choose((event.button.id or "").removeprefix("choice-"))


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except (OSError, ValueError):
        return False
