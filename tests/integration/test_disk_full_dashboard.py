"""A VM that QEMU paused because the host disk is full, seen by the dashboard and the CLI:
real QEMU (TCG), the real test guest writing its disk on a full tmpfs HYPERCORE_HOME, the
real dashboard (headless ``HypercoreApp`` + ``LiveBackend``) and the real ``hypercore``.

The helpers (tmpfs home, filler, checks) come from disk_full_env.py. Timings
are printed (``-s``) and bounded generously (2 cores shared with other TCG guests).
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Iterator

import pytest
from rich.text import Text
from textual.pilot import Pilot
from textual.widgets import Static

from hypercore_tui.core.layout import socket_lock
from hypercore_tui.core.models import VmState
from hypercore_tui.services.monitor import Monitor, MonitorSettings, PauseReason, VmView
from hypercore_tui.ui.app import HypercoreApp
from hypercore_tui.ui.backend import LiveBackend

from ..conftest import GuestImage, HcEnv, create_guest_vm
from ..helpers import guest_output, vm_row, wait_until_async
from .disk_full_env import assert_running, check_images, fill, free, small_home, stop_cleanly

pytestmark = [pytest.mark.qemu, pytest.mark.timeout(900)]

VM = "dfd"
FULL_LINE = "host disk full: free space, then press p"
#: Generous bounds (seconds) for what takes well under a few seconds on an idle machine.
SHOWN_WITHIN = 30.0
REFUSED_WITHIN = 15.0


@pytest.fixture
def home64(hc_env: HcEnv) -> Iterator[HcEnv]:
    with small_home(hc_env, 64) as env:
        yield env


def title(app: HypercoreApp) -> str:
    """The detail pane's title; a VM's is a ``Text`` (never markup)."""
    content = app.dashboard.detail.query_one("#detail-title", Static).content
    if app.dashboard.selected == VM:
        assert isinstance(content, Text), repr(content)
    return content.plain if isinstance(content, Text) else str(content)


def notifications(app: HypercoreApp) -> list[str]:
    return [n.message for n in app._notifications]


async def events_text(pilot: Pilot[None], app: HypercoreApp) -> str:
    """The event log (rendered while its tab is shown), blanks removed (rows wrap)."""
    await pilot.press("3")
    await pilot.pause()
    text = "".join("".join(line.text for line in app.dashboard.event_log.lines).split())
    await pilot.press("1")
    await pilot.pause()
    return text


def io_error_lines(text: str) -> int:
    return text.count(f"{VM}IO_ERRORQEMUpausedit:nospaceleftonthehost'sdeviceforitsdisk")


async def refused(env: HcEnv, label: str, *args: str, fragment: str) -> tuple[str, float]:
    """``hypercore ARGS`` fails at once: exit 1, one line naming ``fragment``."""
    started = time.monotonic()
    proc = await asyncio.to_thread(env.run, *args)
    took = time.monotonic() - started
    err = proc.stderr.decode(errors="replace")
    assert proc.returncode == 1, f"{label}: exit {proc.returncode}: {err!r}"
    assert err.startswith("hypercore: error: ") and err.count("\n") == 1, f"{label}: {err!r}"
    assert "Traceback" not in err and fragment in err, f"{label}: {err!r}"
    assert took < REFUSED_WITHIN, f"{label}: took {took:.1f}s"
    return err.strip(), took


def view_of(app: HypercoreApp) -> VmView:
    view = app.monitor.view(VM)
    assert view is not None
    return view


async def test_dashboard_and_cli_on_a_vm_paused_by_a_full_disk(
        home64: HcEnv, test_guest: GuestImage) -> None:
    """13 cases. The guest writes its disk on a full host disk and QEMU pauses it; a
    dashboard watching it: (1) the detail pane's line, (2) the list's "disk full" label,
    (3) one IO_ERROR line in the event log. While it is paused, each at once in one line
    (exit 1): (4) `exec`, (5) `clip pull`, (6) `cp` say it is paused and why (not an agent
    timeout); (7) `resume-vm` with the disk still full says it paused again because the
    disk is still full, and the dashboard shows it paused with the reason again (logged
    again); (8) p in the dashboard: the same, as a notification. A dashboard started later:
    (9) the reason from its attach (run state io-error + query-block), shown and logged;
    (10) a second monitor (short sessions, the monitor socket taken) knows it too. After
    freeing space: (11) p resumes (notified "resumed"), (12) the line and the label go,
    the reason is cleared; (13) the guest's write finishes (dd exit 0), `qemu-img check`
    clean."""
    env = home64
    await asyncio.to_thread(create_guest_vm, env, test_guest, VM, "--no-shared")
    await asyncio.to_thread(env.run, "boot-vm", VM, "--wait-agent", "90", check=True,
                            timeout=180)
    figures: dict[str, float] = {}

    app = HypercoreApp(LiveBackend(env.ctx, MonitorSettings()), environ={"USER": "test"})
    async with app.run_test(size=(120, 36)) as pilot:
        await wait_until_async("listed", lambda: VM in app.dashboard.vm_list.visible_names(), 30)
        app.dashboard.select_vm(VM)
        await wait_until_async("watching the running VM",
                               lambda: view_of(app).state is VmState.RUNNING
                               and view_of(app).watch == "events", 30)
        assert FULL_LINE not in title(app)

        # (1-3) The guest writes 16 MiB while the host disk is full: QEMU pauses it.
        fill(env.home, 0)
        await asyncio.to_thread(guest_output, env, VM, "(dd if=/dev/urandom of=/dev/vda bs=1M "
                                "count=16 conv=fsync; echo $? > /tmp/dd.rc) >/tmp/dd.out 2>&1 &")
        started = time.monotonic()
        await wait_until_async("the pause reason shown", lambda: FULL_LINE in title(app),
                               120, lambda: title(app))
        figures["guest write -> reason shown"] = time.monotonic() - started
        view = view_of(app)
        assert view.state is VmState.PAUSED and view.pause_reason == PauseReason(nospace=True)
        assert title(app).split("\n").count(FULL_LINE) == 1, title(app)
        row = app.dashboard.vm_list.row_text(VM)
        assert "‖ disk full" in row, row
        logged = await events_text(pilot, app)
        assert io_error_lines(logged) == 1, logged
        assert f"{VM}STATErunning→paused(hostdiskfull)" in logged, logged
        row = await asyncio.to_thread(vm_row, env, VM)
        assert row["state"] == "paused" and "no space" in str(row["error"]), row

        # (4-6) Commands needing the agent refuse at once.
        line, figures["exec refused"] = await refused(
            env, "exec", "exec", VM, "--", "/bin/true", fragment=f"{VM} is paused: no space")
        _, figures["clip pull refused"] = await refused(
            env, "clip pull", "clip", "pull", VM, fragment=f"{VM} is paused: no space")
        _, figures["cp refused"] = await refused(
            env, "cp", "cp", f"{VM}:/etc/hostname", str(env.home.parent / "hostname"),
            fragment=f"{VM} is paused: no space")
        print(f"\nexec on the paused VM: {line}")

        # (7) resume-vm with the disk still full: QEMU retries the write, pauses again.
        line, figures["resume-vm, still full"] = await refused(
            env, "resume-vm", "resume-vm", VM, fragment="paused again")
        assert "still full" in line and "no space" in line, line
        print(f"resume-vm on a full disk: {line}")
        await wait_until_async("paused again, reason shown",
                               lambda: view.state is VmState.PAUSED
                               and FULL_LINE in title(app), SHOWN_WITHIN, lambda: title(app))
        assert io_error_lines(await events_text(pilot, app)) == 2

        # (8) The same from the dashboard.
        await pilot.press("p")
        await wait_until_async("the resume refused",
                               lambda: any("paused again" in n for n in notifications(app)),
                               SHOWN_WITHIN, lambda: repr(notifications(app)))
        failed = [n for n in notifications(app) if "paused again" in n]
        assert len(failed) == 1 and "still full" in failed[0] and "\n" not in failed[0]
        await wait_until_async("paused again (dashboard)",
                               lambda: view.state is VmState.PAUSED
                               and FULL_LINE in title(app), SHOWN_WITHIN, lambda: title(app))

    # (9) A dashboard started now learns the reason from QEMU's state alone.
    app = HypercoreApp(LiveBackend(env.ctx, MonitorSettings()), environ={"USER": "test"})
    async with app.run_test(size=(120, 36)) as pilot:
        started = time.monotonic()
        await wait_until_async("listed", lambda: VM in app.dashboard.vm_list.visible_names(), 30)
        app.dashboard.select_vm(VM)
        await wait_until_async("the reason on attach", lambda: FULL_LINE in title(app),
                               SHOWN_WITHIN, lambda: title(app))
        figures["later dashboard: start -> reason shown"] = time.monotonic() - started
        view = view_of(app)
        assert view.state is VmState.PAUSED
        # Its own monitor session: at once, or (the last dashboard's session still being
        # closed on a loaded host: the socket's lock held) at the next try, 10 s later.
        await wait_until_async("its own monitor session", lambda: view.watch == "events",
                               SHOWN_WITHIN, lambda: view.watch)
        assert "‖ disk full" in app.dashboard.vm_list.row_text(VM)
        assert io_error_lines(await events_text(pilot, app)) == 1

        # (10) A second monitor meanwhile (the monitor socket is taken: short sessions).
        other = Monitor(env.ctx, lambda notice: None)
        task = asyncio.create_task(other.run())
        try:
            def second_knows() -> bool:
                seen = other.view(VM)
                return (seen is not None and seen.watch == "shared"
                        and seen.pause_reason == PauseReason(nospace=True)
                        and seen.state is VmState.PAUSED)

            await wait_until_async("the second monitor sees it", second_knows, SHOWN_WITHIN)
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

        # (11-12) Space freed: p resumes, the reason goes.
        free(env.home)
        started = time.monotonic()
        await pilot.press("p")
        # (the guest's clock stood still while it was paused: a clock note may follow)
        await wait_until_async("resumed", lambda: any(
            n == f"{VM} resumed" or n.startswith(f"{VM} resumed; guest clock set")
            for n in notifications(app)), SHOWN_WITHIN, lambda: repr(notifications(app)))
        await wait_until_async("the reason cleared", lambda: view.state is VmState.RUNNING
                               and FULL_LINE not in title(app)
                               and "disk full" not in app.dashboard.vm_list.row_text(VM),
                               SHOWN_WITHIN, lambda: title(app))
        figures["free + p -> running, reason gone"] = time.monotonic() - started
        assert view.pause_reason is None
        assert "▶ running" in app.dashboard.vm_list.row_text(VM)

    # (13) The write the guest was paused in finishes; the image is sound.
    deadline = time.monotonic() + 120
    while True:
        rc = await asyncio.to_thread(env.run, "exec", VM, "--", "/bin/cat", "/tmp/dd.rc")
        if rc.returncode == 0 and rc.stdout.strip():
            break
        assert time.monotonic() < deadline, (
            "the guest's write never finished: exec said "
            f"{rc.returncode} {rc.stdout[-200:]!r} {rc.stderr[-300:]!r}; agent lock: "
            f"{socket_lock(env.ctx.vm_paths(VM).qga_socket).read_text(errors='replace')!r}; "
            + subprocess.run(["ps", "-eo", "pid,etimes,args"], capture_output=True, text=True,
                             check=False).stdout[-3000:])
        await asyncio.sleep(0.5)
    assert rc.stdout.strip() == b"0", await asyncio.to_thread(guest_output, env, VM,
                                                              "cat /tmp/dd.out")
    await asyncio.to_thread(assert_running, env, VM, "after resume")
    await asyncio.to_thread(stop_cleanly, env, VM)
    assert await asyncio.to_thread(check_images, env.home) == 1
    print("disk-full pause in the dashboard (seconds): "
          + ", ".join(f"{k} {v:.2f}" for k, v in figures.items()))

