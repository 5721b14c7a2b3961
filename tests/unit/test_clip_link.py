"""The clipboard link between two hosts' syncs (``clip sync --link``): the wire, entries
sent and received (text, PNG, files trees), loop avoidance, convergence, rings of hosts.
Every "host" is a SyncEngine of its own home in this process; links are socket pairs."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from hypercore_tui.core import clipwire
from hypercore_tui.core.clip import KIND_FILES, KIND_TEXT, ClipItem, FilesEntry
from hypercore_tui.core.errors import ProtocolError
from hypercore_tui.core.hosts import Host
from hypercore_tui.services import clipfiles
from hypercore_tui.services.clipsync import control, linkio
from hypercore_tui.services.clipsync.engine import SyncEngine, describe_status
from hypercore_tui.services.clipsync.link import EngineHub, LinkSession, peer_label
from hypercore_tui.services.clipsync.remotepeer import RemotePeer
from hypercore_tui.services.context import Context
from hypercore_tui.services.tasks import reap_all
from tests.helpers import wait_until_async


def make_ctx(tmp_path: Path, name: str, **env: str) -> Context:
    ctx = Context.from_environ({"HYPERCORE_HOME": str(tmp_path / name / "home"),
                                "HYPERCORE_RUNTIME_DIR": str(tmp_path / name / "run"), **env})
    ctx.ensure_home()
    return ctx


async def pipe() -> tuple[tuple[asyncio.StreamReader, asyncio.StreamWriter],
                          tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    left, right = socket.socketpair()
    one = await asyncio.open_connection(sock=left, limit=clipwire.MAX_LINE)
    two = await asyncio.open_connection(sock=right, limit=clipwire.MAX_LINE)
    return one, two


# -- the wire ------------------------------------------------------------------------------


def test_every_message_reads_back() -> None:
    messages: list[clipwire.Message] = [
        clipwire.Hello("own", "its VMs (2)"), clipwire.Beat(), clipwire.Note("x"),
        clipwire.Entry(KIND_TEXT, 5, 1.5), clipwire.Entry("image/png", 0, 2.0),
        clipwire.Files((b"a", b"-n\nx\xff"), False, 10, 3.0),
        clipwire.Item(1, b"f", False, 4, True), clipwire.Item(0, b"d", True),
        clipwire.End("0" * 64), clipwire.Abort("gone")]
    for message in messages:
        line = clipwire.encode(message)
        assert line.endswith(b"\n") and line.count(b"\n") == 1 and line.isascii()
        assert clipwire.decode(line) == message


@pytest.mark.parametrize("line", [
    b'{"type":"entry","kind":"files","size":1,"at":1}',  # files never as bytes
    b'{"type":"entry","kind":"text","size":-1,"at":1}',
    b'{"type":"entry","kind":"text","size":1,"at":NaN}',
    b'{"type":"entry","kind":"text","size":true,"at":1}',
    b'{"type":"item","depth":0,"name":"Li4=","dir":false,"size":0,"exec":false}',  # ".."
    b'{"type":"item","depth":0,"name":"YS9i","dir":false,"size":0,"exec":false}',  # "a/b"
    b'{"type":"item","depth":0,"name":"!!","dir":false,"size":0,"exec":false}',
    b'{"type":"item","depth":0,"name":"YQ==","dir":true,"size":3,"exec":false}',
    b'{"type":"item","depth":99,"name":"YQ==","dir":true,"size":0,"exec":false}',
    b'{"type":"files","names":["YQ==","YQ=="],"cut":false,"size":0,"at":1}',
    b'{"type":"files","names":[],"cut":false,"size":0,"at":1}',
    b'{"type":"end","sha256":"xyz"}',
    b'{"type":"hello","mode":"root"}',
])
def test_wrong_fields_are_refused(line: bytes) -> None:
    with pytest.raises(clipwire.WireError):
        clipwire.decode(line)


def test_lines_that_are_no_message_are_skipped() -> None:
    assert clipwire.decode(b"Welcome to host b\n") is None
    assert clipwire.decode(b'{"type":"future"}\n') is None
    assert clipwire.decode(b"[1,2]\n") is None


def test_peer_label_keeps_only_safe_characters() -> None:
    assert peer_label("rack-2.example") == "rack-2.example"
    assert peer_label("$(rm -rf)/;`x`") == "rm-rfx"
    assert peer_label("") == "peer"


# -- entries over the wire -------------------------------------------------------------------


def make_tree(ctx: Context) -> FilesEntry:
    base = clipfiles.share_files_dir(ctx)
    entry = clipfiles.new_entry_id()
    root = base / entry
    (root / "dir" / "sub").mkdir(parents=True)
    (root / "dir" / "sub" / "deep.txt").write_bytes(b"deep\n")
    (root / "dir" / "b.bin").write_bytes(os.urandom(300_000))
    run = root / os.fsdecode(b"-n\nrun\xff")
    run.write_bytes(b"#!/bin/sh\n")
    run.chmod(0o755)
    names = (b"dir", b"-n\nrun\xff")
    return clipfiles.check_entry(ctx, entry, names, cut=False, cap=1 << 30)


def same_tree(a: Path, b: Path) -> None:
    listing_a = sorted(p.relative_to(a) for p in a.rglob("*"))
    assert listing_a == sorted(p.relative_to(b) for p in b.rglob("*"))
    for rel in listing_a:
        pa, pb = a / rel, b / rel
        assert pa.is_dir() == pb.is_dir()
        if pa.is_file():
            assert pa.read_bytes() == pb.read_bytes()
            assert (pa.stat().st_mode & 0o111 != 0) == (pb.stat().st_mode & 0o111 != 0)


async def test_a_files_tree_crosses_exactly(tmp_path: Path) -> None:
    a, b = make_ctx(tmp_path, "a"), make_ctx(tmp_path, "b")
    files = make_tree(a)
    item = ClipItem(1, KIND_FILES, files.to_json(), "vm:x", 5.0)
    (_, w), (r, _) = await pipe()
    sent = asyncio.create_task(linkio.send_entry(a, w, item))
    header = await linkio.read_message(r)
    assert isinstance(header, clipwire.Files)
    got = await linkio.receive_entry(b, r, header)
    tree = await sent
    assert got.files is not None and got.tree == tree and got.at == 5.0
    assert got.files.entry != files.entry and got.files.names == files.names
    same_tree(clipfiles.share_files_dir(a) / files.entry,
              clipfiles.share_files_dir(b) / got.files.entry)
    checked = clipfiles.check_entry(b, got.files.entry, got.files.names, cut=False,
                                    cap=1 << 30)
    assert checked.size == files.size and checked.folders == 1


async def test_over_the_cap_is_read_and_dropped_then_the_link_goes_on(
        tmp_path: Path) -> None:
    a = make_ctx(tmp_path, "a")
    b = make_ctx(tmp_path, "b", HYPERCORE_CLIP_FILES_MAX="1000")
    files = make_tree(a)
    (_, w), (r, _) = await pipe()

    async def send() -> None:
        await linkio.send_entry(a, w, ClipItem(1, KIND_FILES, files.to_json(), "vm:x", 1.0))
        await linkio.send_message(w, clipwire.Beat())

    sender = asyncio.create_task(send())
    header = await linkio.read_message(r)
    assert isinstance(header, clipwire.Files)
    with pytest.raises(linkio.Refused, match="1000|cap|larger|limit"):
        await linkio.receive_entry(b, r, header)
    assert await linkio.read_message(r) == clipwire.Beat()
    await sender
    there = clipfiles.share_files_dir(b)
    assert not there.exists() or os.listdir(there) == []


async def test_a_lying_size_or_a_stray_item_breaks_the_link(tmp_path: Path) -> None:
    b = make_ctx(tmp_path, "b", HYPERCORE_CLIP_FILES_MAX="10")
    (_, w), (r, _) = await pipe()
    for message in (clipwire.Item(0, b"a", True), clipwire.Item(2, b"x", False, 1),
                    clipwire.End("0" * 64)):
        w.write(clipwire.encode(message))
    w.write(b"y")
    await w.drain()
    header = clipwire.Files((b"a",), False, 0, 1.0)  # (says 0 bytes: the items say more)
    with pytest.raises(ProtocolError, match="outside its folder"):
        await linkio.receive_entry(b, r, header)
    there = clipfiles.share_files_dir(b)
    assert not there.exists() or os.listdir(there) == []


async def test_bad_text_is_refused_in_one_line(tmp_path: Path) -> None:
    b = make_ctx(tmp_path, "b")
    (_, w), (r, _) = await pipe()
    for data in (b"a\0b", b"\xff\xfe"):
        w.write(clipwire.encode(clipwire.Entry(KIND_TEXT, len(data), 1.0)) + data)
        await w.drain()
        header = await linkio.read_message(r)
        assert isinstance(header, clipwire.Entry)
        with pytest.raises(linkio.Refused):
            await linkio.receive_entry(b, r, header)


# -- sessions between engines ----------------------------------------------------------------


class Hosts:
    """Engines ("hosts") in this process, linked by sessions over socket pairs."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.engines: dict[str, SyncEngine] = {}
        self.sessions: list[LinkSession] = []
        self.tasks: list[asyncio.Task[str]] = []
        self.said: list[str] = []

    def host(self, name: str) -> SyncEngine:
        engine = SyncEngine(make_ctx(self.tmp_path, name), [], host=False)
        engine.acquire()
        self.engines[name] = engine
        return engine

    async def link(self, one: str, two: str) -> None:
        (r1, w1), (r2, w2) = await pipe()
        for name, other, reader, writer in ((one, two, r1, w1), (two, one, r2, w2)):
            session = LinkSession(EngineHub(self.engines[name]), reader, writer,
                                  f"link:{other}", say=self.said.append, beat=0.2)
            self.sessions.append(session)
            self.tasks.append(asyncio.create_task(session.run()))

    def text(self, name: str) -> str | None:
        current = self.engines[name].history.current
        return current.text if current is not None and current.kind == KIND_TEXT else None

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with contextlib.suppress(BaseException):
                await task
        for engine in self.engines.values():
            engine.release()


@pytest.fixture
async def hosts(tmp_path: Path) -> AsyncIterator[Hosts]:
    world = Hosts(tmp_path)
    yield world
    await world.close()


async def test_text_crosses_both_ways_and_never_comes_back(hosts: Hosts) -> None:
    a, b = hosts.host("a"), hosts.host("b")
    await hosts.link("a", "b")
    a.offer_text("from a", "vm:web")
    await wait_until_async("it crossed", lambda: hosts.text("b") == "from a", timeout=5)
    current = b.history.current
    assert current is not None and current.source == "link:a"
    b.offer_text("from b", "host:tmux")
    await wait_until_async("it crossed", lambda: hosts.text("a") == "from b", timeout=5)
    await asyncio.sleep(0.5)
    assert [i.text for i in a.history] == ["from b", "from a"]
    assert [i.text for i in b.history] == ["from b", "from a"]
    assert sum(s.sent for s in hosts.sessions) == 2 and hosts.said == []


async def test_an_image_crosses(hosts: Hosts) -> None:
    a, b = hosts.host("a"), hosts.host("b")
    await hosts.link("a", "b")
    png = b"\x89PNG\r\n\x1a\n" + os.urandom(5000)
    a.offer("image/png", png, "vm:web")
    await wait_until_async("it crossed", lambda: b.history.current is not None, timeout=5)
    current = b.history.current
    assert current is not None and current.kind == "image/png" and current.data == png


async def test_two_hosts_copying_at_once_converge_on_the_later(hosts: Hosts) -> None:
    a, b = hosts.host("a"), hosts.host("b")
    a.offer(KIND_TEXT, b"earlier on a", "vm:x", at=100.0)
    b.offer(KIND_TEXT, b"later on b", "vm:y", at=101.0)
    await hosts.link("a", "b")  # (each sends its current entry at once: both cross)
    await wait_until_async("it crossed", lambda: hosts.text("a") == hosts.text("b") == "later on b",
                           timeout=5)
    await asyncio.sleep(0.5)
    assert hosts.text("a") == hosts.text("b") == "later on b"


async def test_a_ring_of_hosts_settles(hosts: Hosts) -> None:
    for name in "abc":
        hosts.host(name)
    await hosts.link("a", "b")
    await hosts.link("b", "c")
    await hosts.link("c", "a")
    hosts.engines["a"].offer_text("round", "vm:x")
    await wait_until_async("it crossed", lambda: all(hosts.text(n) == "round" for n in "abc"),
                           timeout=5)
    files = make_tree(hosts.engines["b"].ctx)
    await hosts.engines["b"].offer_files(files.entry, files.names, "vm:y")
    await wait_until_async("it crossed", lambda: all(
        (c := e.history.current) is not None and c.kind == KIND_FILES
        for e in hosts.engines.values()), timeout=10)
    await asyncio.sleep(1.0)
    sent = sum(s.sent for s in hosts.sessions)
    await asyncio.sleep(1.0)
    assert sum(s.sent for s in hosts.sessions) == sent  # (nothing goes round for ever)
    for engine in hosts.engines.values():
        assert len(engine.history) == 2, [i.describe() for i in engine.history]
    for name in "ac":
        current = hosts.engines[name].history.current
        assert current is not None and (got := current.files) is not None
        same_tree(clipfiles.share_files_dir(hosts.engines["b"].ctx) / files.entry,
                  clipfiles.share_files_dir(hosts.engines[name].ctx) / got.entry)


async def test_files_received_are_checked_and_offered(hosts: Hosts) -> None:
    a, b = hosts.host("a"), hosts.host("b")
    await hosts.link("a", "b")
    files = make_tree(a.ctx)
    await a.offer_files(files.entry, files.names, "host")
    await wait_until_async("it crossed", lambda: (c := b.history.current) is not None
                           and c.kind == KIND_FILES, timeout=5)
    current = b.history.current
    assert current is not None and current.source == "link:a"
    got = current.files
    assert got is not None and got.size == files.size and got.folders == 1


# -- the far end (`hypercore clip link`) as a child process, the peer's reconnection ----------


class LocalPeer(RemotePeer):
    """A RemotePeer whose far end is ``hypercore clip link`` run here in ``home`` (no SSH)."""

    def __init__(self, engine: SyncEngine, far: Context) -> None:
        super().__init__(engine, Host("b", "nobody@b"), retry_delays=(0.2,))
        self.far = far
        self.procs: list[asyncio.subprocess.Process] = []

    async def _start(self) -> asyncio.subprocess.Process:
        env = {**os.environ, **{k: v for k, v in self.far.environ.items()
                                if k.startswith("HYPERCORE_")}}
        env.pop("TMUX", None)
        env.pop("DISPLAY", None)
        env.pop("WAYLAND_DISPLAY", None)
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "hypercore_tui", "clip", "link", "--from", "a",
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
            limit=clipwire.MAX_LINE)
        self.procs.append(proc)
        return proc

    async def kill_all(self) -> None:
        """Every far end still running, killed and reaped."""
        for proc in self.procs:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()


def linked_to_b(tmp_path: Path) -> tuple[Context, SyncEngine, LocalPeer, list[str]]:
    """Host a's sync (holding its lock) with a LocalPeer to host b: b's context, a's
    engine, the peer, and the faults a's sync says."""
    far = make_ctx(tmp_path, "b")
    faults: list[str] = []
    engine = SyncEngine(make_ctx(tmp_path, "a"), [], host=False,
                        on_event=lambda e: faults.append(e.message) if e.kind == "fault"
                        else None)
    peer = LocalPeer(engine, far)
    engine.links.append(peer)
    engine.acquire()
    return far, engine, peer, faults


async def wind_down(tasks: list[asyncio.Task[None]], peer: LocalPeer,
                    *engines: SyncEngine) -> None:
    """A test's tasks cancelled and reaped, the far ends killed, the engines' locks let go."""
    for task in tasks:
        task.cancel()
    await reap_all(tasks, grace=5)
    await peer.kill_all()
    for engine in engines:
        engine.release()


async def far_text(ctx: Context) -> str | None:
    reply = await control.request(ctx, "get", id=None)
    item = reply.get("item") if reply else None
    if not isinstance(item, dict) or item["kind"] != KIND_TEXT:
        return None
    return base64.b64decode(item["data"]).decode()


@pytest.mark.parametrize("attached", [False, True])
async def test_the_far_end_links_and_comes_back_after_it_died(
        tmp_path: Path, attached: bool) -> None:
    far, engine, peer, faults = linked_to_b(tmp_path)
    tasks: list[asyncio.Task[None]] = []
    far_engine = None
    if attached:  # a sync of its own runs there: the link attaches to it
        far_engine = SyncEngine(far, [], host=False)
        ready = asyncio.Event()
        tasks.append(asyncio.create_task(far_engine.run(ready=ready.set)))
        await ready.wait()
    tasks.append(asyncio.create_task(peer.run()))
    try:
        await wait_until_async("linked", lambda: peer.state == "live", timeout=20)
        assert ("its clipboard sync" if attached else "synced by the link") in (peer.note or "")
        engine.offer_text("from a", "vm:web")
        deadline = time.monotonic() + 10
        while await far_text(far) != "from a":
            assert time.monotonic() < deadline, "a's entry did not reach b"
            await asyncio.sleep(0.05)
        reply = await control.request(far, "offer", text="from b", source="host:tmux")
        assert reply is not None and reply["item"] is not None
        await wait_until_async("b's entry here", lambda: (c := engine.history.current)
                               is not None and c.text == "from b", timeout=10)
        current = engine.history.current
        assert current is not None and current.source == "link:b"
        first = peer.procs[-1]
        first.kill()  # the far end dies: one fault, then it links again by itself
        await wait_until_async("down", lambda: peer.state == "down", timeout=10)
        await wait_until_async("linked again", lambda: peer.state == "live"
                               and len(peer.procs) > 1, timeout=20)
        engine.offer_text("after the drop", "vm:web")
        deadline = time.monotonic() + 10
        while await far_text(far) != "after the drop":
            assert time.monotonic() < deadline, "the link did not come back"
            await asyncio.sleep(0.05)
        if far_engine is not None:
            assert [i.text for i in far_engine.history] == [
                "after the drop", "from b", "from a"]
            # The sync there stops: the link says why, comes back and runs one itself.
            await reap_all([tasks.pop(0)], grace=5)
            await wait_until_async("own sync there", lambda: peer.state == "live" and
                                   "synced by the link" in (peer.note or ""), timeout=20)
            assert any("the clipboard sync there stopped" in e for e in faults), faults
        status = engine.status()
        assert status["links"][0]["name"] == "link:b" and status["links"][0]["state"] == "live"
        assert any(line.startswith("  link:b: live (b: ")
                   for line in describe_status(status)), describe_status(status)
        await reap_all([tasks.pop()], grace=5)  # the sync here stops: the far end ends too
        assert peer.procs[-1].returncode == 0
        if not attached:
            assert await control.status(far) == {"running": False}
    finally:
        await wind_down(tasks, peer, engine)


async def test_a_link_made_again_does_not_copy_the_files_twice(hosts: Hosts) -> None:
    a, b = hosts.host("a"), hosts.host("b")
    await hosts.link("a", "b")
    files = make_tree(a.ctx)
    await a.offer_files(files.entry, files.names, "host")
    await wait_until_async("it crossed", lambda: (c := b.history.current) is not None
                           and c.kind == KIND_FILES, timeout=5)
    for task in hosts.tasks:
        task.cancel()
    await reap_all(hosts.tasks, grace=2)
    hosts.sessions.clear()
    await hosts.link("a", "b")  # (each end sends its current entry again)
    await wait_until_async("sent again", lambda: sum(s.received for s in hosts.sessions) >= 1,
                           timeout=5)
    await asyncio.sleep(0.3)
    assert len(a.history) == 1 and len(b.history) == 1
    assert len(os.listdir(clipfiles.share_files_dir(b.ctx))) == 1


async def test_an_entry_from_a_clock_ahead_does_not_hold_back_copies_here(
        hosts: Hosts) -> None:
    a, b = hosts.host("a"), hosts.host("b")
    await hosts.link("a", "b")
    b.offer(KIND_TEXT, b"from the future", "vm:y", at=time.time() + 3600)
    await wait_until_async("it crossed", lambda: hosts.text("a") == "from the future",
                           timeout=5)
    assert a.offer_text("a copy here, now", "vm:x") is not None


async def test_control_get_and_entry_ops(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path, "b")
    engine = SyncEngine(ctx, [], host=False)
    ready = asyncio.Event()
    task = asyncio.create_task(engine.run(ready=ready.set))
    try:
        await asyncio.wait_for(ready.wait(), 5)
        assert await control.request(ctx, "get", id=None) == {"item": None}
        png = b"\x89PNG\r\n\x1a\nxyz"
        reply = await control.request(ctx, "entry", kind="image/png", source="link:a",
                                      data=base64.b64encode(png).decode(), at=time.time())
        assert reply is not None and reply["item"]["source"] == "link:a"
        got = await control.request(ctx, "get", id=None)
        assert got is not None and base64.b64decode(got["item"]["data"]) == png
        older = await control.request(ctx, "entry", kind="text", source="link:a",
                                      data=base64.b64encode(b"old").decode(), at=1.0)
        assert older == {"item": None}  # detected before the current entry: no change
        for bad in ({"kind": "files", "data": "", "source": "x", "at": 1.0},
                    {"kind": "text", "data": "!!", "source": "x", "at": 1.0},
                    {"kind": "text", "data": "/w==", "source": "x", "at": 2e9},
                    {"kind": "text", "data": "YQ==", "source": "x", "at": "now"},
                    {"kind": "text", "data": "YQ==", "source": "x", "at": True}):
            with pytest.raises(Exception, match="entry"):
                await control.request(ctx, "entry", **bad)
        stream = control.events(ctx)
        assert "status" in await asyncio.wait_for(anext(stream), 5)
        task.cancel()
        with pytest.raises(StopAsyncIteration):  # (its end reaches the followers)
            await asyncio.wait_for(anext(stream), 5)
    finally:
        task.cancel()
        await reap_all([task], grace=5)


async def test_a_sync_started_there_takes_over_from_the_links(tmp_path: Path) -> None:
    """No sync ran on b, so the link's `clip link` runs one; then b's own sync starts (a
    `clip sync` of b's user, a dashboard there): it is not refused as busy, the link's
    sync hands over (its process says why and ends), the link comes back attached to
    b's own sync, and entries go on crossing both ways."""
    far, engine, peer, faults = linked_to_b(tmp_path)
    tasks = [asyncio.create_task(peer.run())]
    far_engine = SyncEngine(far, [], host=False)
    try:
        await wait_until_async("linked", lambda: peer.state == "live", timeout=20)
        assert "synced by the link" in (peer.note or "")
        first = peer.procs[-1]
        engine.offer_text("before", "vm:web")
        deadline = time.monotonic() + 10
        while await far_text(far) != "before":
            assert time.monotonic() < deadline, "a's entry did not reach b"
            await asyncio.sleep(0.05)

        ready = asyncio.Event()
        started = time.monotonic()
        tasks.append(asyncio.create_task(far_engine.run(ready=ready.set)))
        await asyncio.wait_for(ready.wait(), 15)  # (not Busy: it took over)
        took = time.monotonic() - started
        assert await asyncio.wait_for(first.wait(), 10) == 0  # the link's sync ended
        await wait_until_async("linked again, attached", lambda: peer.state == "live"
                               and "its clipboard sync" in (peer.note or ""), timeout=20)
        assert any("own clipboard sync started: it takes over" in f for f in faults), faults
        status = await control.status(far)
        assert status is not None and status["pid"] == os.getpid()  # b's own sync
        engine.offer_text("after", "vm:web")
        await wait_until_async("a's entry in b's own sync", lambda: (
            c := far_engine.history.current) is not None and c.text == "after", timeout=10)
        far_engine.offer_text("from b", "host:tmux")
        await wait_until_async("b's entry here", lambda: (c := engine.history.current)
                               is not None and c.text == "from b", timeout=10)
        print(f"\nb's own sync took over from the link's in {took:.2f} s")
    finally:
        await wind_down(tasks, peer, engine, far_engine)
