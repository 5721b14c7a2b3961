"""services/tasks.py: a child reaped without losing the caller's cancellation, and a
bounded wait for tasks that ignore being cancelled."""

from __future__ import annotations

import asyncio
import contextlib
import time

import pytest

from hypercore_tui.services.tasks import reap, reap_all, wait_set


async def test_reap_drops_the_childs_end_but_not_the_callers_cancellation() -> None:
    async def failing() -> None:
        raise RuntimeError("child")

    child = asyncio.ensure_future(failing())
    await asyncio.sleep(0)
    await reap(child)  # its error is not ours

    started = asyncio.Event()

    async def caller() -> str:
        inner = asyncio.ensure_future(asyncio.sleep(10))
        started.set()
        await reap(inner)
        return "went on"  # (with suppress(CancelledError) this line ran: the bug)

    task = asyncio.ensure_future(caller())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_reap_all_gives_up_after_the_grace() -> None:
    done = asyncio.Event()

    async def stubborn() -> None:
        while not done.is_set():
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(10)

    async def polite() -> None:
        await asyncio.sleep(10)

    tasks = [asyncio.ensure_future(stubborn()), asyncio.ensure_future(polite())]
    await asyncio.sleep(0)
    started = time.monotonic()
    left = await reap_all(tasks, grace=0.5)
    assert 0.4 < time.monotonic() - started < 2.0
    assert left == [tasks[0]] and tasks[1].cancelled()
    done.set()
    tasks[0].cancel()
    await tasks[0]


async def test_wait_set_never_swallows_a_cancellation_that_comes_with_the_event() -> None:
    """The event set and the task cancelled in one go (the dashboard pokes a watcher, then
    closes it): the loop ends. ``asyncio.wait_for`` (3.11) swallowed the cancellation and
    the loop ran on for ever."""
    wake = asyncio.Event()
    rounds = 0

    async def loop() -> None:
        nonlocal rounds
        while True:
            rounds += 1
            wake.clear()
            await wait_set(wake, 60)

    task = asyncio.ensure_future(loop())
    await asyncio.sleep(0.01)
    wake.set()
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=2)
    assert task in done and task.cancelled() and rounds == 1
    assert await wait_set(asyncio.Event(), 0.01) is False
    already = asyncio.Event()
    already.set()
    assert await wait_set(already, 0) is True
