"""One VM in the clipboard sync.

The loop waits for the VM's QEMU to run and its agent to answer, then:

* **catch-up**: the VM gets the hub's current entry unless it already holds it (it was
  stopped, paused or booting when the entry came);
* **change detection** (mode ``sync`` only): the guest watcher (``guest/clipwatch.py``,
  started through the agent) writes a byte on the VM's clipboard port
  (``run/clip.sock``) at every clipboard owner change; without a graphical session the
  clipboard (the fallback file) is read every :data:`POLL_INTERVAL`. Either way the
  content is read through the agent, never taken from the port;
* **pushes**: every new hub entry not from this VM is written into it; a burst of
  entries is one push of the newest. A text of at most INLINE_MAX bytes goes down the
  port to a watcher that takes writes (it announced a token): ``w TOKEN ID BASE64``,
  answered ``w-ok ID`` once the session's tool took it (or ``w-fail ID WHY``); the
  agent's push is the fallback (no answer within WRITE_WAIT, a failure, no watcher).

Echoes are recognised by content: what the hub wrote into a VM and what was last read
from it are not new copies there. The text a watcher carries on the port is what the
guest held when it signalled, so the signal of a write can arrive after the hub has moved
on (two guests copying at the same moment): every write is remembered
(:class:`Echoes`) until its signal came, and that signal is never a new copy: the VM is
known to hold the write, and gets the current entry if that is newer.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import enum
import logging
import re
import secrets
import time
from collections import deque
from collections.abc import Awaitable
from typing import TYPE_CHECKING

from hypercore_tui.adapters import guest_files
from hypercore_tui.adapters.qga import AgentCommandError, agent_session
from hypercore_tui.core.clip import KIND_FILES, KIND_TEXT, ClipItem, digest
from hypercore_tui.core.errors import HypercoreError, OperationFailed
from hypercore_tui.core.models import ClipboardMode, VmState
from hypercore_tui.core.text import printable
from hypercore_tui.services import clipboard, clipfiles, clipimage, registry, vmstate
from hypercore_tui.services.tasks import reap

if TYPE_CHECKING:
    from hypercore_tui.services.clipsync.engine import SyncEngine

log = logging.getLogger("hypercore.clipsync")
log.addHandler(logging.NullHandler())

#: How often a VM that is not running (or whose agent is silent) is looked at again.
IDLE_INTERVAL = 2.0
AGENT_RETRY_MAX = 10.0
#: Reading the clipboard of a guest without a watcher (no graphical session).
POLL_INTERVAL = 1.5
#: How often a watched guest's watcher is checked (it is gone after a guest reboot).
RECHECK_INTERVAL = 15.0
#: Signals closer than this are one change (a copy is often several owner changes).
SETTLE = 0.03
#: What the watcher may say after "c" on the port: which pull to try first.
HINTS = {b"c files": "files", b"c image": "image", b"c": ""}
#: The longest copied text a watcher carries on the port ("t BASE64"; clipwatch.py's
#: INLINE_MAX), and the longest line taken from the port at all.
INLINE_MAX = 16 * 1024
PORT_LINE_MAX = len(b"o 9999999999 ") + 4 + (INLINE_MAX + 2) // 3 * 4 + 1
#: A change line the watcher could not write while no host was connected, written again
#: once one is: ``o MS LINE``, the change made MS milliseconds before.
_AGAIN = re.compile(rb"o ([0-9]{1,10}) (.*)", re.DOTALL)


#: How long a write down the port waits for the watcher's answer (the watcher gives its
#: tool 1 s); then ``w-cancel TOKEN ID`` follows it, and the agent writes.
WRITE_WAIT = 1.5
#: After a write down the port got no answer, the port is not written for this long.
PORT_RETRY = 60.0
_REPLY = re.compile(rb"w-ok ([0-9a-f]{8})|w-fail ([0-9a-f]{8})(?: ([ -~]{0,160}))?")


def write_line(token: str, ident: str, text: bytes) -> bytes:
    """The host's write of ``text`` (at most INLINE_MAX bytes) down the port."""
    return f"w {token} {ident} ".encode("ascii") + base64.b64encode(text) + b"\n"


def cancel_line(token: str, ident: str) -> bytes:
    return f"w-cancel {token} {ident}\n".encode("ascii")


def reply_line(line: bytes) -> tuple[str, str | None] | None:
    """A watcher's answer to a write: (ID, None) for ``w-ok ID``, (ID, why) for ``w-fail
    ID WHY``; None when the line is no answer (a change signal)."""
    match = _REPLY.fullmatch(line.strip(b"\r"))
    if match is None:
        return None
    if match.group(1) is not None:
        return match.group(1).decode("ascii"), None
    why = (match.group(3) or b"").decode("ascii")
    return match.group(2).decode("ascii"), printable(why, limit=160) or "failed"


def line_age(line: bytes) -> tuple[float | None, bytes]:
    """A watcher's change line written again (``o MS LINE``): how long ago the change was
    made (seconds) and the line itself; (None, ``line``) for a line written at once."""
    match = _AGAIN.fullmatch(line)
    if match is None:
        return None, line
    return int(match.group(1)) / 1000, match.group(2)


def port_line(line: bytes) -> tuple[str, bytes | None]:
    """A watcher's line: the hint, and the copied text it carries (None: read it through
    the agent). Text is taken only as it must be: valid base64 of at most INLINE_MAX
    bytes of UTF-8 without NUL; anything else is a plain change (the agent reads it)."""
    line = line.strip()
    if line.startswith(b"t "):
        try:
            text = base64.b64decode(line[2:], validate=True)
            text.decode("utf-8")
        except (ValueError, UnicodeDecodeError):
            return "", None
        if len(text) > INLINE_MAX or b"\0" in text:
            return "", None
        return "", text
    return HINTS.get(line, ""), None


#: A failed write into a VM that still answers is tried again after this long, then
#: after twice as long each time, up to PUSH_RETRY_MAX (the failure is said once).
PUSH_RETRY = 2.0
PUSH_RETRY_MAX = 30.0
#: How often a running files copy looks whether a newer copy calls it off (besides
#: being woken by one).
CANCEL_CHECK = 0.5
#: How long a write into a VM waits for its signal (its echo) to come back.
ECHO_WINDOW = 30.0
#: Writes remembered at most (a burst of pushes is one write of the newest anyway).
ECHO_MAX = 16


class Echoes:
    """The writes into one VM whose signal has not come back yet, oldest first. Signals
    come in the order of the guest's owner changes, so the signal of one write also
    settles every write before it."""

    def __init__(self) -> None:
        self._writes: deque[tuple[str, float]] = deque(maxlen=ECHO_MAX)

    def wrote(self, seen: str, at: float | None = None) -> None:
        self._writes.append((seen, time.monotonic() if at is None else at))

    def pending(self, seen: str, now: float | None = None) -> bool:
        self._expire(time.monotonic() if now is None else now)
        return any(d == seen for d, _ in self._writes)

    def take(self, seen: str, now: float | None = None) -> bool:
        """Is ``seen`` the signal of a write (settled now, with all before it)?"""
        self._expire(time.monotonic() if now is None else now)
        for i, (d, _) in enumerate(self._writes):
            if d == seen:
                for _ in range(i + 1):
                    self._writes.popleft()
                return True
        return False

    def _expire(self, now: float) -> None:
        while self._writes and now - self._writes[0][1] > ECHO_WINDOW:
            self._writes.popleft()


class ClipboardTooLarge(OperationFailed):
    """A guest's clipboard is larger than the hub takes."""


class SyncState(enum.StrEnum):
    STOPPED = "stopped"  # QEMU not running
    PAUSED = "paused"
    WAITING = "waiting for agent"
    WATCHING = "watching"  # a guest watcher signals changes
    POLLING = "polling"  # no graphical session: the fallback file is read every 1.5 s
    PUSH_ONLY = "push-only"  # written, never read (the VM's mode, or no way to read it)
    OFF = "off"


class VmSync:
    """The sync of one VM: runs until cancelled."""

    def __init__(self, engine: SyncEngine, name: str) -> None:
        self.engine = engine
        self.name = name
        self.state = SyncState.STOPPED
        self.mode = ClipboardMode.SYNC
        self.note: str | None = None  # why it is not watched, shown once
        self.last_change: float | None = None
        #: digest of what the VM is known to hold: the entry the hub wrote into it, or
        #: what was last read from it (reading it again is no new copy)
        self.holds: str | None = None
        #: writes into the VM whose signal has not come back yet
        self._echoes = Echoes()
        self._push_wanted = asyncio.Event()
        #: when a failed write is tried again (None: none failed), and the next delay
        self._retry_at: float | None = None
        self._retry_delay = PUSH_RETRY
        self._changed = asyncio.Event()
        self._said: dict[str, str] = {}  # fault kind -> the message said last
        #: no graphical session: the clipboard is the fallback file, read directly
        self._file_only = False
        #: why a polled guest has no watcher (None: no graphical session)
        self._poll_note: str | None = None
        #: the next read of a polled guest only learns what it holds (see _attached)
        self._baseline = False
        #: the running watcher, as described when it was started or found
        self._watcher: str | None = None
        #: what the watcher said the last copy offers ("files", "image", "": text or
        #: unknown); only the order of the pulls (the port is the guest's)
        self._hint = ""
        #: the text the watcher carried on the port for the last copy (None: read it
        #: through the agent); untrusted like any guest content
        self._inline: bytes | None = None
        #: the file entry the hub last offered in this VM (a copy of it is no new entry)
        self.held_entry: str | None = None
        #: the entry a pull named in the share (kept by the hub if its entry goes round)
        self._made: str | None = None
        #: the running watcher's token for writes down the port (None: it takes none)
        self._token: str | None = None
        #: an older watcher (no token) was replaced once already
        self._replaced = False
        #: the host end of the port while it is read: small texts are written down it
        self._port: asyncio.StreamWriter | None = None
        #: the writes down the port awaiting their answer: ID -> None (written) or why not
        self._answers: dict[str, asyncio.Future[str | None]] = {}
        self._port_lock = asyncio.Lock()
        #: after an unanswered write, the port is not written until then
        self._port_off_until = 0.0
        #: when this sync began following the VM (monotonic): a change the watcher says
        #: was made before (its line refused while no sync ran) is no copy made now
        self._since = time.monotonic()

    # -- facts for status -------------------------------------------------------------

    def status(self) -> dict[str, object]:
        return {"name": self.name, "mode": self.mode.value, "state": self.state.value,
                "note": self.note, "last_change": self.last_change}

    def _set_state(self, state: SyncState, note: str | None = None) -> None:
        if state is self.state and note == self.note:
            return
        self.state, self.note = state, note
        self.engine.vm_changed(self)

    def _fault(self, kind: str, message: str | None) -> None:
        """Say a fault once (until it changes or clears)."""
        if message is None:
            self._said.pop(kind, None)
            return
        if self._said.get(kind) != message:
            self._said[kind] = message
            self.engine.fault(self.name, message)

    # -- from the engine --------------------------------------------------------------

    def want_push(self) -> None:
        self._push_wanted.set()

    # -- the loop ---------------------------------------------------------------------

    async def run(self) -> None:
        retry = IDLE_INTERVAL
        while True:
            paths = self.engine.ctx.vm_paths(self.name)
            try:
                spec = registry.load(self.engine.ctx, self.name)
            except HypercoreError:
                self._set_state(SyncState.STOPPED, "no such VM")
                await asyncio.sleep(IDLE_INTERVAL)
                continue
            self.mode = spec.clipboard
            if self.mode is ClipboardMode.OFF:
                self._set_state(SyncState.OFF)
                await asyncio.sleep(IDLE_INTERVAL)
                continue
            state, _ = vmstate.process_state(paths)
            if state is not VmState.RUNNING:
                self._set_state(SyncState.STOPPED)
                retry = IDLE_INTERVAL
                await asyncio.sleep(IDLE_INTERVAL)
                continue
            try:
                state, _ = await vmstate.query_status(paths, timeout=3.0)
            except HypercoreError:
                state = VmState.RUNNING  # a busy monitor proves nothing: try the agent
            if state is VmState.PAUSED:
                self._set_state(SyncState.PAUSED)
                await asyncio.sleep(IDLE_INTERVAL)
                continue
            try:
                async with agent_session(paths.qga_socket, vm_name=self.name, timeout=3.0,
                                         lock_timeout=10.0) as agent:
                    await agent.ping(timeout=3.0)
            except HypercoreError as exc:
                if self.state in (SyncState.WATCHING, SyncState.POLLING, SyncState.PUSH_ONLY):
                    # it answered before: a hang, a restart or a reboot (said once)
                    self._fault("agent", f"{self.name}: the guest agent stopped answering "
                                f"({exc}); its clipboard waits for it")
                self._set_state(SyncState.WAITING)
                await asyncio.sleep(retry)
                retry = min(retry * 2, AGENT_RETRY_MAX)
                continue
            self._fault("agent", None)
            retry = IDLE_INTERVAL
            await self._attached()

    async def _attached(self) -> None:
        """The agent answers: catch up, then follow changes until the VM stops or its
        agent goes silent."""
        await self._push_current()
        reader: asyncio.Task[None] | None = None
        try:
            if self.mode is ClipboardMode.SYNC:
                # The port first: a change signalled while the watcher starts is not lost.
                reader = asyncio.create_task(self._read_port())
                if not await self._start_watcher(replace=False, announce=False):
                    await reap(reader)
                    reader = None
                    # What a polled guest holds already is no copy made now (a watched
                    # one is not read at all until it signals): the first read only
                    # learns it, and only then is the VM shown as followed.
                    self._baseline = True
                    if not await self._pull(time.time()):
                        return
                    self._set_state(SyncState.POLLING, self._poll_note)
            else:
                self._set_state(SyncState.PUSH_ONLY)
            await self._follow(reader)
        finally:
            if reader is not None:
                reader.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await reader

    async def _start_watcher(self, *, replace: bool, announce: bool = True) -> bool:
        """Start (or find) the guest's watcher: True when it signals changes; else the
        VM is polled, and the state says so (``announce=False``: the caller sets the
        state itself, from ``_poll_note``, once it has learnt what the guest holds)."""
        paths = self.engine.ctx.vm_paths(self.name)
        try:
            started = await self.engine.start_watcher(paths, replace)
        except HypercoreError as exc:
            self._file_only = False
            self._poll_note = f"no watcher: {exc}"
            if announce:
                self._set_state(SyncState.POLLING, self._poll_note)
            return False
        if started is None:
            # no graphical session: the fallback file is read now and then
            self._file_only = True
            self._poll_note = None
            if announce:
                self._set_state(SyncState.POLLING)
            return False
        self._file_only = False
        described, token = started
        if token is None and not replace and not self._replaced:
            # A watcher from before writes down the port existed: replaced once by one
            # that takes them (it signals like the old one meanwhile).
            self._replaced = True
            return await self._start_watcher(replace=True, announce=announce)
        if token != self._token:
            self._token, self._port_off_until = token, 0.0
        if self._watcher is not None and described != self._watcher:
            # A new watcher (the old one ended: a guest reboot, an agent restart): a copy
            # made while none watched was never signalled: read the clipboard once.
            self._changed.set()
        self._watcher = described
        self._set_state(SyncState.WATCHING, described)
        return True

    async def _read_port(self) -> None:
        """Every byte on the VM's clipboard port is "something changed", but for the
        watcher's answers to writes (``w-ok ID``, ``w-fail ID WHY``) and the change lines
        it writes again once a host connects (``o MS LINE``: made before this sync began,
        they are no change): a line starting with ``w`` or ``o`` is waited for whole. The
        last whole line says what: ``c [HINT]`` (the content is read through the agent)
        or ``t BASE64`` (the copied text itself). Ends when QEMU closes the socket."""
        paths = self.engine.ctx.vm_paths(self.name)
        reader, writer = await asyncio.open_unix_connection(str(paths.clip_socket))
        self._port = writer
        pending = b""
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    return
                *lines, pending = (pending + data).split(b"\n")
                changed = False
                if len(pending) > PORT_LINE_MAX:
                    pending = b""  # (no line is that long: noise; the agent reads it)
                    self._hint, self._inline = "", None
                    changed = True
                signals = []
                for line in lines:
                    reply = reply_line(line)
                    if reply is not None:
                        self._answered(*reply)
                        continue
                    age, line = line_age(line)
                    if age is not None and time.monotonic() - age < self._since:
                        # Made while no sync followed the VM (its line refused then,
                        # written again now that one connects): what the guest held
                        # before, as for a guest found polled; not a copy made now.
                        continue
                    signals.append(line)
                if signals:
                    self._hint, self._inline = port_line(signals[-1])
                if changed or signals or pending[:1] not in (b"", b"w", b"o"):
                    self._changed.set()
        finally:
            self._port = None
            for waiting in self._answers.values():
                if not waiting.done():
                    waiting.set_exception(ConnectionError("the clipboard port closed"))
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    def _answered(self, ident: str, why: str | None) -> None:
        answer = self._answers.get(ident)
        if answer is not None and not answer.done():
            answer.set_result(why)

    async def _write_down_port(self, item: ClipItem) -> bool:
        """A text written by the VM's watcher (see the module's doc): True once it
        answered that it did; False (the agent writes) without a watcher that takes
        writes, or when it failed or did not answer in WRITE_WAIT (the port is then not
        written for PORT_RETRY)."""
        async with self._port_lock:
            port, token = self._port, self._token
            if (port is None or token is None or self.state is not SyncState.WATCHING
                    or time.monotonic() < self._port_off_until):
                return False
            ident = secrets.token_hex(4)
            answer: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
            self._answers[ident] = answer
            try:
                port.write(write_line(token, ident, item.data))
                async with asyncio.timeout(WRITE_WAIT):
                    await port.drain()
                    why = await answer
            except TimeoutError:
                log.info("%s: no answer from the clipboard watcher in %.1f s: the agent "
                         "writes", self.name, WRITE_WAIT)
                self._port_off_until = time.monotonic() + PORT_RETRY
                # Still unread, the cancel stops it; a write made late all the same is
                # still the echo of a write, not a copy.
                self._echoes.wrote(item.digest)
                with contextlib.suppress(OSError, RuntimeError):
                    port.write(cancel_line(token, ident))
                return False
            except (OSError, RuntimeError):  # (ConnectionError: the port closed)
                return False
            finally:
                del self._answers[ident]
        if why is not None:
            log.info("%s: the clipboard watcher did not write: %s; the agent writes",
                     self.name, why)
            return False
        return True

    async def _follow(self, reader: asyncio.Task[None] | None) -> None:
        next_poll = time.monotonic() + POLL_INTERVAL
        next_check = time.monotonic() + RECHECK_INTERVAL
        while True:
            now = time.monotonic()
            polling = self.state is SyncState.POLLING
            wake_at = min(next_check, next_poll) if polling else next_check
            if self._retry_at is not None:
                wake_at = min(wake_at, self._retry_at)
            waits: list[Awaitable[object]] = [self._push_wanted.wait(), self._changed.wait()]
            if reader is not None:
                waits.append(reader)
            done = await _first(waits, timeout=max(0.0, wake_at - now))
            if reader is not None and reader.done():
                exc = reader.exception() if not reader.cancelled() else None
                if exc is not None:
                    self._fault("port", f"{self.name}: clipboard port lost: {exc}")
                return  # QEMU closed the port: the VM stopped (the outer loop looks)
            if self._changed.is_set():  # before a push, which would overwrite the copy
                detected = time.time()
                await asyncio.sleep(SETTLE)
                self._changed.clear()
                if not await self._pull(detected):
                    return
            if self._retry_at is not None and time.monotonic() >= self._retry_at:
                self._retry_at = None
                self._push_wanted.set()
            if self._push_wanted.is_set():
                self._push_wanted.clear()
                if not await self._push_current():
                    return
            now = time.monotonic()
            if polling and now >= next_poll:
                if not await self._pull(time.time()):
                    return
                next_poll = time.monotonic() + POLL_INTERVAL
            if now >= next_check:
                next_check = now + RECHECK_INTERVAL
                if not await self._still_here(reader is not None):
                    return
            del done

    async def _still_here(self, watching: bool) -> bool:
        """Still running, mode unchanged, the watcher alive (started again after a guest
        reboot or an agent restart, which end it)? A polled guest gets a watcher once it
        can have one (its X session often comes up after its agent): False then too, so
        the loop attaches again and reads the port."""
        paths = self.engine.ctx.vm_paths(self.name)
        state, _ = vmstate.process_state(paths)
        if state is not VmState.RUNNING:
            return False
        try:
            mode = registry.load(self.engine.ctx, self.name).clipboard
        except HypercoreError:
            return False
        if mode is not self.mode:
            return False
        if watching:
            return await self._start_watcher(replace=False)
        if self.state is SyncState.POLLING:
            return not await self._start_watcher(replace=False)
        return True

    async def _pull(self, detected: float) -> bool:
        """Read the VM's clipboard; a new content goes to the hub. False when the VM
        cannot be reached (the loop starts over)."""
        try:
            return await self._pull_and_offer(detected)
        finally:
            if self._made is not None:
                self.engine.entry_settled(self._made)  # (removed unless in the history)
                self._made = None

    async def _pull_and_offer(self, detected: float) -> bool:
        kind, data = KIND_TEXT, b""
        hint, self._hint = self._hint, ""
        inline, self._inline = self._inline, None
        try:
            if self._file_only:
                data = await self._read_fallback()
            elif inline:
                data = inline  # (the watcher carried it: no read through the agent)
            else:
                if hint == "files":
                    try:
                        data = await self._pull_files(detected)
                    except clipfiles.FilesRefused as exc:
                        self._fault("files", f"{self.name}: copied files not carried: {exc}")
                        return True  # (not the text of their paths instead)
                    self._fault("files", None)
                    kind = KIND_FILES if data else KIND_TEXT
                if not data and hint == "image":
                    kind, data = await self._pull_image()
                if not data:
                    got = await clipboard.pull_detail(self.engine.ctx, self.name,
                                                       check_paused=False)
                    kind = KIND_TEXT
                    text = "" if got.empty else got.text or ""
                    data = text.encode("utf-8")
                    # No text, or bytes that are not UTF-8 (xclip serves an image's bytes
                    # to a text request too): an image, perhaps.
                    binary = "\ufffd" in text or "\x00" in text
                    if (not text or binary) and hint != "image":
                        kind, image = await self._pull_image()
                        if image:
                            data = image
                        elif "\ufffd" in text:
                            self._fault("binary", f"{self.name}: a copy that is neither UTF-8 "
                                        "text nor a PNG image is not carried")
                            data = b""
        except HypercoreError as exc:
            return await self._failed("pull", f"{self.name}: clipboard not read: {exc}")
        self._fault("pull", None)
        baseline, self._baseline = self._baseline, False
        if not data:
            return True  # an owner gone away is no new content
        seen = digest(kind, data)
        if baseline:
            self.holds = seen
            return True
        echo = self._echoes.take(seen)
        if seen == self.holds:
            return True  # nothing new, or the hub's own push coming back
        if echo:
            # The signal of an earlier write, come after the hub moved on: the VM holds
            # that write (until its later signals say otherwise), never a new copy.
            self.holds = seen
            self._catch_up()
            return True
        self.holds = seen
        self.held_entry = None
        try:
            item = self.engine.offer(kind, data, f"vm:{self.name}", at=detected)
        except HypercoreError as exc:  # not text the clipboard can carry (NUL, too long)
            self._fault("pull", f"{self.name}: clipboard not taken: {exc}")
            return True
        if item is not None:
            self.last_change = item.at
        else:
            self._catch_up()  # (older than the current entry: the VM gets that one)
        return True

    def _catch_up(self) -> None:
        """The VM holds something else than the current entry: write that, unless a write
        of it is already on its way back."""
        current = self.engine.history.current
        if (current is not None and current.digest != self.holds
                and not self._echoes.pending(current.digest)):
            self._push_wanted.set()

    async def _pull_image(self) -> tuple[str, bytes]:
        image = await clipimage.pull_image(self.engine.ctx, self.name)
        if image.other:
            self._fault("image", f"{self.name}: a copied {image.other} image is "
                        "not carried (only image/png is)")
        return (clipimage.KIND_PNG, image.data) if image.data else (KIND_TEXT, b"")

    async def _pull_files(self, detected: float) -> bytes:
        """Copied files, carried into the share as a new entry (or the entry the hub
        offered here, copied again): the entry's JSON, or b"" without a file list.

        A copy of many files takes a while: a newer copy in this VM meanwhile, or a newer
        hub entry (which this copy, seen earlier, would lose to), calls it off
        (:func:`clipfiles.cancel_pull`: the guest stops within a MiB and removes what it
        copied); :class:`clipfiles.FilesCancelled` then."""
        ctx = self.engine.ctx
        entry = clipfiles.new_entry_id()
        self.engine.entry_started(entry)
        self._made = entry
        pull = asyncio.create_task(clipfiles.pull_files(
            ctx, self.name, entry=entry, cap=clipfiles.files_cap(ctx), held=self.held_entry))
        called_off = False
        try:
            while not pull.done():
                waits: list[Awaitable[object]] = [pull, self._changed.wait()]
                if not self._push_wanted.is_set():  # (set, it is looked at every check)
                    waits.append(self._push_wanted.wait())
                await _first(waits, timeout=CANCEL_CHECK)
                if pull.done():
                    break
                current = self.engine.history.current
                newer = current is not None and current.at > detected and \
                    current.source_vm != self.name
                if self._changed.is_set() or (self._push_wanted.is_set() and newer):
                    log.info("%s: a newer copy: the files copy %s called off", self.name,
                             entry)
                    called_off = await asyncio.to_thread(clipfiles.cancel_pull, ctx, entry)
                    break
            files = await pull
        finally:
            if not pull.done():
                pull.cancel()
                await asyncio.gather(pull, return_exceptions=True)
            if called_off:  # (the copy may have ended first: its marker goes anyway)
                with contextlib.suppress(OSError):
                    await asyncio.to_thread(clipfiles.remove_entry, ctx, f"{entry}.cancel")
        return files.to_json() if files is not None else b""

    async def _read_fallback(self) -> bytes:
        """The fallback file (a guest without a graphical session), read with the agent's
        file commands: polling it starts no process in the guest."""
        paths = self.engine.ctx.vm_paths(self.name)
        async with agent_session(paths.qga_socket, vm_name=self.name, timeout=3.0,
                                 lock_timeout=10.0) as agent:
            try:
                data = await guest_files.read_file(agent, clipboard.FALLBACK_FILE,
                                                   limit=clipboard.MAX_TEXT_BYTES + 1)
            except AgentCommandError:
                return b""  # no copy made there yet
        if len(data) > clipboard.MAX_TEXT_BYTES:
            raise ClipboardTooLarge(f"the clipboard file holds more than "
                                    f"{clipboard.MAX_TEXT_BYTES // (1 << 20)} MiB")
        return data

    async def _push_current(self) -> bool:
        item = self.engine.history.current
        if item is None or item.digest == self.holds:
            return True
        if item.source_vm == self.name and item.kind == KIND_FILES:
            self.holds = item.digest  # (its own files: their paths stay on its board)
            return True
        return await self._push(item)

    async def _write(self, item: ClipItem) -> clipboard.PushResult:
        """Write ``item`` into the VM, by its kind."""
        ctx = self.engine.ctx
        # (no QMP question per write: the sync follows pauses itself)
        if item.kind == clipimage.KIND_PNG:
            return await clipimage.push_image(ctx, self.name, item.data, check_paused=False)
        if item.kind == KIND_FILES:
            return await clipfiles.push_files(ctx, self.name, item.data, check_paused=False)
        if item.kind == KIND_TEXT and len(item.data) <= INLINE_MAX:
            started = time.monotonic()
            if await self._write_down_port(item):
                return clipboard.PushResult(self.name, True, method="port",
                                            seconds=time.monotonic() - started)
        return await clipboard.push_one(ctx, self.name, item.text, check_paused=False)

    def _wrote(self, item: ClipItem, seconds: float) -> None:
        self.holds = item.digest
        self._echoes.wrote(item.digest)
        files = item.files
        self.held_entry = files.entry if files is not None else None
        self.engine.pushed(self, item, seconds)

    async def _push(self, item: ClipItem) -> bool:
        result = await self._write(item)
        if not result.ok:
            going = await self._failed("push",
                                       f"{self.name}: clipboard not written: {result.error}")
            if going:  # (the VM answers: the current entry is tried again in a while)
                self._retry_at = time.monotonic() + self._retry_delay
                self._retry_delay = min(self._retry_delay * 2, PUSH_RETRY_MAX)
            return going
        self._fault("push", None)
        self._retry_at, self._retry_delay = None, PUSH_RETRY
        self._wrote(item, result.seconds)
        return True

    async def push_item(self, item: ClipItem) -> str | None:
        """Write ``item`` into the VM now (asked for: a re-push to this VM); None when
        written (a "push" event says so), else why not."""
        result = await self._write(item)
        if not result.ok:
            return result.error or "the clipboard push failed"
        self._wrote(item, result.seconds)
        return None

    async def _failed(self, kind: str, message: str) -> bool:
        """After a failed read or write: go on (True) when the VM still answers, the
        failure said once; else (stopped, paused, agent gone) the loop starts over and
        the VM's state says why (no fault line for a pause or a stop)."""
        if await self._reachable():
            self._fault(kind, message)
            return True
        return False

    async def _reachable(self) -> bool:
        paths = self.engine.ctx.vm_paths(self.name)
        state, _ = vmstate.process_state(paths)
        if state is not VmState.RUNNING:
            return False
        with contextlib.suppress(HypercoreError):  # (a busy monitor proves nothing)
            state, _ = await vmstate.query_status(paths, timeout=3.0)
            if state is VmState.PAUSED:
                return False
        try:
            async with agent_session(paths.qga_socket, vm_name=self.name, timeout=3.0,
                                     lock_timeout=10.0) as agent:
                await agent.ping(timeout=3.0)
        except HypercoreError:
            return False
        return True


async def _first(waits: list[Awaitable[object]], *, timeout: float) -> bool:
    """Wait until one of ``waits`` is done or ``timeout`` passed; the rest are
    cancelled (tasks given in ``waits`` are left running)."""
    tasks = [w if isinstance(w, asyncio.Task) else asyncio.ensure_future(w) for w in waits]
    own = [t for t, w in zip(tasks, waits, strict=True) if t is not w]
    try:
        done, _ = await asyncio.wait(tasks, timeout=timeout,
                                     return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in own:
            task.cancel()
    return bool(done)

