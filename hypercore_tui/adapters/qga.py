"""A small asyncio client for the QEMU guest agent (qemu-ga).

Why not ``qemu.qmp``: qemu-ga sends no greeting, answers some input with an
error that carries no id and may send a bare 0xFF byte; qemu.qmp tears the
session down on both (DESIGN.md §4). This client:

* syncs with ``guest-sync-delimited`` and a random id before the first command
  and after any timeout or garbled reply (stale replies are skipped),
* keeps one command in flight, each with its own timeout (sending included), and reads
  replies while a long request is still being sent (a qemu-ga restarted mid-request
  answers its tail with id-less errors; unread, they would stall the agent and the send),
* notices a qemu-ga restarted mid-command without waiting for that timeout: a
  command unanswered after ``PROBE_AFTER`` seconds is followed by a ``guest-ping``
  every ``PROBE_EVERY`` seconds; qemu-ga answers in order, so a ping answered first
  (or a reply line cut off by the restart) means the command's answer is lost,
* accepts very long reply lines (file reads return up to 64 MiB of base64),
* serialises clients across processes with a lock file beside the socket,
  because QEMU's chardev serves one client at a time.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import enum
import json
import logging
import secrets
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hypercore_tui.adapters.fs import FileLock, acquire_async
from hypercore_tui.core.errors import (
    AgentCommandUnsupported,
    AgentUnavailable,
    Busy,
    NoSpace,
    OperationFailed,
    ProtocolError,
    Timeout,
    says_no_space,
)
from hypercore_tui.core.layout import socket_lock
from hypercore_tui.core.text import printable

log = logging.getLogger("hypercore.qga")
log.addHandler(logging.NullHandler())

#: Longest reply line accepted: guest-file-read of 48 MiB is 64 MiB of base64.
MAX_LINE = 80 * 1024 * 1024
#: Bytes skipped while looking for the sync delimiter before giving up.
MAX_SYNC_GARBAGE = 4 * 1024 * 1024
DELIMITER = b"\xff"
#: guest-exec-status polling: the first delay, its growth per poll, the longest delay.
EXEC_POLL_FIRST = 0.001
EXEC_POLL_GROWTH = 1.2
EXEC_POLL_MAX = 0.05
#: guest-exec itself answers at once (the command runs on): the time allowed, plus
#: this much per MiB of stdin (input-data crosses the virtio-serial port first).
EXEC_START_TIMEOUT = 10.0
EXEC_START_PER_MIB = 4.0
#: A command still unfinished after this many seconds is looked at (see ExecPending).
EXEC_SLOW_AFTER = 5.0
#: A command unanswered this long is followed by liveness pings (see the docstring).
PROBE_AFTER = 2.0
PROBE_EVERY = 2.0
#: A request this long is read by qemu-ga over time (more than the port's buffers hold).
LONG_REQUEST = 64 * 1024
#: A request whose sending takes nothing more for this long: qemu-ga stopped reading
#: (hung: stopped, or deadlocked, as qemu-ga 7.2 can be by a SIGTERM that arrives while
#: it reads). It reads a 6 MiB request in about a second under TCG.
SEND_STALL = 10.0
#: How often the sending of a request is looked at.
SEND_CHECK = 1.0


_SKIP = object()


class AgentState(enum.Enum):
    IDLE = "idle"
    CONNECTED = "connected"  # socket open, not (or no longer) in sync
    READY = "ready"  # synced: the next line read is the reply to the next command
    CLOSED = "closed"


class AgentCommandError(OperationFailed):
    """qemu-ga answered with an error."""

    def __init__(self, command: str, error_class: str, desc: str, *,
                 vm_name: str | None = None) -> None:
        where = f"{vm_name}: " if vm_name else ""
        super().__init__(f"{where}guest agent refused {command}: {desc}")
        self.command = command
        self.error_class = error_class
        self.desc = desc


class AgentNoSpace(AgentCommandError, NoSpace):
    """qemu-ga's write failed for want of space in the guest (``ENOSPC``)."""


class AgentRestarted(AgentUnavailable):
    """qemu-ga answered a later ping before the command: the agent that got it is gone."""


class AgentStalled(AgentUnavailable):
    """qemu-ga stopped reading a request half-way: it is hung (the connection is closed)."""


@dataclass(frozen=True)
class ExecResult:
    exitcode: int | None
    signal: int | None
    stdout: bytes
    stderr: bytes
    stdout_truncated: bool = False
    stderr_truncated: bool = False

    @property
    def shell_status(self) -> int:
        """The status a shell would report: the exit code, or 128 + signal."""
        if self.signal is not None:
            return 128 + self.signal
        return self.exitcode if self.exitcode is not None else 1


@dataclass(frozen=True)
class ExecPending:
    """A guest command still unfinished ``seconds`` after it started.

    qemu-ga reports ``exited`` only once the command has ended *and* its output pipes are
    closed, so a process it started that keeps them open (xclip and wl-copy fork one to
    own the selection) holds the answer back until it ends too. qemu-ga does not say
    which case it is; the command's own ``/proc`` entry does (qemu-ga reaps it at once).
    """

    pid: int
    seconds: float
    #: True: the command has ended and something it started holds its output open;
    #: None: the guest cannot say (no /proc, guest-file-open disabled). A command that
    #: runs on itself is not reported.
    command_ended: bool | None


class _SendWatch:
    """Whether a request being sent is still taken in: the bytes left in the transport's
    buffer must shrink at least every ``SEND_STALL`` seconds."""

    def __init__(self, client: AgentClient, size: int, now: float) -> None:
        self.client = client
        self.size = size
        self.left = size
        self.since = now

    async def check(self, command: str) -> None:
        client = self.client
        assert client._writer is not None
        now = asyncio.get_running_loop().time()
        left = client._writer.transport.get_write_buffer_size()
        if left < self.left:
            self.left, self.since = left, now
            return
        if now - self.since < SEND_STALL:
            return
        client._writer.transport.abort()  # (the rest of the request must never follow)
        await client.close()
        sent = (self.size - left) / (1 << 20)
        raise AgentStalled(
            f"{client.vm_name}: the guest agent stopped reading the {command} request "
            f"({sent:.1f} of {self.size / (1 << 20):.1f} MiB taken, nothing more for "
            f"{SEND_STALL:g}s; qemu-ga hung?); nothing was done"
        )


class AgentClient:
    """One connection to one qemu-ga socket."""

    def __init__(self, socket_path: Path, *, vm_name: str = "?", max_line: int = MAX_LINE) -> None:
        self.socket_path = socket_path
        self.vm_name = vm_name
        self.max_line = max_line
        self.state = AgentState.IDLE
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._inflight = asyncio.Lock()
        self._lock = FileLock(socket_lock(socket_path), "agent session")
        self._next_id = secrets.randbelow(1 << 30)
        self.log = log.getChild(vm_name)

    # -- connection -----------------------------------------------------------------

    async def connect(self, *, timeout: float = 5.0, lock_timeout: float = 10.0) -> None:
        if self.state is not AgentState.IDLE:
            raise ProtocolError(f"{self.vm_name}: agent client is {self.state.value}, not idle")
        if not self.socket_path.exists():
            raise AgentUnavailable(
                f"{self.vm_name}: guest agent socket is missing (VM not running?)"
            )
        if not await acquire_async(self._lock, lock_timeout):
            raise Busy(f"{self.vm_name}: guest agent is in use by another hypercore process")
        try:
            self._reader, self._writer = await asyncio.wait_for(
                asyncio.open_unix_connection(str(self.socket_path), limit=self.max_line), timeout
            )
        except (TimeoutError, OSError) as exc:
            self._lock.release()
            self.state = AgentState.CLOSED
            raise AgentUnavailable(
                f"{self.vm_name}: cannot connect to the guest agent socket: {exc or 'timeout'}"
            ) from None
        except BaseException:  # cancelled: the lock must not stay held
            self._lock.release()
            self.state = AgentState.CLOSED
            raise
        self.state = AgentState.CONNECTED

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._writer.wait_closed(), 1)
        self._reader = self._writer = None
        self.state = AgentState.CLOSED
        self._lock.release()

    async def __aenter__(self) -> AgentClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- wire -----------------------------------------------------------------------

    async def _send(self, message: Mapping[str, Any], *, prefix: bytes = b"") -> None:
        await self._send_data(prefix + json.dumps(message, separators=(",", ":")).encode()
                              + b"\n")

    async def _send_data(self, data: bytes) -> None:
        assert self._writer is not None
        try:
            self._writer.write(data)
            await self._writer.drain()
        except (OSError, RuntimeError) as exc:
            await self._broken(f"connection lost while sending: {exc}")

    async def _broken(self, why: str) -> None:
        await self.close()
        raise AgentUnavailable(f"{self.vm_name}: guest agent {why}")

    async def _read_line(self) -> bytes:
        assert self._reader is not None
        try:
            line = await self._reader.readuntil(b"\n")
        except asyncio.IncompleteReadError:
            await self._broken("closed the connection")
        except asyncio.LimitOverrunError:
            await self.close()
            raise ProtocolError(f"{self.vm_name}: guest agent sent a reply line over "
                                f"{self.max_line} bytes") from None
        except OSError as exc:
            await self._broken(f"connection failed: {exc}")
        return line.strip().lstrip(DELIMITER).strip()

    @staticmethod
    def _parse(line: bytes) -> dict[str, Any] | None:
        try:
            obj = json.loads(line)
        except (ValueError, RecursionError):
            return None
        return obj if isinstance(obj, dict) else None

    # -- sync -----------------------------------------------------------------------

    async def sync(self, *, timeout: float = 5.0) -> None:
        """Bring the stream into step: everything before our delimiter is dropped."""
        async with self._inflight:
            await self._sync(timeout)

    async def _sync(self, timeout: float) -> None:
        if self.state is AgentState.IDLE:
            await self.connect(timeout=timeout)
        if self.state is AgentState.CLOSED:
            raise AgentUnavailable(f"{self.vm_name}: agent connection is closed")
        sync_id = secrets.randbelow(1 << 31)
        try:
            await asyncio.wait_for(self._sync_exchange(sync_id), timeout)
        except TimeoutError:
            self.state = AgentState.CONNECTED
            raise AgentUnavailable(
                f"{self.vm_name}: guest agent not answering (no sync within {timeout:g}s); "
                "is qemu-ga running in the guest?"
            ) from None
        self.state = AgentState.READY

    async def _sync_exchange(self, sync_id: int) -> None:
        assert self._reader is not None
        # 0xFF first: qemu-ga resets its parser on an invalid byte.
        await self._send({"execute": "guest-sync-delimited", "arguments": {"id": sync_id}},
                         prefix=DELIMITER)
        skipped = 0
        while True:
            try:
                chunk = await self._reader.readuntil(DELIMITER)
            except asyncio.LimitOverrunError as exc:
                await self._reader.readexactly(exc.consumed)
                skipped += exc.consumed
            except asyncio.IncompleteReadError:
                await self._broken("closed the connection during sync")
            except OSError as exc:  # reset by a QEMU that died meanwhile
                await self._broken(f"connection failed during sync: {exc}")
            else:
                skipped += len(chunk)
                if len(chunk) > len(DELIMITER):  # late replies of timed-out commands...
                    self.log.debug("sync skipped stale agent output: %.300r", chunk)
                if await self._lines_until_id(sync_id):
                    return
            if skipped > MAX_SYNC_GARBAGE:
                await self.close()
                raise ProtocolError(f"{self.vm_name}: guest agent sent over "
                                    f"{MAX_SYNC_GARBAGE} bytes without a sync delimiter")

    async def _lines_until_id(self, sync_id: int) -> bool:
        """After a delimiter: read lines until ``{"return": sync_id}``; False on a stray 0xFF."""
        while True:
            line = await self._read_line()
            if not line:
                continue
            obj = self._parse(line)
            if obj is not None and obj.get("return") == sync_id:
                return True
            self.log.debug("skipping stale agent line: %.200r", line)
            if DELIMITER in line:
                return False

    # -- commands -------------------------------------------------------------------

    def _new_id(self, kind: str = "hc") -> str:
        self._next_id = (self._next_id + 1) % (1 << 31)
        return f"{kind}-{self._next_id}"

    async def execute(self, command: str, arguments: Mapping[str, Any] | None = None, *,
                      timeout: float = 10.0, sync_timeout: float = 5.0,
                      probe: bool = True) -> Any:
        """Run one agent command and return its ``return`` value.

        ``timeout`` covers sending the command and its reply. ``probe``: ping the agent
        while waiting, to notice a restart early (off for commands that never answer).
        """
        async with self._inflight:
            if self.state is not AgentState.READY:
                await self._sync(sync_timeout)
            msg_id = self._new_id()
            message: dict[str, Any] = {"execute": command, "id": msg_id}
            if arguments:
                message["arguments"] = dict(arguments)
            try:
                async with asyncio.timeout(timeout):
                    return await self._exchange(command, message, msg_id, probe=probe)
            except TimeoutError:
                self.state = AgentState.CONNECTED  # a late reply may still come: re-sync
                raise Timeout(
                    f"{self.vm_name}: guest agent did not answer {command} within {timeout:g}s"
                ) from None

    async def _exchange(self, command: str, message: Mapping[str, Any], msg_id: str, *,
                        probe: bool) -> Any:
        """Send ``message`` and return its reply's value. Lines are read while a long
        request is still being sent: a qemu-ga restarted in the middle of reading it
        answers the rest with parse errors, and if nobody read them it would stop reading
        once its output filled up, and the send would never finish."""
        loop = asyncio.get_running_loop()
        data = json.dumps(message, separators=(",", ":")).encode() + b"\n"
        long_request = len(data) > LONG_REQUEST
        sending: asyncio.Future[None] | None = asyncio.ensure_future(self._send_data(data))
        next_probe: float | None = None
        probes: set[str] = set()
        stall = _SendWatch(self, len(data), loop.time())
        read: asyncio.Future[bytes] = asyncio.ensure_future(self._read_line())
        try:
            while True:
                if sending is not None and sending.done():
                    sending.result()  # (raises if the connection broke while sending)
                    sending = None
                    next_probe = loop.time() + PROBE_AFTER if probe else None
                waiting: set[asyncio.Future[Any]] = {read}
                wait = None
                if sending is not None:
                    waiting.add(sending)
                    wait = SEND_CHECK
                elif next_probe is not None:
                    wait = max(0.0, next_probe - loop.time())
                done, _ = await asyncio.wait(waiting, timeout=wait,
                                             return_when=asyncio.FIRST_COMPLETED)
                if sending is not None and not sending.done():
                    await stall.check(command)  # (raises once qemu-ga stopped taking it)
                if not done and sending is None:  # no answer: is the agent still alive?
                    probe_id = self._new_id("hc-probe")
                    probes.add(probe_id)
                    await self._send({"execute": "guest-ping", "id": probe_id})
                    next_probe = loop.time() + PROBE_EVERY
                    continue
                if read not in done:
                    continue
                line = read.result()
                if line:
                    result = self._reply_line(command, msg_id, line, probes,
                                              long_request=long_request)
                    if result is not _SKIP:
                        return result
                read = asyncio.ensure_future(self._read_line())
        finally:
            for task in (read, sending):
                if task is None:
                    continue
                if not task.done():
                    task.cancel()
                    if self.state is not AgentState.CLOSED:
                        self.state = AgentState.CONNECTED  # (a request cut short: re-sync)
                with contextlib.suppress(BaseException):
                    await task  # (one that failed meanwhile: its error is retrieved here)

    def _reply_line(self, command: str, msg_id: str, line: bytes, probes: set[str], *,
                    long_request: bool = False) -> Any:
        """The ``return`` of our reply, ``_SKIP`` for a line that is not ours, or raise."""
        obj = self._parse(line)
        if obj is None:
            self.state = AgentState.CONNECTED
            if probes:  # a restarted agent cut its reply short; the ping's answer follows
                raise AgentRestarted(f"{self.vm_name}: the guest agent restarted while "
                                     f"answering {command} (its reply was cut off)")
            raise ProtocolError(f"{self.vm_name}: guest agent sent a malformed reply to "
                                f"{command}")
        reply_id = obj.get("id")
        if reply_id is None and "error" in obj and long_request:
            # An error without an id after a long request, which qemu-ga reads over time:
            # the agent parsed the tail of it without its start (it restarted while
            # reading). (After a short one, such a line is stale and skipped below.)
            self.state = AgentState.CONNECTED
            err = obj["error"] if isinstance(obj["error"], dict) else {}
            desc = printable(err.get("desc", "unknown error"), limit=120)
            raise AgentRestarted(f"{self.vm_name}: the guest agent could not read the "
                                 f"{command} request ({desc}; qemu-ga restarted while "
                                 "reading it?)")
        if reply_id != msg_id:
            if isinstance(reply_id, str) and reply_id in probes:
                # qemu-ga answers in order: a later ping answered first means the agent
                # that received the command is gone (restarted) and took its answer along.
                self.state = AgentState.CONNECTED
                raise AgentRestarted(f"{self.vm_name}: the guest agent lost the {command} "
                                     "command (qemu-ga restarted while running it?)")
            self.log.debug("skipping agent reply for another id: %.200r", line)
            return _SKIP
        if "error" in obj:
            err = obj["error"] if isinstance(obj["error"], dict) else {}
            cls = printable(err.get("class", "GenericError"), limit=60)
            desc = printable(err.get("desc", "unknown error"))
            if cls == "CommandNotFound" or "has been disabled" in desc:
                raise AgentCommandUnsupported(
                    f"{self.vm_name}: the guest agent does not allow {command} ({desc}); "
                    "enable it in the guest's qemu-ga configuration (remove it from "
                    "block-rpcs / --block-rpcs, or add it to allow-rpcs)"
                )
            if says_no_space(desc):
                raise AgentNoSpace(command, cls, desc, vm_name=self.vm_name)
            raise AgentCommandError(command, cls, desc, vm_name=self.vm_name)
        if "return" not in obj:
            self.state = AgentState.CONNECTED
            raise ProtocolError(f"{self.vm_name}: guest agent reply to {command} has no "
                                "return value")
        return obj["return"]

    async def execute_no_reply(self, command: str, arguments: Mapping[str, Any] | None = None,
                               *, grace: float = 1.0) -> None:
        """For commands that send no reply on success (guest-shutdown): an error still raises.

        Silence for ``grace`` seconds, or the connection closing (the guest went
        down), counts as success.
        """
        if self.state is not AgentState.READY:
            await self.sync()
        try:
            await self.execute(command, arguments, timeout=grace, probe=False)
        except Timeout:
            return
        except AgentUnavailable:
            if self.state is AgentState.CLOSED:
                return
            raise

    # -- helpers --------------------------------------------------------------------

    async def ping(self, *, timeout: float = 2.0) -> None:
        await self.execute("guest-ping", timeout=timeout, sync_timeout=timeout)

    async def supported_commands(self) -> dict[str, bool]:
        info = await self.execute("guest-info")
        return {
            str(c.get("name")): bool(c.get("enabled", True))
            for c in info.get("supported_commands", [])
            if isinstance(c, dict)
        }

    async def exec(self, argv: Sequence[str], *, stdin: bytes | None = None,
                   env: Sequence[str] | None = None, capture: bool = True,
                   timeout: float | None = 300.0,
                   on_slow: Callable[[ExecPending], None] | None = None,
                   slow_after: float = EXEC_SLOW_AFTER) -> ExecResult:
        """Run ``argv`` in the guest (no shell involved) and wait for it to end.

        ``on_slow`` is called at most once, when the captured output is still held open
        ``slow_after`` seconds after the start by a process the command started (or when
        the guest cannot tell); a command that itself runs on is looked at again every
        ``slow_after`` seconds.
        """
        pid = await self.exec_start(argv, stdin=stdin, env=env, capture=capture)
        began = time.monotonic()
        deadline = None if timeout is None else began + timeout
        look_at = began + slow_after if on_slow is not None and capture else None
        command_ended: bool | None = False
        delay = EXEC_POLL_FIRST
        while True:
            result = await self.exec_status(pid, argv[0])
            if result is not None:
                return result
            if look_at is not None and on_slow is not None and time.monotonic() >= look_at:
                command_ended = await self._process_ended(pid)
                if command_ended is False:
                    look_at = time.monotonic() + slow_after
                else:
                    look_at = None
                    on_slow(ExecPending(pid, time.monotonic() - began, command_ended))
            if deadline is not None and time.monotonic() + delay > deadline:
                if capture and command_ended is not True:  # say why, scripts included
                    with contextlib.suppress(OperationFailed):
                        command_ended = await self._process_ended(pid)
                held = ("; it has ended, but a process it started still holds its output "
                        "open" if command_ended else "")
                raise Timeout(f"{self.vm_name}: guest command {argv[0]!r} still running after "
                              f"{timeout:g}s (pid {pid} in the guest){held}")
            await asyncio.sleep(delay)
            delay = min(delay * EXEC_POLL_GROWTH, EXEC_POLL_MAX)

    async def exec_start(self, argv: Sequence[str], *, stdin: bytes | None = None,
                         env: Sequence[str] | None = None, capture: bool = True) -> int:
        """Start ``argv`` in the guest (guest-exec); its pid there."""
        if not argv:
            raise ValueError("empty argv")
        args: dict[str, Any] = {"path": argv[0], "arg": list(argv[1:]), "capture-output": capture}
        if stdin is not None:
            args["input-data"] = base64.b64encode(stdin).decode("ascii")
        if env is not None:
            args["env"] = list(env)
        start_timeout = EXEC_START_TIMEOUT + EXEC_START_PER_MIB * len(stdin or b"") / (1 << 20)
        started = await self.execute("guest-exec", args, timeout=start_timeout)
        return int(started["pid"])

    async def exec_status(self, pid: int, program: str) -> ExecResult | None:
        """The result of the guest command ``pid`` (``program``: for messages) once it has
        exited, else None (asked once: guest-exec-status)."""
        try:
            status = await self.execute("guest-exec-status", {"pid": pid})
        except (AgentCommandError, AgentRestarted) as exc:
            # qemu-ga forgets its processes when it restarts ("Invalid parameter 'pid'"),
            # or the restart took the status request along.
            why = exc.desc if isinstance(exc, AgentCommandError) else "status request lost"
            raise AgentRestarted(
                f"{self.vm_name}: the guest agent restarted while guest command "
                f"{printable(program, limit=100)!r} ran (pid {pid}; {why}); its exit "
                "status and output are lost"
            ) from None
        if not status.get("exited"):
            return None
        return ExecResult(
            exitcode=status.get("exitcode"),
            signal=status.get("signal"),
            stdout=base64.b64decode(status.get("out-data", "")),
            stderr=base64.b64decode(status.get("err-data", "")),
            stdout_truncated=bool(status.get("out-truncated", False)),
            stderr_truncated=bool(status.get("err-truncated", False)),
        )

    async def _process_ended(self, pid: int) -> bool | None:
        """Whether guest process ``pid`` has ended: its ``/proc`` entry is gone while
        ``/proc`` itself is there. None when the guest cannot say."""
        for path, ended in ((f"/proc/{pid}/stat", False), ("/proc/self/stat", True)):
            try:
                handle = await self.execute("guest-file-open", {"path": path, "mode": "r"})
            except (AgentCommandError, AgentCommandUnsupported):
                continue
            with contextlib.suppress(AgentCommandError):
                await self.execute("guest-file-close", {"handle": handle})
            return ended
        return None


#: exec_released: the longest wait between two looks at the command (a new session each).
RELEASED_POLL_MAX = 0.5


async def exec_released(socket_path: Path, argv: Sequence[str], *, vm_name: str,
                        stdin: bytes | None = None, env: Sequence[str] | None = None,
                        timeout: float, session_timeout: float = 5.0,
                        lock_timeout: float = 10.0) -> ExecResult:
    """Run a long guest command without holding the agent: it is started in one session,
    and each look at it (guest-exec-status) is a new short session, so other commands (an
    exec, a cp, the dashboard's probes) use the agent in between; qemu-ga keeps the
    command's status for whoever asks. :class:`Timeout` after ``timeout`` seconds (the
    command is left running in the guest, as :meth:`AgentClient.exec` leaves it)."""
    async with agent_session(socket_path, vm_name=vm_name, timeout=session_timeout,
                             lock_timeout=lock_timeout) as agent:
        pid = await agent.exec_start(argv, stdin=stdin, env=env)
        result = await agent.exec_status(pid, argv[0])
    deadline = time.monotonic() + timeout
    delay = EXEC_POLL_MAX
    while result is None:
        if time.monotonic() + delay > deadline:
            raise Timeout(f"{vm_name}: guest command {argv[0]!r} still running after "
                          f"{timeout:g}s (pid {pid} in the guest)")
        await asyncio.sleep(delay)
        delay = min(delay * 2, RELEASED_POLL_MAX)
        async with agent_session(socket_path, vm_name=vm_name, timeout=session_timeout,
                                 lock_timeout=lock_timeout) as agent:
            result = await agent.exec_status(pid, argv[0])
    return result


@contextlib.asynccontextmanager
async def agent_session(socket_path: Path, *, vm_name: str, timeout: float = 5.0,
                        lock_timeout: float = 10.0) -> AsyncIterator[AgentClient]:
    """A connected and synced agent client, closed afterwards."""
    client = AgentClient(socket_path, vm_name=vm_name)
    await client.connect(timeout=timeout, lock_timeout=lock_timeout)
    try:
        await client.sync(timeout=timeout)
        yield client
    finally:
        await client.close()
