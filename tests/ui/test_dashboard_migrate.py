"""The dashboard's live migration (issue 15): ``M`` on a running VM of this host checks it
(a local disk is refused in one line), offers the other hosts, confirms naming both, runs
the migration as a job whose progress the row and the detail pane show, and reports the
result as a notification and an Events line; Esc cancels it. The service is the fake's
(tests/ui/fakes.py ``FakeMigration``); the other hosts' streams the real RemoteFleet."""

from __future__ import annotations

import asyncio

import pytest
from rich.text import Text
from textual.pilot import Pilot
from textual.widgets import Static

from hypercore_tui.services.hosts.stream import StreamState
from hypercore_tui.ui.app import HypercoreApp
from hypercore_tui.ui.screens.confirm import ConfirmScreen
from hypercore_tui.ui.screens.help import HelpScreen
from hypercore_tui.ui.screens.pick_host import PickHostScreen
from hypercore_tui.ui.screens.vm_migrate import NO_OTHER_HOST, migration_line
from hypercore_tui.ui.widgets.key_footer import KeyFooter

from .conftest import ENVIRON
from .fakes import FakeBackend, FakeMigration, FakeRemote, remote_row

pytestmark = pytest.mark.timeout(60)

SIZE = (110, 32)
PROGRESS = "migrating to b: 46% 120/256 MiB, dirty 3 MiB/s, expected downtime 40 ms"


@pytest.fixture
def remote() -> FakeRemote:
    return FakeRemote(("b", "c"))


@pytest.fixture
def backend(remote: FakeRemote) -> FakeBackend:
    return FakeBackend(remote=remote)


@pytest.fixture
def app(backend: FakeBackend) -> HypercoreApp:
    return HypercoreApp(backend, environ=ENVIRON)


@pytest.fixture
def migration(backend: FakeBackend) -> FakeMigration:
    return backend.migration


async def settle(pilot: Pilot[None], app: HypercoreApp) -> None:
    await pilot.pause()
    jobs = [w for w in app.workers if w.group not in ("monitor", "clipsync", "hosts")]
    if jobs:
        await app.workers.wait_for_complete(jobs)
    await pilot.pause()
    await pilot.pause()


def notifications(app: HypercoreApp) -> list[str]:
    return [n.message for n in app._notifications]


def log_lines(app: HypercoreApp) -> list[str]:
    return [entry.plain for entry in app.dashboard.event_log.entries]


def detail_title(app: HypercoreApp) -> str:
    content = app.dashboard.detail.query_one("#detail-title", Static).content
    return content.plain if isinstance(content, Text) else str(content)


async def select(pilot: Pilot[None], app: HypercoreApp, key: str) -> None:
    app.dashboard.select_vm(key)
    await pilot.pause()
    assert app.dashboard.selected == key


async def confirm_to(pilot: Pilot[None], app: HypercoreApp, host_key: str) -> ConfirmScreen:
    """M on the selected VM, the host of that digit picked: the confirmation."""
    await pilot.press("M")
    await settle(pilot, app)
    assert isinstance(app.screen, PickHostScreen)
    await pilot.press(host_key)
    await pilot.pause()
    assert isinstance(app.screen, ConfirmScreen)
    return app.screen


async def under_way(pilot: Pilot[None], app: HypercoreApp, migration: FakeMigration) -> None:
    """Confirmed; the fake migration has reported its progress and waits at its gate."""
    migration.gate.clear()
    await pilot.press("y")
    for _ in range(200):
        if migration.waiting.is_set():
            break
        await asyncio.sleep(0.01)
    assert migration.waiting.is_set()
    await pilot.pause()
    await pilot.pause()


async def test_picking_a_host_and_the_confirmation_names_both_hosts_and_the_disk(
        app: HypercoreApp, migration: FakeMigration) -> None:
    async with app.run_test(size=SIZE) as pilot:
        await select(pilot, app, "web1")
        await pilot.press("M")
        await settle(pilot, app)
        picker = app.screen
        assert isinstance(picker, PickHostScreen)
        assert picker.hosts == ["b", "c"]  # the other hosts only, never this one
        listed = picker.query_one("#host-list", Static).content
        assert isinstance(listed, Text) and listed.plain.splitlines() == ["1  b", "2  c"]
        await pilot.press("escape")  # cancelled: nothing runs
        await pilot.pause()
        assert app.screen is app.dashboard
        assert migration.calls == [("plan", "web1")]
        dialog = await confirm_to(pilot, app, "2")
        assert dialog.title_text.plain == "Migrate web1 from this host (local) to c?"
        body = dialog.body_text.plain
        assert "rbd:vm-pool/web1" in body and "2048 MB" in body and "Ceph" in body
        assert "shared folder" in body and "Esc cancels" in body
        await pilot.press("n")
        await settle(pilot, app)
        assert [c for c in migration.calls if c[0] == "migrate"] == []


async def test_progress_is_shown_then_the_result_and_the_vm_moves_to_the_other_host(
        app: HypercoreApp, migration: FakeMigration, remote: FakeRemote) -> None:
    async with app.run_test(size=SIZE) as pilot:
        remote.status("b", StreamState.LIVE)
        remote.feed("b", "vms", vms=[remote_row("x")])
        await select(pilot, app, "web1")
        await confirm_to(pilot, app, "1")
        await under_way(pilot, app, migration)
        assert migration.calls == [("plan", "web1"), ("migrate", "web1", "b")]
        assert PROGRESS in detail_title(app)
        assert "Esc cancels" in detail_title(app)
        assert "⟳ migrating" in app.dashboard.vm_list.row_text("web1")
        footer = app.dashboard.query_one(KeyFooter)
        assert footer.render_line(0).text.startswith("esc Cancel migration ")
        # Another action on the VM meanwhile is refused: one job per VM.
        await pilot.press("s", "y")
        await pilot.pause()
        assert any("web1: busy (migrate web1 in progress)" in n for n in notifications(app))
        migration.gate.set()
        await settle(pilot, app)
        summary = "web1 migrated to b: downtime 84 ms, total 3.2 s"
        assert notifications(app)[-1] == summary
        assert log_lines(app)[-1].endswith(f" web1 DONE {summary}")
        assert "web1" not in app.dashboard.vm_list.visible_names()  # gone from this host
        assert not app.dashboard.migrations
        remote.feed("b", "vms", vms=[remote_row("x"), remote_row("web1", "running", pid=9)])
        await pilot.pause()
        assert "b/web1" in app.dashboard.vm_list.visible_names()
        footer_text = app.dashboard.query_one(KeyFooter).render_line(0).text
        assert "esc Cancel" not in footer_text


async def test_a_failure_is_one_line_and_the_vm_stays_here(
        app: HypercoreApp, migration: FakeMigration) -> None:
    migration.fail = "b: the SSH connection was lost during the migration"
    async with app.run_test(size=SIZE) as pilot:
        await select(pilot, app, "web1")
        await confirm_to(pilot, app, "1")
        await pilot.press("y")
        await settle(pilot, app)
        assert notifications(app)[-1] == migration.fail
        assert log_lines(app)[-1].endswith(f" web1 ERROR migrate: {migration.fail}")
        assert "web1" in app.dashboard.vm_list.visible_names()
        assert "migrat" not in app.dashboard.vm_list.row_text("web1")
        assert "migrating" not in detail_title(app)


async def test_esc_cancels_and_the_vm_keeps_running_here(
        app: HypercoreApp, migration: FakeMigration) -> None:
    async with app.run_test(size=SIZE) as pilot:
        await select(pilot, app, "web1")
        await confirm_to(pilot, app, "1")
        await under_way(pilot, app, migration)
        under = app.dashboard.migrations["web1"]
        await pilot.press("escape")
        assert under.cancel.is_set()
        assert under.describe().plain == f"{PROGRESS} (cancelling…)"
        await settle(pilot, app)
        cancelled = "web1: the migration to b was cancelled; it runs on this host as before"
        assert "web1: cancelling the migration to b" in notifications(app)
        assert notifications(app)[-1] == cancelled
        assert log_lines(app)[-1].endswith(f" web1 ERROR migrate: {cancelled}")
        assert "web1" in app.dashboard.vm_list.visible_names()
        assert "running" in app.dashboard.vm_list.row_text("web1")
        assert not app.dashboard.migrations
        # Esc with no migration under way still clears the list's filter.
        app.dashboard.action_filter()
        await pilot.press("w", "e", "b", "escape")
        await pilot.pause()
        assert app.dashboard.vm_list.filter_text == ""


async def test_no_other_host_is_one_line_saying_how_to_add_one() -> None:
    backend = FakeBackend()  # no remote hosts configured
    app = HypercoreApp(backend, environ=ENVIRON)
    async with app.run_test(size=SIZE) as pilot:
        await select(pilot, app, "web1")
        await pilot.press("M")
        await settle(pilot, app)
        assert app.screen is app.dashboard
        assert notifications(app) == [NO_OTHER_HOST]
        assert "`hypercore hosts add" in NO_OTHER_HOST
        assert [c for c in backend.migration.calls if c[0] == "migrate"] == []


async def test_a_vm_with_a_local_disk_is_refused_before_anything(
        app: HypercoreApp, migration: FakeMigration) -> None:
    async with app.run_test(size=SIZE) as pilot:
        await select(pilot, app, "evil")  # running, its disk a local qcow2
        await pilot.press("M")
        await settle(pilot, app)
        assert app.screen is app.dashboard  # no host picked, nothing confirmed
        (said,) = notifications(app)
        assert said.startswith("evil: its disk /srv/hypercore/vms/evil/disk.qcow2 is a local "
                               "file; live migration needs every disk on a Ceph cluster")
        assert migration.calls == [("plan", "evil")]
        await select(pilot, app, "build")  # stopped: said at once, no service call
        await pilot.press("M")
        await settle(pilot, app)
        assert notifications(app)[-1] == "build is stopped: only a running VM migrates live"
        assert migration.calls == [("plan", "evil")]


async def test_a_remote_vm_migrates_on_its_host_never_here(
        app: HypercoreApp, migration: FakeMigration, remote: FakeRemote) -> None:
    """M on b's VM: the targets are the hosts b reaches, the migration runs on b (its
    ops), never this host's migration of a local namesake."""
    async with app.run_test(size=SIZE) as pilot:
        remote.status("b", StreamState.LIVE)
        remote.feed("b", "vms", vms=[remote_row("web1", "running", pid=7),
                                     remote_row("off", "stopped")])
        await pilot.pause()
        await select(pilot, app, "b/off")
        await pilot.press("M")
        await settle(pilot, app)
        assert notifications(app) == ["b/off is stopped: only a running VM migrates live"]
        await select(pilot, app, "b/web1")
        await pilot.press("M")
        await settle(pilot, app)
        assert isinstance(app.screen, PickHostScreen)
        await pilot.press("2")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmScreen)
        assert "from b to c" in app.screen.title_text.plain
        await pilot.press("y")
        await settle(pilot, app)
        assert remote.calls == [("b", "targets", "-"), ("b", "migrate", "web1", "c")]
        assert migration.calls == []
        assert "b: web1: migrated to c: downtime 90 ms" in notifications(app)


async def test_the_palette_offers_migrate_and_cancel(
        app: HypercoreApp, migration: FakeMigration) -> None:
    async with app.run_test(size=SIZE) as pilot:
        await select(pilot, app, "build")  # stopped: not offered
        titles = [t for t, _, _ in app.dashboard.palette_entries()]
        assert not [t for t in titles if t.startswith(("Migrate", "Cancel the migration"))]
        await select(pilot, app, "web1")
        entries = {t: run for t, _, run in app.dashboard.palette_entries()}
        entries["Migrate web1 to another host"]()
        await settle(pilot, app)
        assert isinstance(app.screen, PickHostScreen)
        await pilot.press("1")
        await pilot.pause()
        await under_way(pilot, app, migration)
        entries = {t: run for t, _, run in app.dashboard.palette_entries()}
        assert "Migrate web1 to another host" not in entries
        entries["Cancel the migration of web1 to b"]()
        await settle(pilot, app)
        assert notifications(app)[-1].endswith("was cancelled; it runs on this host as before")


async def test_keys_at_80x24_help_and_key_bar(app: HypercoreApp,
                                              migration: FakeMigration) -> None:
    async with app.run_test(size=(80, 24)) as pilot:
        await select(pilot, app, "web1")
        footer = app.dashboard.query_one(KeyFooter)
        before = footer.render_line(0).text
        assert "esc" not in before and "Migrate" not in before  # M: help and palette only
        await pilot.press("question_mark")
        await pilot.pause()
        assert isinstance(app.screen, HelpScreen)
        rows = dict(app.screen.rows)
        assert rows["M"] == "Migrate to another host (live; disks on Ceph)"
        assert rows["esc"] == "Cancel migration"
        await pilot.press("escape")
        await pilot.pause()
        await confirm_to(pilot, app, "1")
        await under_way(pilot, app, migration)
        shown = footer.render_line(0).text
        assert len(shown) == 80
        assert shown.startswith("esc Cancel migration b Start s Stop ")
        assert shown.rstrip().endswith("? Help ^p palette")
        migration.gate.set()
        await settle(pilot, app)
        assert footer.render_line(0).text == before


def test_the_progress_line() -> None:
    assert migration_line("b", FakeMigration.PROGRESS) == PROGRESS
    assert migration_line("b", None) == "migrating to b: starting the target"
    setup = FakeMigration.PROGRESS.__class__("setup", 0.1, 0, 0, 0, 0, None)
    assert migration_line("b", setup) == "migrating to b: setup"
    big = FakeMigration.PROGRESS.__class__("active", 9.0, 0, 4 << 30, 16 << 30, 0, None)
    assert migration_line("b", big) == "migrating to b: 75% 12/16 GiB, dirty 0 B/s"
