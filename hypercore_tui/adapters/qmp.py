"""QMP sessions with QEMU, over ``qemu.qmp``.

The facts that bite (DESIGN.md §4): ``execute()`` has no timeout, so every call
is wrapped in ``asyncio.wait_for``; the default event listener keeps every event
forever, so it is removed and events go to a bounded queue; ``disconnect()``
after ``quit`` raises EOFError. A QEMU monitor socket serves one client at a
time, so sessions take the socket's lock file first and never wait forever.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qemu.qmp import ConnectError, EventListener, ExecuteError, Message, QMPClient, QMPError
from qemu.qmp.qmp_client import GreetingError, NegotiationError

from hypercore_tui.adapters.fs import FileLock, acquire_async
from hypercore_tui.core.errors import Busy, InvalidState, OperationFailed, Timeout
from hypercore_tui.core.layout import socket_lock

log = logging.getLogger("hypercore.qmp")
log.addHandler(logging.NullHandler())

DEFAULT_TIMEOUT = 10.0
#: A session whose greeting or capabilities negotiation failed (the connection was made)
#: is tried this many times in all, this many seconds apart, within the caller's timeout.
NEGOTIATION_ATTEMPTS = 3
NEGOTIATION_RETRY = 0.1
EVENT_QUEUE_MAX = 1000


@dataclass(frozen=True)
class QmpEvent:
    name: str
    data: Mapping[str, Any]
    timestamp: float


def _one_line(value: object, limit: int = 300) -> str:
    """Library and QEMU texts can span lines (qemu.qmp appends the raw bytes it could not
    parse): keep the first non-empty line, bounded, so messages stay one line."""
    text = str(value)
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    return first if len(first) <= limit else first[:limit] + "..."


def _reject_all(_event: Message) -> bool:
    return False


class _BoundedListener(EventListener):
    """An EventListener that keeps no history and at most EVENT_QUEUE_MAX pending events."""

    async def put(self, event: Message) -> None:
        if not self.accept(event):
            return
        queue = self._queue
        while queue.qsize() >= EVENT_QUEUE_MAX:
            queue.get_nowait()
        queue.put_nowait(event)


class _QuietQMPClient(QMPClient):
    """qemu.qmp renders every message as JSON text for a debug log line even when debug
    logging is off: a long-lived watcher polling many VMs spent most of its time there."""

    def _cb_outbound(self, msg: Message) -> Message:
        if self.logger.isEnabledFor(logging.DEBUG):
            self.logger.debug("--> %s", str(msg))
        return msg

    def _cb_inbound(self, msg: Message) -> Message:
        if self.logger.isEnabledFor(logging.DEBUG):
            self.logger.debug("<-- %s", str(msg))
        return msg


class QmpCommandError(OperationFailed):
    """QEMU answered a command with an error."""

    def __init__(self, command: str, error_class: str, desc: str) -> None:
        super().__init__(f"QEMU refused {command}: {_one_line(desc)}")
        self.command = command
        self.error_class = error_class
        self.desc = desc


class QmpSession:
    """One connection to one QEMU monitor socket (IDLE → CONNECTED → CLOSED)."""

    def __init__(self, socket_path: Path, *, vm_name: str = "?") -> None:
        self.socket_path = socket_path
        self.vm_name = vm_name
        self._client = _QuietQMPClient(f"hypercore.vm.{vm_name}")
        self._lock = FileLock(socket_lock(socket_path), "qmp session")
        self._events: asyncio.Queue[QmpEvent] = asyncio.Queue(EVENT_QUEUE_MAX)
        self._listener: _BoundedListener | None = None
        self._pump: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def connected(self) -> bool:
        return self._client.runstate.name == "RUNNING"

    async def connect(self, *, timeout: float = 5.0, lock_timeout: float = 5.0,
                      events: bool = False) -> None:
        if not self.socket_path.exists():
            raise InvalidState(
                f"{self.vm_name}: QEMU monitor socket is missing (VM not running?)"
            )
        acquired = await acquire_async(self._lock, lock_timeout)
        if not acquired:
            raise Busy(f"{self.vm_name}: QEMU monitor is in use by another hypercore process")
        self._prepare_client(events=events)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        attempt = 1
        while True:
            try:
                await asyncio.wait_for(self._client.connect(str(self.socket_path)),
                                       max(0.1, deadline - loop.time()))
                break
            except TimeoutError:
                await self._abort()
                raise Timeout(
                    f"{self.vm_name}: QEMU monitor did not answer within {timeout:g}s"
                ) from None
            except ConnectError as exc:
                if (attempt < NEGOTIATION_ATTEMPTS and _session_not_established(exc)
                        and deadline - loop.time() > NEGOTIATION_RETRY):
                    # A greeting or capabilities reply that was not one (seen on loaded
                    # machines right after another session on this socket ended, e.g. a
                    # reply meant for that session): a new connection gets a clean one.
                    log.info("%s: QEMU monitor session not established (%s); connecting "
                             "again", self.vm_name, _one_line(exc))
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(self._client.disconnect(), 2)
                    self._client = _QuietQMPClient(f"hypercore.vm.{self.vm_name}")
                    self._prepare_client(events=events)
                    attempt += 1
                    await asyncio.sleep(NEGOTIATION_RETRY)
                    continue
                await self._abort()
                raise OperationFailed(
                    f"{self.vm_name}: cannot connect to QEMU monitor: {_one_line(exc)}"
                ) from None
            except (OSError, QMPError) as exc:
                await self._abort()
                raise OperationFailed(
                    f"{self.vm_name}: cannot connect to QEMU monitor: {_one_line(exc)}"
                ) from None
            except BaseException:
                await self._abort()
                raise
        if self._listener is not None:
            self._pump = asyncio.create_task(self._pump_events(self._listener))

    def _prepare_client(self, *, events: bool) -> None:
        # The default listener cannot be removed and keeps every event it accepts
        # forever: make it accept nothing. Events go through a bounded listener.
        self._client.events.event_filter = _reject_all
        if events:
            self._listener = _BoundedListener()
            self._client.register_listener(self._listener)

    async def _pump_events(self, listener: EventListener) -> None:
        async for message in listener:
            ts = message.get("timestamp")
            data = message.get("data")
            seconds = micros = 0.0
            if isinstance(ts, dict):
                seconds = float(ts.get("seconds", 0))
                micros = float(ts.get("microseconds", 0))
            event = QmpEvent(
                name=str(message.get("event", "")),
                data=dict(data) if isinstance(data, dict) else {},
                timestamp=seconds + micros / 1e6,
            )
            if self._events.full():  # keep the newest: drop the oldest
                self._events.get_nowait()
            self._events.put_nowait(event)

    async def events(self) -> AsyncIterator[QmpEvent]:
        """Events as they arrive (only for sessions connected with ``events=True``)."""
        while True:
            yield await self._events.get()

    def pending_events(self) -> list[QmpEvent]:
        out = []
        while not self._events.empty():
            out.append(self._events.get_nowait())
        return out

    async def execute(self, command: str, arguments: Mapping[str, Any] | None = None, *,
                      timeout: float = DEFAULT_TIMEOUT) -> Any:
        if not self.connected:
            raise OperationFailed(f"{self.vm_name}: not connected to QEMU monitor")
        try:
            return await asyncio.wait_for(self._client.execute(command, arguments), timeout)
        except TimeoutError:
            raise Timeout(
                f"{self.vm_name}: QEMU did not answer {command} within {timeout:g}s"
            ) from None
        except ExecuteError as exc:
            raise QmpCommandError(command, exc.error_class, exc.error.error.desc) from None
        except (QMPError, EOFError, OSError) as exc:
            raise OperationFailed(
                f"{self.vm_name}: QEMU monitor connection lost during {command}: "
                f"{_one_line(exc) or 'EOF'}"
            ) from None

    async def _abort(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._client.disconnect(), 2)
        self._lock.release()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._pump is not None:
            self._pump.cancel()
            with contextlib.suppress(BaseException):
                await self._pump
        # After `quit` disconnect() raises EOFError; nothing to report then.
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._client.disconnect(), 2)
        self._lock.release()

    async def __aenter__(self) -> QmpSession:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


@contextlib.asynccontextmanager
async def qmp_session(socket_path: Path, *, vm_name: str, timeout: float = 5.0,
                      lock_timeout: float = 5.0, events: bool = False
                      ) -> AsyncIterator[QmpSession]:
    session = QmpSession(socket_path, vm_name=vm_name)
    await session.connect(timeout=timeout, lock_timeout=lock_timeout, events=events)
    try:
        yield session
    finally:
        await session.close()


def _session_not_established(exc: ConnectError) -> bool:
    """The socket connected but no QMP session came of it: the greeting or the
    capabilities reply was missing (EOF) or not what QMP says (not an OSError of the
    connect itself, such as a missing socket or a refused connection)."""
    return isinstance(exc.exc, GreetingError | NegotiationError | EOFError)
