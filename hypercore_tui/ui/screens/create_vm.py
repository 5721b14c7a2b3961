"""The "new VM" form: checked as typed values are submitted, errors shown in the form."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid, Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Checkbox, Input, Label, Static
from textual.worker import Worker, WorkerState

from hypercore_tui.core.errors import HypercoreError
from hypercore_tui.core.models import (
    MAX_CPUS,
    MAX_RAM_MB,
    MIN_CPUS,
    MIN_RAM_MB,
    parse_display,
)
from hypercore_tui.core.names import validate_vm_name
from hypercore_tui.core.sizes import parse_size
from hypercore_tui.ui.backend import CreateRequest
from hypercore_tui.ui.text import safe

#: (field id, label, default value, placeholder)
FIELDS: tuple[tuple[str, str, str, str], ...] = (
    ("name", "Name", "", "letters, digits, - _ ."),
    ("ram", "RAM (MB)", "1024", f"{MIN_RAM_MB}-{MAX_RAM_MB}"),
    ("cpus", "CPUs", "1", f"{MIN_CPUS}-{MAX_CPUS}"),
    ("disk_size", "Disk size", "20G", "e.g. 20G"),
    ("iso", "ISO", "", "optional: installer ISO path"),
    ("kernel", "Kernel", "", "optional: kernel to boot directly"),
    ("initrd", "Initrd", "", "optional (needs a kernel)"),
    ("append", "Append", "", "optional kernel command line"),
    ("display", "Display", "vnc", "vnc, spice (clipboard, USB) or none"),
)

Submit = Callable[[CreateRequest, bool], str]


@dataclass(frozen=True)
class FormResult:
    request: CreateRequest | None
    errors: dict[str, str]


def check_form(values: Mapping[str, str]) -> FormResult:
    """Turn the form's text into a request, or say what is wrong with each field."""
    errors: dict[str, str] = {}
    name = values.get("name", "").strip()
    try:
        validate_vm_name(name)
    except HypercoreError as exc:
        errors["name"] = "required" if not name else str(exc)
    ram = _whole(values.get("ram", ""), "RAM", MIN_RAM_MB, MAX_RAM_MB, errors, "ram")
    cpus = _whole(values.get("cpus", ""), "CPUs", MIN_CPUS, MAX_CPUS, errors, "cpus")
    disk_size = values.get("disk_size", "").strip() or "20G"
    try:
        parse_size(disk_size)
    except HypercoreError as exc:
        errors["disk_size"] = str(exc)
    optional = {k: values.get(k, "").strip() or None for k in ("iso", "kernel", "initrd",
                                                              "append")}
    if (optional["initrd"] or optional["append"]) and not optional["kernel"]:
        errors["kernel"] = "an initrd or a command line needs a kernel"
    display = values.get("display", "").strip().lower() or "vnc"
    try:
        parse_display(display)
    except HypercoreError as exc:
        errors["display"] = str(exc)
    if errors or ram is None or cpus is None:
        return FormResult(None, errors)
    request = CreateRequest(name=name, ram_mb=ram, cpus=cpus, disk_size=disk_size,
                            iso=optional["iso"], kernel=optional["kernel"],
                            initrd=optional["initrd"], append=optional["append"],
                            display=display)
    return FormResult(request, {})


def _whole(text: str, what: str, low: int, high: int, errors: dict[str, str],
           key: str) -> int | None:
    try:
        value = int(text.strip())
    except ValueError:
        errors[key] = f"{what} must be a whole number"
        return None
    if not low <= value <= high:
        errors[key] = f"{what} must be between {low} and {high}"
        return None
    return value


class CreateVmScreen(ModalScreen[str | None]):
    """Dismisses with the result line once the VM exists, or None when cancelled."""

    BINDINGS = [
        Binding("escape", "cancel", "Cancel", id="form.cancel"),
        Binding("ctrl+s", "submit", "Create", id="form.submit"),
    ]

    DEFAULT_CSS = """
    CreateVmScreen {
        align: center middle;
    }
    CreateVmScreen > #form {
        width: 72;
        max-width: 100%;
        height: auto;
        max-height: 100%;
        border: thick $accent;
        background: $surface;
        padding: 0 1;
    }
    CreateVmScreen #form-title {
        text-style: bold;
    }
    CreateVmScreen Grid {
        grid-size: 2;
        grid-columns: 11 1fr;
        grid-rows: 1;
        height: auto;
    }
    CreateVmScreen Grid Label {
        color: $text-muted;
    }
    CreateVmScreen #form-errors {
        color: $error;
        height: auto;
    }
    CreateVmScreen #form-buttons {
        height: auto;
        align-horizontal: right;
    }
    CreateVmScreen Button {
        margin-left: 2;
    }
    """

    def __init__(self, submit: Submit) -> None:
        super().__init__()
        self._submit = submit

    def compose(self) -> ComposeResult:
        with Vertical(id="form"):
            yield Static("New VM", id="form-title", markup=False)
            with Grid():
                for key, label, default, placeholder in FIELDS:
                    yield Label(label, markup=False)
                    yield Input(default, placeholder=placeholder, id=f"field-{key}",
                                compact=True, select_on_focus=False)
            yield Checkbox("Start it after creating", True, id="field-boot", compact=True)
            yield Static("", id="form-errors", markup=False)
            with Horizontal(id="form-buttons"):
                yield Button("Create (ctrl+s)", variant="primary", id="form-create",
                             compact=True)
                yield Button("Cancel (Esc)", id="form-cancel", compact=True)

    def on_mount(self) -> None:
        self.query_one("#field-name", Input).focus()

    def values(self) -> dict[str, str]:
        return {key: self.query_one(f"#field-{key}", Input).value for key, *_ in FIELDS}

    def show_errors(self, errors: Mapping[str, str], *, general: str | None = None) -> None:
        labels = {key: label for key, label, *_ in FIELDS}
        for key, *_ in FIELDS:
            self.query_one(f"#field-{key}", Input).set_class(key in errors, "-invalid")
        text = Text()
        for key, message in errors.items():
            if text:
                text.append("\n")
            text.append(f"{labels[key]}: ", style="bold")
            text.append_text(safe(message, limit=200))
        if general:
            if text:
                text.append("\n")
            text.append_text(safe(general, limit=300))
        self.query_one("#form-errors", Static).update(text)

    def action_submit(self) -> None:
        result = check_form(self.values())
        self.show_errors(result.errors)
        if result.request is None:
            first = next(iter(result.errors))
            self.query_one(f"#field-{first}", Input).focus()
            return
        boot = self.query_one("#field-boot", Checkbox).value
        self.query_one("#form-create", Button).disabled = True
        self.query_one("#form-errors", Static).update(Text("creating…", style="italic"))
        request = result.request
        self.run_worker(lambda: self._submit(request, boot), thread=True, exclusive=True,
                        group="create-vm", exit_on_error=False, name="create-vm")

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.worker.group != "create-vm":
            return
        if event.state is WorkerState.SUCCESS:
            self.dismiss(str(event.worker.result))
        elif event.state in (WorkerState.ERROR, WorkerState.CANCELLED):
            self.query_one("#form-create", Button).disabled = False
            error = event.worker.error
            if isinstance(error, HypercoreError):
                general = str(error)
            else:
                general = f"internal error: {type(error).__name__}: {error}"
            self.show_errors({}, general=general)

    def action_cancel(self) -> None:
        self.dismiss(None)

    @on(Input.Submitted)
    def _enter(self, event: Input.Submitted) -> None:
        event.stop()
        self.action_submit()

    @on(Button.Pressed, "#form-create")
    def _create(self) -> None:
        self.action_submit()

    @on(Button.Pressed, "#form-cancel")
    def _cancel(self) -> None:
        self.action_cancel()
