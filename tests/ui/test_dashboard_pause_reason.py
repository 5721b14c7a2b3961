"""A VM that QEMU paused by itself after a failed disk write, in the dashboard (fake
services, notices as the real monitor sends them): the detail pane's line, the list's
label, the event log, the "paused again" refusal of a resume, and nothing once it runs.
The real QEMU path: tests/integration/test_disk_full_dashboard.py."""

from __future__ import annotations

import pytest
from rich.text import Text
from textual.pilot import Pilot
from textual.widgets import Static

from hypercore_tui.core.models import VmState
from hypercore_tui.services.monitor import PauseReason, VmEventSeen
from hypercore_tui.ui.app import HypercoreApp

from .fakes import FakeBackend

pytestmark = pytest.mark.timeout(60)

WIDE, NARROW = (120, 36), (80, 24)
FULL_LINE = "host disk full: free space, then press p"
AGAIN = ("web1 paused again at once, the host's disk is still full: no space left on the "
         "host's device for its disk /srv/hypercore/vms/web1/disk.qcow2; free some space, "
         "then `hypercore resume-vm web1`")


def title(app: HypercoreApp) -> Text:
    content = app.dashboard.detail.query_one("#detail-title", Static).content
    assert isinstance(content, Text)  # never markup
    return content


def title_lines(app: HypercoreApp) -> list[str]:
    return title(app).plain.split("\n")


async def show(pilot: Pilot[None], app: HypercoreApp, name: str) -> None:
    app.dashboard.select_vm(name)
    for _ in range(5):
        await pilot.pause()
        if app.dashboard.selected == name:
            break
    assert app.dashboard.selected == name


async def settle(pilot: Pilot[None], app: HypercoreApp) -> None:
    await pilot.pause()
    jobs = [w for w in app.workers if w.group not in ("monitor", "clipsync")]
    if jobs:  # an empty list would mean every worker, the monitor included
        await app.workers.wait_for_complete(jobs)
    await pilot.pause()
    await pilot.pause()


def paused_by_qemu(backend: FakeBackend, name: str, reason: PauseReason) -> None:
    """What the monitor does on BLOCK_IO_ERROR + STOP: the reason, one log line, the state."""
    monitor = backend.monitor
    assert monitor is not None
    backend.views[name].pause_reason = reason
    monitor.sink(VmEventSeen(name, "IO_ERROR", reason.describe() + " (write on disk0)",
                             1_767_225_600.0))
    monitor.set_state(name, VmState.PAUSED, reason.short)


def squeezed(text: str) -> str:
    return "".join(text.split())


def log_text(app: HypercoreApp) -> str:
    """The event log's text without blanks (long lines are wrapped into several rows)."""
    return squeezed("".join(line.text for line in app.dashboard.event_log.lines))


async def test_disk_full_pause_shown_logged_and_gone_once_running(
        app: HypercoreApp, backend: FakeBackend) -> None:
    """6 cases: a running VM shows no pause line; paused on a full host disk: one title
    line naming it and the key, the list says "disk full", the event log has the reason
    and the state change names it; a resume refused because the disk is still full is one
    notification and the VM stays shown so; once it runs, no line (even with a stale
    reason); another I/O error (db1, already paused) says so in its own words."""
    async with app.run_test(size=WIDE) as pilot:
        await show(pilot, app, "web1")
        assert not any("press p" in line for line in title_lines(app))
        assert "▶ running" in app.dashboard.vm_list.row_text("web1")

        paused_by_qemu(backend, "web1", PauseReason(nospace=True))
        await pilot.pause()
        lines = title_lines(app)
        assert lines[0].startswith("web1") and "‖ paused" in lines[0], lines
        assert lines.count(FULL_LINE) == 1, lines
        assert "‖ disk full" in app.dashboard.vm_list.row_text("web1")
        await pilot.press("3")  # the log renders while visible
        await pilot.pause()
        logged = log_text(app)
        assert squeezed("00:00:00 web1 IO_ERROR QEMU paused it: no space left on the host's "
                        "device for its disk; free space, then resume it (write on disk0)"
                        ) in logged, logged
        assert squeezed("web1 STATE running → paused (host disk full)") in logged, logged

        backend.fail["resume"] = AGAIN
        await pilot.press("p")
        await settle(pilot, app)
        assert backend.calls[-1] == ("resume", "web1")
        assert [n.message for n in app._notifications][-1] == AGAIN
        assert squeezed(f"web1 ERROR resume: {AGAIN}") in log_text(app)
        await pilot.press("1")
        await pilot.pause()
        assert title_lines(app).count(FULL_LINE) == 1

        del backend.fail["resume"]
        await pilot.press("p")
        await settle(pilot, app)
        assert backend.views["web1"].state is VmState.RUNNING
        # (the real monitor clears the reason on RESUME; shown only while paused anyway)
        assert not any("press p" in line for line in title_lines(app))
        assert "▶ running" in app.dashboard.vm_list.row_text("web1")

        paused_by_qemu(backend, "db1", PauseReason(nospace=False))
        await show(pilot, app, "db1")
        assert "disk I/O error: fix the disk, then press p" in title_lines(app)
        assert "‖ io-error" in app.dashboard.vm_list.row_text("db1")


async def test_disk_full_pause_fits_an_80x24_terminal(app: HypercoreApp,
                                                     backend: FakeBackend) -> None:
    """2 cases at 80x24: the list's narrow label says "nospace"; the detail line takes
    one row of the narrow detail pane (not wrapped)."""
    async with app.run_test(size=NARROW) as pilot:
        await show(pilot, app, "web1")
        paused_by_qemu(backend, "web1", PauseReason(nospace=True))
        await pilot.pause()
        assert "‖ nospace" in app.dashboard.vm_list.row_text("web1")
        widget = app.dashboard.detail.query_one("#detail-title", Static)
        lines = title_lines(app)
        assert FULL_LINE in lines, lines
        # One row: the title is as many rows high as it has lines (nothing wrapped).
        assert widget.size.height == len(lines), (widget.size, lines)
