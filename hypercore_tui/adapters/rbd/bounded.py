"""Blocking Ceph work in a thread under a wall-clock limit.

librados' own timeouts (:mod:`.library`) bound each call; the limit on the thread
doing the work (:func:`run`/:func:`arun`) is the safety net should librados ever not
honour them.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from hypercore_tui.adapters.rbd.errors import unavailable

T = TypeVar("T")

#: Wall-clock limit for a short operation (connect + a few metadata calls).
SHORT_LIMIT = 10.0


def _start(fn: Callable[[], T], name: str) -> concurrent.futures.Future[T]:
    future: concurrent.futures.Future[T] = concurrent.futures.Future()

    def body() -> None:
        if not future.set_running_or_notify_cancel():
            return
        try:
            result = fn()
        except BaseException as exc:  # handed to the waiting caller
            future.set_exception(exc)
        else:
            future.set_result(result)

    # A daemon thread: if librados ever hangs past our limit, the caller gets its error
    # and the process can still exit.
    threading.Thread(target=body, name=name, daemon=True).start()
    return future


def run(fn: Callable[[], T], *, conf: str, limit: float | None = SHORT_LIMIT) -> T:
    """Call blocking ``fn`` in a thread; at most ``limit`` seconds (None: no limit)."""
    future = _start(fn, "hypercore-ceph")
    try:
        return future.result(timeout=limit)
    except concurrent.futures.TimeoutError:
        raise unavailable(conf, limit or 0) from None


def _mark_retrieved(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


async def arun(fn: Callable[[], T], *, conf: str, limit: float | None = SHORT_LIMIT) -> T:
    """:func:`run` for the event loop: the loop keeps running meanwhile.

    Cancelling the caller does not stop ``fn`` (librados cannot be interrupted): with
    no ``limit`` the caller waits for it to finish so its clean-up is never racing.
    """
    future = asyncio.wrap_future(_start(fn, "hypercore-ceph"))
    # A caller that stopped waiting (cancelled, timed out) never reads the call's error:
    # mark it read, or asyncio logs "Future exception was never retrieved" with a
    # traceback on stderr whenever the future is garbage-collected.
    future.add_done_callback(_mark_retrieved)
    if limit is None:
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            with contextlib.suppress(BaseException):
                await future
            raise
    try:
        return await asyncio.wait_for(asyncio.shield(future), limit)
    except TimeoutError:
        raise unavailable(conf, limit) from None
