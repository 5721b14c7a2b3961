"""What the dashboard's keys do to the selected VM (start, stop, console, display...)
and with the clipboard: :class:`VmActionsScreen`, the base of
:class:`~hypercore_tui.ui.screens.dashboard.DashboardScreen`, which adds the layout,
the key table and the monitor's updates.

Every service call goes to the app's :meth:`JobRunner.run_job` (a worker thread; the
result or error comes back to the app as a message); dialogs ask first where an action
cannot be undone.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

from rich.text import Text
from textual.screen import Screen

from hypercore_tui.core.models import ClipboardMode, VmState
from hypercore_tui.ui.backend import (
    DETACH_KEY,
    Backend,
    ConsoleAccess,
    DisplayOutcome,
    MonitorLike,
    PulledText,
    RemoteOps,
    VmView,
)
from hypercore_tui.ui.drop import pasted_paths
from hypercore_tui.ui.messages import ActionSucceeded
from hypercore_tui.ui.screens.clipboard_mode import ClipboardModeScreen
from hypercore_tui.ui.screens.confirm import Confirmation, ConfirmScreen
from hypercore_tui.ui.screens.create_vm import CreateVmScreen
from hypercore_tui.ui.screens.info import InfoScreen
from hypercore_tui.ui.screens.paste_file import PasteFileScreen
from hypercore_tui.ui.text import safe

T = TypeVar("T")

UNAVAILABLE_CLIPBOARD = "Clipboard sharing is not available in this build"


class JobRunner(Protocol):
    """What the screen asks of the app: run a service call in a worker thread."""

    def run_job(self, name: str | None, verb: str, call: Callable[[], T],
                done: Callable[[T], None] | None = None) -> bool:
        """False: refused (another job of that VM runs), said to the user."""
        ...

    def run_async_job(self, name: str | None, verb: str,
                      call: Callable[[], Awaitable[str]]) -> None: ...


class VmActionsScreen(Screen[None]):
    """The actions on the selected VM (``selected``, a name the monitor knows)."""

    def __init__(self, backend: Backend, monitor: MonitorLike, jobs: JobRunner) -> None:
        super().__init__()
        self.backend = backend
        self.monitor = monitor
        self.jobs = jobs
        self.selected: str | None = None
        self.last_paste: str | None = None

    def selected_view(self) -> VmView | None:
        """The selected VM of this host (None for another host's: see
        :meth:`selected_remote`)."""
        return self.monitor.view(self.selected) if self.selected else None

    def selected_remote(self) -> tuple[str, VmView] | None:
        """(host, VM) when the selected row is another host's VM (the dashboard knows)."""
        return None

    def _remote_verb(self, verb: str, *, confirm: str | None = None) -> bool:
        """Run ``verb`` on the selected remote VM through ``--host`` (True: a remote VM
        was selected, whatever came of it). Never a local VM of the same name."""
        picked = self.selected_remote()
        if picked is None:
            return False
        host, view = picked
        key, name, remote = f"{host}/{view.name}", view.name, self.backend.remote
        if remote is None or verb not in remote.verbs:
            self._unsupported_remotely(verb)
            return True
        ops = remote

        def run() -> None:
            self._run(key, verb, lambda: ops.run_verb(host, verb, name))

        if confirm is None:
            run()
            return True
        title = Text(f"{verb.capitalize()} ")
        title.append_text(safe(name, "bold"))
        title.append(" on ")
        title.append_text(safe(host, "bold"))
        title.append("?")

        def answered(answer: Confirmation | None) -> None:
            if answer is not None:
                run()

        self.app.push_screen(ConfirmScreen(title, Text(confirm), verb.capitalize(),
                                           mild=verb == "stop"), answered)
        return True

    def _remote_selected(self) -> tuple[str, VmView, RemoteOps] | None:
        """(host, VM, the remote ops) when the selected row is another host's VM (else
        None: the local path's ``_need_vm`` then says what is wrong)."""
        picked = self.selected_remote()
        if picked is None or self.backend.remote is None:
            return None
        return picked[0], picked[1], self.backend.remote

    def _remote_running(self, host: str, view: VmView, what: str) -> bool:
        """True when the remote VM runs (as its host last said); else said why not."""
        if view.state is VmState.RUNNING:
            return True
        self.notify(f"{host}/{view.name} is {view.state.value}: {what} needs it running",
                    severity="warning", markup=False)
        return False

    def _unsupported_remotely(self, what: str) -> None:
        picked = self.selected_remote()
        where = f"{picked[0]}/{picked[1].name}" if picked is not None else "this VM"
        self.notify(f"{where}: {what} is not supported on a remote VM yet", severity="warning",
                    markup=False)

    # -- VM actions -------------------------------------------------------------------

    def _run(self, name: str | None, verb: str, call: Callable[[], T],
             done: Callable[[T], None] | None = None) -> None:
        self.jobs.run_job(name, verb, call, done)

    def _need_vm(self, what: str = "this action") -> VmView | None:
        view = self.selected_view()
        if view is None and self.selected_remote() is not None:
            self._unsupported_remotely(what)
        elif view is None:
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

        self.app.push_screen(ConfirmScreen(title, Text(body), verb, mild=mild), answered)

    def action_start_vm(self) -> None:
        if (picked := self.selected_remote()) is not None and picked[1].state.is_active:
            self.notify(f"{picked[0]}/{picked[1].name} is already {picked[1].state.value}",
                        markup=False)
            return
        if self._remote_verb("start"):
            return
        if (view := self._need_vm()) is not None:
            name = view.name
            if view.state.is_active:
                self.notify(f"{name} is already {view.state.value}", markup=False)
                return
            self._run(name, "start", lambda: self.backend.start_vm(name))

    def action_stop_vm(self) -> None:
        if self._remote_verb("stop", confirm="The guest is asked to shut down (guest agent, "
                             "else the ACPI power button)."):
            return
        if (view := self._need_vm()) is not None:
            name = view.name
            self._confirm(view, "Stop", "The guest is asked to shut down (guest agent, "
                          "else the ACPI power button).",
                          lambda: self._run(name, "stop", lambda: self.backend.stop_vm(name)),
                          mild=True)

    def action_force_stop_vm(self) -> None:
        if self._remote_verb("force stop", confirm="QEMU is told to quit at once (then "
                             "killed): like pulling the power cord. Unsaved guest data is "
                             "lost."):
            return
        if (view := self._need_vm()) is not None:
            name = view.name
            self._confirm(view, "Force stop", "QEMU is told to quit at once (then killed): "
                          "like pulling the power cord. Unsaved guest data is lost.",
                          lambda: self._run(name, "force stop",
                                            lambda: self.backend.force_stop_vm(name)))

    def action_pause_resume(self) -> None:
        if (picked := self.selected_remote()) is not None:
            state = picked[1].state
            if state in (VmState.PAUSED, VmState.RUNNING):
                self._remote_verb("resume" if state is VmState.PAUSED else "pause")
            else:
                self.notify(f"{picked[0]}/{picked[1].name} is {state.value}: nothing to "
                            "pause", markup=False)
            return
        if (view := self._need_vm()) is not None:
            name = view.name
            if view.state is VmState.PAUSED:
                self._run(name, "resume", lambda: self.backend.resume_vm(name))
            elif view.state is VmState.RUNNING:
                self._run(name, "pause", lambda: self.backend.pause_vm(name))
            else:
                self.notify(f"{name} is {view.state.value}: nothing to pause", markup=False)

    def action_reset_vm(self) -> None:
        if self._remote_verb("reset", confirm="The VM restarts at once, like pressing its "
                             "reset button. Unsaved guest data is lost."):
            return
        if (view := self._need_vm()) is not None:
            name = view.name
            self._confirm(view, "Reset", "The VM restarts at once, like pressing its reset "
                          "button. Unsaved guest data is lost.",
                          lambda: self._run(name, "reset", lambda: self.backend.reset_vm(name)))

    def action_remote_snapshot(self) -> None:
        """A snapshot of the selected remote VM (``snapshot create`` there)."""
        if not self._remote_verb("snapshot"):
            self.notify("No remote VM selected", severity="warning", markup=False)

    def action_delete_vm(self) -> None:
        if (picked := self.selected_remote()) is not None:
            host, rview = picked
            if rview.state.is_active:
                self.notify(f"{host}/{rview.name} is {rview.state.value}: stop it before "
                            "deleting it", severity="warning", markup=False)
                return
            self._remote_verb("delete", confirm=(
                f"Its definition is deleted on {host}, and its disk "
                f"{rview.disk or '?'} if Hypercore created it there."))
            return
        if (view := self._need_vm("delete")) is not None:
            name = view.name
            if view.state.is_active:
                self.notify(f"{name} is {view.state.value}: stop it before deleting it",
                            severity="warning", markup=False)
                return
            disk = view.disk or "?"
            body = (f"Its definition and its disk {disk} are deleted." if view.disk_owned
                    else f"Its definition is deleted; the disk image {disk} is kept.")
            self._confirm(view, "Delete", body, lambda: self._run(
                name, "delete", lambda: self.backend.delete_vm(name)))

    def action_create_vm(self) -> None:
        def created(summary: str | None) -> None:
            if summary:
                self.app.post_message(ActionSucceeded(None, "create", summary))

        self.app.push_screen(CreateVmScreen(lambda request, boot: self.backend.create_vm(
            request, boot=boot)), created)

    def action_demo(self) -> None:
        self.notify("Creating the demo VM (building the test guest if needed)…", markup=False)
        self._run(None, "demo", self.backend.create_demo_vm)

    def action_console(self) -> None:
        if (remote := self._remote_selected()) is not None:
            host, rview, ops = remote
            if self._remote_running(host, rview, "the serial console"):
                vm = rview.name
                self._run(f"{host}/{vm}", "console", lambda: ops.open_console(host, vm),
                          self._console_opened)
            return
        if (view := self._need_vm("the serial console")) is not None:
            name = view.name
            self._run(name, "console", lambda: self.backend.open_console(name),
                      self._console_opened)

    def _console_opened(self, access: ConsoleAccess) -> None:
        if access.opened:
            self.notify(access.message, markup=False)
            return
        title = Text("Serial console of ")
        host = access.argv[access.argv.index("--host") + 1] if "--host" in access.argv else None
        title.append_text(safe(access.argv[-1], "bold"))
        if host is not None:
            title.append(" on ")
            title.append_text(safe(host, "bold"))
        self._show_info(title, [("Run", access.command_line),
                                ("Leave", f"{DETACH_KEY} (every other key goes to the guest)")],
                        copy_text=access.command_line)

    def action_display(self) -> None:
        """The VM's screen: remote-viewer started here when this host has a graphical
        session, else the line to run on the user's own machine (to copy)."""
        if (remote := self._remote_selected()) is not None:
            host, rview, ops = remote
            if self._remote_running(host, rview, "the display"):
                vm = rview.name
                self._run(f"{host}/{vm}", "display", lambda: ops.display_line(host, vm),
                          lambda line: self._remote_display(host, vm, line))
            return
        if (view := self._need_vm("the display")) is not None:
            name = view.name
            self._run(name, "display", lambda: self.backend.open_display(name),
                      self._display_ready)

    def _remote_display(self, host: str, vm: str, line: str) -> None:
        title = Text("Display of ")
        title.append_text(safe(vm, "bold"))
        title.append(" on ")
        title.append_text(safe(host, "bold"))
        self._show_info(title, [("Laptop", line),
                                ("", f"(run it on your own machine: it needs virt-viewer "
                                     f"there, and reaches {host} as {host} named itself)")],
                        copy_text=line)

    def _display_ready(self, outcome: DisplayOutcome) -> None:
        if outcome.started:
            self.notify(outcome.message, markup=False)
            return
        access = outcome.access
        title = Text("Display of ")
        title.append_text(safe(access.name, "bold"))
        rows = [(access.kind.value.upper(), str(access.socket)),
                ("Laptop", access.laptop_command),
                ("", "(run it on your own machine: it needs virt-viewer there)")]
        if access.next_boot is not None:
            rows.append(("Next boot", access.pending_note))

        def chosen(choice: str | None) -> None:
            if choice == "copy":
                self.app.copy_to_clipboard(access.laptop_command)
                self.notify("command copied (OSC 52)", markup=False)

        self.app.push_screen(InfoScreen(title, rows, copy_text=access.laptop_command),
                             chosen)

    def _show_info(self, title: Text, rows: list[tuple[str, str]], *, copy_text: str) -> None:
        def chosen(choice: str | None) -> None:
            if choice == "copy":
                self.app.copy_to_clipboard(copy_text)
                self.notify("command copied (OSC 52)", markup=False)

        self.app.push_screen(InfoScreen(title, rows, copy_text=copy_text), chosen)

    # -- clipboard --------------------------------------------------------------------

    def paste(self, text: str) -> None:
        """Text pasted into the terminal (bracketed paste) goes to the selected VM; pasted
        paths of existing host files or folders (a drop) offer to carry them instead:
        on every VM's clipboard through the running sync (the default then), or one file
        into the VM or the shared folder."""
        if not text:
            return
        clipboard = self.backend.clipboard
        if clipboard is None:
            self.notify(f"{UNAVAILABLE_CLIPBOARD}: the pasted text was not sent",
                        severity="warning", markup=False)
            return
        paths = pasted_paths(text)
        if not paths:
            self._push_text(text)
            return
        view = self.selected_view()
        running = view is not None and view.state is VmState.RUNNING
        vm = view.name if view is not None and running else None
        clipsync = self.backend.clipsync
        syncing = clipsync is not None and clipsync.view().running
        path = paths[0]

        def chosen(choice: str | None) -> None:
            if choice == "text":
                self._push_text(text)
            elif choice == "clipboard" and clipsync is not None:
                self.jobs.run_async_job(None, "clipboard files",
                                        lambda: clipsync.offer_files(paths))
            elif choice in ("vm", "shared"):
                target = vm if choice == "vm" else None
                self._run(vm if target else None, "copy file", lambda: clipboard.copy_in(
                    path, target, progress=lambda stage, fraction: None))

        self.app.push_screen(PasteFileScreen(paths, vm, sync_running=syncing), chosen)

    def _push_text(self, text: str) -> None:
        """Pasted text: to the clipboard sync when one runs (every VM gets it), else to
        the selected VM."""
        self.last_paste = text
        clipsync = self.backend.clipsync
        if clipsync is not None and clipsync.view().running:
            self.jobs.run_async_job(None, "clipboard offer", lambda: clipsync.offer(text))
            return
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
        if (remote := self._remote_selected()) is not None:
            host, rview, ops = remote
            if self._remote_running(host, rview, "pasting into its clipboard"):
                vm, pasted = rview.name, self.last_paste
                self._run(f"{host}/{vm}", "paste", lambda: ops.clip_push(host, vm, pasted))
            return
        if (view := self._need_vm("pasting into its clipboard")) is not None:
            name, text = view.name, self.last_paste
            self._run(name, "paste", lambda: clipboard.push(name, text))

    def action_pull_clipboard(self) -> None:
        clipboard = self.backend.clipboard
        if clipboard is None:
            self.notify(UNAVAILABLE_CLIPBOARD, severity="warning", markup=False)
            return
        if (remote := self._remote_selected()) is not None:
            host, rview, ops = remote
            if self._remote_running(host, rview, "copying its clipboard"):
                key, vm = f"{host}/{rview.name}", rview.name

                def pulled_there(text: str) -> None:
                    self.last_paste = text  # i pastes it into the next VM
                    self.app.copy_to_clipboard(text)
                    self.app.post_message(ActionSucceeded(
                        key, "copy", f"{key}: {len(text)} characters copied from its "
                                     "clipboard"))

                self._run(key, "copy", lambda: ops.clip_pull(host, vm), pulled_there)
            return
        if (view := self._need_vm("copying its clipboard")) is not None:
            name = view.name

            def pulled(result: PulledText) -> None:
                self.last_paste = result.text  # i pastes it into the next VM
                self.app.copy_to_clipboard(result.text)
                self.app.post_message(ActionSucceeded(name, "copy", result.summary))

            self._run(name, "copy", lambda: clipboard.pull(name), pulled)

    def action_clipboard_mode(self) -> None:
        """Pick the selected VM's clipboard mode (sync, push-only, off); the backend
        writes it into the VM's definition."""
        if (remote := self._remote_selected()) is not None:
            host, rview, ops = remote
            key, vm = f"{host}/{rview.name}", rview.name

            def chosen_there(mode: ClipboardMode | None) -> None:
                if mode is not None:
                    self._run(key, "clipboard mode",
                              lambda: ops.set_clipboard_mode(host, vm, mode))

            self.app.push_screen(ClipboardModeScreen(key, rview.clipboard), chosen_there)
            return
        if (view := self._need_vm("the clipboard mode")) is not None:
            name = view.name

            def chosen(mode: ClipboardMode | None) -> None:
                if mode is not None:
                    self._run(name, "clipboard mode",
                              lambda: self.backend.set_clipboard_mode(name, mode))

            self.app.push_screen(ClipboardModeScreen(name, view.clipboard), chosen)
