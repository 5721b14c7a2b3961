"""The QMP session against deliberately misbehaving QMP servers (small servers of our own).

Every broken behaviour must end in a one-line HypercoreError within a few seconds:
no other exception, no hang.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hypercore_tui.adapters.qmp import qmp_session
from hypercore_tui.core.errors import HypercoreError

GREETING = (b'{"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}, '
            b'"package": ""}, "capabilities": []}}\r\n')

# A behaviour gets the reader/writer of one connection and does whatever it likes.
Behaviour = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def read_request(reader: asyncio.StreamReader) -> dict[str, object] | None:
    """One JSON request (qemu.qmp sends no newline after it, so decode as bytes arrive)."""
    buffer = ""
    while True:
        chunk = await reader.read(4096)
        if not chunk:
            return None
        buffer += chunk.decode()
        try:
            request, _end = json.JSONDecoder().raw_decode(buffer.lstrip())
        except ValueError:
            continue
        assert isinstance(request, dict)
        return request


def answer(request: dict[str, object], body: dict[str, object]) -> bytes:
    if "id" in request:
        body = {**body, "id": request["id"]}
    return json.dumps(body).encode() + b"\r\n"


async def handshake(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A valid greeting and an honest qmp_capabilities answer."""
    writer.write(GREETING)
    await writer.drain()
    request = await read_request(reader)
    assert request is not None and request.get("execute") == "qmp_capabilities"
    writer.write(answer(request, {"return": {}}))
    await writer.drain()


class FakeQmp:
    def __init__(self, behaviour: Behaviour) -> None:
        self.behaviour = behaviour
        self.dir = Path(tempfile.mkdtemp(prefix="hcqmp-", dir="/tmp"))
        self.path = self.dir / "qmp.sock"
        self.server: asyncio.AbstractServer | None = None

    async def __aenter__(self) -> FakeQmp:
        self.server = await asyncio.start_unix_server(self._handle, str(self.path))
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await self.behaviour(reader, writer)
            # Keep the connection open (silent) until the client goes away.
            while await reader.read(65536):
                pass
        except (ConnectionError, asyncio.CancelledError, ValueError, AssertionError):
            return
        finally:
            writer.close()


async def drive(behaviour: Behaviour, timeout: float = 1.0) -> BaseException | object:
    """Connect + execute query-status against a fake server; return the result or error."""
    async with FakeQmp(behaviour) as fake:
        try:
            async with qmp_session(fake.path, vm_name="fake", timeout=timeout,
                                   lock_timeout=timeout) as session:
                return await session.execute("query-status", timeout=timeout)
        except Exception as exc:  # noqa: BLE001 - classified by the caller
            return exc


def check_error(label: str, outcome: object, elapsed: float) -> None:
    assert isinstance(outcome, HypercoreError), f"{label}: {outcome!r}"
    message = str(outcome)
    assert message and "\n" not in message and "\r" not in message, f"{label}: {message!r}"
    assert elapsed < 5.0, f"{label}: took {elapsed:.1f}s"


# --- the scripted misbehaviours -------------------------------------------------------


async def no_greeting(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await asyncio.sleep(30)


def greeting_then(payload: bytes) -> Behaviour:
    async def behaviour(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(GREETING)
        writer.write(payload)
        await writer.drain()
    return behaviour


def garbage_instead_of_greeting(payload: bytes) -> Behaviour:
    async def behaviour(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(payload)
        await writer.drain()
    return behaviour


def after_handshake(payload: bytes | Callable[[dict[str, object]], bytes],
                    *, close: bool = False) -> Behaviour:
    async def behaviour(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await handshake(reader, writer)
        request = await read_request(reader)
        if request is None:
            return
        data = payload(request) if callable(payload) else payload
        writer.write(data)
        await writer.drain()
        if close:
            writer.close()
            await asyncio.sleep(0)
    return behaviour


def close_immediately() -> Behaviour:
    async def behaviour(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()
    return behaviour


NESTED = b"[" * 100_000 + b"]" * 100_000 + b"\r\n"
NESTED_OBJ = b'{"a":' * 50_000 + b"1" + b"}" * 50_000 + b"\r\n"
BIG_LINE = b'{"return": "' + b"x" * (20 << 20) + b'"}\r\n'

CASES: dict[str, Behaviour] = {
    "no greeting": no_greeting,
    "close at once": close_immediately(),
    "garbage greeting": garbage_instead_of_greeting(b"hello there\r\n"),
    "0xff greeting": garbage_instead_of_greeting(b"\xff" * 64 + b"\r\n"),
    "invalid utf-8 greeting": garbage_instead_of_greeting(b'{"QMP": "\xc3\x28"}\r\n'),
    "json list greeting": garbage_instead_of_greeting(b"[1, 2, 3]\r\n"),
    "greeting without QMP": garbage_instead_of_greeting(b'{"hello": {}}\r\n'),
    "nested json greeting": garbage_instead_of_greeting(NESTED),
    "20 MiB greeting": garbage_instead_of_greeting(BIG_LINE),
    "greeting, then garbage": greeting_then(b"garbage garbage\r\n"),
    "greeting, then 0xff": greeting_then(b"\xff\xff\xff\xff\r\n"),
    "greeting, then invalid utf-8": greeting_then(b'{"return": "\xed\xa0\x80"}\r\n'),
    "greeting, then 20 MiB line": greeting_then(BIG_LINE),
    "greeting, then nested json": greeting_then(NESTED),
    "greeting, no capabilities answer": greeting_then(b""),
    "garbage reply": after_handshake(b"not json at all\r\n"),
    "0xff reply": after_handshake(b"\xff" * 1000 + b"\r\n"),
    "invalid utf-8 reply": after_handshake(b'{"return": "\xff\xfe"}\r\n'),
    "20 MiB reply": after_handshake(BIG_LINE),
    "nested array reply": after_handshake(NESTED),
    "nested object reply": after_handshake(NESTED_OBJ),
    "wrong id": after_handshake(b'{"return": {}, "id": "nobody-asked"}\r\n'),
    "numeric id": after_handshake(b'{"return": {}, "id": 12345}\r\n'),
    "reply without id": after_handshake(b'{"return": {}}\r\n'),
    "never replies": after_handshake(b""),
    "closes instead of replying": after_handshake(b"", close=True),
    "half a reply then close": after_handshake(b'{"return": {"stat', close=True),
    "error without desc": after_handshake(
        lambda r: answer(r, {"error": {"class": "GenericError"}})),
    "error not an object": after_handshake(lambda r: answer(r, {"error": "boom\nline2"})),
    "return and error": after_handshake(
        lambda r: answer(r, {"return": {}, "error": {"class": "X", "desc": "y"}})),
    "neither return nor error": after_handshake(lambda r: answer(r, {"whatever": 1})),
    "multi-line error desc": after_handshake(
        lambda r: answer(r, {"error": {"class": "GenericError", "desc": "one\ntwo\rthree"}})),
}


@pytest.mark.parametrize("label", list(CASES))
def test_misbehaving_qmp_server(label: str) -> None:
    started = time.monotonic()
    outcome = asyncio.run(drive(CASES[label]))
    elapsed = time.monotonic() - started
    check_error(label, outcome, elapsed)
    print(f"qmp fault {label!r}: 1 case -> {type(outcome).__name__}: {outcome} "
          f"({elapsed:.2f}s)")


def test_qmp_fault_case_count() -> None:
    print(f"qmp scripted faults: {len(CASES)} cases")
    assert len(CASES) >= 30


_tried = 0


@settings(max_examples=50, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(reply=st.binary(max_size=4096), close=st.booleans())
def test_arbitrary_reply_bytes(reply: bytes, close: bool) -> None:
    """Any bytes after a valid handshake: a result (it parsed) or a one-line HypercoreError."""
    global _tried
    _tried += 1
    started = time.monotonic()
    outcome = asyncio.run(drive(after_handshake(reply, close=close), timeout=0.3))
    elapsed = time.monotonic() - started
    if not isinstance(outcome, BaseException):
        # Only a well-formed answer to our request can produce a value.
        assert elapsed < 5.0
        return
    check_error(f"reply {reply[:60]!r}", outcome, elapsed)


def test_zz_report_hypothesis_count() -> None:
    print(f"qmp fuzz: {_tried} cases")
    assert _tried >= 1
