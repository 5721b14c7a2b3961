"""One clipboard link between two hosts' syncs, either end: :class:`LinkSession` moves
entries between this host's hub and the stream (:mod:`~hypercore_tui.core.clipwire`).

Both ends are the same session over a different hub:

* on the host that runs ``clip sync --link HOST``, the hub is its engine
  (:class:`EngineHub`) and the stream is the ssh process's pipes
  (:mod:`.remotepeer`);
* on the linked host, ``hypercore clip link`` (hidden; :func:`serve_link`) reads its
  stdin and writes its stdout: attached to that host's running sync through its control
  socket (:class:`AttachedHub`: the ``events``, ``get``, ``entry`` and ``files`` ops), or,
  when none runs there, running a sync of that host's VMs itself for as long as the link
  lives (an :class:`EngineHub` again).

No ping-pong: an entry whose source is this link is never sent back over it; what the
other end is known to hold (the digest of what was last sent or received; a files
entry's tree digest, since each host names its entry anew) is not sent again; an entry
that arrives and is the content this hub holds already is no change. Two hosts copying
at once converge: each entry carries the time it was detected, the hub keeps the newest
(``History.offer``), and an entry the hub refuses as older makes this end send its own
current entry back, which the other end then takes.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import re
import signal
import socket
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from hypercore_tui.core import clipwire
from hypercore_tui.core.clip import KIND_FILES, ClipItem
from hypercore_tui.core.errors import Busy, HypercoreError, OperationFailed, ProtocolError
from hypercore_tui.core.text import printable
from hypercore_tui.services import clipfiles
from hypercore_tui.services.clipsync import control, linkio
from hypercore_tui.services.clipsync.engine import (
    HAND_OVER_SIGNAL,
    SyncEngine,
    SyncEvent,
    holder,
)
from hypercore_tui.services.context import Context
from hypercore_tui.services.tasks import reap_all

log = logging.getLogger("hypercore.clipsync")
log.addHandler(logging.NullHandler())

LINK_ENDED = "the link ended"
#: How many files entries' tree digests a session remembers.
TREES_KEPT = 64
_LABEL = re.compile(r"[^A-Za-z0-9._-]")


def peer_label(name: str | None = None) -> str:
    """A name for this host on the other end (its entries' source there: ``link:NAME``):
    the host name, made of letters, digits, ``.``, ``_`` and ``-`` only."""
    label = _LABEL.sub("", name if name is not None else socket.gethostname())[:32]
    return label or "peer"


class Hub(Protocol):
    """This host's side of the link: its current entry, changes, offers."""

    ctx: Context
    #: files entry → its tree digest (what was sent or received over links)
    trees: dict[str, str]

    async def current(self) -> ClipItem | None: ...

    async def offer(self, kind: str, data: bytes, source: str, at: float) -> bool: ...

    async def offer_files(self, entry: str, names: Sequence[bytes], source: str,
                          at: float) -> bool: ...

    async def follow(self, changed: Callable[[], None]) -> None:
        """Call ``changed`` at each new current entry; returns when the hub ends."""


class EngineHub:
    """A hub that is a :class:`SyncEngine` of this process."""

    def __init__(self, engine: SyncEngine) -> None:
        self.engine = engine
        self.ctx = engine.ctx
        self.trees = engine.trees

    async def current(self) -> ClipItem | None:
        return self.engine.history.current

    async def offer(self, kind: str, data: bytes, source: str, at: float) -> bool:
        return self.engine.offer(kind, data, source, at=at) is not None

    async def offer_files(self, entry: str, names: Sequence[bytes], source: str,
                          at: float) -> bool:
        try:
            await self.engine.offer_files(entry, names, source, at=at)
        except OperationFailed as exc:
            if "newer" in str(exc):
                return False
            raise
        return True

    async def follow(self, changed: Callable[[], None]) -> None:
        def on_event(event: SyncEvent) -> None:
            if event.kind == "change":
                changed()

        stop = self.engine.listen(on_event)
        try:
            await asyncio.Event().wait()
        finally:
            stop()


class AttachedHub:
    """A hub that is another process's sync on this host, through its control socket."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.trees: dict[str, str] = {}

    async def current(self) -> ClipItem | None:
        reply = await control.request(self.ctx, "get", id=None)
        if reply is None:
            raise OperationFailed("the clipboard sync here stopped")
        item = reply.get("item")
        if not isinstance(item, dict):
            return None
        try:
            return ClipItem(id=int(item["id"]), kind=str(item["kind"]),
                            data=base64.b64decode(item["data"], validate=True),
                            source=str(item["source"]), at=float(item["at"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise OperationFailed(f"the clipboard sync here answered oddly: {exc}") from None

    async def offer(self, kind: str, data: bytes, source: str, at: float) -> bool:
        reply = await control.request(self.ctx, "entry", kind=kind,
                                      data=base64.b64encode(data).decode("ascii"),
                                      source=source, at=at)
        if reply is None:
            raise OperationFailed("the clipboard sync here stopped")
        return reply.get("item") is not None

    async def offer_files(self, entry: str, names: Sequence[bytes], source: str,
                          at: float) -> bool:
        try:
            reply = await control.request(
                self.ctx, "files", timeout=control.FILES_TIMEOUT, entry=entry,
                names=[base64.b64encode(n).decode("ascii") for n in names], source=source,
                at=at)
        except OperationFailed as exc:
            clipfiles.forget(self.ctx, entry)
            if "newer" in str(exc):
                return False
            raise
        if reply is None:
            clipfiles.forget(self.ctx, entry)
            raise OperationFailed("the clipboard sync here stopped")
        return True

    async def follow(self, changed: Callable[[], None]) -> None:
        async for line in control.events(self.ctx):
            event = line.get("event")
            if isinstance(event, dict) and event.get("kind") == "change":
                changed()


class LinkSession:
    """Entries both ways between ``hub`` and one stream, until the stream ends (returns
    why) or breaks the protocol (``ProtocolError``). ``source``: what entries from the
    other end are called here (``link:NAME``); ``on_hello``/``on_note``: the other end's
    greeting and its notes; ``say``: a fault of this session, one line each."""

    def __init__(self, hub: Hub, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 source: str, *, say: Callable[[str], None],
                 on_hello: Callable[[clipwire.Hello], None] | None = None,
                 silent_after: float = clipwire.SILENT_AFTER,
                 beat: float = clipwire.BEAT) -> None:
        self.hub = hub
        self.reader = reader
        self.writer = writer
        self.source = source
        self.say = say
        self.on_hello = on_hello
        self.silent_after = silent_after
        self.beat = beat
        #: what the other end is known to hold: a digest, or a files entry's tree digest
        self.holds: str | None = None
        self.sent = 0
        self.received = 0
        self._want = asyncio.Event()
        self._write_lock = asyncio.Lock()
        self._notes: set[asyncio.Task[None]] = set()

    def want_push(self) -> None:
        self._want.set()

    def post_note(self, message: str) -> None:
        """Tell the other end (between entries, never inside one)."""
        task = asyncio.get_running_loop().create_task(self.tell(message))
        self._notes.add(task)
        task.add_done_callback(self._notes.discard)

    async def tell(self, message: str) -> None:
        """A note to the other end now, between entries (after the session ran: its last
        word); a closed stream is left to the reader to notice."""
        async with self._write_lock:
            with contextlib.suppress(OSError, RuntimeError):
                await linkio.send_message(self.writer, clipwire.Note(message))

    async def run(self) -> str:
        self._want.set()  # (the current entry goes over at once: a catch-up)
        tasks = [asyncio.create_task(self._sender(), name="clip-link-send"),
                 asyncio.create_task(self._beats(), name="clip-link-beat"),
                 asyncio.create_task(self.hub.follow(self._want.set), name="clip-link-hub")]
        reading = asyncio.create_task(self._reader(), name="clip-link-read")
        try:
            await asyncio.wait([reading, *tasks], return_when=asyncio.FIRST_COMPLETED)
            if reading.done():
                return reading.result()
            for task in tasks:
                if task.done() and not task.cancelled() and \
                        (error := task.exception()) is not None:
                    raise error
            return "the clipboard sync there stopped"
        finally:
            await reap_all([reading, *tasks], grace=2.0)

    # -- sending ------------------------------------------------------------------------

    async def _beats(self) -> None:
        while True:
            await asyncio.sleep(self.beat)
            async with self._write_lock:
                await linkio.send_message(self.writer, clipwire.Beat())

    async def _sender(self) -> None:
        while True:
            await self._want.wait()
            self._want.clear()
            item = await self.hub.current()
            if item is None or item.source == self.source:
                continue
            known = self._identity(item)
            if known is not None and known == self.holds:
                continue
            async with self._write_lock:
                try:
                    sent = await linkio.send_entry(self.hub.ctx, self.writer, item)
                except OperationFailed as exc:
                    self.say(f"entry {item.id} not sent: {exc}")
                    continue
            if item.kind == KIND_FILES and (files := item.files) is not None:
                self._remember(files.entry, sent)
            self.holds = sent
            self.sent += 1

    def _identity(self, item: ClipItem) -> str | None:
        files = item.files
        if item.kind != KIND_FILES:
            return item.digest
        return self.hub.trees.get(files.entry) if files is not None else None

    def _remember(self, entry: str, tree: str) -> None:
        self.hub.trees[entry] = tree
        while len(self.hub.trees) > TREES_KEPT:
            del self.hub.trees[next(iter(self.hub.trees))]

    # -- receiving ----------------------------------------------------------------------

    async def _reader(self) -> str:
        while True:
            try:
                message = await asyncio.wait_for(linkio.read_message(self.reader),
                                                 self.silent_after)
            except TimeoutError:
                return f"no word from the other end for {self.silent_after:.0f} s"
            if message is None:
                return LINK_ENDED
            if isinstance(message, clipwire.Hello):
                if self.on_hello is not None:
                    self.on_hello(message)
            elif isinstance(message, clipwire.Note):
                self.say(f"the other end: {printable(message.message, limit=300)}")
            elif isinstance(message, clipwire.Entry | clipwire.Files):
                await self._receive(message)
            elif not isinstance(message, clipwire.Beat):
                raise ProtocolError("the clipboard link: a message outside an entry")

    async def _receive(self, header: clipwire.Entry | clipwire.Files) -> None:
        current = await self.hub.current()
        # A files entry this hub holds already (the same copy: detected at the same
        # moment, the same names and size; a link made again sends its current entry)
        # is read and dropped, not made a second entry.
        held = isinstance(header, clipwire.Files) and current is not None \
            and (files := current.files) is not None and current.at == header.at \
            and files.names == header.names and files.size == header.size
        try:
            got = await linkio.receive_entry(self.hub.ctx, self.reader, header,
                                             discard=held)
        except linkio.Refused as exc:
            self.say(str(exc))
            return
        self.received += 1
        # (a clock ahead of this one must not make its entries win over every copy here)
        at = min(got.at, time.time())
        if held:
            self.holds = got.tree
            return
        current = await self.hub.current()
        if got.files is not None:
            self.holds = got.tree
            if current is not None and (files := current.files) is not None \
                    and self.hub.trees.get(files.entry) == got.tree:
                clipfiles.forget(self.hub.ctx, got.files.entry)  # (the same files again)
                return
            self._remember(got.files.entry, got.tree)
            try:
                taken = await self.hub.offer_files(got.files.entry, got.files.names,
                                                   self.source, at)
            except HypercoreError as exc:
                self.say(f"files not taken: {exc}")
                return
        else:
            item_digest = ClipItem(0, got.kind, got.data, self.source, got.at).digest
            self.holds = item_digest
            if current is not None and current.digest == item_digest:
                return
            try:
                taken = await self.hub.offer(got.kind, got.data, self.source, at)
            except HypercoreError as exc:
                self.say(f"entry not taken: {exc}")
                return
        if not taken:
            # Older than this hub's entry: the other end gets ours, which it then takes.
            self.holds = None
            self._want.set()


# -- the far end: ``hypercore clip link`` ---------------------------------------------------

#: Why a link that ran its own sync ends when this host's own sync starts (the other end
#: links again at once and attaches to it).
HANDED_OVER = "this host's own clipboard sync started: it takes over, linking to it again"


async def _run_until_handed_over(session: LinkSession, handing_over: asyncio.Event) -> str:
    """The session's run, ended early (with :data:`HANDED_OVER`) when a sync of this
    host's own asks the link's sync to hand over."""
    run = asyncio.create_task(session.run(), name="clip-link-session")
    asked = asyncio.create_task(handing_over.wait(), name="clip-link-hand-over")
    try:
        await asyncio.wait([run, asked], return_when=asyncio.FIRST_COMPLETED)
        if run.done():
            return run.result()
        return HANDED_OVER
    finally:
        await reap_all([run, asked], grace=2.0)



async def serve_link(ctx: Context, peer: str, stdin: Any = None, stdout: Any = None) -> int:
    """This host's end of another host's ``clip sync --link``: the stream on stdin and
    stdout; attached to the sync running here, or running one of this host's VMs."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=clipwire.MAX_LINE)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader),
                                 stdin if stdin is not None else sys.stdin.buffer)
    if stdout is None:
        # The stream keeps the real stdout; anything else printed (a library, a child
        # process) goes to stderr and cannot break a message.
        sys.stdout.flush()
        stdout = os.fdopen(os.dup(1), "wb", buffering=0)
        os.dup2(2, 1)
    transport, protocol = await loop.connect_write_pipe(asyncio.streams.FlowControlMixin,
                                                        stdout)
    writer = asyncio.StreamWriter(transport, protocol, None, loop)
    task = asyncio.current_task()
    assert task is not None
    for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        loop.add_signal_handler(signum, task.cancel)
    source = f"link:{peer_label(peer)}"
    engine: SyncEngine | None = None
    running: asyncio.Task[None] | None = None
    hub: Hub
    pid = holder(ctx)
    if pid is None:
        engine = SyncEngine(ctx, None, for_link=True)
        try:
            engine.acquire()
        except Busy:
            engine = None
    # A sync of this host's own, started later, takes over from the link's (attached,
    # the signal is ignored: it is never sent then, unless by a stale lock note).
    handing_over = asyncio.Event()
    loop.add_signal_handler(HAND_OVER_SIGNAL, handing_over.set)
    if engine is not None:
        ready = asyncio.Event()
        running = asyncio.create_task(engine.run(ready=ready.set), name="clip-link-sync")
        await ready.wait()
        hub = EngineHub(engine)
        hello = clipwire.Hello("own", f"its VMs ({len(engine.vms)}) synced by the link")
    else:
        hub = AttachedHub(ctx)
        hello = clipwire.Hello("attached", f"its clipboard sync (pid {holder(ctx)})")

    def say(message: str) -> None:
        log.warning("clip link: %s", message)
        session.post_note(message)

    session = LinkSession(hub, reader, writer, source, say=say)
    if engine is not None:
        engine.listen(lambda e: say(e.message) if e.kind == "fault" else None)
    try:
        await linkio.send_message(writer, hello)
        why = (await _run_until_handed_over(session, handing_over) if engine is not None
               else await session.run())
        if why != LINK_ENDED:  # (its stdin ended: the other end went away; else say why)
            await session.tell(why)
    except (ConnectionError, BrokenPipeError):
        pass
    except (ProtocolError, OperationFailed) as exc:
        sys.stderr.write(f"hypercore: error: {exc}\n")
        return 1
    finally:
        if running is not None:
            running.cancel()
            await reap_all([running], grace=6.0)
    return 0
