"""The dashboard with the real services and a real clipboard sync over a home without
VMs (no QEMU): C runs the sync in the dashboard, a paste becomes an entry of its
history, and ``hypercore clip status --json`` (another process) sees it."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from urllib.parse import quote

import pytest
from textual import events
from textual.pilot import Pilot

from hypercore_tui.services.clipsync.engine import holder
from hypercore_tui.services.context import Context
from hypercore_tui.ui.app import HypercoreApp
from hypercore_tui.ui.backend import LiveBackend
from hypercore_tui.ui.screens.paste_file import PasteFileScreen

from .conftest import ENVIRON

pytestmark = pytest.mark.timeout(60)

REPO = Path(__file__).resolve().parents[2]


async def until(pilot: Pilot[None], check: object, what: str, timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():  # type: ignore[operator]
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await pilot.pause(0.05)


async def test_live_sync_takes_a_paste_and_clip_status_sees_it(tmp_path: Path) -> None:
    env = {"HYPERCORE_HOME": str(tmp_path / "home"),
           "HYPERCORE_RUNTIME_DIR": str(tmp_path / "run")}
    ctx = Context.from_environ(env)
    backend = LiveBackend(ctx)
    clipsync = backend.clipsync
    assert clipsync is not None
    app = HypercoreApp(backend, environ=ENVIRON)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press("C")
        await until(pilot, lambda: clipsync.view().here, "the sync to start")
        assert holder(ctx) == os.getpid()
        await until(pilot, lambda: "clip sync" in app.dashboard.host_bar.summary_text().plain,
                    "the header")
        app.post_message(events.Paste("pasted [b]in[/b] the dashboard"))
        table = app.dashboard.clip_pane.table
        await until(pilot, lambda: table.row_count == 1, "the entry in the tab")
        row = table.get_row_at(0)
        assert [str(c) for c in row[2:]] == ["dashboard", "text", "30 B",
                                             "pasted [b]in[/b] the dashboard"]

        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "hypercore_tui", "clip", "status", "--json",
            env={**os.environ, **env, "PYTHONPATH": str(REPO)},
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode == 0, err.decode()
        status = json.loads(out)
        assert status["running"] is True and status["pid"] == os.getpid()
        assert status["current"]["source"] == "dashboard"
        assert status["current"]["preview"] == "pasted [b]in[/b] the dashboard"

        await pilot.press("C")
        await until(pilot, lambda: not clipsync.view().running, "the sync to stop")
        await until(pilot, lambda: holder(ctx) is None, "the lock to be released")
        assert "clip sync" not in app.dashboard.host_bar.summary_text().plain


async def test_a_sync_in_another_process_is_shown_and_used(tmp_path: Path) -> None:
    env = {"HYPERCORE_HOME": str(tmp_path / "home"),
           "HYPERCORE_RUNTIME_DIR": str(tmp_path / "run")}
    ctx = Context.from_environ(env)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "hypercore_tui", "clip", "sync", "--no-host",
        env={**os.environ, **env, "PYTHONPATH": str(REPO)},
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 20
        while holder(ctx) != proc.pid:
            assert loop.time() < deadline, "hypercore clip sync did not start"
            await asyncio.sleep(0.1)
        backend = LiveBackend(ctx)
        clipsync = backend.clipsync
        assert clipsync is not None
        app = HypercoreApp(backend, environ=ENVIRON)
        async with app.run_test(size=(100, 30)) as pilot:
            bar = app.dashboard.host_bar
            await until(pilot, lambda: f"clip sync pid {proc.pid}" in bar.summary_text().plain,
                        "the header to name the other sync")
            await pilot.press("C")  # does not start a second one
            await pilot.pause(0.2)
            assert not clipsync.view().here and holder(ctx) == proc.pid
            app.post_message(events.Paste("first"))
            table = app.dashboard.clip_pane.table
            await until(pilot, lambda: table.row_count == 1, "the offered entry")
            app.post_message(events.Paste("second"))
            await until(pilot, lambda: table.row_count == 2, "the second entry")
            await pilot.press("5", "down", "enter")  # "first" made current again
            await until(pilot, lambda: table.row_count == 3, "the re-pushed entry")
            assert [str(table.get_row_at(i)[-1]) for i in range(3)] == [
                "first", "second", "first"]
            # A dropped file: copied into the share here, taken by the other process's sync
            dropped = tmp_path / "dropped -x"
            dropped.write_bytes(b"dropped bytes")
            app.post_message(events.Paste(f"'{dropped}' "))
            await until(pilot, lambda: isinstance(app.screen, PasteFileScreen), "the dialog")
            await pilot.press("enter")  # the default while a sync runs: the clipboard
            await until(pilot, lambda: table.row_count == 4, "the files entry")
            assert [str(c) for c in table.get_row_at(0)[2:]] == [
                "host", "files", "13 B", "1 file, 13 B: dropped -x"]
            (entry,) = os.listdir(ctx.layout.shared_folder / ".hypercore-clip")
            assert (ctx.layout.shared_folder / ".hypercore-clip" / entry / "dropped -x"
                    ).read_bytes() == b"dropped bytes"
            proc.terminate()
            await proc.wait()
            await until(pilot, lambda: "clip sync" not in bar.summary_text().plain,
                        "the header to forget the sync")
            assert "C starts the clipboard sync" in str(app.dashboard.clip_pane.status.content)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_a_drop_becomes_a_files_entry_and_c_is_remembered(tmp_path: Path) -> None:
    """C on survives a restart of the dashboard (settings.json), and off too; a folder and
    a file dropped at once become one files entry from the host, with their exact bytes
    in the share."""
    env = {"HYPERCORE_HOME": str(tmp_path / "home"),
           "HYPERCORE_RUNTIME_DIR": str(tmp_path / "run")}
    ctx = Context.from_environ(env)
    folder = tmp_path / "drop" / "a folder"
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "new\nline").write_bytes(b"\x00\xff" * 1000)
    single = tmp_path / "drop" / "-single"
    single.write_bytes(b"one")

    app = HypercoreApp(LiveBackend(ctx), environ=ENVIRON)
    async with app.run_test(size=(100, 30)) as pilot:
        clipsync = app.backend.clipsync
        assert clipsync is not None
        await pilot.press("C")
        await until(pilot, lambda: clipsync.view().here, "the sync to start")
        await until(pilot, lambda: settings(ctx).get("dashboard_sync") is True,
                    "the toggle written")
        app.post_message(events.Paste(f"file://{quote(str(folder))}\r\n"
                                      f"file://{quote(str(single))}\r\n"))
        await until(pilot, lambda: isinstance(app.screen, PasteFileScreen), "the dialog")
        await pilot.press("c")
        table = app.dashboard.clip_pane.table
        await until(pilot, lambda: table.row_count == 1, "the files entry")
        assert [str(c) for c in table.get_row_at(0)[2:]] == [
            "host", "files", "2.0 KiB", "1 file and 1 folder, 2.0 KiB: a folder, -single"]
        base = ctx.layout.shared_folder / ".hypercore-clip"
        (entry,) = os.listdir(base)
        assert (base / entry / "a folder" / "sub" / "new\nline").read_bytes() == \
            b"\x00\xff" * 1000
        assert (base / entry / "-single").read_bytes() == b"one"
    for _ in range(50):
        if holder(ctx) is None:
            break
        await asyncio.sleep(0.1)
    assert holder(ctx) is None  # the dashboard ended: its sync too

    app = HypercoreApp(LiveBackend(ctx), environ=ENVIRON)
    async with app.run_test(size=(100, 30)) as pilot:
        clipsync = app.backend.clipsync
        assert clipsync is not None
        await until(pilot, lambda: clipsync.view().here, "the remembered sync to start")
        assert holder(ctx) == os.getpid()
        await pilot.press("C")
        await until(pilot, lambda: settings(ctx).get("dashboard_sync") is False,
                    "the toggle written")

    app = HypercoreApp(LiveBackend(ctx), environ=ENVIRON)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.pause(1.0)
        assert app.backend.clipsync is not None and not app.backend.clipsync.view().running
        assert holder(ctx) is None


def settings(ctx: Context) -> dict[str, object]:
    path = ctx.layout.settings_file
    if not path.exists():
        return {}
    section = json.loads(path.read_text()).get("clipboard", {})
    assert isinstance(section, dict)
    return section
