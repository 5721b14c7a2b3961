"""Another host's clipboards in this sync (``clip sync --link HOST``): one
:class:`RemotePeer` per linked host, beside the VMs and the host's own boards.

It runs ``hypercore clip link --from NAME`` there over the host's shared SSH connection
(:func:`remote.start`, arguments as argv) and moves entries both ways through a
:class:`~.link.LinkSession`: that end attaches to the sync running there, or runs one of
its VMs for as long as the link lives. Entries from there are ``link:HOST`` here.

A link that drops (sshd stopped, the network gone, the far end killed, silence for
:data:`~hypercore_tui.core.clipwire.SILENT_AFTER` s) is one line and comes back by
itself after :data:`RETRY_DELAYS`; the VMs and the other peers never wait for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import subprocess
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from hypercore_tui.core import clipwire
from hypercore_tui.core.errors import HypercoreError, ProtocolError
from hypercore_tui.core.hosts import Host
from hypercore_tui.core.text import printable
from hypercore_tui.services.clipsync.link import EngineHub, LinkSession, peer_label
from hypercore_tui.services.hosts import remote

if TYPE_CHECKING:
    from hypercore_tui.services.clipsync.engine import SyncEngine

log = logging.getLogger("hypercore.clipsync")
log.addHandler(logging.NullHandler())

#: Waits between attempts to link again, the last repeated.
RETRY_DELAYS: tuple[float, ...] = (1.0, 2.0, 5.0, 10.0)
#: Seconds the far end gets to end after its stdin closed.
END_WAIT = 3.0

CONNECTING = "connecting"
LIVE = "live"
DOWN = "down"


class RemotePeer:
    """One linked host: runs until cancelled, linking again after each end."""

    def __init__(self, engine: SyncEngine, host: Host, *,
                 retry_delays: Sequence[float] = RETRY_DELAYS) -> None:
        self.engine = engine
        self.host = host
        self.name = f"link:{host.name}"
        self.state = CONNECTING
        self.note: str | None = None
        self.last_change: float | None = None
        self.retry_delays = tuple(retry_delays)
        self.session: LinkSession | None = None
        self.links = 0  # how many times the link came up

    # -- the engine's interface ---------------------------------------------------------

    def want_push(self) -> None:
        if self.session is not None:
            self.session.want_push()

    def status(self) -> dict[str, object]:
        return {"name": self.name, "state": self.state, "note": self.note,
                "last_change": self.last_change, "host": self.host.name}

    def _set_state(self, state: str, note: str | None = None) -> None:
        if (state, note) != (self.state, self.note):
            self.state, self.note = state, note
            self.engine.link_changed(self)

    # -- the loop -----------------------------------------------------------------------

    async def run(self) -> None:
        failures = 0
        while True:
            before = self.links
            try:
                why = await self._once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - a bug in one link: said, tried again
                log.exception("clipsync %s failed", self.name)
                why = f"failed: {type(exc).__name__}: {exc}"
            was_up = self.links > before
            failures = 0 if was_up else failures + 1
            delay = self.retry_delays[min(failures, len(self.retry_delays) - 1)]
            self._set_state(DOWN, f"{why}; linking again in {delay:g} s")
            if was_up or (self.links == 0 and failures == 1):  # (once per fault)
                self.engine.fault(self.name, f"{self.name}: clipboard link down: {why}")
            await asyncio.sleep(delay)

    async def _start(self) -> asyncio.subprocess.Process:
        """The far end (a seam for tests)."""
        return await remote.start(self.engine.ctx, self.host,
                                  ["clip", "link", "--from", peer_label()],
                                  stdin=subprocess.PIPE, own_session=True,
                                  limit=clipwire.MAX_LINE)

    async def _once(self) -> str:
        """One link, from connecting to its end: why it ended."""
        self._set_state(CONNECTING)
        try:
            proc = await self._start()
        except HypercoreError as exc:
            return str(exc).removeprefix(f"{self.host.name}: ")
        assert proc.stdin is not None and proc.stdout is not None
        stderr = asyncio.create_task(_tail(proc.stderr))

        def hello(message: clipwire.Hello) -> None:
            self.links += 1
            self._set_state(LIVE, f"{self.host.name}: {printable(message.detail, limit=120)}")

        def say(message: str) -> None:
            self.engine.fault(self.name, f"{self.name}: {message}")

        session = LinkSession(EngineHub(self.engine), proc.stdout, proc.stdin, self.name,
                              say=say, on_hello=hello)
        self.session = session
        why = ""
        try:
            why = await session.run()
        except ProtocolError as exc:
            why = str(exc)
        except (ConnectionError, OSError) as exc:
            why = f"the link broke: {exc}"
        finally:
            self.session = None
            if session.received:
                self.last_change = time.time()
            with contextlib.suppress(Exception):
                proc.stdin.close()
            try:
                await asyncio.wait_for(proc.wait(), END_WAIT)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
            try:
                said = await asyncio.wait_for(stderr, 1.0)
            except TimeoutError:
                said = b""
        lines = [ln for ln in said.decode(errors="replace").splitlines() if ln.strip()]
        if lines and (proc.returncode not in (0, None)):
            last = printable(lines[-1], limit=200).removeprefix("hypercore: error: ")
            return f"{last} (exit code {proc.returncode})"
        if proc.returncode == 255:
            return f"the SSH connection to {self.host.destination} was lost"
        return why or "the link ended"


async def _tail(stream: asyncio.StreamReader | None, keep: int = 4096) -> bytes:
    tail = b""
    if stream is None:
        return tail
    while chunk := await stream.read(65536):
        tail = (tail + chunk)[-keep:]
    return tail
