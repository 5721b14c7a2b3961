"""Keys and text into the selected VM as key presses: the keyboard mode (``k``, left with
Ctrl+]), the clipboard typed into the VM (``T``), the guest's keyboard layout and
Ctrl+Alt+Del (palette). :class:`VmKeysScreen` sits between
:class:`~hypercore_tui.ui.screens.vm_actions.VmActionsScreen` and the dashboard.

Typed text goes through the app's job runner (a worker thread, one job per VM); keys in
keyboard mode through :class:`~hypercore_tui.ui.keyboard.KeyboardMode`'s own worker.
A text the layout cannot type is refused before any key is sent, naming the characters;
a long one is typed once confirmed.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from rich.text import Text
from textual import events

from hypercore_tui.core import keyboard
from hypercore_tui.core.errors import HypercoreError
from hypercore_tui.core.models import VmState
from hypercore_tui.ui.backend import TYPE_CONFIRM_ABOVE, Backend, MonitorLike, RemoteOps
from hypercore_tui.ui.keyboard import LEAVE_SHOWN, KeyboardMode
from hypercore_tui.ui.messages import KeysSent
from hypercore_tui.ui.screens.confirm import Confirmation, ConfirmScreen
from hypercore_tui.ui.screens.key_combo import KeyComboScreen
from hypercore_tui.ui.screens.keyboard_layout import KeyboardLayoutScreen
from hypercore_tui.ui.screens.vm_actions import JobRunner, VmActionsScreen
from hypercore_tui.ui.text import safe

#: While text is typed, a KeysSent message at most this often (seconds).
KEYS_SENT_EVERY = 0.2
#: The confirmation's estimate of how fast text is typed (characters a second).
TYPING_RATE = 400


class VmKeysScreen(VmActionsScreen):
    def __init__(self, backend: Backend, monitor: MonitorLike, jobs: JobRunner) -> None:
        super().__init__(backend, monitor, jobs)
        ops = backend.keyboard
        self.keyboard_mode = KeyboardMode(self, ops) if ops is not None else None

    # -- the keyboard mode --------------------------------------------------------------

    def action_keyboard_mode(self) -> None:
        mode = self.keyboard_mode
        if mode is None or (view := self._need_vm("the keyboard mode")) is None:
            return
        if view.state is not VmState.RUNNING:
            self.notify(f"{view.name} is {view.state.value}: keys sent now would be lost",
                        severity="warning", markup=False)
            return
        mode.enter(view.name)

    def keyboard_key(self, event: events.Key) -> None:
        """A key typed while the keyboard mode is on (the app hands every key here)."""
        mode = self.keyboard_mode
        if mode is None:
            return
        problem = mode.press(event)
        if problem is not None:
            self.notify(problem, severity="warning", timeout=3, markup=False)

    def keyboard_mode_changed(self) -> None:
        """The mode went on or off, or its VM's layout changed: the dashboard shows it."""

    def keys_failed(self, name: str, message: str) -> None:
        """Keys to ``name`` failed (from the keyboard mode's worker thread)."""
        self.app.call_from_thread(self._keys_failed, name, message)

    def _keys_failed(self, name: str, message: str) -> None:
        self.notify(f"keys not sent to {name}: {message}", severity="error", timeout=8,
                    markup=False)
        mode = self.keyboard_mode
        if mode is not None and mode.vm == name:
            mode.leave()

    def start_worker(self, work: Callable[[], None]) -> None:
        self.run_worker(work, thread=True, group="keyboard", name="keys",
                        exit_on_error=False)

    def leave_keyboard_mode_if(self, name: str, state: VmState) -> None:
        """VM ``name`` is now ``state``: the keyboard mode on it ends unless it runs."""
        mode = self.keyboard_mode
        if mode is not None and mode.vm == name and state is not VmState.RUNNING:
            mode.leave()
            self.notify(f"keyboard mode left: {name} is {state.value}", markup=False)

    # -- layouts and special keys -------------------------------------------------------

    def action_keyboard_layout(self) -> None:
        mode = self.keyboard_mode
        if mode is None or (view := self._need_vm("keys")) is None:
            return
        name = view.name

        def chosen(layout: str | None) -> None:
            if layout is not None:
                mode.set_layout(name, layout)
                self.notify(f"{name}: keys and typed text as a {layout} keyboard",
                            markup=False)

        self.app.push_screen(KeyboardLayoutScreen(name, mode.layout(name)), chosen)

    def action_send_ctrl_alt_del(self) -> None:
        mode = self.keyboard_mode
        if mode is None or (view := self._need_vm("keys")) is None:
            return
        name = view.name
        self._confirm(view, "Send Ctrl+Alt+Del to", "Most guests restart (or open their "
                      "security screen) at Ctrl+Alt+Del.",
                      lambda: mode.send(name, mode.layout(name), ["ctrl+alt+delete"]),
                      mild=True)

    def action_send_key_combo(self) -> None:
        """Keys a terminal cannot send (Ctrl+Alt+F2...), named in a dialog."""
        mode = self.keyboard_mode
        if mode is None or (view := self._need_vm("keys")) is None:
            return
        name = view.name
        layout = mode.layout(name)

        def chosen(keys: list[str] | None) -> None:
            if keys:
                mode.send(name, layout, keys)
                self.notify(f"{name}: sending {' '.join(keys)}", markup=False)

        self.app.push_screen(KeyComboScreen(name, layout), chosen)

    # -- text typed as key presses ------------------------------------------------------

    def action_type_clipboard(self) -> None:
        """The clipboard hub's current entry (else the text last pasted here) typed into
        the selected VM (another host's too: typed there on its own layout)."""
        if (remote := self._remote_selected()) is not None:
            host, rview, ops = remote
            if self._remote_running(host, rview, "typing text"):
                vm = rview.name
                self._with_text_to_type(
                    lambda text, origin: self._type_remote(ops, host, vm, text, origin))
            return
        if self.keyboard_mode is None or (view := self._need_vm("typing text")) is None:
            return
        name = view.name
        self._with_text_to_type(lambda text, origin: self.type_text(name, text, origin))

    def _with_text_to_type(self, use: Callable[[str, str], None]) -> None:
        """``use(text, origin)`` with the clipboard hub's current text entry, else the
        text last pasted here; said when there is neither."""
        clipsync = self.backend.clipsync
        entries = clipsync.view().entries if clipsync is not None else ()
        if clipsync is not None and entries and entries[0].kind == "text":
            entry = entries[0]

            async def fetch() -> None:
                try:
                    text = await clipsync.text_of(entry.id)
                except HypercoreError as exc:
                    self.notify(str(exc), severity="error", markup=False)
                    return
                if text is None:
                    self.notify(f"clipboard entry {entry.id} is gone", severity="warning",
                                markup=False)
                    return
                use(text, f"clipboard entry {entry.id}")

            self.run_worker(fetch(), group="type-fetch", exit_on_error=False)
            return
        if self.last_paste is not None:
            use(self.last_paste, "the pasted text")
            return
        self.notify("Nothing to type: paste text into the terminal, or copy some with the "
                    "clipboard sync on", severity="warning", markup=False)

    def _type_remote(self, ops: RemoteOps, host: str, vm: str, text: str,
                     origin: str) -> None:
        """``text`` typed into ``vm`` on ``host`` on the layout it has there (which refuses
        what it cannot type, before any key); confirmed first when long."""
        key = f"{host}/{vm}"
        if not text:
            self.notify(f"Nothing to type: {origin} is empty", severity="warning",
                        markup=False)
            return
        count = len(keyboard.normalize_newlines(text))

        def run() -> None:
            self.notify(f"Typing {count} characters into {key}…", markup=False)
            self._run(key, "type", lambda: ops.type_text(host, vm, text))

        if count <= TYPE_CONFIRM_ABOVE:
            run()
            return
        seconds = max(1, round(count / TYPING_RATE))
        self._confirm_typing(count, vm, host, f"From {origin}, as key presses on the "
                             f"keyboard layout it has there (about {seconds} s).", run)

    def _confirm_typing(self, count: int, vm: str, host: str | None, body: str,
                        run: Callable[[], None]) -> None:
        """Ask before typing a long text (``Type 5000 characters into web on b?``)."""
        title = Text(f"Type {count} characters into ")
        title.append_text(safe(vm, "bold"))
        if host is not None:
            title.append(" on ")
            title.append_text(safe(host, "bold"))
        title.append("?")

        def answered(answer: Confirmation | None) -> None:
            if answer is not None:
                run()

        self.app.push_screen(ConfirmScreen(title, Text(body), "Type", mild=True), answered)

    def type_text(self, name: str, text: str, origin: str) -> None:
        """Type ``text`` into VM ``name``: refused when its layout cannot type all of it,
        confirmed first when long."""
        ops, mode = self.backend.keyboard, self.keyboard_mode
        if ops is None or mode is None:
            return
        if not text:
            self.notify(f"Nothing to type: {origin} is empty", severity="warning",
                        markup=False)
            return
        layout_name = mode.layout(name)
        layout = keyboard.layout(layout_name)
        bad = keyboard.untypeable(text, layout)
        if bad:
            refused = keyboard.refusal(bad, layout, hint="the {} layout can: Keyboard layout "
                                       "in the palette")
            self.notify(f"{name}: nothing typed: {refused}",
                        severity="error", timeout=10, markup=False)
            return
        count = len(keyboard.normalize_newlines(text))
        last = [0.0]

        def progress(stage: str, fraction: float | None) -> None:
            now = time.monotonic()
            if now - last[0] >= KEYS_SENT_EVERY:
                last[0] = now
                self.post_message(KeysSent(name, int((fraction or 0) * count)))

        def run() -> None:
            self.notify(f"Typing {count} characters into {name} ({layout_name})…",
                        markup=False)
            self._run(name, "type", lambda: ops.type_text(name, text, layout_name,
                                                          progress=progress))

        if count <= ops.confirm_above:
            run()
            return
        seconds = max(1, round(count / TYPING_RATE))
        self._confirm_typing(count, name, None, f"From {origin}, as key presses on a "
                             f"{layout_name} keyboard (about {seconds} s). Other commands on "
                             f"{name} wait meanwhile.", run)

    def paste(self, text: str) -> None:
        """In keyboard mode a paste is typed into the VM; otherwise as before."""
        mode = self.keyboard_mode
        if mode is not None and mode.vm is not None:
            if text:
                self.type_text(mode.vm, text, "the pasted text")
            return
        super().paste(text)

    def keyboard_help(self) -> list[tuple[str, str]]:
        """The help rows of the keyboard mode."""
        if self.keyboard_mode is None:
            return []
        return [(LEAVE_SHOWN, "Keyboard mode: leave it (every other key, and a paste, go "
                              "to the VM)")]
