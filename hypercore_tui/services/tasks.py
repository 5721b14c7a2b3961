"""asyncio tasks ended on purpose: a child cancelled without losing the caller's own
cancellation, a set of tasks given a bounded time to end (a long-running service
that stops must not wait for ever on one that does not), and a wait for an event that
never swallows a cancellation."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any


async def reap(task: asyncio.Future[Any]) -> None:
    """Cancel ``task`` and wait for it to end; its result, error or cancellation are
    dropped, but a cancellation of the caller itself meanwhile is raised, not swallowed
    (a bare ``suppress(CancelledError)`` around the await loses it)."""
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            raise
    except Exception:  # noqa: BLE001, S110 - the child's failure is not the caller's
        pass


async def reap_all(tasks: Iterable[asyncio.Future[Any]], *,
                   grace: float) -> list[asyncio.Future[Any]]:
    """Cancel ``tasks`` (again every second) and wait at most ``grace`` seconds for them
    to end; returns those still running."""
    loop = asyncio.get_running_loop()
    pending = {task for task in tasks if not task.done()}
    deadline = loop.time() + grace
    while pending:
        for task in pending:
            task.cancel()
        left = deadline - loop.time()
        if left <= 0:
            break
        _, pending = await asyncio.wait(pending, timeout=min(1.0, left))
    for task in tasks:
        if task.done() and not task.cancelled():
            task.exception()  # (retrieved: no "exception was never retrieved" warning)
    return list(pending)


async def wait_set(event: asyncio.Event, timeout: float) -> bool:
    """Wait for ``event`` at most ``timeout`` seconds; True when it is set.

    Not ``asyncio.wait_for(event.wait(), timeout)``: in Python 3.11 a cancellation that
    arrives as the event is set is swallowed there (wait_for returns the result), so a
    loop around it runs on, its task "cancelling" for ever, and whoever awaits its end
    hangs (the dashboard's rescan after a VM went away: ``poke`` sets the watcher's
    events just before its tasks are cancelled)."""
    if event.is_set():
        return True
    waiter = asyncio.ensure_future(event.wait())
    try:
        await asyncio.wait({waiter}, timeout=timeout)
    finally:
        waiter.cancel()
    return event.is_set()
