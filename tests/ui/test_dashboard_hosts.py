"""The dashboard with other hosts configured (issue 15): the VM list grouped by host, each
host's header (its stream's state, load, free space), rows greyed while a host is not
live, and the VM keys routed to the right host (a local and a remote VM of one name are
never confused). The remote hosts' streams are the real RemoteFleet fed by the test."""

from __future__ import annotations

import pytest
from textual.pilot import Pilot
from textual.widgets import DataTable

from hypercore_tui.core.models import VmState
from hypercore_tui.services.hosts.stream import StreamState
from hypercore_tui.ui.app import HypercoreApp
from hypercore_tui.ui.screens.confirm import ConfirmScreen
from hypercore_tui.ui.screens.info import InfoScreen

from .conftest import ENVIRON
from .fakes import FakeBackend, FakeRemote, remote_row

pytestmark = pytest.mark.timeout(60)

SIZE = (110, 32)


@pytest.fixture
def remote() -> FakeRemote:
    return FakeRemote(("b", "c"))


@pytest.fixture
def backend(remote: FakeRemote) -> FakeBackend:
    return FakeBackend(remote=remote)


@pytest.fixture
def app(backend: FakeBackend) -> HypercoreApp:
    return HypercoreApp(backend, environ=ENVIRON)


async def settle(pilot: Pilot[None], app: HypercoreApp) -> None:
    await pilot.pause()
    jobs = [w for w in app.workers if w.group not in ("monitor", "clipsync", "hosts")]
    if jobs:
        await app.workers.wait_for_complete(jobs)
    await pilot.pause()
    await pilot.pause()


def notifications(app: HypercoreApp) -> list[str]:
    return [n.message for n in app._notifications]


def row(app: HypercoreApp, key: str) -> str:
    return app.dashboard.vm_list.row_text(key)


def greyed(app: HypercoreApp, key: str) -> bool:
    line = app.dashboard.vm_list.rows_view._lines[key]
    return str(line.style) == "grey50"


async def b_live(pilot: Pilot[None], remote: FakeRemote) -> None:
    remote.status("b", StreamState.LIVE)
    remote.feed("b", "vms", vms=[remote_row("web1", "running", pid=77),
                                 remote_row("x", "stopped")])
    remote.feed("b", "host", load=[0.5, 0.25, 0.1], disk_free_bytes=10 * 2**30)
    await pilot.pause()
    await pilot.pause()


async def test_the_list_is_grouped_by_host_with_a_header_each(app: HypercoreApp,
                                                              remote: FakeRemote) -> None:
    async with app.run_test(size=SIZE) as pilot:
        await b_live(pilot, remote)
        vm_list = app.dashboard.vm_list
        assert vm_list.visible_names() == ["local/", "build", "db1", "evil", "old", "web1",
                                           "b/", "b/web1", "b/x", "c/"]
        assert app.dashboard.selected == "build"  # the first VM, not a header
        header = row(app, "b/")
        assert "b live" in header and "load 0.50" in header and "free 10G" in header
        assert "2 VMs" in header
        assert "connecting" in row(app, "c/")
        assert "running" in row(app, "b/web1") and "stopped" in row(app, "b/x")
        assert not greyed(app, "b/web1")


async def test_a_host_stalled_or_down_is_said_its_rows_greyed_and_it_comes_back(
        app: HypercoreApp, remote: FakeRemote) -> None:
    async with app.run_test(size=SIZE) as pilot:
        await b_live(pilot, remote)
        remote.status("b", StreamState.STALLED, "b: no line for 4 s")
        await pilot.pause()
        assert "stalled" in row(app, "b/")
        assert greyed(app, "b/web1") and greyed(app, "b/x")
        assert "running" in row(app, "b/web1")  # its last known state
        remote.status("b", StreamState.DOWN, "b: the SSH connection to b was lost")
        remote.status("b", StreamState.CONNECTING)  # connecting again: still "down"
        await pilot.pause()
        assert "b down" in row(app, "b/")
        assert greyed(app, "b/web1")
        remote.status("b", StreamState.LIVE)
        await pilot.pause()
        assert "b live" in row(app, "b/")
        assert not greyed(app, "b/web1")
        log = [entry.plain for entry in app.dashboard.event_log.entries]
        assert any("host b: stalled (b: no line for 4 s)" in line for line in log)
        assert any("host b: down" in line for line in log)
        assert any("host b: live" in line for line in log)


async def test_remote_samples_reach_the_row_and_the_detail(app: HypercoreApp,
                                                           remote: FakeRemote) -> None:
    async with app.run_test(size=SIZE) as pilot:
        await b_live(pilot, remote)
        app.dashboard.select_vm("b/web1")
        await pilot.pause()
        for cpu in (10.0, 42.0):
            remote.feed("b", "sample", vm="web1", cpu_percent=cpu, rss_bytes=300 * 2**20)
        app.dashboard._flush_rows()
        await pilot.pause()
        assert "42" in row(app, "b/web1")
        fleet = remote.fleet
        assert fleet is not None
        assert len(fleet.hosts["b"].vms["web1"].history) == 2
        assert app.dashboard.detail._view is fleet.hosts["b"].vms["web1"]


async def test_keys_on_a_remote_vm_go_to_its_host_never_to_the_local_namesake(
        app: HypercoreApp, backend: FakeBackend, remote: FakeRemote) -> None:
    async with app.run_test(size=SIZE) as pilot:
        await b_live(pilot, remote)
        app.dashboard.select_vm("b/x")
        await pilot.pause()
        await pilot.press("b")  # start b's stopped x
        await settle(pilot, app)
        app.dashboard.select_vm("b/web1")  # running there; a local web1 runs too
        await pilot.pause()
        await pilot.press("p")
        await settle(pilot, app)
        await pilot.press("s")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmScreen)
        assert app.screen.title_text.plain == "Stop web1 on b?"
        await pilot.press("y")
        await settle(pilot, app)
        app.dashboard.action_remote_snapshot()
        await settle(pilot, app)
        assert remote.calls == [("b", "start", "x"), ("b", "pause", "web1"),
                                ("b", "stop", "web1"), ("b", "snapshot", "web1")]
        assert backend.calls == []  # the local web1 was never touched
        # The keyboard mode is not supported remotely: it says so and acts on nothing.
        await pilot.press("k")
        await settle(pilot, app)
        said = [n for n in notifications(app) if "not supported on a remote VM" in n]
        assert len(said) == 1 and said[0].startswith("b/web1: "), said
        assert backend.calls == [] and backend.screendumps == []
        # The local web1 still gets the local service.
        app.dashboard.select_vm("web1")
        await pilot.pause()
        await pilot.press("p")
        await settle(pilot, app)
        assert backend.calls == [("pause", "web1")]
        assert len(remote.calls) == 4


async def test_a_remote_failure_is_one_line_and_a_started_vm_is_not_started_again(
        app: HypercoreApp, remote: FakeRemote) -> None:
    remote.fail["stop"] = "b/web1: stop: the guest did not shut down"
    async with app.run_test(size=SIZE) as pilot:
        await b_live(pilot, remote)
        app.dashboard.select_vm("b/web1")
        await pilot.pause()
        await pilot.press("b")
        await settle(pilot, app)
        assert remote.calls == []
        assert any("already running" in n for n in notifications(app))
        await pilot.press("s", "y")
        await settle(pilot, app)
        assert "b/web1: stop: the guest did not shut down" in notifications(app)


async def test_what_a_remote_host_sends_is_data(app: HypercoreApp, remote: FakeRemote) -> None:
    async with app.run_test(size=SIZE) as pilot:
        remote.status("b", StreamState.LIVE)
        remote.feed("b", "vms", vms=[
            remote_row("[bold]x[/bold]"), remote_row("a/b"), remote_row("-rf"),
            remote_row("ok", "running", disk="[link=http://x]d[/link]", error="\x1b[31mred"),
            {"name": 5}, "junk", remote_row("weird", "no-such-state"),
        ])
        remote.feed("b", "state", vm="ok", old="running", new="[red]boom[/red]")
        remote.feed("b", "sample", vm="ok", cpu_percent="lots", vcpu_percent="x")
        remote.feed("b", "host", load="high", disk_free_bytes=-1.5)
        await pilot.pause()
        fleet = remote.fleet
        assert fleet is not None
        assert sorted(fleet.hosts["b"].vms) == ["ok", "weird"]
        assert fleet.hosts["b"].vms["ok"].state is VmState.RUNNING
        assert fleet.hosts["b"].vms["weird"].state is VmState.STOPPED
        assert fleet.hosts["b"].vms["ok"].disk == "[link=http://x]d[/link]"
        app.dashboard.select_vm("b/ok")
        await pilot.pause()
        app.dashboard._flush_rows()
        await pilot.pause()
        assert "ok" in row(app, "b/ok")


async def test_without_other_hosts_the_list_is_not_grouped() -> None:
    app = HypercoreApp(FakeBackend(), environ=ENVIRON)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        assert app.dashboard.vm_list.visible_names() == ["build", "db1", "evil", "old", "web1"]
        assert app.fleet is None
        assert not [w for w in app.workers if w.group == "hosts"]


async def test_the_cursor_skips_host_headers(app: HypercoreApp, remote: FakeRemote) -> None:
    async with app.run_test(size=SIZE) as pilot:
        await b_live(pilot, remote)
        assert app.dashboard.selected == "build"
        await pilot.press("up")  # the local header above: stays on build
        await pilot.pause()
        assert app.dashboard.selected == "build"
        app.dashboard.select_vm("web1")
        await pilot.pause()
        await pilot.press("down")  # over b's header
        await pilot.pause()
        assert app.dashboard.selected == "b/web1"
        await pilot.press("down", "down")  # c's header last, no VM under it: stays on b/x
        await pilot.pause()
        assert app.dashboard.selected == "b/x"
        await pilot.press("end")
        await pilot.pause()
        assert app.dashboard.selected == "b/x"
        await pilot.press("home")
        await pilot.pause()
        assert app.dashboard.selected == "build"
        assert "connecting" in row(app, "c/")  # c's first connection, for so long


async def test_the_palette_goes_to_a_remote_vm_and_snapshots_it(
        app: HypercoreApp, remote: FakeRemote) -> None:
    async with app.run_test(size=SIZE) as pilot:
        await b_live(pilot, remote)
        entries = {title: run for title, _, run in app.dashboard.palette_entries()}
        entries["Go to VM x on b"]()
        await pilot.pause()
        assert app.dashboard.selected == "b/x"
        entries = {title: run for title, _, run in app.dashboard.palette_entries()}
        entries["Take a snapshot: b/x"]()
        await settle(pilot, app)
        assert remote.calls == [("b", "snapshot", "x")]
        assert "b: x: snapshot done" in notifications(app)


async def test_every_vm_action_on_a_remote_vm_runs_there(
        app: HypercoreApp, backend: FakeBackend, remote: FakeRemote) -> None:
    """Delete, console, display, the clipboard (paste, copy, mode), typed text and
    migration on b's VMs go to b (through its ops), never to the local namesake."""
    async with app.run_test(size=SIZE) as pilot:
        await b_live(pilot, remote)
        app.dashboard.select_vm("b/web1")  # running there; a local web1 runs too
        await pilot.pause()
        await pilot.press("D")  # running: refused, nothing asked
        await settle(pilot, app)
        assert any(n.startswith("b/web1 is running: stop it") for n in notifications(app))
        await pilot.press("c")
        await settle(pilot, app)
        assert isinstance(app.screen, InfoScreen)  # not in tmux: the line to run
        assert "hypercore --host b console web1" in app.screen.copy_text
        await pilot.press("escape")
        await pilot.press("v")
        await settle(pilot, app)
        assert isinstance(app.screen, InfoScreen)
        assert app.screen.copy_text.startswith("ssh -L 5999:/run/web1/spice.sock b.example")
        await pilot.press("escape")
        await pilot.press("y")  # copy b/web1's clipboard: here, and ready for i
        await settle(pilot, app)
        assert app.dashboard.last_paste == "copied on b"
        await pilot.press("i")
        await settle(pilot, app)
        await pilot.press("T")
        await settle(pilot, app)
        await pilot.press("m")
        await pilot.pause()
        await pilot.press("escape")  # the mode dialog, cancelled: nothing set
        await settle(pilot, app)
        await pilot.press("M")  # targets as b names them, then the confirmation
        await settle(pilot, app)
        await pilot.press("1")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmScreen)
        assert app.screen.title_text.plain == "Migrate web1 from b to a (as b names it)?"
        await pilot.press("y")
        await settle(pilot, app)
        assert remote.calls == [
            ("b", "console", "web1"), ("b", "display", "web1"), ("b", "clip pull", "web1"),
            ("b", "clip push", "web1", "copied on b"), ("b", "type", "web1", "copied on b"),
            ("b", "targets", "-"), ("b", "migrate", "web1", "a")]
        assert "b: web1: migrated to a: downtime 90 ms" in notifications(app)
        # A stopped VM: deleted there once confirmed; the console says it needs it running.
        app.dashboard.select_vm("b/x")
        await pilot.pause()
        await pilot.press("c")
        await settle(pilot, app)
        assert any(n.startswith("b/x is stopped: the serial console needs it running")
                   for n in notifications(app))
        await pilot.press("D")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmScreen)
        assert app.screen.title_text.plain == "Delete x on b?"
        await pilot.press("y")
        await settle(pilot, app)
        assert remote.calls[-1] == ("b", "delete", "x")
        assert backend.calls == [] and backend.screendumps == []


async def test_a_failed_remote_copy_is_one_line(app: HypercoreApp, remote: FakeRemote) -> None:
    remote.fail["clip pull"] = "b/web1: copy: the guest agent is not answering"
    async with app.run_test(size=SIZE) as pilot:
        await b_live(pilot, remote)
        app.dashboard.select_vm("b/web1")
        await pilot.pause()
        await pilot.press("y")
        await settle(pilot, app)
        assert "b/web1: copy: the guest agent is not answering" in notifications(app)
        assert app.dashboard.last_paste is None


async def test_the_snapshots_tab_of_a_remote_vm_lists_restores_and_deletes_there(
        app: HypercoreApp, backend: FakeBackend, remote: FakeRemote) -> None:
    """b's web1 in the Snapshots tab: b's list (tags as data), a restore with its safety
    snapshot and a delete run on b; the local web1's snapshots are never touched."""
    async with app.run_test(size=SIZE) as pilot:
        await b_live(pilot, remote)
        app.dashboard.select_vm("b/web1")
        await pilot.pause()
        await pilot.press("2")
        await settle(pilot, app)
        pane = app.dashboard.snapshots_pane
        table = pane.query_one("#snap-table", DataTable)
        assert [k.value for k in table.rows] == ["there-1", "[red]x"]
        table.move_cursor(row=0)
        await pilot.press("L")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmScreen)
        assert app.screen.title_text.plain == "Restore b/web1 to snapshot there-1?"
        await pilot.press("y")
        await settle(pilot, app)
        await settle(pilot, app)
        table.move_cursor(row=1)
        await pilot.press("X")
        await pilot.pause()
        assert app.screen.title_text.plain == "Delete snapshot [red]x of b/web1?"
        await pilot.press("y")
        await settle(pilot, app)
        await settle(pilot, app)
        assert [c for c in remote.calls if c[1] != "snapshot list"] == [
            ("b", "snapshot create", "web1", "", "False"),
            ("b", "snapshot restore", "web1", "there-1"),
            ("b", "snapshot delete", "web1", "[red]x")]
        assert any(n.startswith("b: web1: restored snapshot there-1 (b: web1: snapshot")
                   for n in notifications(app)), notifications(app)
        snaps = backend.snapshots
        assert snaps is not None and snaps.calls == []
        # Back on the local web1: the local list again.
        app.dashboard.select_vm("web1")
        await settle(pilot, app)
        assert [k.value for k in table.rows] == ["before-upgrade", "disk-only"]
