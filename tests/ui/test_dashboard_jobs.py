"""QEMU jobs and the shared-folder note in the dashboard (fake services): the detail
pane's job lines, the VM list's marker, literal rendering of QEMU's strings, and the
snapshot list read again when a job ends elsewhere."""

from __future__ import annotations

import pytest
from rich.text import Text
from textual.pilot import Pilot
from textual.widgets import Static

from hypercore_tui.core.jobs import JobInfo, JobRecord
from hypercore_tui.services.monitor import VmJobsChanged
from hypercore_tui.ui.app import HypercoreApp

from .fakes import FakeBackend

pytestmark = pytest.mark.timeout(60)

SIZE = (120, 36)
HOSTILE = "[bold red]pwn[/] \x1b]0;owned\x07 [link=http://x]y[/link]"


def title(app: HypercoreApp) -> Text:
    content = app.dashboard.detail.query_one("#detail-title", Static).content
    assert isinstance(content, Text)
    return content


def notify_jobs(backend: FakeBackend, name: str, *, finished: bool = False) -> None:
    assert backend.monitor is not None
    backend.monitor.sink(VmJobsChanged(name, finished))


async def listed(pilot: Pilot[None], app: HypercoreApp) -> None:
    """Wait for the snapshot-list workers (an empty list would mean every worker)."""
    await pilot.pause()
    workers = [w for w in app.workers if w.group == "snapshot-list"]
    if workers:
        await app.workers.wait_for_complete(workers)
    await pilot.pause()


async def show(pilot: Pilot[None], app: HypercoreApp, name: str) -> None:
    app.dashboard.select_vm(name)
    for _ in range(5):
        await pilot.pause()
        if app.dashboard.selected == name:
            break
    assert app.dashboard.selected == name


async def test_jobs_shown_in_the_detail_and_marked_in_the_list(app: HypercoreApp,
                                                              backend: FakeBackend) -> None:
    """5 cases: a running job with progress, a job known only from Hypercore's record,
    a failed job with a hostile error, the share note, and no job again."""
    async with app.run_test(size=SIZE) as pilot:
        await show(pilot, app, "web1")
        web1 = backend.views["web1"]
        assert "job " not in title(app).plain
        row_before = app.dashboard.vm_list.row_text("web1")
        assert "▶ running" in row_before

        web1.jobs = (JobInfo("hc-snap-save-1a2b3c4d", "snapshot-save", "running", 42, 100),)
        notify_jobs(backend, "web1")
        await pilot.pause()
        assert "job snapshot-save running 42 %" in title(app).plain
        assert "⟳ running" in app.dashboard.vm_list.row_text("web1")

        web1.jobs = (JobRecord("hc-snap-save-1a2b3c4d", "snapshot-save", 1, 0.0).as_job(),)
        notify_jobs(backend, "web1")
        await pilot.pause()
        assert "job snapshot-save running (QEMU busy until it ends)" in title(app).plain

        web1.jobs = (JobInfo("hc-snap-save-1a2b3c4d", "snapshot-save", "concluded", 1, 1,
                             error=HOSTILE),)
        web1.share_note = "not mounted (an interrupted snapshot left it unmounted): " + HOSTILE
        notify_jobs(backend, "web1", finished=True)
        await pilot.pause()
        text = title(app)
        # Literal: the markup is shown as typed, escape/bell characters made visible.
        assert "job snapshot-save concluded: error [bold red]pwn[/]" in text.plain
        assert "[link=http://x]y[/link]" in text.plain
        assert "\x1b" not in text.plain and "\x07" not in text.plain
        assert "shared folder not mounted (an interrupted snapshot" in text.plain
        assert not any("link" in str(span.style) for span in text.spans)
        assert "! running" in app.dashboard.vm_list.row_text("web1")
        # The failed job is red, the running one was cyan.
        assert any(str(span.style) == "red" for span in text.spans)

        web1.jobs, web1.share_note = (), None
        notify_jobs(backend, "web1", finished=True)
        await pilot.pause()
        assert "job " not in title(app).plain and "shared folder" not in title(app).plain
        assert app.dashboard.vm_list.row_text("web1") == row_before


async def test_a_job_ending_elsewhere_reloads_the_snapshot_list(app: HypercoreApp,
                                                                backend: FakeBackend) -> None:
    """3 cases: the visible list is read again; a hidden one only when shown; another
    VM's job changes nothing."""
    assert backend.snapshots is not None
    async with app.run_test(size=SIZE) as pilot:
        await show(pilot, app, "web1")
        await pilot.press("2")
        await pilot.pause()
        await listed(pilot, app)
        lists = lambda: backend.snapshots.calls.count(("list", "web1"))  # noqa: E731
        assert lists() == 1
        notify_jobs(backend, "web1", finished=True)
        await pilot.pause()
        await listed(pilot, app)
        assert lists() == 2
        notify_jobs(backend, "db1", finished=True)
        notify_jobs(backend, "web1", finished=False)
        await pilot.pause()
        assert lists() == 2
        await pilot.press("1")
        notify_jobs(backend, "web1", finished=True)
        await pilot.pause()
        assert lists() == 2  # hidden: not read now...
        await pilot.press("2")
        await pilot.pause()
        await listed(pilot, app)
        assert lists() == 3  # ...but when shown


async def test_long_event_lines_wrap_inside_the_pane(app: HypercoreApp) -> None:
    """2 cases (written while the Events tab is hidden, and while shown): a long line
    wraps at the pane's width, every word visible (RichLog's default 78-column minimum
    cut the end off in narrower panes)."""
    detail = ("shared folder mounted again at /shared (an interrupted snapshot had left it "
              "unmounted)")
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.pause()
        app.dashboard.event_log.add("web1", "SHARE", detail)
        await pilot.press("3")
        await pilot.pause()
        app.dashboard.event_log.add("web1", "SHARE", detail)
        await pilot.pause()
        width = app.dashboard.event_log.scrollable_content_region.width
        assert 0 < width < 78
        texts = ["".join(segment.text for segment in strip)
                 for strip in app.dashboard.event_log.lines]
        assert all(len(text.rstrip()) <= width for text in texts), (width, texts)
        words = " ".join(" ".join(texts).split())
        assert words.count(detail) == 2, words
