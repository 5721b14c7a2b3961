"""The own guest-agent client against a real qemu-ga running on the host.

qemu-ga -m unix-listen is the same agent as in a guest, minus the virtio-serial
transport: fast, real protocol behaviour (sync, errors, exec, disabled commands).
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hypercore_tui.adapters.qga import AgentClient, AgentCommandError, ExecPending, agent_session
from hypercore_tui.core.errors import AgentCommandUnsupported, AgentUnavailable, Busy, Timeout

from ..helpers import mute_socket

QEMU_GA = shutil.which("qemu-ga") or "/usr/sbin/qemu-ga"


def start_qemu_ga(directory: Path, *extra: str) -> subprocess.Popen[bytes]:
    sock = directory / "qga.sock"
    proc = subprocess.Popen(
        [QEMU_GA, "-m", "unix-listen", "-p", str(sock), "-t", str(directory),
         "-f", str(directory / "qga.pid"), *extra],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 10
    while not sock.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            err = proc.stderr.read().decode() if proc.stderr else ""
            proc.kill()
            raise AssertionError(f"qemu-ga did not start: {err}")
        time.sleep(0.02)
    return proc


@pytest.fixture
def host_agent() -> Iterator[Path]:
    directory = Path(tempfile.mkdtemp(prefix="hcqga-", dir="/tmp"))
    proc = start_qemu_ga(directory)
    yield directory / "qga.sock"
    proc.terminate()
    proc.wait(5)
    shutil.rmtree(directory, ignore_errors=True)


async def test_sync_ping_and_info(host_agent: Path) -> None:
    async with agent_session(host_agent, vm_name="host") as agent:
        await agent.ping()
        supported = await agent.supported_commands()
    assert supported["guest-exec"] is True
    assert "guest-sync-delimited" in supported


async def test_exec_relays_output_stdin_and_exit_code(host_agent: Path) -> None:
    async with agent_session(host_agent, vm_name="host") as agent:
        result = await agent.exec(["/bin/sh", "-c", "cat; echo err >&2; exit 7"],
                                  stdin=b"a'b\"c $(x) \n\t\xf0\x9f\x98\x80")
    assert result.exitcode == 7 and result.shell_status == 7
    assert result.stdout == b"a'b\"c $(x) \n\t\xf0\x9f\x98\x80"
    assert result.stderr == b"err\n"


async def test_exec_signal_status(host_agent: Path) -> None:
    async with agent_session(host_agent, vm_name="host") as agent:
        result = await agent.exec(["/bin/sh", "-c", "kill -9 $$"])
    assert result.signal == 9 and result.shell_status == 137


async def test_agent_error_is_reported(host_agent: Path) -> None:
    async with agent_session(host_agent, vm_name="host") as agent:
        with pytest.raises(AgentCommandError, match="guest-file-open"):
            await agent.execute("guest-file-open", {"path": "/nonexistent/dir/file", "mode": "r"})
        await agent.ping()  # still in step after an error


async def test_stale_bytes_before_sync_are_skipped(host_agent: Path) -> None:
    # A client that wrote half a command and garbage, then left, must not confuse the next.
    reader, writer = await asyncio.open_unix_connection(str(host_agent))
    writer.write(b'{"execute":"guest-ping"}\n{"execute": "guest-in')
    await writer.drain()
    client = AgentClient(host_agent, vm_name="host")
    await client.connect()
    try:
        # Same stream: the half-sent command and our sync are on one connection here.
        client._reader, client._writer = reader, writer  # noqa: SLF001 - simulate stale stream
        await client.sync()
        assert await client.execute("guest-ping") == {}
    finally:
        await client.close()


async def test_disabled_command_names_the_fix() -> None:
    directory = Path(tempfile.mkdtemp(prefix="hcqga-", dir="/tmp"))
    proc = start_qemu_ga(directory, "--block-rpcs=guest-exec,guest-exec-status")
    try:
        async with agent_session(directory / "qga.sock", vm_name="host") as agent:
            with pytest.raises(AgentCommandUnsupported, match="block-rpcs"):
                await agent.exec(["/bin/true"])
    finally:
        proc.terminate()
        proc.wait(5)
        shutil.rmtree(directory, ignore_errors=True)


async def test_missing_socket_is_clear(tmp_path: Path) -> None:
    with pytest.raises(AgentUnavailable, match="socket is missing"):
        async with agent_session(tmp_path / "nope.sock", vm_name="ghost"):
            pass


async def test_second_client_waits_for_the_first(host_agent: Path) -> None:
    async with agent_session(host_agent, vm_name="host"):
        started = time.monotonic()
        with pytest.raises(Busy):
            async with agent_session(host_agent, vm_name="host", lock_timeout=0.3):
                pass
        assert time.monotonic() - started < 3


async def test_agent_that_never_answers_times_out(tmp_path: Path) -> None:
    # A listening socket whose owner never reads: the sync must time out, not hang.
    with mute_socket(tmp_path / "mute.sock") as path:
        started = time.monotonic()
        with pytest.raises(AgentUnavailable, match="not answering"):
            async with agent_session(path, vm_name="mute", timeout=0.5):
                pass
        assert time.monotonic() - started < 3


async def test_exec_output_held_by_a_forked_process(host_agent: Path) -> None:
    """4 cases: a command that forks a child keeping its pipes open is reported once as
    ended (its /proc entry is gone) and ends in a timeout that says so, also with nobody
    to report to; a command that runs on itself is never reported; the same fork where
    guest-file-open is disabled is reported as unknown (and the timeout cannot say)."""
    seen: list[ExecPending] = []
    async with agent_session(host_agent, vm_name="host") as agent:
        started = time.monotonic()
        with pytest.raises(Timeout, match="it has ended, but a process it started still "
                                          "holds its output open"):
            await agent.exec(["/bin/sh", "-c", "sleep 5 & echo started"], timeout=2.0,
                             on_slow=seen.append, slow_after=0.5)
        assert time.monotonic() - started < 3.0
        assert len(seen) == 1 and seen[0].command_ended is True
        assert 0.5 <= seen[0].seconds < 1.5

        with pytest.raises(Timeout, match="it has ended, but"):  # no on_slow: a script
            await agent.exec(["/bin/sh", "-c", "sleep 5 & echo started"], timeout=1.0)

        seen.clear()
        result = await agent.exec(["/bin/sh", "-c", "sleep 1.5; echo done"],
                                  on_slow=seen.append, slow_after=0.3)
        assert result.stdout == b"done\n" and seen == []

    directory = Path(tempfile.mkdtemp(prefix="hcqga-", dir="/tmp"))
    proc = start_qemu_ga(directory, "--block-rpcs=guest-file-open")
    try:
        async with agent_session(directory / "qga.sock", vm_name="host") as agent:
            with pytest.raises(Timeout) as raised:
                await agent.exec(["/bin/sh", "-c", "sleep 5 & echo started"], timeout=1.5,
                                 on_slow=seen.append, slow_after=0.5)
        assert "has ended" not in str(raised.value)
        assert len(seen) == 1 and seen[0].command_ended is None
    finally:
        proc.terminate()
        proc.wait(5)
        shutil.rmtree(directory, ignore_errors=True)
