"""A session cancelled while it waits for a socket's lock never leaves the lock held
(a dashboard closing mid-wait once made every later `exec` say "in use")."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest

from hypercore_tui.adapters.fs import FileLock
from hypercore_tui.adapters.qga import AgentClient
from hypercore_tui.adapters.qmp import QmpSession
from hypercore_tui.core.layout import socket_lock


@pytest.mark.parametrize("kind", ["agent", "qmp"])
async def test_cancelled_while_waiting_for_the_lock(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "s.sock"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    other = FileLock(socket_lock(path), "another process")
    assert other.try_acquire()
    if kind == "agent":
        waiter = asyncio.create_task(AgentClient(path, vm_name="t").connect(lock_timeout=2))
    else:
        waiter = asyncio.create_task(QmpSession(path, vm_name="t").connect(lock_timeout=2))
    await asyncio.sleep(0.2)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    other.release()  # the cancelled waiter's thread now gets it ... and must let it go
    await asyncio.sleep(0.5)
    again = FileLock(socket_lock(path))
    assert again.try_acquire(), "the lock stayed held after the cancelled wait"
    again.release()
    server.close()
