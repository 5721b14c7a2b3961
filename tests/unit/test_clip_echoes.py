"""Echoes in the clipboard sync: the signal of a write into a VM can come after the hub
has moved on (the text on the port is what the guest held when it signalled). Two guests
copying at the same moment must converge and then stay still: no signal of a write is a
new copy (a CI run saw 14 entries in 5 s after such a race)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from hypercore_tui.core.clip import KIND_TEXT, ClipItem, History, digest
from hypercore_tui.services import clipboard
from hypercore_tui.services.clipsync.vmsync import ECHO_WINDOW, PUSH_RETRY, Echoes, VmSync


class FakeEngine:
    """The part of the engine a VM's pull uses: the history and its offers."""

    def __init__(self) -> None:
        self.history = History()
        self.faults: list[str] = []

    def offer(self, kind: str, data: bytes, source: str, *, at: float | None = None
              ) -> ClipItem | None:
        return self.history.offer(kind, data, source, at=at)

    def fault(self, name: str, message: str) -> None:
        self.faults.append(message)

    def pushed(self, vm: Any, item: ClipItem, seconds: float) -> None:
        pass


def d(text: str) -> str:
    return digest(KIND_TEXT, text.encode())


def signal(sync: VmSync, text: str, at: float) -> None:
    """The watcher carried ``text`` on the port; the loop pulls it."""
    sync._inline = text.encode()  # noqa: SLF001
    assert asyncio.run(sync._pull(at))  # noqa: SLF001


def wrote(sync: VmSync, item: ClipItem) -> None:
    sync._wrote(item, 0.1)  # noqa: SLF001


def test_echoes_settle_in_order_and_expire() -> None:
    echoes = Echoes()
    echoes.wrote("a", at=0.0)
    echoes.wrote("b", at=1.0)
    echoes.wrote("c", at=2.0)
    assert echoes.pending("a", now=2.0)
    assert echoes.take("b", now=2.0)  # settles a as well
    assert not echoes.pending("a", now=2.0)
    assert not echoes.take("b", now=2.0)  # once
    assert echoes.pending("c", now=2.0)
    assert not echoes.take("c", now=2.0 + ECHO_WINDOW + 1)  # too late: a copy after all
    assert not echoes.take("x", now=0.0)


def test_a_late_signal_of_a_write_is_no_new_copy() -> None:
    """The race as it happens: rsb copies B while the hub writes rsa's A into it."""
    engine = FakeEngine()
    rsa = VmSync(engine, "rsa")  # type: ignore[arg-type]
    rsb = VmSync(engine, "rsb")  # type: ignore[arg-type]
    signal(rsa, "A", at=100.0)  # rsa's copy first
    a = engine.history.current
    assert a is not None and a.text == "A"
    wrote(rsb, a)  # the hub writes A into rsb ...
    signal(rsb, "B", at=100.2)  # ... while rsb's own copy B is signalled
    b = engine.history.current
    assert b is not None and b.text == "B"
    wrote(rsa, b)
    # Now the late signals: rsb's of the write of A (the guest ended on A), rsa's of B.
    signal(rsb, "A", at=100.5)
    signal(rsa, "B", at=100.6)
    assert engine.history.current is b  # no new entry: no ping-pong
    assert len(list(engine.history)) == 2
    assert rsb.holds == d("A") and rsb._push_wanted.is_set()  # noqa: SLF001
    assert not rsa._push_wanted.is_set()  # noqa: SLF001 (it holds B, the current entry)


def test_a_write_of_the_current_entry_on_its_way_is_not_written_again() -> None:
    engine = FakeEngine()
    vm = VmSync(engine, "vm")  # type: ignore[arg-type]
    old = engine.history.offer(KIND_TEXT, b"old", "host")
    assert old is not None
    wrote(vm, old)
    new = engine.history.offer(KIND_TEXT, b"new", "host", at=old.at + 1)
    assert new is not None
    wrote(vm, new)
    signal(vm, "old", at=new.at + 1)  # the first write's signal
    assert vm.holds == d("old")
    assert not vm._push_wanted.is_set()  # noqa: SLF001 (the write of "new" signals next)
    signal(vm, "new", at=new.at + 2)
    assert vm.holds == d("new") and engine.history.current is new


def test_the_same_text_copied_again_later_is_a_copy() -> None:
    engine = FakeEngine()
    vm = VmSync(engine, "vm")  # type: ignore[arg-type]
    item = engine.history.offer(KIND_TEXT, b"same", "host")
    assert item is not None
    wrote(vm, item)
    signal(vm, "same", at=item.at + 1)  # the write's own signal
    signal(vm, "other", at=item.at + 2)  # the user copies something else
    signal(vm, "same", at=item.at + 3)  # and then the first text again
    current = engine.history.current
    assert current is not None and current.text == "same" and current.source_vm == "vm"


def test_a_copy_older_than_the_current_entry_gets_the_current_one() -> None:
    engine = FakeEngine()
    vm = VmSync(engine, "vm")  # type: ignore[arg-type]
    newer = engine.history.offer(KIND_TEXT, b"newer", "host", at=200.0)
    assert newer is not None
    signal(vm, "older", at=199.0)  # detected before the current entry came: it loses
    assert engine.history.current is newer
    assert vm._push_wanted.is_set()  # noqa: SLF001 (and the VM is given the winner)


def test_a_failed_write_is_tried_again_later_and_said_once() -> None:
    """A write that fails while the VM still answers (a slow guest under load) is tried
    again after PUSH_RETRY, then after twice as long each time; the fault is said once,
    and a write that works ends the retries."""
    engine = FakeEngine()
    vm = VmSync(engine, "vm")  # type: ignore[arg-type]
    item = engine.history.offer(KIND_TEXT, b"wanted", "host")
    assert item is not None
    outcomes = [False, False, True]

    async def write(_: ClipItem) -> clipboard.PushResult:
        ok = outcomes.pop(0)
        return clipboard.PushResult("vm", ok, error=None if ok else "guest-exec timed out")

    async def reachable() -> bool:
        return True

    vm._write = write  # type: ignore[method-assign]  # noqa: SLF001
    vm._reachable = reachable  # type: ignore[method-assign]  # noqa: SLF001
    delays = []
    for _ in range(2):
        before = time.monotonic()
        assert asyncio.run(vm._push_current())  # noqa: SLF001
        assert vm._retry_at is not None  # noqa: SLF001
        delays.append(vm._retry_at - before)  # noqa: SLF001
        assert vm.holds != item.digest
    assert PUSH_RETRY <= delays[0] < PUSH_RETRY + 1
    assert 2 * PUSH_RETRY <= delays[1] < 2 * PUSH_RETRY + 1
    assert engine.faults == ["vm: clipboard not written: guest-exec timed out"]
    assert asyncio.run(vm._push_current())  # noqa: SLF001
    assert vm._retry_at is None and vm.holds == item.digest  # noqa: SLF001
