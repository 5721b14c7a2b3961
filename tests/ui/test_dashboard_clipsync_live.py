"""The dashboard with the real services and a real clipboard sync over a home without
VMs (no QEMU): C runs the sync in the dashboard, a paste becomes an entry of its
history, and ``hypercore clip status --json`` (another process) sees it."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import pytest
from textual import events
from textual.pilot import Pilot

from hypercore_tui.services.clipsync.engine import holder
from hypercore_tui.services.context import Context
from hypercore_tui.ui.app import HypercoreApp
from hypercore_tui.ui.backend import LiveBackend

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
            proc.terminate()
            await proc.wait()
            await until(pilot, lambda: "clip sync" not in bar.summary_text().plain,
                        "the header to forget the sync")
            assert "C starts the clipboard sync" in str(app.dashboard.clip_pane.status.content)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
