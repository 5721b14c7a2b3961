"""Text and keys sent to a running VM as key presses (QMP ``input-send-event``): for
guests without an agent (an installer, a BIOS, a login prompt) and the dashboard's
keyboard mode. What the keys are is :mod:`hypercore_tui.core.keyboard`'s business.

Pacing. QEMU's PS/2 keyboard keeps 16 bytes of scancodes and drops what comes beyond
(a key is 2 bytes, down and up; 4 with shift). How fast the guest takes them depends on
its vCPU getting the host's CPU, which a loaded host (other TCG guests) delays by tens of
milliseconds at times: a fixed pace is either slow or loses keys. So the keys go in
batches of at most :data:`BATCH_BYTES`, and the next batch waits until the guest has
taken the previous one: each vCPU thread of QEMU (``query-cpus-fast``) has gone back to
sleep after running (a guest halts only with no interrupt pending, and the i8042 keeps
its interrupt raised while it holds a byte) or has run :data:`BUSY_NS` (a busy guest
takes interrupts as they come). A vCPU thread also sleeps while it waits for QEMU's big
lock, which the main thread holds while it answers QMP (and longer when the host
preempts it): so QEMU's main thread must sleep too, in its poll, where it holds no lock.
The threads are read from procfs (tens of microseconds).
Where they cannot be read, a fixed :data:`FALLBACK_PER_BYTE` pace is used. Measured under
TCG on the loaded 2-core development machine: 5,000-character texts byte-exact in 15 runs
of 15 at 470-690 characters/s, 380-470 with two to four CPU hogs besides.

One QMP session carries a whole text: the monitor socket serves one client at a time,
so other commands on the VM wait for the text to be typed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from hypercore_tui.adapters.procstats import ThreadActivity, thread_activity
from hypercore_tui.adapters.qmp import QmpSession, qmp_session
from hypercore_tui.core import keyboard
from hypercore_tui.core.errors import HypercoreError, InvalidState, OperationFailed
from hypercore_tui.core.keyboard import Chord, Layout
from hypercore_tui.core.layout import VmPaths
from hypercore_tui.core.models import VmState
from hypercore_tui.core.progress import Progress
from hypercore_tui.services import vmstate
from hypercore_tui.services.context import Context

log = logging.getLogger("hypercore.keys")
log.addHandler(logging.NullHandler())

#: Scancode bytes sent at once (QEMU's queue holds 16: a quarter stays free).
BATCH_BYTES = 12
#: A vCPU thread that ran this long since a batch was sent has taken it.
BUSY_NS = 2_000_000
#: How often the vCPU threads are looked at while a batch is taken.
POLL = 0.0005
#: Without a look at the vCPU threads: this long a scancode byte.
FALLBACK_PER_BYTE = 0.002
#: Taking a batch longer than this: is the VM still running?
STALL_CHECK = 2.0
#: Taking a batch longer than this: the guest takes no keys, typing stops.
STALL_LIMIT = 30.0
#: Texts longer than this (characters) are typed only once the user confirmed.
CONFIRM_ABOVE = 2000
#: HYPERCORE_KEYMAP: the default keymap of ``type`` and the keyboard mode.
KEYMAP_VARIABLE = "HYPERCORE_KEYMAP"

Stroke = tuple[Chord, ...]  # the chords of one character or key


def default_keymap(ctx: Context) -> Layout:
    """``$HYPERCORE_KEYMAP``, else us."""
    return keyboard.layout(ctx.environ.get(KEYMAP_VARIABLE) or keyboard.DEFAULT_LAYOUT)


def resolve_keymap(ctx: Context, name: str | None) -> Layout:
    return keyboard.layout(name) if name else default_keymap(ctx)


def qmp_events(chords: Sequence[Chord]) -> list[dict[str, Any]]:
    """``input-send-event``'s events for ``chords``, in order."""
    return [{"type": "key", "data": {"down": down, "key": {"type": "qcode", "data": key}}}
            for chord in chords for key, down in chord.events()]


@dataclass(frozen=True)
class TypedText:
    """What :func:`type_text` typed."""

    name: str
    characters: int
    keymap: str
    seconds: float

    def describe(self) -> str:
        """``tg1: typed 2001 characters (us keymap, 4.1 s)``."""
        count = self.characters
        return (f"{self.name}: typed {count} character{'' if count == 1 else 's'} "
                f"({self.keymap} keymap, {self.seconds:.1f} s)")


@dataclass(frozen=True)
class Batch:
    """Chords sent at once: ``size`` scancode bytes; ``before`` strokes were complete
    before it, ``complete`` once it is sent."""

    chords: list[Chord]
    size: int
    before: int
    complete: int


def batches(strokes: Sequence[Stroke], limit: int = BATCH_BYTES) -> list[Batch]:
    """``strokes`` cut into batches of at most ``limit`` scancode bytes (a chord larger
    than that alone), in order."""
    out: list[Batch] = []
    chords: list[Chord] = []
    size = before = 0
    for index, stroke in enumerate(strokes):
        for chord in stroke:
            if chords and size + chord.ps2_bytes > limit:
                out.append(Batch(chords, size, before, index))
                chords, size, before = [], 0, index
            chords.append(chord)
            size += chord.ps2_bytes
    if chords:
        out.append(Batch(chords, size, before, len(strokes)))
    return out


class KeySender:
    """Key chords into one VM over one open QMP session, paced for its keyboard queue."""

    def __init__(self, qmp: QmpSession, name: str, pid: int | None,
                 vcpu_threads: Sequence[int]) -> None:
        self.qmp = qmp
        self.name = name
        self.pid = pid
        self.vcpu_threads = list(vcpu_threads)
        self.watched = pid is not None and bool(self.vcpu_threads)
        #: batches sent (for tests and figures)
        self.sent_batches = 0
        self._unit = "keys"

    @classmethod
    async def attach(cls, qmp: QmpSession, name: str, pid: int | None) -> KeySender:
        """A sender on ``qmp``: checks that the VM runs, learns its vCPU threads."""
        state, _ = await vmstate.read_status(qmp, timeout=5.0)
        if state is not VmState.RUNNING:
            raise InvalidState(f"{name} is {state.value}: keys sent now would be lost"
                               + (" (resume it first)" if state is VmState.PAUSED else ""))
        threads: list[int] = []
        try:
            cpus = await qmp.execute("query-cpus-fast", timeout=5.0)
            threads = sorted({int(c["thread-id"]) for c in cpus if "thread-id" in c})
        except (HypercoreError, TypeError, ValueError, KeyError):
            log.info("%s: no vCPU threads from QEMU: keys at a fixed pace", name)
        return cls(qmp, name, pid, threads)

    async def send(self, strokes: Sequence[Stroke], *,
                   done: Callable[[int], None] | None = None, unit: str = "keys") -> None:
        """Send ``strokes`` in order; ``done(n)`` after each batch: the first ``n`` strokes
        are in the guest's hands (``unit``: what a stroke is, for messages)."""
        self._unit = unit
        for batch in batches(strokes):
            await self._send_batch(batch.chords, batch.size, batch.before, len(strokes))
            if done is not None and batch.complete:
                done(batch.complete)

    async def _send_batch(self, batch: list[Chord], size: int, done: int, total: int) -> None:
        before = self._activity()
        await self.qmp.execute("input-send-event", {"events": qmp_events(batch)})
        self.sent_batches += 1
        if before is None:
            await asyncio.sleep(FALLBACK_PER_BYTE * size)
            return
        await self._taken(before, done, total)

    def _activity(self) -> list[ThreadActivity] | None:
        if not self.watched or self.pid is None:
            return None
        try:
            return thread_activity(self.pid, [self.pid, *self.vcpu_threads])
        except HypercoreError as exc:
            log.info("%s: vCPU threads unreadable (%s): keys at a fixed pace", self.name, exc)
            self.watched = False
            return None

    async def _taken(self, before: list[ThreadActivity], done: int, total: int) -> None:
        """Until every vCPU thread has slept since its last run, or run :data:`BUSY_NS`,
        since the batch was sent."""
        started = time.monotonic()
        checked = started
        previous: list[ThreadActivity] | None = None
        while True:
            now = self._activity()
            if now is None:
                await asyncio.sleep(FALLBACK_PER_BYTE * BATCH_BYTES)
                return
            if previous is not None and batch_taken(before, previous, now):
                return
            previous = now
            elapsed = time.monotonic() - started
            if time.monotonic() - checked >= STALL_CHECK:
                checked = time.monotonic()
                state, _ = await vmstate.read_status(self.qmp, timeout=5.0)
                if state is not VmState.RUNNING:
                    raise InvalidState(f"{self.name} is {state.value}: typing stopped after "
                                       f"{done} of {total} {self._unit}")
                if elapsed >= STALL_LIMIT:
                    raise OperationFailed(f"{self.name}: the guest took no keys for "
                                          f"{elapsed:.0f} s; typing stopped after {done} of "
                                          f"{total} {self._unit}")
            await asyncio.sleep(POLL)


def batch_taken(before: Sequence[ThreadActivity], previous: Sequence[ThreadActivity],
                now: Sequence[ThreadActivity]) -> bool:
    """Whether the guest took what was sent when QEMU's threads were ``before`` (its main
    thread first, then the vCPU threads): a vCPU thread ran since; each has either run
    :data:`BUSY_NS` since or sleeps without having run since the ``previous`` look; and
    the main thread slept at both looks (it holds no lock a vCPU thread could wait for)."""
    if not (previous[0].sleeping and now[0].sleeping):
        return False
    vcpus = list(zip(now[1:], before[1:], previous[1:], strict=True))
    ran = any(n.run_ns > b.run_ns or n.slices > b.slices for n, b, _ in vcpus)
    return ran and all(n.run_ns - b.run_ns >= BUSY_NS or (n.sleeping and n == p)
                       for n, b, p in vcpus)


def _target(ctx: Context, name: str) -> tuple[VmPaths, int | None]:
    """The running VM's paths and QEMU's pid; :class:`InvalidState` when it does not run."""
    vm = vmstate.require_running(ctx, name)
    return vm.paths, vmstate.process_state(vm.paths)[1]


async def check_target(ctx: Context, name: str) -> None:
    """:class:`InvalidState` (one line) unless VM ``name`` runs and is not paused."""
    paths, _ = _target(ctx, name)
    async with qmp_session(paths.qmp_socket, vm_name=name) as qmp:
        await KeySender.attach(qmp, name, None)


async def type_text(ctx: Context, name: str, text: str, *, keymap: str | None = None,
                    progress: Progress | None = None) -> TypedText:
    """Type ``text`` into VM ``name`` as key presses on ``keymap`` (default: see
    :func:`default_keymap`). Refused before any key is sent when the keymap cannot type
    a character of it (:class:`InvalidInput` naming them) or the VM does not run."""
    layout = resolve_keymap(ctx, keymap)
    strokes = keyboard.text_strokes(text, layout)
    paths, pid = _target(ctx, name)
    started = time.monotonic()
    async with qmp_session(paths.qmp_socket, vm_name=name) as qmp:
        sender = await KeySender.attach(qmp, name, pid)
        total = len(strokes)

        def done(count: int) -> None:
            if progress is not None:
                progress("typing", count, total)

        await sender.send(strokes, done=done, unit="characters")
    return TypedText(name, len(strokes), layout.name, time.monotonic() - started)


async def send_keys(ctx: Context, name: str, keys: Sequence[str], *,
                    keymap: str | None = None,
                    sent: Callable[[int], None] | None = None) -> int:
    """Send keys named as the keyboard mode names them (``ctrl+alt+f2``, ``é``...) to VM
    ``name``, in order, over one QMP session; ``sent(n)`` as they go. A name with no key
    on ``keymap`` is :class:`InvalidInput` before anything is sent."""
    layout = resolve_keymap(ctx, keymap)
    strokes = [keyboard.key_chords(key, layout) for key in keys]
    paths, pid = _target(ctx, name)
    async with qmp_session(paths.qmp_socket, vm_name=name) as qmp:
        sender = await KeySender.attach(qmp, name, pid)
        await sender.send(strokes, done=sent)
    return len(strokes)
