"""The dashboard's keyboard mode: every key goes to one VM as a key press (QMP
``input-send-event``), until Ctrl+] (the escape of virsh console and telnet).

The terminal's keys arrive as Textual key events (``ctrl+a``, ``shift+up``, ``é``):
:func:`key_spec` names them the way :mod:`hypercore_tui.core.keyboard` does, and
:class:`KeyboardMode` queues them and sends them in order from one worker thread at a
time, a burst per backend call (one QMP session each), so the UI never waits for the
guest. After each burst the dashboard gets a :class:`~hypercore_tui.ui.messages.KeysSent`.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from typing import Protocol

from textual import events
from textual.keys import REPLACED_KEYS, key_to_character
from textual.message import Message

from hypercore_tui.core import keyboard
from hypercore_tui.core.errors import HypercoreError
from hypercore_tui.ui.backend import KeyboardOps
from hypercore_tui.ui.messages import KeysSent

log = logging.getLogger("hypercore.ui")
log.addHandler(logging.NullHandler())

#: The key that leaves the keyboard mode (Textual's name), and as the user reads it.
LEAVE_KEY = "ctrl+right_square_bracket"
LEAVE_SHOWN = "Ctrl+]"
#: At most this many queued keys go in one backend call.
BURST = 64

#: Textual's modifier names → core.keyboard's (hyper has no PC key).
_MODIFIERS = {"ctrl": "ctrl", "alt": "alt", "shift": "shift", "meta": "meta", "super": "super"}


def key_spec(key: str, character: str | None = None) -> str | None:
    """Textual's key name as core.keyboard names keys (``ctrl+plus`` → ``ctrl++``,
    ``shift+up`` as it is); None for a key that means nothing to a guest."""
    *mods, base = key.split("+")
    if any(m not in _MODIFIERS for m in mods):
        return None
    if len(base) == 1:
        name = base
    elif base in keyboard.NAMED_KEYS or (base.startswith("f") and base[1:].isdigit()):
        name = base
    else:
        char = key_to_character(REPLACED_KEYS.get(base, base))
        if char is None and not mods and character and len(character) == 1 \
                and character.isprintable():
            char = character
        if char is None:
            return None
        name = char
    return "+".join([*(_MODIFIERS[m] for m in mods), name])


class ModeHost(Protocol):
    """What the keyboard mode asks of the screen it runs in."""

    def post_message(self, message: Message) -> bool: ...

    def keys_failed(self, name: str, message: str) -> None:
        """Keys to VM ``name`` could not be sent (called from the worker thread)."""
        ...

    def start_worker(self, work: Callable[[], None]) -> None: ...

    def keyboard_mode_changed(self) -> None: ...


class KeyboardMode:
    """On for one VM at a time (``vm``), with that VM's layout; keys queued and sent in
    order by one worker thread."""

    def __init__(self, host: ModeHost, ops: KeyboardOps) -> None:
        self.host = host
        self.ops = ops
        self.vm: str | None = None
        self._layouts: dict[str, str] = {}
        self._lock = threading.Lock()
        self._queue: deque[tuple[str, str, str]] = deque()  # (vm, layout, key)
        self._sending = False

    @property
    def active(self) -> bool:
        return self.vm is not None

    # -- layouts ------------------------------------------------------------------------

    def layout(self, name: str) -> str:
        """VM ``name``'s keyboard layout, as chosen in this dashboard (else the default)."""
        return self._layouts.get(name, self.ops.default_layout)

    def set_layout(self, name: str, layout: str) -> None:
        self._layouts[name] = keyboard.layout(layout).name
        if self.vm == name:
            self.host.keyboard_mode_changed()

    # -- on and off ---------------------------------------------------------------------

    def enter(self, name: str) -> None:
        self.vm = name
        self.host.keyboard_mode_changed()

    def leave(self) -> None:
        if self.vm is not None:
            self.vm = None
            self.host.keyboard_mode_changed()

    # -- keys ---------------------------------------------------------------------------

    def press(self, event: events.Key) -> str | None:
        """A key typed while the mode is on: Ctrl+] leaves, any other goes to the VM.
        Returns why a key was not sent (no such key on the layout), else None."""
        if event.key == LEAVE_KEY:
            self.leave()
            return None
        name = self.vm
        if name is None:
            return None
        spec = key_spec(event.key, event.character)
        if spec is None:
            return f"{event.key}: no such key on a PC keyboard"
        layout = self.layout(name)
        try:
            keyboard.key_chords(spec, keyboard.layout(layout))
        except HypercoreError as exc:
            return str(exc)
        self.send(name, layout, [spec])
        return None

    def send(self, name: str, layout: str, keys: list[str]) -> None:
        """Queue ``keys`` for VM ``name``; the worker starts when none runs."""
        with self._lock:
            self._queue.extend((name, layout, key) for key in keys)
            if self._sending:
                return
            self._sending = True
        self.host.start_worker(self._drain)

    def _next_burst(self) -> tuple[str, str, list[str]] | None:
        with self._lock:
            if not self._queue:
                self._sending = False
                return None
            name, layout, _ = self._queue[0]
            keys: list[str] = []
            while self._queue and len(keys) < BURST and self._queue[0][:2] == (name, layout):
                keys.append(self._queue.popleft()[2])
            return name, layout, keys

    def _drain(self) -> None:
        """The worker (a thread): bursts until the queue is empty."""
        while (burst := self._next_burst()) is not None:
            name, layout, keys = burst
            try:
                count = self.ops.send_keys(name, keys, layout)
            except Exception as exc:  # noqa: BLE001 - one line for the user
                if not isinstance(exc, HypercoreError):
                    log.error("keys to %s failed", name, exc_info=exc)
                with self._lock:
                    self._queue = deque(item for item in self._queue if item[0] != name)
                self.host.keys_failed(name, str(exc))
                continue
            self.host.post_message(KeysSent(name, count))
