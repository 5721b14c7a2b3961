"""The QMP session wrapper against a real QEMU (no guest: -S, paused at start)."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hypercore_tui.adapters.qmp import EVENT_QUEUE_MAX, QmpCommandError, qmp_session
from hypercore_tui.core.errors import Busy, Timeout

from ..helpers import mute_socket


@pytest.fixture
def bare_qemu() -> Iterator[Path]:
    directory = Path(tempfile.mkdtemp(prefix="hcqmp-", dir="/tmp"))
    sock = directory / "qmp.sock"
    proc = subprocess.Popen(
        ["qemu-system-x86_64", "-accel", "tcg", "-machine", "none", "-nodefaults",
         "-display", "none", "-S", "-qmp", f"unix:{sock},server=on,wait=off"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while not sock.exists():
        assert time.monotonic() < deadline and proc.poll() is None, "QEMU did not start"
        time.sleep(0.02)
    yield sock
    proc.kill()
    proc.wait()
    shutil.rmtree(directory, ignore_errors=True)


async def test_execute_and_command_error(bare_qemu: Path) -> None:
    async with qmp_session(bare_qemu, vm_name="bare") as qmp:
        status = await qmp.execute("query-status")
        assert status["status"] == "prelaunch"
        with pytest.raises(QmpCommandError, match="QEMU refused no-such-command"):
            await qmp.execute("no-such-command")
        assert (await qmp.execute("query-status"))["running"] is False


async def test_events_arrive_and_stay_bounded(bare_qemu: Path) -> None:
    async with qmp_session(bare_qemu, vm_name="bare", events=True) as qmp:
        await qmp.execute("cont")
        await qmp.execute("stop")
        names: list[str] = []
        async for event in qmp.events():
            names.append(event.name)
            if event.name == "STOP":
                break
        assert names == ["RESUME", "STOP"]
        for _ in range(EVENT_QUEUE_MAX // 2 + 50):
            await qmp.execute("cont")
            await qmp.execute("stop")
        await asyncio.sleep(0.2)
        pending = qmp.pending_events()
        assert len(pending) == EVENT_QUEUE_MAX  # the oldest were dropped
        assert pending[-1].name == "STOP"


async def test_second_client_is_told_busy(bare_qemu: Path) -> None:
    async with qmp_session(bare_qemu, vm_name="bare"):
        started = time.monotonic()
        with pytest.raises(Busy, match="in use"):
            async with qmp_session(bare_qemu, vm_name="bare", lock_timeout=0.3):
                pass
        assert time.monotonic() - started < 3


async def test_quit_then_close_is_quiet(bare_qemu: Path) -> None:
    async with qmp_session(bare_qemu, vm_name="bare") as qmp:
        await qmp.execute("quit")
    # Leaving the block after `quit` raised nothing (EOFError is swallowed on close).


async def test_server_without_greeting_times_out(tmp_path: Path) -> None:
    with mute_socket(tmp_path / "mute.sock") as path:
        started = time.monotonic()
        with pytest.raises(Timeout, match="did not answer"):
            async with qmp_session(path, vm_name="mute", timeout=0.5):
                pass
        assert time.monotonic() - started < 3
