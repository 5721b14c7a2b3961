"""The agent client against deliberately misbehaving agents (small servers of our own).

Each broken behaviour must end in a clear HypercoreError within the timeout:
no other exception, no hang.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hypercore_tui.adapters import qga
from hypercore_tui.adapters.qga import (
    PROBE_AFTER,
    PROBE_EVERY,
    AgentClient,
    AgentRestarted,
    AgentStalled,
)
from hypercore_tui.core.errors import AgentUnavailable, HypercoreError, ProtocolError, Timeout

Reply = Callable[[dict[str, object], asyncio.StreamWriter], Awaitable[None]]


async def honest_sync(request: dict[str, object], writer: asyncio.StreamWriter) -> bool:
    """Answer guest-sync-delimited like qemu-ga does; True if it was one."""
    if request.get("execute") != "guest-sync-delimited":
        return False
    args = request.get("arguments")
    assert isinstance(args, dict)
    writer.write(b"\xff" + json.dumps({"return": args["id"]}).encode() + b"\n")
    await writer.drain()
    return True


class FakeAgent:
    """A unix-socket server answering sync honestly and everything else with ``reply``."""

    def __init__(self, reply: Reply) -> None:
        self.reply = reply
        self.path = Path(tempfile.mkdtemp(prefix="hcfake-", dir="/tmp")) / "qga.sock"
        self.server: asyncio.AbstractServer | None = None

    async def __aenter__(self) -> FakeAgent:
        self.server = await asyncio.start_unix_server(self._handle, str(self.path),
                                                      limit=1 << 20)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                line = await reader.readline()
                if not line:
                    return
                try:
                    request = json.loads(line.lstrip(b"\xff"))
                except ValueError:
                    continue
                if not await honest_sync(request, writer):
                    await self.reply(request, writer)
        except (ConnectionError, asyncio.CancelledError):
            return
        finally:
            writer.close()


async def run_command(agent: FakeAgent, *, timeout: float = 1.0,
                      max_line: int = 1 << 20) -> object:
    client = AgentClient(agent.path, vm_name="fake", max_line=max_line)
    await client.connect(timeout=timeout)
    try:
        return await client.execute("guest-ping", timeout=timeout, sync_timeout=timeout)
    finally:
        await client.close()


def send(data: bytes) -> Reply:
    async def reply(request: dict[str, object], writer: asyncio.StreamWriter) -> None:
        writer.write(data)
        await writer.drain()
    return reply


def with_id(template: dict[str, object], *, before: bytes = b"") -> Reply:
    async def reply(request: dict[str, object], writer: asyncio.StreamWriter) -> None:
        body = dict(template, id=request.get("id"))
        writer.write(before + json.dumps(body).encode() + b"\n")
        await writer.drain()
    return reply


async def test_stale_and_foreign_replies_are_skipped() -> None:
    stale = b'{"return": {}, "id": "old-1"}\n{"error": {"class": "GenericError", "desc": "x"}}\n'
    async with FakeAgent(with_id({"return": {"ok": 1}}, before=stale)) as agent:
        assert await run_command(agent) == {"ok": 1}


async def test_error_reply_is_one_line() -> None:
    async with FakeAgent(with_id({"error": {"class": "GenericError", "desc": "no\nway"}})) as a:
        with pytest.raises(HypercoreError, match="guest agent refused guest-ping"):
            await run_command(a)


@pytest.mark.parametrize("payload,error", [
    (b"\xff\xfe garbage \x00\n", ProtocolError),            # bytes that are not JSON
    (b'{"return": "\xc3\x28"}\n', ProtocolError),           # invalid UTF-8
    (b"[" * 100_000 + b"\n", ProtocolError),                 # deeply nested JSON
    (b'{"id": "wrong", "return": 1}\n', Timeout),            # only other ids: time out
    (b"no newline ever", Timeout),                           # an endless line
    (b"x" * (2 << 20) + b"\n", ProtocolError),               # a line over the limit
])
async def test_broken_replies_end_in_clear_errors(payload: bytes,
                                                  error: type[HypercoreError]) -> None:
    async with FakeAgent(send(payload)) as agent:
        started = time.monotonic()
        with pytest.raises(error) as caught:
            await run_command(agent)
        assert time.monotonic() - started < 3
        assert "\n" not in str(caught.value)


async def test_reply_without_id_or_return_is_a_protocol_error() -> None:
    async with FakeAgent(with_id({"unexpected": True})) as agent:
        with pytest.raises(ProtocolError, match="no return value"):
            await run_command(agent)


async def test_connection_dropped_mid_command() -> None:
    async def hang_up(request: dict[str, object], writer: asyncio.StreamWriter) -> None:
        writer.close()

    async with FakeAgent(hang_up) as agent:
        with pytest.raises(AgentUnavailable, match="closed the connection"):
            await run_command(agent)


async def test_agent_that_never_syncs() -> None:
    """A peer that swallows everything: the sync times out with the cause named."""
    path = Path(tempfile.mkdtemp(prefix="hcfake-", dir="/tmp")) / "qga.sock"

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await reader.read(65536):
            pass

    server = await asyncio.start_unix_server(swallow, str(path))
    try:
        client = AgentClient(path, vm_name="mute")
        await client.connect()
        with pytest.raises(AgentUnavailable, match="not answering"):
            await client.execute("guest-ping", sync_timeout=0.5)
        await client.close()
    finally:
        server.close()


async def test_sync_skips_garbage_then_timeout_resyncs() -> None:
    """After a timed-out command, the late reply must not be taken for the next one."""
    calls = 0

    async def slow_then_fast(request: dict[str, object], writer: asyncio.StreamWriter) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            await asyncio.sleep(0.6)  # late: arrives after the client gave up
        writer.write(json.dumps({"return": calls, "id": request.get("id")}).encode() + b"\n")
        await writer.drain()

    async with FakeAgent(slow_then_fast) as agent:
        client = AgentClient(agent.path, vm_name="slow")
        await client.connect()
        try:
            with pytest.raises(Timeout):
                await client.execute("guest-ping", timeout=0.3)
            assert await client.execute("guest-ping", timeout=2) == 2
        finally:
            await client.close()


async def answer(request: dict[str, object], writer: asyncio.StreamWriter,
                 value: object) -> None:
    writer.write(json.dumps({"return": value, "id": request.get("id")}).encode() + b"\n")
    await writer.drain()


async def test_lost_command_is_noticed_by_a_ping() -> None:
    """An agent that never answers the command (a qemu-ga restarted after reading it) but
    answers pings: reported as lost after about PROBE_AFTER s, not after the 30 s timeout."""
    async def lose_commands(request: dict[str, object], writer: asyncio.StreamWriter) -> None:
        if request.get("execute") == "guest-ping":
            await answer(request, writer, {})

    async with FakeAgent(lose_commands) as agent:
        client = AgentClient(agent.path, vm_name="restarted")
        await client.connect()
        try:
            started = time.monotonic()
            with pytest.raises(AgentRestarted, match="lost the guest-file-read command"):
                await client.execute("guest-file-read", {"handle": 1}, timeout=30)
            assert time.monotonic() - started < PROBE_AFTER + 2
            assert await client.execute("guest-ping", timeout=2) == {}  # re-synced
        finally:
            await client.close()


async def test_slow_answer_stands_and_the_pings_are_skipped() -> None:
    """An agent answering one command after PROBE_AFTER + PROBE_EVERY s (pings queued
    behind it, answered in order after it): its answer stands, the next command gets its
    own answer, not a ping's."""
    async def slow_once(request: dict[str, object], writer: asyncio.StreamWriter) -> None:
        if request.get("execute") == "guest-get-host-name":
            await asyncio.sleep(PROBE_AFTER + PROBE_EVERY + 0.5)
            await answer(request, writer, {"host-name": "slow"})
        elif request.get("execute") == "guest-ping":
            await answer(request, writer, {})
        else:
            await answer(request, writer, {"command": request.get("execute")})

    async with FakeAgent(slow_once) as agent:
        client = AgentClient(agent.path, vm_name="slow")
        await client.connect()
        try:
            reply = await client.execute("guest-get-host-name", timeout=10)
            assert reply == {"host-name": "slow"}
            assert await client.execute("guest-info", timeout=2) == {"command": "guest-info"}
        finally:
            await client.close()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2048))
def test_any_reply_bytes_give_a_value_or_a_clear_error(payload: bytes) -> None:
    async def scenario() -> None:
        async with FakeAgent(send(payload)) as agent:
            try:
                await asyncio.wait_for(run_command(agent, timeout=0.3), 5)
            except HypercoreError as exc:
                assert str(exc)

    asyncio.run(scenario())


class ReadingAgent:
    """Syncs honestly, then reads the next request ``chunk`` bytes every ``pause`` s; after
    ``stop_after`` bytes it stops reading (hung) and never answers; a request read in full
    is answered with its size."""

    def __init__(self, *, chunk: int, pause: float, stop_after: int | None) -> None:
        self.chunk, self.pause, self.stop_after = chunk, pause, stop_after
        self.path = Path(tempfile.mkdtemp(prefix="hcfake-", dir="/tmp")) / "qga.sock"
        self.read = 0
        self.hung = asyncio.Event()

    async def __aenter__(self) -> ReadingAgent:
        self.server = await asyncio.start_unix_server(self._handle, str(self.path))
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.server.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await honest_sync(json.loads((await reader.readline()).lstrip(b"\xff")), writer)
            request = b""
            while not request.endswith(b"\n"):
                if self.stop_after is not None and self.read >= self.stop_after:
                    self.hung.set()
                    await asyncio.sleep(3600)
                request += await reader.read(self.chunk)
                self.read = len(request)
                await asyncio.sleep(self.pause)
            await answer(json.loads(request), writer, len(request))
            await reader.read()
        except (ConnectionError, asyncio.CancelledError):
            return
        finally:
            writer.close()


async def test_an_agent_that_stops_reading_a_long_request_is_told_hung(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """qemu-ga stops reading half-way through a 6 MiB request (stopped, or deadlocked by a
    SIGTERM as qemu-ga 7.2 can be): AgentStalled once nothing more was taken for SEND_STALL
    seconds (here 1 s), not after the command's 34 s; the rest is never sent."""
    monkeypatch.setattr(qga, "SEND_STALL", 1.0)
    monkeypatch.setattr(qga, "SEND_CHECK", 0.1)
    async with ReadingAgent(chunk=64 << 10, pause=0.0, stop_after=1 << 20) as agent:
        client = AgentClient(agent.path, vm_name="hung")
        await client.connect()
        try:
            started = time.monotonic()
            with pytest.raises(AgentStalled, match=r"stopped reading the guest-exec request "
                                                   r"\(\d+\.\d of 8\.0 MiB taken"):
                await client.execute("guest-exec", {"input-data": "A" * (8 << 20)},
                                     timeout=34)
            took = time.monotonic() - started
            assert agent.hung.is_set() and took < 1.0 + 1.5, took
            assert client.state is qga.AgentState.CLOSED
        finally:
            await client.close()


async def test_a_slowly_read_long_request_is_not_told_hung(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """An agent that takes a 4 MiB request in 64 KiB steps every 0.1 s (6.4 s in all, six
    times SEND_STALL, here 1 s): each step taken restarts the count, and its answer stands."""
    monkeypatch.setattr(qga, "SEND_STALL", 1.0)
    monkeypatch.setattr(qga, "SEND_CHECK", 0.1)
    async with ReadingAgent(chunk=64 << 10, pause=0.1, stop_after=None) as agent:
        client = AgentClient(agent.path, vm_name="slow")
        await client.connect()
        try:
            started = time.monotonic()
            size = await client.execute("guest-exec", {"input-data": "A" * (4 << 20)},
                                        timeout=30)
            assert size == agent.read and time.monotonic() - started > 6.0
        finally:
            await client.close()


class ExecAgent:
    """guest-exec of a command that runs ``runs`` seconds, then its status; counts the
    sessions (connections) and the status requests."""

    def __init__(self, runs: float, *, forget: bool = False) -> None:
        self.runs = runs
        self.forget = forget  # (answers the status like a restarted qemu-ga)
        self.started: float | None = None
        self.statuses = 0

    async def __call__(self, request: dict[str, object], writer: asyncio.StreamWriter) -> None:
        name = request.get("execute")
        if name == "guest-exec":
            self.started = time.monotonic()
            body: dict[str, object] = {"return": {"pid": 4242}}
        elif name == "guest-exec-status":
            self.statuses += 1
            assert self.started is not None
            if self.forget:
                body = {"error": {"class": "GenericError",
                                  "desc": "Invalid parameter 'pid'"}}
            elif time.monotonic() - self.started < self.runs:
                body = {"return": {"exited": False}}
            else:
                body = {"return": {"exited": True, "exitcode": 0, "out-data": "ZG9uZQ=="}}
        else:
            body = {"return": {}}
        writer.write(json.dumps(dict(body, id=request.get("id"))).encode() + b"\n")
        await writer.drain()


async def test_a_released_exec_leaves_the_agent_to_others_between_looks() -> None:
    """qga.exec_released (a clipboard files copy: minutes) holds the agent only to start
    the command and for each look at it: another session gets in meanwhile, at once."""
    fake = ExecAgent(runs=2.0)
    async with FakeAgent(fake) as agent:
        long = asyncio.create_task(qga.exec_released(agent.path, ["/bin/true"],
                                                     vm_name="fake", timeout=10))
        await asyncio.sleep(0.7)
        started = time.monotonic()
        assert await run_command(agent, timeout=1.0) == {}  # another command, meanwhile
        assert time.monotonic() - started < 0.6  # (not after the long one)
        result = await long
    assert result.exitcode == 0 and result.stdout == b"done"
    assert 3 <= fake.statuses <= 12  # a look every 0.05 s growing to 0.5 s: not a busy loop


async def test_a_released_exec_times_out_and_says_a_restart() -> None:
    async with FakeAgent(ExecAgent(runs=60.0)) as agent:
        started = time.monotonic()
        with pytest.raises(Timeout, match=r"fake: guest command '/bin/true' still running "
                                          r"after 1s \(pid 4242 in the guest\)"):
            await qga.exec_released(agent.path, ["/bin/true"], vm_name="fake", timeout=1)
        assert time.monotonic() - started < 2.0
    async with FakeAgent(ExecAgent(runs=60.0, forget=True)) as agent:
        with pytest.raises(AgentRestarted, match="the guest agent restarted while guest "
                                                 "command '/bin/true' ran"):
            await qga.exec_released(agent.path, ["/bin/true"], vm_name="fake", timeout=5)
