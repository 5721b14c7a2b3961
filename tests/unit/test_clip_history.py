"""The shared clipboard's history and the sync engine's control socket (no VM needed)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from hypercore_tui.core.clip import KIND_TEXT, History, digest
from hypercore_tui.services.clipsync import control
from hypercore_tui.services.clipsync.engine import SyncEngine, SyncEvent, describe_status, holder
from hypercore_tui.services.context import Context


def test_same_content_is_no_change_and_older_detection_loses() -> None:
    history = History(keep=3)
    first = history.offer(KIND_TEXT, b"one", "vm:a", at=100.0)
    assert first is not None and history.current is first
    assert history.offer(KIND_TEXT, b"one", "vm:b", at=101.0) is None  # an echo
    assert history.offer(KIND_TEXT, b"old", "vm:b", at=99.0) is None  # seen before "one"
    second = history.offer(KIND_TEXT, b"two", "vm:b", at=102.0)
    assert second is not None and second.id == first.id + 1 and second.source_vm == "b"
    for n in range(5):
        history.offer(KIND_TEXT, f"n{n}".encode(), "host", at=110.0 + n)
    assert len(history) == 3 and [i.text for i in history] == ["n4", "n3", "n2"]


def test_again_makes_an_old_entry_current() -> None:
    history = History()
    old = history.offer(KIND_TEXT, b"old", "vm:a", at=1.0)
    history.offer(KIND_TEXT, b"new", "vm:b", at=2.0)
    assert old is not None
    again = history.again(old.id, "history")
    assert again is not None and history.current is again and again.text == "old"
    assert history.again(999, "history") is None


def test_preview_escapes_control_characters() -> None:
    history = History()
    item = history.offer(KIND_TEXT, b"\x1b]52;c;SGVsbG8=\x07[b]x[/b]\n", "vm:a")
    assert item is not None
    assert "\x1b" not in item.preview() and "\x07" not in item.preview()
    assert item.digest == digest(KIND_TEXT, item.data)
    assert item.meta()["size"] == len(item.data)


@pytest.fixture
def ctx(tmp_path: Path) -> Context:
    return Context.from_environ({"HYPERCORE_HOME": str(tmp_path / "home"),
                                 "HYPERCORE_RUNTIME_DIR": str(tmp_path / "run")})


async def test_control_socket_status_offer_history_and_events(ctx: Context) -> None:
    seen: list[SyncEvent] = []
    engine = SyncEngine(ctx, [], on_event=seen.append)
    assert holder(ctx) is None
    assert await control.status(ctx) == {"running": False}
    ready = asyncio.Event()
    task = asyncio.create_task(engine.run(ready=ready.set))
    try:
        await asyncio.wait_for(ready.wait(), 5)
        assert holder(ctx) == os.getpid()
        with pytest.raises(Exception, match="already runs"):
            SyncEngine(ctx, []).acquire()
        status = await control.status(ctx)
        assert status["running"] is True and status["current"] is None
        stream = control.events(ctx)
        first = await asyncio.wait_for(anext(stream), 5)
        assert first["status"]["running"] is True
        reply = await control.request(ctx, "offer", text="from the dashboard", source="dashboard")
        assert reply is not None and reply["item"]["source"] == "dashboard"
        event = await asyncio.wait_for(anext(stream), 5)
        assert event["event"]["kind"] == "change"
        assert event["event"]["item"]["preview"] == "from the dashboard"
        await stream.aclose()
        again = await control.request(ctx, "offer", text="from the dashboard", source="x")
        assert again is not None and again["item"] is None  # the same content: no change
        history = await control.request(ctx, "history")
        assert history is not None and [e["preview"] for e in history["entries"]] == [
            "from the dashboard"]
        with pytest.raises(Exception, match="NUL"):
            await control.request(ctx, "offer", text="a\x00b", source="x")
        with pytest.raises(Exception, match="unknown request"):
            await control.request(ctx, "format-disk")
        lines = describe_status(await control.status(ctx))
        assert "last change" in lines[1] and "from the dashboard" in lines[1]
        assert [e.kind for e in seen] == ["change"]
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert holder(ctx) is None
    assert not control.control_path(ctx).exists()


async def test_push_to_writes_one_entry_into_one_vm(ctx: Context,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from hypercore_tui.services import clipboard

    written: list[tuple[str, str]] = []
    fail: dict[str, str] = {}

    async def push_one(_ctx: Context, name: str, text: str,
                       **_options: object) -> clipboard.PushResult:
        if name in fail:
            return clipboard.PushResult(name, False, error=fail[name])
        written.append((name, text))
        return clipboard.PushResult(name, True, method="xclip", seconds=0.01)

    monkeypatch.setattr(clipboard, "push_one", push_one)
    seen: list[SyncEvent] = []
    engine = SyncEngine(ctx, ["a", "b"], on_event=seen.append)  # no such VMs: never running
    ready = asyncio.Event()
    task = asyncio.create_task(engine.run(ready=ready.set))
    try:
        await asyncio.wait_for(ready.wait(), 5)
        first = engine.offer_text("first", "dashboard")
        engine.offer_text("second", "dashboard")
        assert first is not None
        reply = await control.request(ctx, "push", id=first.id, vm="b")
        assert reply is not None and reply["vm"] == "b" and reply["item"]["id"] == first.id
        assert written == [("b", "first")]
        assert engine.history.current is not None and engine.history.current.text == "second"
        pushes = [e for e in seen if e.kind == "push"]
        assert pushes and pushes[-1].vm == "b" and "written" in pushes[-1].message
        fail["a"] = "a is not running"
        with pytest.raises(Exception, match="not written: a is not running"):
            await control.request(ctx, "push", id=first.id, vm="a")
        assert "not written" in [e for e in seen if e.kind == "push"][-1].message
        with pytest.raises(Exception, match="not in this clipboard sync"):
            await control.request(ctx, "push", id=first.id, vm="zz")
        with pytest.raises(Exception, match="no clipboard entry 999"):
            await engine.push_to(999, "a")
        with pytest.raises(Exception, match="needs an entry id"):
            await control.request(ctx, "push", id="1", vm="a")
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_control_text_of_an_entry(ctx: Context) -> None:
    """A dashboard following another process's sync reads an entry's text (its opt-in
    OSC 52 copy); the host's clipboards are left out with host=False."""
    engine = SyncEngine(ctx, [], host=False)
    ready = asyncio.Event()
    task = asyncio.create_task(engine.run(ready=ready.set))
    try:
        await asyncio.wait_for(ready.wait(), 5)
        item = engine.offer_text("line\n\x1b[31mred", "vm:a")
        assert item is not None
        reply = await control.request(ctx, "text", id=item.id)
        assert reply == {"text": "line\n\x1b[31mred"}
        assert await control.request(ctx, "text", id=999) == {"text": None}
        with pytest.raises(Exception, match="needs an entry id"):
            await control.request(ctx, "text", id="1")
        status = await control.status(ctx)
        assert status["host"] == [] and engine.hosts == []
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
