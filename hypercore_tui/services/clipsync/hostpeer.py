"""The host's own clipboards in the sync: a peer beside the VMs' (issue 13).

Each clipboard :func:`hostclip.host_clipboards` finds when the sync starts is followed
by one :class:`HostPeer`, source ``host:x11``, ``host:wayland`` or ``host:tmux``:

* **change detection**: X11 and Wayland are event-driven, through a watcher child
  (:mod:`hostwatch`: XFixes selection events, ``wl-paste --watch``) whose lines only say
  "look again"; tmux 3.3 has no paste-buffer notification (``%paste-buffer-changed``
  came with 3.4) and its hooks would change the user's server, so its top buffer is
  read every :data:`TMUX_POLL` seconds (one short ``tmux show-buffer``);
* **pushes**: every new hub entry not from this peer is written to the board (tmux:
  ``load-buffer -`` with the text on stdin, never ``-w``: the user's terminal clipboard
  is the dashboard's opt-in OSC 52);
* echoes are recognised by content, as for a VM (:attr:`HostPeer.holds`);
* what the board holds when the sync starts is not offered (an old copy would
  overwrite every VM's clipboard), only what changes after;
* a fault (tmux server gone, display closed, its watcher ended) is one event; the peer
  then stops following that board and the rest of the sync goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING, Any

from hypercore_tui.adapters import hostclip, hostwatch
from hypercore_tui.core.clip import KIND_TEXT, ClipItem, digest
from hypercore_tui.core.errors import HypercoreError, OperationFailed
from hypercore_tui.core.text import printable

if TYPE_CHECKING:
    from hypercore_tui.services.clipsync.engine import SyncEngine

log = logging.getLogger("hypercore.clipsync")
log.addHandler(logging.NullHandler())

#: How often tmux's top paste buffer is read (it has no change notification in 3.3).
TMUX_POLL = 1.0
#: How long an X11 watcher may take to say it watches.
READY_WAIT = 10.0
#: Changes closer than this are one (a copy is often several owner changes).
SETTLE = 0.03

WATCHING = "watching"
POLLING = "polling"
STOPPED = "stopped"


class BoardLost(OperationFailed):
    """The host clipboard cannot be followed any more."""


def host_peers(engine: SyncEngine) -> list[HostPeer]:
    """A peer for each host clipboard found now (``engine.ctx.environ``)."""
    env = engine.ctx.environ
    peers: list[HostPeer] = []
    for board in hostclip.host_clipboards(env):
        if isinstance(board, hostclip.TmuxBuffer):
            peers.append(HostPeer(engine, hostclip.TmuxBuffer(env, outer_terminal=False),
                                  "tmux"))
        elif isinstance(board, hostclip.DisplayClipboard):
            peers.append(HostPeer(engine, board, board.kind))
    return peers


class HostPeer:
    """One host clipboard in the sync: runs until cancelled or its board is lost."""

    def __init__(self, engine: SyncEngine, board: hostclip.HostClipboard, kind: str, *,
                 poll: float = TMUX_POLL) -> None:
        self.engine = engine
        self.board = board
        self.kind = kind
        self.name = f"host:{kind}"
        self.state = "starting"
        self.note: str | None = None
        self.last_change: float | None = None
        #: digest of what the board is known to hold (the hub's push, or the last read)
        self.holds: str | None = None
        self._poll = poll
        self._push_wanted = asyncio.Event()
        self._changed = asyncio.Event()

    # -- the engine's interface (as a VmSync's) -----------------------------------------

    def want_push(self) -> None:
        self._push_wanted.set()

    def status(self) -> dict[str, object]:
        return {"name": self.name, "state": self.state, "note": self.note,
                "last_change": self.last_change}

    def _set_state(self, state: str, note: str | None = None) -> None:
        if (state, note) != (self.state, self.note):
            self.state, self.note = state, note
            self.engine.host_changed(self)

    # -- the loop -------------------------------------------------------------------------

    async def run(self) -> None:
        """Follow the board; a fault is said once and ends the loop (the peer stays in
        the status as stopped)."""
        try:
            await self._run()
        except BoardLost as exc:
            self._set_state(STOPPED, str(exc))
            self.engine.fault(self.name, f"{self.name}: no longer synced: {exc}")

    async def _run(self) -> None:
        watcher: asyncio.subprocess.Process | None = None
        lines: asyncio.Task[str] | None = None
        try:
            if self.kind == "tmux":
                state = POLLING
            else:
                watcher = await self._start_watcher()
                lines = asyncio.create_task(self._read_lines(watcher))
                state = WATCHING
            text = await self._read()
            if text:
                self.holds = digest(KIND_TEXT, text.encode("utf-8"))
            self._set_state(state, "tmux show-buffer every "
                            f"{self._poll:g} s" if self.kind == "tmux" else None)
            await self._push_current()
            await self._follow(lines)
        finally:
            if lines is not None:
                lines.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await lines
            if watcher is not None:
                await _end(watcher)

    async def _start_watcher(self) -> asyncio.subprocess.Process:
        try:
            proc = await hostwatch.start_watch(self.kind, self.engine.ctx.environ)
        except OperationFailed as exc:
            raise BoardLost(str(exc)) from None
        if self.kind != "x11":
            return proc
        assert proc.stdout is not None
        try:
            first = await asyncio.wait_for(proc.stdout.readline(), READY_WAIT)
        except TimeoutError:
            await _end(proc)
            raise BoardLost("the X11 clipboard watcher did not start in "
                            f"{READY_WAIT:g} s") from None
        line = first.decode("utf-8", "replace").strip()
        if line != hostwatch.READY:
            await _end(proc)
            why = line.removeprefix("error ") or "it ended"
            raise BoardLost(f"cannot watch the X11 clipboard: {printable(why, limit=200)}")
        return proc

    async def _read_lines(self, proc: asyncio.subprocess.Process) -> str:
        """Every line is "look again"; the watcher's end returns why it ended."""
        assert proc.stdout is not None and proc.stderr is not None
        while True:
            line = await proc.stdout.readline()
            if not line:
                break
            self._changed.set()
        err = b""
        with contextlib.suppress(asyncio.TimeoutError, OSError):
            err = await asyncio.wait_for(proc.stderr.read(4096), 1.0)
        code = await proc.wait()
        # (one line: Xlib's message spans two)
        said = printable(" ".join(err.decode("utf-8", "replace").split()), limit=160)
        if self.kind == "x11":
            return f"the display closed ({said or f'watcher exit {code}'})"
        return f"wl-paste --watch ended ({said or f'exit {code}'})"

    async def _follow(self, lines: asyncio.Task[str] | None) -> None:
        next_poll = time.monotonic() + self._poll
        while True:
            waits: list[asyncio.Future[Any]] = [
                asyncio.ensure_future(self._push_wanted.wait()),
                asyncio.ensure_future(self._changed.wait())]
            timeout = (max(0.0, next_poll - time.monotonic()) if self.kind == "tmux"
                       else None)
            others: list[asyncio.Future[Any]] = [lines] if lines is not None else []
            try:
                await asyncio.wait([*waits, *others], timeout=timeout,
                                   return_when=asyncio.FIRST_COMPLETED)
            finally:
                for wait in waits:
                    wait.cancel()
            if lines is not None and lines.done():
                raise BoardLost(lines.result() if not lines.cancelled() else "watcher gone")
            if self._changed.is_set():
                detected = time.time()
                await asyncio.sleep(SETTLE)
                self._changed.clear()
                await self._pull(detected)
            if self.kind == "tmux" and time.monotonic() >= next_poll:
                await self._pull(time.time())
                next_poll = time.monotonic() + self._poll
            if self._push_wanted.is_set():
                self._push_wanted.clear()
                await self._push_current()

    # -- reading and writing --------------------------------------------------------------

    async def _read(self) -> str | None:
        try:
            return await asyncio.to_thread(self.board.read)
        except HypercoreError as exc:
            raise BoardLost(f"cannot read it: {exc}") from None

    async def _pull(self, detected: float) -> None:
        text = await self._read()
        if not text:
            return  # emptied, or an owner gone away: no new content
        data = text.encode("utf-8")
        seen = digest(KIND_TEXT, data)
        if seen == self.holds:
            return  # nothing new, or the hub's own push read back
        self.holds = seen
        try:
            item = self.engine.offer(KIND_TEXT, data, self.name, at=detected)
        except HypercoreError as exc:  # NUL bytes, too long
            self.engine.fault(self.name, f"{self.name}: clipboard not taken: {exc}")
            return
        if item is not None:
            self.last_change = item.at

    async def _push_current(self) -> None:
        item = self.engine.history.current
        if item is None or item.digest == self.holds or item.kind != KIND_TEXT:
            return
        if item.source == self.name:
            self.holds = item.digest
            return
        await self._push(item)

    async def _push(self, item: ClipItem) -> None:
        started = time.monotonic()
        try:
            await asyncio.to_thread(self.board.write, item.text)
        except HypercoreError as exc:
            raise BoardLost(f"cannot write it: {exc}") from None
        self.holds = item.digest
        self.engine.pushed(self, item, time.monotonic() - started)


async def _end(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 2.0)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
