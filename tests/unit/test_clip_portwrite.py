"""Writes down the clipboard port: the host gives a small text to the guest's watcher
(``w TOKEN ID BASE64``), which sets the clipboard with the session's tool and answers
``w-ok ID`` or ``w-fail ID WHY``; the agent's push is the fallback. Both sides of the
line protocol (clipwatch.py's Port and put_text, vmsync's lines), then the host's
VmSync against the real guest Port on a socket."""

from __future__ import annotations

import asyncio
import base64
import os
import select
import socket
import threading
import time
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from hypercore_tui.core.clip import KIND_TEXT, ClipItem, History
from hypercore_tui.services import clipboard
from hypercore_tui.services.clipsync import vmsync
from hypercore_tui.services.clipsync.vmsync import (
    INLINE_MAX,
    PORT_LINE_MAX,
    SyncState,
    VmSync,
    cancel_line,
    line_age,
    reply_line,
    write_line,
)

from .test_clipfiles import guest_program

TOKEN = "0123456789abcdef"


@pytest.fixture(scope="module")
def guest() -> types.ModuleType:
    return guest_program()


# -- the lines ----------------------------------------------------------------------------


def test_the_two_sides_agree_on_a_write(guest: types.ModuleType) -> None:
    for text in (b"", "ünïcode ✓\n\ttabs".encode(), b"x" * INLINE_MAX,
                 b"$(id) `id` \x1b]52;c;eA==\x07"):
        line = write_line(TOKEN, "0badcafe", text)
        assert line.endswith(b"\n") and len(line) - 1 <= guest.W_LINE_MAX
        assert guest.parse_command(line[:-1], TOKEN) == ("w", "0badcafe", text)
    assert guest.W_LINE_MAX + 1 < 32 * 1024 and guest.W_LINE_MAX <= PORT_LINE_MAX + 32
    assert guest.parse_command(cancel_line(TOKEN, "0badcafe")[:-1], TOKEN) == (
        "x", "0badcafe", b"")


@pytest.mark.parametrize("line", [
    b"w fedcba9876543210 0badcafe " + base64.b64encode(b"another watcher's"),
    b"w-cancel fedcba9876543210 0badcafe",
    b"w 0123456789abcdef 0badcafe not base64!",
    b"w 0123456789abcdef 0badcafe " + base64.b64encode(b"x" * (INLINE_MAX + 1)),
    b"w 0123456789abcdef 0BADCAFE " + base64.b64encode(b"x"),
    b"w 0123456789abcdef 0badcaf " + base64.b64encode(b"x"),
    b"w 0123456789abcdef 0badcafe " + base64.b64encode(b"x") + b" trailing",
    b"t " + base64.b64encode(b"x"),
    b"",
], ids=lambda line: repr(line[:40]))
def test_the_watcher_takes_nothing_else(guest: types.ModuleType, line: bytes) -> None:
    assert guest.parse_command(line, TOKEN) is None


def test_the_host_reads_the_watchers_answers(guest: types.ModuleType) -> None:
    assert reply_line(guest.reply_line("0badcafe", None)[:-1]) == ("0badcafe", None)
    assert reply_line(guest.reply_line("0badcafe", "xclip failed (exit 1)")[:-1]) == (
        "0badcafe", "xclip failed (exit 1)")
    # (the reason is ASCII, printable and short on the guest's side already)
    said = guest.reply_line("0badcafe", "bad \x1b[31m\u00e9" + "y" * 300)
    assert said.isascii() and len(said) < 200
    assert reply_line(said[:-1]) is not None


@pytest.mark.parametrize("line", [
    b"w-ok 0BADCAFE", b"w-ok 0badcafe extra", b"w-ok", b"w-fail 0badcafe \x1b]52;c;eA==\x07",
    b"w-fail 0badcafe " + b"y" * 161, b"w-okay 0badcafe", b"t " + base64.b64encode(b"w-ok"),
    b"c", b"c files",
], ids=lambda line: repr(line[:40]))
def test_the_host_takes_no_other_line_as_an_answer(line: bytes) -> None:
    assert reply_line(line) is None


# -- the guest's Port ---------------------------------------------------------------------


@pytest.fixture
def pair(guest: types.ModuleType) -> Iterator[tuple[Any, socket.socket]]:
    """A Port on one end of a socket pair (the guest's port), the host's end."""
    host, port_end = socket.socketpair()
    port_end.setblocking(False)
    yield guest.Port(port_end.fileno(), TOKEN), host
    host.close()
    port_end.close()


def test_lines_are_taken_whole_and_bounded(guest: types.ModuleType,
                                           pair: tuple[Any, socket.socket]) -> None:
    port, _ = pair
    line = write_line(TOKEN, "00000001", b"x" * INLINE_MAX)
    assert port.feed(line[:100]) == []
    assert port.feed(line[100:5000]) == []
    assert port.feed(line[5000:] + b"w-cancel") == [line[:-1]]
    assert port.buf == b"w-cancel"
    # A line longer than any write is dropped up to its end, and never kept whole.
    port.buf = b""
    assert port.feed(b"y" * (guest.W_LINE_MAX + 10)) == [] and port.buf == b""
    assert port.feed(b"y" * 1000) == [] and len(port.buf) == 1000
    assert port.feed(b"yy\nnext\n") == [b"next"]


def answers(host: socket.socket) -> list[bytes]:
    host.setblocking(False)
    try:
        return host.recv(65536).splitlines()
    except BlockingIOError:
        return []


def test_the_newest_write_is_made_older_ones_superseded(pair: tuple[Any, socket.socket]
                                                        ) -> None:
    port, host = pair
    lines = [write_line(TOKEN, "00000001", b"one"), write_line(TOKEN, "00000002", b"two"),
             write_line(TOKEN, "00000003", b"three"), cancel_line(TOKEN, "00000003"),
             write_line("fedcba9876543210", "00000004", b"stale")]
    assert port.take(port.feed(b"".join(lines))) == ("00000002", b"two")
    assert answers(host) == [b"w-fail 00000001 superseded"]
    port.answer("00000002", None)
    assert answers(host) == [b"w-ok 00000002"]


def test_the_port_is_read_until_the_host_goes_then_signals_wake_it(
        pair: tuple[Any, socket.socket]) -> None:
    port, host = pair
    host.sendall(write_line(TOKEN, "00000001", b"hello"))
    assert port.fds() == [port.fd]
    assert port.ready([port.fd]) == ("00000001", b"hello")
    assert port.ready([port.fd]) is None  # (nothing more: EAGAIN)
    host.shutdown(socket.SHUT_WR)  # no host: the port reads as EOF, polls readable
    assert port.ready([port.fd]) is None and not port.listening
    assert port.fds() == []  # (not looked at: select() would never sleep)
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    port.wake = wake_r
    try:
        os.write(wake_w, b"\x1d")  # SIGIO through the wakeup fd: looked at again
        assert port.ready([wake_r]) is None and not port.listening  # (still no host)
    finally:
        os.close(wake_r)
        os.close(wake_w)


def test_without_signals_every_wakeup_looks_at_the_port_again(
        pair: tuple[Any, socket.socket]) -> None:
    port, host = pair
    port.listening = False  # (as after an EOF) and no SIGIO set up
    host.sendall(write_line(TOKEN, "00000001", b"back"))
    assert port.ready([]) == ("00000001", b"back") and port.listening


def test_sigio_is_set_up_on_the_port(guest: types.ModuleType, tmp_path: Path) -> None:
    import signal

    read, write = os.pipe()
    os.set_blocking(read, False)  # (as the port is opened)
    port = guest.Port(read, TOKEN)
    old = signal.getsignal(signal.SIGIO)
    try:
        port.start()
        assert port.signals and port.fds() == [port.wake, read]
        os.kill(os.getpid(), signal.SIGIO)  # (a data arrival or a host connecting)
        ready, _, _ = select.select([port.wake], [], [], 2)
        assert ready == [port.wake]
        os.write(write, write_line(TOKEN, "00000005", b"woken"))
        assert port.ready([port.wake]) == ("00000005", b"woken")
    finally:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGIO, old)
        for fd in (read, write, port.wake):
            os.close(fd)


def test_put_text_feeds_the_tool_and_says_why_not(guest: types.ModuleType,
                                                  tmp_path: Path) -> None:
    out = tmp_path / "clipboard"
    assert guest.put_text(["sh", "-c", 'cat > "$0"', str(out)], b"copied \xe2\x9c\x93") is None
    assert out.read_bytes() == b"copied \xe2\x9c\x93"
    assert guest.put_text(["sh", "-c", "exit 3"], b"x") == "sh failed (exit 3)"
    assert guest.put_text(["/nonexistent/xclip"], b"x").startswith("xclip did not start")
    started = time.monotonic()
    assert guest.put_text(["sleep", "30"], b"x") == "sleep did not take it within 1 s"
    assert time.monotonic() - started < guest.WRITE_WAIT + 1


# -- the host's VmSync against the guest's Port -------------------------------------------


class FakeEngine:
    def __init__(self, sock: Path) -> None:
        self.history = History()
        self.faults: list[str] = []
        self.ctx = types.SimpleNamespace(
            vm_paths=lambda name: types.SimpleNamespace(clip_socket=sock))

    def offer(self, kind: str, data: bytes, source: str, *, at: float | None = None
              ) -> ClipItem | None:
        return self.history.offer(kind, data, source, at=at)

    def fault(self, name: str, message: str) -> None:
        self.faults.append(message)

    def pushed(self, vm: Any, item: ClipItem, seconds: float) -> None:
        pass

    def vm_changed(self, vm: Any) -> None:
        pass


class Guest:
    """The guest's end of the port: the watcher's Port on an accepted connection, the
    clipboard set by ``put``."""

    def __init__(self, path: Path, module: types.ModuleType,
                 put: Callable[[bytes], str | None]) -> None:
        self.server = socket.socket(socket.AF_UNIX)
        self.server.bind(str(path))
        self.server.listen(1)
        self.module, self.put = module, put
        self.lines: list[bytes] = []  # what the host wrote
        self.signal: bytes | None = None  # a change line written after each write
        self.conn: socket.socket | None = None
        self.stop = False
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        conn, _ = self.server.accept()
        self.conn = conn
        conn.setblocking(False)
        port = self.module.Port(conn.fileno(), TOKEN)
        feed = port.feed

        def keep(data: bytes) -> list[bytes]:
            lines: list[bytes] = feed(data)
            self.lines.extend(lines)
            return lines

        port.feed = keep
        while not self.stop:
            ready, _, _ = select.select(port.fds(), [], [], 0.05)
            write = port.ready(ready)
            if write is not None:
                port.answer(write[0], self.put(write[1]))
                if self.signal is not None:
                    os.write(conn.fileno(), self.signal)

    def close(self) -> None:
        self.stop = True
        self.thread.join(5)
        if self.conn is not None:
            self.conn.close()
        self.server.close()


@pytest.fixture
def wired(guest: types.ModuleType, tmp_path: Path,
          monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[list[bytes], list[str], Any]]:
    """(the texts the guest's tool took, the agent's pushes, a runner of the host side)."""
    took: list[bytes] = []
    agent: list[str] = []
    outcome: dict[str, Any] = {"put": None}

    def put(text: bytes) -> str | None:
        if outcome["put"] == "hang":
            time.sleep(0.6)
            return None
        took.append(text)
        return outcome["put"]  # type: ignore[no-any-return]

    async def push_one(ctx: Any, name: str, text: str, *, check_paused: bool = True
                       ) -> clipboard.PushResult:
        agent.append(text)
        return clipboard.PushResult(name, True, method="xclip", seconds=0.4)

    monkeypatch.setattr(clipboard, "push_one", push_one)
    sock = tmp_path / "clip.sock"
    peer = Guest(sock, guest, put)
    engine = FakeEngine(sock)
    vm = VmSync(engine, "vm")  # type: ignore[arg-type]
    vm.state = SyncState.WATCHING

    def run(body: Callable[[VmSync], Any]) -> Any:
        async def main() -> Any:
            reader = asyncio.create_task(vm._read_port())  # noqa: SLF001
            try:
                while vm._port is None:  # noqa: SLF001
                    await asyncio.sleep(0.01)
                return await body(vm)
            finally:
                reader.cancel()
                await asyncio.gather(reader, return_exceptions=True)
        return asyncio.run(main())

    run.outcome = outcome  # type: ignore[attr-defined]
    run.peer = peer  # type: ignore[attr-defined]
    run.engine = engine  # type: ignore[attr-defined]
    yield took, agent, run
    peer.close()


def item_of(engine: FakeEngine, text: bytes) -> ClipItem:
    item = engine.history.offer(KIND_TEXT, text, "host")
    assert item is not None
    return item


def test_a_small_text_is_written_by_the_watcher(wired: Any) -> None:
    took, agent, run = wired
    item = item_of(run.engine, "written ✓".encode())
    run.peer.signal = b"t " + base64.b64encode(item.data) + b"\n"  # (its change signal)

    async def body(vm: VmSync) -> tuple[clipboard.PushResult, bool]:
        vm._token = TOKEN  # noqa: SLF001
        assert await vm._push_current()  # noqa: SLF001
        result = await vm._write(item)  # noqa: SLF001 (and once more: the port again)
        await asyncio.sleep(0.2)
        return result, vm._changed.is_set()  # noqa: SLF001

    result, changed = run(body)
    assert result.ok and result.method == "port"
    assert took == [item.data, item.data] and agent == []
    assert changed  # (the signal of the write; the answers themselves are no change)


def test_the_answer_alone_is_no_change(wired: Any) -> None:
    took, agent, run = wired
    item = item_of(run.engine, b"quiet")

    async def body(vm: VmSync) -> bool:
        vm._token = TOKEN  # noqa: SLF001
        assert (await vm._write(item)).method == "port"  # noqa: SLF001
        await asyncio.sleep(0.2)
        return vm._changed.is_set()  # noqa: SLF001

    assert run(body) is False and took == [b"quiet"]


def test_the_write_is_remembered_as_an_echo(wired: Any) -> None:
    _, _, run = wired
    item = item_of(run.engine, b"echo me")

    async def body(vm: VmSync) -> None:
        vm._token = TOKEN  # noqa: SLF001
        assert await vm._push_current()  # noqa: SLF001
        assert vm.holds == item.digest and vm._echoes.pending(item.digest)  # noqa: SLF001
        vm._inline = item.data  # noqa: SLF001 (the watcher's signal of the write)
        assert await vm._pull(time.time())  # noqa: SLF001
        assert run.engine.history.current is item  # no new entry
        assert not vm._echoes.pending(item.digest)  # noqa: SLF001

    run(body)


def test_a_failed_write_falls_back_to_the_agent(wired: Any) -> None:
    took, agent, run = wired
    run.outcome["put"] = "xclip failed (exit 1)"
    item = item_of(run.engine, b"fallback")

    async def body(vm: VmSync) -> clipboard.PushResult:
        vm._token = TOKEN  # noqa: SLF001
        return await vm._write(item)  # noqa: SLF001

    result = run(body)
    assert result.ok and result.method == "xclip" and agent == ["fallback"]
    assert run.engine.faults == []  # (nothing said: the agent wrote it)


def test_no_answer_cancels_falls_back_and_rests_the_port(
        wired: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    took, agent, run = wired
    monkeypatch.setattr(vmsync, "WRITE_WAIT", 0.3)
    run.outcome["put"] = "hang"
    item = item_of(run.engine, b"slow")
    later = item_of(run.engine, b"later")

    async def body(vm: VmSync) -> tuple[clipboard.PushResult, clipboard.PushResult]:
        vm._token = TOKEN  # noqa: SLF001
        first = await vm._write(item)  # noqa: SLF001
        assert vm._echoes.pending(item.digest)  # noqa: SLF001 (a late write is an echo)
        second = await vm._write(later)  # noqa: SLF001 (the port rests: the agent)
        await asyncio.sleep(0.5)
        return first, second

    first, second = run(body)
    assert (first.method, second.method) == ("xclip", "xclip")
    assert agent == ["slow", "later"]
    lines = run.peer.lines
    assert lines[0].startswith(f"w {TOKEN} ".encode())
    ident = lines[0].split()[2].decode()
    assert lines[1:] == [cancel_line(TOKEN, ident)[:-1]]


@pytest.mark.parametrize("why", ["no token", "not watching", "too long"])
def test_the_agent_writes_without_a_watcher_that_takes_it(wired: Any, why: str) -> None:
    took, agent, run = wired
    text = b"y" * (INLINE_MAX + 1) if why == "too long" else b"plain"
    item = item_of(run.engine, text)

    async def body(vm: VmSync) -> clipboard.PushResult:
        vm._token = None if why == "no token" else TOKEN  # noqa: SLF001
        if why == "not watching":
            vm.state = SyncState.POLLING
        return await vm._write(item)  # noqa: SLF001

    result = run(body)
    assert result.method == "xclip" and took == [] and agent == [text.decode()]
    assert run.peer.lines == []


def test_a_change_no_host_took_is_written_when_one_connects(
        guest: types.ModuleType, pair: tuple[Any, socket.socket]) -> None:
    """A copy made while no sync listened (its line refused) is signalled again once a
    host connects (the watcher sees it come back), so a new sync carries it."""
    port, host = pair
    read, write = os.pipe()
    try:
        notifier = guest.Notifier(-1)  # (no host: the write fails)
        notifier.changed("", b"made while nobody listened")
        assert notifier.lost
        notifier.fd = write
        port.listening = False  # (the port read as EOF: no host)
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_r, False)
        port.wake = wake_r
        try:
            os.write(wake_w, b"\x1d")  # SIGIO: a host connected (the port reads EAGAIN)
            assert port.ready([wake_r]) is None and port.listening and port.back
        finally:
            os.close(wake_r)
            os.close(wake_w)
        notifier.at -= 2.5  # (the copy was made 2.5 s ago)
        notifier.resend()
        line = os.read(read, 4096)
        assert line.startswith(b"o 25") and line.endswith(b"\n")
        age, signal = line_age(line[:-1])  # (the host reads its age, then the line)
        assert age is not None and 2.5 <= age < 2.6
        assert signal == b"t " + base64.b64encode(b"made while nobody listened")
        assert len(line) - 1 <= PORT_LINE_MAX
        assert not notifier.lost
        notifier.resend()  # (nothing lost: nothing again)
        os.set_blocking(read, False)
        with pytest.raises(BlockingIOError):
            os.read(read, 4096)
    finally:
        os.close(read)
        os.close(write)


def resent_to_a_new_sync(guest: types.ModuleType, wired: Any, *, age: float
                         ) -> tuple[bool, bytes | None, int]:
    """A copy made ``age`` seconds ago in the guest, its line refused then (no host), is
    written again by the watcher once the host's VmSync (made now) is connected; what
    the host makes of it: (changed, the text it would take, history entries after a
    pull when changed)."""
    _, _, run = wired
    notifier = guest.Notifier(-1)  # (no host: the write fails)
    notifier.changed("", b"held before the sync")
    assert notifier.lost
    notifier.at = time.monotonic() - age  # (when the copy was made)

    async def body(vm: VmSync) -> tuple[bool, bytes | None, int]:
        while run.peer.conn is None:
            await asyncio.sleep(0.01)
        notifier.fd = run.peer.conn.fileno()  # the host is back: the watcher resends
        notifier.resend()
        await asyncio.sleep(0.3)
        changed, inline = vm._changed.is_set(), vm._inline  # noqa: SLF001
        if changed:
            assert await vm._pull(time.time())  # noqa: SLF001
        return changed, inline, len(run.engine.history)

    return run(body)  # type: ignore[no-any-return]


def test_a_copy_made_before_the_sync_began_is_no_new_copy(
        guest: types.ModuleType, wired: Any) -> None:
    """The watcher outlives a sync (the next one finds it running): a copy made while
    none ran, its line refused, is written again when the next sync connects; that sync
    takes it for what the guest held before it began, not for a copy (an entry there
    and pushed into every other guest: CI's third entry in test_real_guest_clipsync's
    first test, after test_real_guest_clipspice's pushes into rsb)."""
    assert resent_to_a_new_sync(guest, wired, age=5.0) == (False, None, 0)


def test_a_copy_made_while_the_sync_connected_is_carried(
        guest: types.ModuleType, wired: Any) -> None:
    """A copy made after the sync began but refused all the same (the guest learns of the
    host's connection a little after it is made) is carried when the line comes again."""
    changed, inline, entries = resent_to_a_new_sync(guest, wired, age=0.0)
    assert (changed, inline, entries) == (True, b"held before the sync", 1)


def test_a_line_written_again_is_waited_for_whole(wired: Any) -> None:
    """Its first bytes are no change yet (a plain line's are: the pull starts early):
    only the whole line says whether the change is older than the sync."""
    _, _, run = wired
    line = b"o 5000 t " + base64.b64encode(b"older than the sync") + b"\n"

    async def body(vm: VmSync) -> list[bool]:
        while run.peer.conn is None:
            await asyncio.sleep(0.01)
        seen = []
        for part in (line[:7], line[7:20], line[20:]):
            run.peer.conn.sendall(part)
            await asyncio.sleep(0.15)
            seen.append(vm._changed.is_set())  # noqa: SLF001
        run.peer.conn.sendall(b"t")  # (a plain line's first byte is)
        await asyncio.sleep(0.15)
        seen.append(vm._changed.is_set())  # noqa: SLF001
        return seen

    assert run(body) == [False, False, False, True]
