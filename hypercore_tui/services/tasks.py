"""asyncio tasks ended on purpose: a child cancelled without losing the caller's own
cancellation, and a set of tasks given a bounded time to end (a long-running service
that stops must not wait for ever on one that does not)."""

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
