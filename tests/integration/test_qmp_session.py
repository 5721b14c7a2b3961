"""The QMP session wrapper against a real QEMU (no guest: -S, paused at start)."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hypercore_tui.adapters.qmp import EVENT_QUEUE_MAX, QmpCommandError, qmp_session
from hypercore_tui.core.errors import Busy, OperationFailed, Timeout

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


GREETING = {"QMP": {"version": {"qemu": {"major": 7, "minor": 2, "micro": 0},
                                "package": ""}, "capabilities": []}}


async def _serve(path: Path, bad_sessions: int) -> tuple[asyncio.Server, list[str]]:
    """A misbehaving QMP server: its first ``bad_sessions`` connections answer
    qmp_capabilities with a reply meant for another session (an old command's return
    under another id: what a loaded QEMU was seen to do right after a session ended);
    later ones are a proper session that answers query-status."""
    seen: list[str] = []

    async def read(reader: asyncio.StreamReader, buffer: list[str]) -> dict[str, str] | None:
        """The next JSON object from the client (it sends no line ends)."""
        while True:
            text = buffer[0].lstrip()
            if text:
                try:
                    value, end = json.JSONDecoder().raw_decode(text)
                except ValueError:
                    pass
                else:
                    buffer[0] = text[end:]
                    return dict(value)
            chunk = await reader.read(4096)
            if not chunk:
                return None
            buffer[0] += chunk.decode()

    async def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        number, buffer = len(seen), [""]
        writer.write(json.dumps(GREETING).encode() + b"\r\n")
        caps = await read(reader, buffer)
        assert caps is not None
        seen.append(caps["execute"])
        if number < bad_sessions:
            writer.write(json.dumps({"error": {"class": "CommandNotFound",
                                               "desc": "stale"}}).encode() + b"\r\n")
            await writer.drain()
            writer.close()
            return
        writer.write(json.dumps({"return": {}, "id": caps.get("id")}).encode() + b"\r\n")
        while (request := await read(reader, buffer)) is not None:
            seen.append(request["execute"])
            writer.write(json.dumps({"return": {"status": "running", "running": True},
                                     "id": request.get("id")}).encode() + b"\r\n")
            await writer.drain()
        writer.close()

    server = await asyncio.start_unix_server(client, path=str(path))
    return server, seen


async def test_a_session_whose_negotiation_failed_is_made_again(tmp_path: Path) -> None:
    """Twice a bad capabilities reply, then a good session: the third connection is
    used (within the timeout); a server that never negotiates fails in one line."""
    path = tmp_path / "flaky.sock"
    server, seen = await _serve(path, bad_sessions=2)
    try:
        async with qmp_session(path, vm_name="flaky", timeout=5) as qmp:
            assert (await qmp.execute("query-status"))["status"] == "running"
        assert seen == ["qmp_capabilities"] * 3 + ["query-status"]
    finally:
        server.close()
    path.unlink()
    server, seen = await _serve(path, bad_sessions=99)
    try:
        with pytest.raises(OperationFailed, match=r"^broken: cannot connect to QEMU monitor: "
                                                  r"Failed to establish session: "):
            async with qmp_session(path, vm_name="broken", timeout=5):
                pass
        assert seen == ["qmp_capabilities"] * 3
    finally:
        server.close()
