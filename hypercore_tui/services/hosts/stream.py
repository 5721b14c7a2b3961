"""Another host's ``hypercore watch --json`` read through its SSH connection: the lines as
:class:`~hypercore_tui.core.watchwire.WatchLine`, and how the stream fares as
:class:`StreamStatus` (connecting, live, stalled, down), for a dashboard showing that host.

The writer sends a heartbeat after 1.5 s without a line, so silence longer than
``stall_after`` (4 s) means the stream stalled (a dead link, a host that froze): said at
once, well within 5 s. A stream silent for ``drop_after`` is given up and started again,
as is one that ended; a reader never waits on a host for longer than that. Lines that do
not read as stream lines are skipped (and counted): a remote shell's greeting, a broken
line, a newer writer's experiments.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from hypercore_tui.adapters import ssh
from hypercore_tui.core import watchwire
from hypercore_tui.core.errors import HypercoreError
from hypercore_tui.core.hosts import Host
from hypercore_tui.core.text import printable
from hypercore_tui.services.context import Context
from hypercore_tui.services.hosts import remote
from hypercore_tui.services.hosts.connection import HostConnection

log = logging.getLogger("hypercore.hosts.stream")
log.addHandler(logging.NullHandler())

#: Silence (seconds) after which a stream counts as stalled: heartbeats come every 1.5 s.
STALL_AFTER = 4.0
#: Silence after which a stalled stream is ended and started again.
DROP_AFTER = 15.0
#: Waits between attempts to connect again, the last repeated.
RETRY_DELAYS: tuple[float, ...] = (1.0, 2.0, 5.0, 10.0)
#: Seconds a stream's ssh may take to exit after the end of its output.
EXIT_WAIT = 5.0
_CHUNK = 65536


class StreamState(enum.StrEnum):
    CONNECTING = "connecting"
    LIVE = "live"
    STALLED = "stalled"
    DOWN = "down"


@dataclass(frozen=True)
class StreamStatus:
    host: str
    state: StreamState
    detail: str = ""
    #: time.monotonic() of the last line read (None: none yet on this connection)
    last_line: float | None = None


LineSink = Callable[[watchwire.WatchLine], None]
StatusSink = Callable[[StreamStatus], None]


class HostStream:
    """Follows one host's watch stream: lines to ``on_line``, status changes to
    ``on_status`` (both called on the event loop)."""

    def __init__(self, ctx: Context, host: Host, on_line: LineSink, on_status: StatusSink,
                 *, stall_after: float = STALL_AFTER, drop_after: float = DROP_AFTER,
                 retry_delays: Sequence[float] = RETRY_DELAYS,
                 args: Sequence[str] = ("watch", "--json")) -> None:
        self.ctx = ctx
        self.host = host
        self.on_line = on_line
        self.on_status = on_status
        self.stall_after = stall_after
        self.drop_after = drop_after
        self.retry_delays = tuple(retry_delays)
        self.args = tuple(args)
        self.garbage = 0  # lines skipped, on every connection
        self.lines = 0  # lines read, on every connection
        self.state: StreamState | None = None
        self.last_line: float | None = None

    async def run(self) -> None:
        """Follow the stream until cancelled, connecting again after each end."""
        failures = 0
        while True:
            lines_before = self.lines
            await self.run_once()
            failures = 0 if self.lines > lines_before else failures + 1
            delay = self.retry_delays[min(failures, len(self.retry_delays) - 1)]
            await asyncio.sleep(delay)

    async def run_once(self) -> None:
        """One connection: from connecting to its end (``DOWN`` said, with why)."""
        self.last_line = None
        self._set(StreamState.CONNECTING)
        try:
            proc = await self._start()
        except HypercoreError as exc:
            self._set(StreamState.DOWN, str(exc))
            return
        stderr = asyncio.create_task(_read_tail(proc.stderr))
        detail = ""
        try:
            detail = await self._read(proc)
            if not detail:  # the end of its output: ssh exits by itself (its code says why)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(proc.wait(), EXIT_WAIT)
        finally:
            # (Killed only when it did not end: Popen.kill() reaps a process that just
            # exited before asyncio's watcher sees it, which then reports 255 for it.)
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
            code = await proc.wait()
            # (a child of ssh's that outlived it could hold stderr open: not waited for)
            try:
                said = await asyncio.wait_for(stderr, 1.0)
            except TimeoutError:
                said = b""
        if not detail:
            master_alive = code == ssh.SSH_FAILED and await asyncio.to_thread(
                ssh.master_pid, HostConnection(self.ctx, self.host).target) is not None
            detail = _ended(self.host, code, said, master_alive=master_alive)
        self._set(StreamState.DOWN, detail)

    async def _start(self) -> asyncio.subprocess.Process:
        return await remote.start(self.ctx, self.host, self.args)

    async def _read(self, proc: asyncio.subprocess.Process) -> str:
        """Read lines until the stream ends (returns "") or is given up (returns why)."""
        assert proc.stdout is not None
        pending = b""
        skipping = False  # inside a line longer than MAX_LINE
        silent_since = time.monotonic()
        while True:
            wait = self.stall_after if self.state is not StreamState.STALLED else \
                max(0.1, silent_since + self.drop_after - time.monotonic())
            try:
                chunk = await asyncio.wait_for(proc.stdout.read(_CHUNK), wait)
            except TimeoutError:
                if self.state is StreamState.STALLED:
                    return (f"{self.host.name}: no line for {self.drop_after:.0f} s; "
                            "connecting again")
                self._set(StreamState.STALLED,
                          f"{self.host.name}: no line for {self.stall_after:.0f} s")
                continue
            if not chunk:
                return ""
            silent_since = time.monotonic()
            pending += chunk
            *complete, pending = pending.split(b"\n")
            for raw in complete:
                if skipping:
                    skipping = False
                    continue
                self._line(raw)
            if len(pending) > watchwire.MAX_LINE:
                self.garbage += 1
                pending, skipping = b"", True

    def _line(self, raw: bytes) -> None:
        self.last_line = time.monotonic()
        if self.state is not StreamState.LIVE:
            self._set(StreamState.LIVE)
        line = watchwire.decode(raw)
        if line is None:
            self.garbage += 1
            log.debug("%s: skipped a line that is no stream line: %r", self.host.name,
                      raw[:200])
            return
        self.lines += 1
        self.on_line(line)

    def _set(self, state: StreamState, detail: str = "") -> None:
        self.state = state
        self.on_status(StreamStatus(self.host.name, state, detail, self.last_line))


def _ended(host: Host, code: int, stderr: bytes, *, master_alive: bool) -> str:
    """Why a stream ended, in one line. ``ssh`` says 255 for a lost connection and for a
    remote command killed by a signal: a shared connection still up tells them apart."""
    lines = [line for line in stderr.decode(errors="replace").splitlines() if line.strip()]
    said = printable(lines[-1], limit=300) if lines else ""
    if code == ssh.SSH_FAILED:
        if master_alive:
            return f"{host.name}: the watch there ended by a signal"
        return f"{host.name}: the SSH connection to {host.destination} was lost" + \
            (f" ({said})" if said else "")
    if said:
        return f"{host.name}: {said.removeprefix('hypercore: error: ')}"
    return f"{host.name}: the stream ended (exit code {code})"


async def _read_tail(stream: asyncio.StreamReader | None, keep: int = 4096) -> bytes:
    """Read a pipe to its end; the last ``keep`` bytes."""
    tail = b""
    if stream is None:
        return tail
    while chunk := await stream.read(_CHUNK):
        tail = (tail + chunk)[-keep:]
    return tail
