"""A VM's settings changed in its definition (``hypercore set NAME KEY=VALUE``), running
or not.

Keys: ``clipboard`` (:class:`~hypercore_tui.core.models.ClipboardMode`) changes no QEMU
argument and applies at once; ``display`` (:class:`~hypercore_tui.core.models.DisplayKind`)
is a device: changed while the VM runs, it applies from the next boot, and the change
says so (the running QEMU keeps its display until then). The change is made under the
VM's lock, on the definition read under that lock, and written atomically
(:func:`registry.save`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from hypercore_tui.core.errors import InvalidInput
from hypercore_tui.core.layout import VmPaths
from hypercore_tui.core.models import (
    ClipboardMode,
    DisplayKind,
    VmSpec,
    VmState,
    parse_clipboard_mode,
    parse_display,
)
from hypercore_tui.services import registry, vmstate
from hypercore_tui.services.context import Context
from hypercore_tui.services.display import running_display


@dataclass(frozen=True)
class Setting:
    """One settable key: its allowed values, how to read it from a definition and how
    to change it (a value already checked against ``values``)."""

    key: str
    values: tuple[str, ...]
    read: Callable[[VmSpec], str]
    change: Callable[[str], dict[str, Any]]  # the VmSpec fields to replace
    #: A QEMU argument: what a running VM runs with (it gets a new value when booted
    #: again); None for a setting that applies at once
    running: Callable[[VmSpec, VmPaths], str] | None = None


SETTINGS: dict[str, Setting] = {
    "clipboard": Setting(
        "clipboard", tuple(m.value for m in ClipboardMode),
        lambda spec: spec.clipboard.value,
        lambda value: {"clipboard": parse_clipboard_mode(value)},
    ),
    "display": Setting(
        "display", tuple(k.value for k in DisplayKind),
        lambda spec: spec.display.value,
        lambda value: {"display": parse_display(value)},
        running=lambda spec, paths: running_display(spec, paths).value,
    ),
}


@dataclass(frozen=True)
class SettingChange:
    """What ``set`` did to one key."""

    key: str
    old: str
    new: str
    #: What the running VM runs with until its next boot, when that is not ``new``
    running: str | None = None

    @property
    def changed(self) -> bool:
        return self.old != self.new

    def describe(self, name: str) -> str:
        """``web1: clipboard=off (was sync)``, ``web1: display=spice (was vnc): from the
        next boot, it runs with vnc until then``, or ``web1: clipboard is already off``."""
        if not self.changed:
            return f"{name}: {self.key} is already {self.new}"
        if self.running is not None:
            return (f"{name}: {self.key}={self.new} (was {self.old}): from the next boot, "
                    f"it runs with {self.running} until then")
        return f"{name}: {self.key}={self.new} (was {self.old})"


def settable_keys() -> str:
    return ", ".join(SETTINGS)


def parse_assignment(text: str) -> tuple[str, str]:
    """``KEY=VALUE`` checked (a known key, an allowed value), or :class:`InvalidInput`."""
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise InvalidInput(f"malformed setting {text!r}: use KEY=VALUE (keys: "
                           f"{settable_keys()})")
    check(key, value)
    return key, value


def check(key: str, value: str) -> Setting:
    """The setting ``key``, once ``value`` is known to be one of its values."""
    setting = SETTINGS.get(key)
    if setting is None:
        raise InvalidInput(f"unknown setting {key!r}: the settable keys are {settable_keys()}")
    if value not in setting.values:
        raise InvalidInput(f"invalid {key} {value!r}: use {', '.join(setting.values)}")
    return setting


def parse_assignments(items: Sequence[str]) -> dict[str, str]:
    """Every ``KEY=VALUE`` checked; a key given twice is an error (which would win?)."""
    if not items:
        raise InvalidInput(f"nothing to set: give KEY=VALUE (keys: {settable_keys()})")
    wanted: dict[str, str] = {}
    for item in items:
        key, value = parse_assignment(item)
        if key in wanted:
            raise InvalidInput(f"{key} is given twice")
        wanted[key] = value
    return wanted


def settings_of(spec: VmSpec) -> dict[str, str]:
    """Every settable key's value in ``spec``."""
    return {key: setting.read(spec) for key, setting in SETTINGS.items()}


async def change_settings(ctx: Context, name: str, wanted: Mapping[str, str]
                          ) -> tuple[list[SettingChange], dict[str, str]]:
    """Set ``wanted`` (key → value) in ``name``'s definition, under its lock; one
    :class:`SettingChange` per key, in order, and every setting as it now stands. Nothing
    is written when nothing changes."""
    checked = [(check(key, value), value) for key, value in wanted.items()]
    async with vmstate.locked_definition(ctx, name, "set") as spec:
        paths = ctx.vm_paths(name)
        running = vmstate.process_state(paths)[0] is VmState.RUNNING
        changes: list[SettingChange] = []
        fields: dict[str, Any] = {}
        for setting, value in checked:
            now = setting.running(spec, paths) if running and setting.running else None
            changes.append(SettingChange(setting.key, setting.read(spec), value,
                                         running=now if now != value else None))
            fields.update(setting.change(value))
        if any(c.changed for c in changes):
            spec = spec.with_changes(**fields)
            registry.save(ctx, spec)
        return changes, settings_of(spec)


async def set_clipboard_mode(ctx: Context, name: str, mode: ClipboardMode) -> SettingChange:
    """``set NAME clipboard=MODE`` (for the dashboard)."""
    (change,), _ = await change_settings(ctx, name, {"clipboard": mode.value})
    return change
