"""The dashboard with a fake service layer: bindings, confirmations, forms, messages."""

from __future__ import annotations

from pathlib import Path

import pytest
from rich.text import Text
from textual import events
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.pilot import Pilot
from textual.widgets import Checkbox, DataTable, Input, Static

from hypercore_tui.core.models import ClipboardMode, VmState
from hypercore_tui.services.display import preferred_port
from hypercore_tui.services.monitor import VmEventSeen
from hypercore_tui.ui.app import HypercoreApp
from hypercore_tui.ui.screens.clipboard_mode import ClipboardModeScreen
from hypercore_tui.ui.screens.confirm import ConfirmScreen
from hypercore_tui.ui.screens.create_vm import CreateVmScreen, check_form
from hypercore_tui.ui.screens.dashboard import DashboardScreen
from hypercore_tui.ui.screens.help import HelpScreen
from hypercore_tui.ui.screens.info import InfoScreen
from hypercore_tui.ui.screens.paste_file import PasteFileScreen
from hypercore_tui.ui.screens.snapshot_tag import SnapshotTagScreen
from hypercore_tui.ui.widgets.key_footer import KeyFooter
from hypercore_tui.ui.widgets.snapshots_pane import SnapshotsPane
from hypercore_tui.ui.widgets.vm_list import VmList

from .conftest import ENVIRON
from .fakes import HOSTILE_HOSTNAME, FakeBackend

pytestmark = pytest.mark.timeout(60)

SIZE = (100, 30)


async def select(pilot: Pilot[None], app: HypercoreApp, name: str) -> None:
    app.dashboard.select_vm(name)
    await pilot.pause()
    assert app.dashboard.selected == name


async def settle(pilot: Pilot[None], app: HypercoreApp) -> None:
    """Wait for the jobs started so far (not the monitor or the clipboard sync, which run
    until the end)."""
    await pilot.pause()
    jobs = [w for w in app.workers if w.group not in ("monitor", "clipsync")]
    if jobs:  # an empty list would mean "every worker", the monitor included
        await app.workers.wait_for_complete(jobs)
    await pilot.pause()
    await pilot.pause()


def notifications(app: HypercoreApp) -> list[str]:
    return [n.message for n in app._notifications]


def plain(widget: Static) -> str:
    content = widget.content
    return content.plain if isinstance(content, Text) else str(content)


def row_state(app: HypercoreApp, name: str) -> str:
    return app.dashboard.vm_list.row_text(name)


async def test_lists_every_vm_and_selects_the_first(app: HypercoreApp) -> None:
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        assert app.dashboard.vm_list.visible_names() == ["build", "db1", "evil", "old", "web1"]
        assert app.dashboard.selected == "build"
        assert "paused" in row_state(app, "db1")
        assert "crashed" in row_state(app, "old")


async def test_start_key_calls_the_service_in_a_worker(app: HypercoreApp,
                                                       backend: FakeBackend) -> None:
    async with app.run_test(size=SIZE) as pilot:
        await select(pilot, app, "build")
        await pilot.press("b")
        await settle(pilot, app)
        assert backend.calls == [("start", "build")]
        assert backend.threads and "MainThread" not in backend.threads
        assert "build started (pid 5000)" in notifications(app)
        assert "running" in row_state(app, "build")


async def test_graceful_stop_is_confirmed_naming_the_vm_and_cancel_does_nothing(
        app: HypercoreApp, backend: FakeBackend) -> None:
    async with app.run_test(size=SIZE) as pilot:
        await select(pilot, app, "web1")
        await pilot.press("s")
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, ConfirmScreen)
        assert screen.title_text.plain == "Stop web1?"
        await pilot.press("escape")
        await settle(pilot, app)
        assert not isinstance(app.screen, ConfirmScreen)
        assert backend.calls == []
        await pilot.press("s", "y")
        await settle(pilot, app)
        assert backend.calls == [("stop", "web1")]
        assert "stopped" in row_state(app, "web1")


async def test_destructive_keys_are_shifted_and_confirmed(app: HypercoreApp,
                                                          backend: FakeBackend) -> None:
    keys = {b.action: b.key for b in DashboardScreen.BINDINGS if isinstance(b, Binding)}
    assert keys["force_stop_vm"] == "S" and keys["delete_vm"] == "D" and keys["reset_vm"] == "R"
    async with app.run_test(size=SIZE) as pilot:
        for key, vm, title in (("S", "web1", "Force stop web1?"), ("R", "web1", "Reset web1?"),
                               ("D", "build", "Delete build?")):
            await select(pilot, app, vm)
            await pilot.press(key)
            await pilot.pause()
            assert isinstance(app.screen, ConfirmScreen), key
            assert app.screen.title_text.plain == title
            # Cancel is focused: Enter on the default button cancels.
            await pilot.press("enter")
            await settle(pilot, app)
        assert backend.calls == []
        await select(pilot, app, "build")
        await pilot.press("D")
        await pilot.pause()
        body = plain(app.screen.query_one("#confirm-body", Static))
        assert "/srv/hypercore/vms/build/disk.qcow2" in body
        await pilot.press("y")
        await settle(pilot, app)
        assert backend.calls == [("delete", "build")]


async def test_deleting_a_running_vm_is_refused_with_a_notification(
        app: HypercoreApp, backend: FakeBackend) -> None:
    async with app.run_test(size=SIZE) as pilot:
        await select(pilot, app, "web1")
        await pilot.press("D")
        await pilot.pause()
        assert not isinstance(app.screen, ConfirmScreen)
        assert "web1 is running: stop it before deleting it" in notifications(app)
        assert backend.calls == []


async def test_service_error_becomes_one_line_notification(app: HypercoreApp,
                                                           backend: FakeBackend) -> None:
    backend.fail["start"] = "QEMU failed to start: could not open disk image"
    async with app.run_test(size=SIZE) as pilot:
        await select(pilot, app, "build")
        await pilot.press("b")
        await settle(pilot, app)
        assert notifications(app)[-1] == "QEMU failed to start: could not open disk image"
        assert app.is_running
        await pilot.press("3")  # the event log renders once visible
        await pilot.pause()
        # Lines wrap at the pane's width: read the log as words.
        logged = " ".join(" ".join(line.text for line in app.dashboard.event_log.lines).split())
        assert "ERROR start: QEMU failed to start: could not open disk image" in logged, logged


async def test_pause_key_toggles_pause_and_resume(app: HypercoreApp,
                                                  backend: FakeBackend) -> None:
    async with app.run_test(size=SIZE) as pilot:
        await select(pilot, app, "web1")
        await pilot.press("p")
        await settle(pilot, app)
        await select(pilot, app, "db1")
        await pilot.press("p")
        await settle(pilot, app)
        assert backend.calls == [("pause", "web1"), ("resume", "db1")]


def test_check_form_reports_each_bad_field() -> None:
    result = check_form({"name": "bad name!", "ram": "lots", "cpus": "0", "disk_size": "20Q",
                         "initrd": "/boot/initrd.img", "display": "sdl"})
    assert result.request is None
    assert set(result.errors) == {"name", "ram", "cpus", "disk_size", "kernel", "display"}
    assert result.errors["display"] == "invalid display 'sdl': use vnc, spice, none"
    ok = check_form({"name": "web2", "ram": "512", "cpus": "2", "disk_size": "8G"})
    assert ok.errors == {} and ok.request is not None
    assert (ok.request.name, ok.request.ram_mb, ok.request.cpus) == ("web2", 512, 2)
    assert ok.request.display == "vnc"
    spice = check_form({"name": "web3", "ram": "512", "cpus": "1", "display": "SPICE "})
    assert spice.request is not None and spice.request.display == "spice"


async def test_create_form_shows_errors_and_service_refusals(app: HypercoreApp,
                                                             backend: FakeBackend) -> None:
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("n")
        await pilot.pause()
        form = app.screen
        assert isinstance(form, CreateVmScreen)
        form.query_one("#field-name", Input).value = "bad name!"
        form.query_one("#field-ram", Input).value = "lots"
        await pilot.press("ctrl+s")
        await pilot.pause()
        errors = plain(form.query_one("#form-errors", Static))
        assert "Name: invalid VM name" in errors and "RAM must be a whole number" in errors
        assert form.query_one("#field-name", Input).has_class("-invalid")
        assert backend.calls == []
        # A valid form, but the service refuses: the form stays open with the reason.
        form.query_one("#field-name", Input).value = "web1"
        form.query_one("#field-ram", Input).value = "512"
        await pilot.press("ctrl+s")
        await settle(pilot, app)
        assert app.screen is form
        assert "a VM named 'web1' already exists" in plain(form.query_one("#form-errors", Static))
        form.query_one("#field-name", Input).value = "web2"
        await pilot.press("ctrl+s")
        await settle(pilot, app)
        assert not isinstance(app.screen, CreateVmScreen)
        assert backend.calls == [("create", "web1"), ("create", "web2")]
        assert "web2 created" in notifications(app)


async def test_filter_narrows_the_list_and_escape_clears_it(app: HypercoreApp) -> None:
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("slash", "d", "b")
        await pilot.pause()
        assert app.dashboard.vm_list.visible_names() == ["db1"]
        assert app.dashboard.selected == "db1"
        await pilot.press("escape")
        await pilot.pause()
        assert len(app.dashboard.vm_list.visible_names()) == 5
        assert app.focused is app.dashboard.vm_list.rows_view


async def test_help_lists_every_binding_with_its_description(app: HypercoreApp) -> None:
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("question_mark")
        await pilot.pause()
        assert isinstance(app.screen, HelpScreen)
        described = {description for _, description in app.screen.rows}
        for binding in [*DashboardScreen.BINDINGS, *SnapshotsPane.BINDINGS]:
            assert isinstance(binding, Binding)
            if binding.action in ("demo", "show_tab('storage')"):
                continue  # hidden: VMs exist (first-run key), no Ceph cluster (fake)
            assert binding.description in described, binding.description
        await pilot.press("escape")
        await pilot.pause()
        assert not isinstance(app.screen, HelpScreen)


def painted(app: HypercoreApp) -> list[list[tuple[str, object]]]:
    """What the screen shows: text and style of every segment."""
    return [[(segment.text, segment.style) for segment in strip]
            for strip in app.screen._compositor.render_strips()]


async def test_help_is_built_once_and_shows_the_dashboard_as_it_is_now(
        app: HypercoreApp) -> None:
    """The help screen is reused; the dimmed dashboard behind it is drawn again when the
    dashboard changed (here: another VM selected between two openings), as a dialog
    rendered from scratch would show it."""
    async with app.run_test(size=SIZE) as pilot:
        await select(pilot, app, "web1")
        await pilot.press("question_mark")
        await pilot.pause()
        help_screen = app.screen
        assert isinstance(help_screen, HelpScreen)
        before = painted(app)
        await pilot.press("end")  # (scrolled down: shown again from the top)
        await pilot.pause()
        body = help_screen.query_one(VerticalScroll)
        assert body.scroll_y > 0
        await pilot.press("escape")
        await select(pilot, app, "db1")
        await pilot.press("2")  # (another tab: other keys, another help text)
        await pilot.pause()
        await pilot.press("question_mark")
        await pilot.pause()
        assert app.screen is help_screen
        assert body.scroll_y == 0
        assert help_screen.rows == app.dashboard.help_rows()
        again = painted(app)
        assert again != before
        help_screen._backdrop = None  # (rendered from scratch)
        help_screen.refresh()
        await pilot.pause()
        assert painted(app) == again
        await pilot.press("escape")
        await pilot.pause()
        assert app.screen is app.dashboard


def test_every_binding_has_an_id_and_a_description() -> None:
    from hypercore_tui.ui.screens.confirm import ConfirmScreen as Confirm
    from hypercore_tui.ui.widgets.vm_list import VmList as List

    for owner in (DashboardScreen, SnapshotsPane, Confirm, List, CreateVmScreen, HelpScreen,
                  InfoScreen, PasteFileScreen, SnapshotTagScreen, ClipboardModeScreen):
        for binding in owner.BINDINGS:
            assert isinstance(binding, Binding)
            assert binding.id and binding.description, (owner.__name__, binding)


async def test_palette_offers_actions_on_the_selected_vm(app: HypercoreApp,
                                                         backend: FakeBackend) -> None:
    async with app.run_test(size=SIZE) as pilot:
        await select(pilot, app, "build")
        entries = {text: callback for text, _, callback in app.dashboard.palette_entries()}
        for text in ("Start: build", "Force stop: build", "Delete: build", "Go to VM web1",
                     "New VM", "Create and boot a demo VM"):
            assert text in entries
        entries["Start: build"]()
        await settle(pilot, app)
        entries["Go to VM web1"]()
        await pilot.pause()
        assert backend.calls == [("start", "build")]
        assert app.dashboard.selected == "web1"


async def test_guest_strings_are_shown_literally(app: HypercoreApp) -> None:
    async with app.run_test(size=(120, 40)) as pilot:
        await select(pilot, app, "evil")
        await pilot.pause()
        guest = plain(app.dashboard.detail.query_one("#detail-guest", Static))
        assert "[bold red]pwn[/]\\x1b]0;owned\\x07" in guest
        assert "[link=http://x]OS[/link]" in guest
        assert "r\\x00oot" in guest
        assert "\x1b" not in guest and "\x07" not in guest and "\x00" not in guest
        assert HOSTILE_HOSTNAME not in guest  # never the raw bytes


async def test_monitor_notices_update_the_list_log_and_notify_crashes(
        app: HypercoreApp, backend: FakeBackend) -> None:
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        monitor = backend.monitor
        assert monitor is not None
        monitor.sink(VmEventSeen("web1", "STOP", "", 1_767_225_600.0))
        monitor.set_state("web1", VmState.PAUSED, "STOP")
        monitor.set_state("evil", VmState.CRASHED, "QEMU (pid 4444) died without a clean stop")
        await pilot.pause(0.5)
        assert "paused" in row_state(app, "web1")
        assert "crashed" in row_state(app, "evil")
        await pilot.press("3")
        await pilot.pause()
        lines = [line.text for line in app.dashboard.event_log.lines]
        assert any(line.startswith("00:00:00 web1 STOP") for line in lines)
        assert "evil crashed: QEMU (pid 4444) died without a clean stop" in notifications(app)


async def test_selection_focuses_the_monitor(app: HypercoreApp, backend: FakeBackend) -> None:
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("down")
        await pilot.pause()
        assert backend.monitor is not None and backend.monitor.focus == "db1"


async def test_snapshots_pane_lists_takes_restores_and_deletes(app: HypercoreApp,
                                                               backend: FakeBackend) -> None:
    snaps = backend.snapshots
    assert snaps is not None
    async with app.run_test(size=SIZE) as pilot:
        await select(pilot, app, "web1")
        await pilot.press("2")
        await settle(pilot, app)
        pane = app.dashboard.snapshots_pane
        table = pane.query_one("#snap-table", DataTable)
        assert [k.value for k in table.rows] == ["before-upgrade", "disk-only"]
        await pilot.press("t")
        await pilot.pause()
        assert isinstance(app.screen, SnapshotTagScreen)
        await pilot.press("p", "r", "e", "enter")
        await settle(pilot, app)
        await settle(pilot, app)
        assert ("create", "web1", "pre", False) in snaps.calls
        assert [k.value for k in table.rows] == ["before-upgrade", "disk-only", "pre"]
        table.move_cursor(row=0)
        await pilot.press("L")
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, ConfirmScreen)
        assert screen.title_text.plain == "Restore web1 to snapshot before-upgrade?"
        assert screen.query_one(Checkbox).value is True  # safety snapshot offered, on
        await pilot.press("y")
        await settle(pilot, app)
        assert ("restore", "web1", "before-upgrade", True) in snaps.calls
        table.move_cursor(row=1)
        await pilot.press("X")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmScreen)
        assert app.screen.title_text.plain == "Delete snapshot disk-only of web1?"
        await pilot.press("escape")
        await settle(pilot, app)
        assert not any(c[0] == "delete" for c in snaps.calls)
        assert "web1: restored snapshot before-upgrade" in notifications(app)


async def test_snapshots_pane_without_the_service_says_so() -> None:
    app = HypercoreApp(FakeBackend(snapshots=False), environ={})
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("2")
        await pilot.pause()
        title = plain(app.dashboard.snapshots_pane.query_one("#snap-title", Static))
        assert title == "Snapshots are not available in this build."


async def test_pasted_text_goes_to_the_selected_vm(app: HypercoreApp,
                                                   backend: FakeBackend) -> None:
    clipboard = backend.clipboard
    assert clipboard is not None
    async with app.run_test(size=SIZE) as pilot:
        await select(pilot, app, "web1")
        app.post_message(events.Paste("hello guest"))
        await settle(pilot, app)
        assert clipboard.calls == [("push", "web1", "hello guest")]
        await select(pilot, app, "evil")
        await pilot.press("i")  # the hotkey pushes the last pasted text again
        await settle(pilot, app)
        assert clipboard.calls[-1] == ("push", "evil", "hello guest")


async def test_pasted_file_path_offers_a_copy(app: HypercoreApp, backend: FakeBackend,
                                              tmp_path: Path) -> None:
    clipboard = backend.clipboard
    assert clipboard is not None
    source = tmp_path / "notes.txt"
    source.write_text("x")
    async with app.run_test(size=SIZE) as pilot:
        await select(pilot, app, "web1")
        app.post_message(events.Paste(str(source)))
        await pilot.pause()
        assert isinstance(app.screen, PasteFileScreen)
        await pilot.press("s")
        await settle(pilot, app)
        assert clipboard.calls == [("copy_in", source, None)]


async def test_clipboard_keys_hidden_without_the_service() -> None:
    app = HypercoreApp(FakeBackend(clipboard=False), environ={})
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        assert app.dashboard.check_action("push_clipboard", ()) is False
        app.post_message(events.Paste("text"))
        await pilot.pause()
        assert notifications(app)[-1].startswith("Clipboard sharing is not available")


async def test_first_run_offers_the_demo_vm_with_one_key() -> None:
    backend = FakeBackend(views={})
    app = HypercoreApp(backend, environ={})
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        assert app.dashboard.check_action("demo", ()) is True
        assert "Press d to create and boot a small demo VM" in plain(
            app.dashboard.detail.query_one("#detail-title", Static))
        await pilot.press("d")
        await settle(pilot, app)
        assert backend.calls == [("demo",)]
        assert "demo created and started" in notifications(app)
        assert app.dashboard.check_action("demo", ()) is False
        await pilot.pause()
        assert app.dashboard.vm_list.visible_names() == ["demo"]


async def test_console_outside_tmux_shows_the_command(app: HypercoreApp) -> None:
    async with app.run_test(size=SIZE) as pilot:
        await select(pilot, app, "web1")
        await pilot.press("c")
        await settle(pilot, app)
        screen = app.screen
        assert isinstance(screen, InfoScreen)
        body = plain(screen.query_one("#info-body", Static))
        assert "hypercore console web1" in body
        assert "Ctrl+] (every other key goes to the guest)" in body


async def test_display_shows_socket_and_tunnel(app: HypercoreApp) -> None:
    """No graphical session here: v shows the line to run on the user's own machine."""
    port = preferred_port("web1")
    async with app.run_test(size=SIZE) as pilot:
        await select(pilot, app, "web1")
        await pilot.press("v")
        await settle(pilot, app)
        screen = app.screen
        assert isinstance(screen, InfoScreen)
        body = plain(screen.query_one("#info-body", Static))
        assert "VNC      /run/user/1000/hypercore/ab12cd34/web1/vnc.sock" in body
        assert (f"ssh -fL {port}:/run/user/1000/hypercore/ab12cd34/web1/vnc.sock "
                f"alice@198.51.100.7 sleep 10 && remote-viewer vnc://localhost:{port}") in body
        assert screen.copy_text is not None and screen.copy_text.startswith("ssh -fL ")


async def test_display_starts_the_viewer_with_a_graphical_session() -> None:
    backend = FakeBackend()
    backend.graphical = True
    app = HypercoreApp(backend, environ=ENVIRON)
    async with app.run_test(size=SIZE) as pilot:
        await select(pilot, app, "web1")
        await pilot.press("v")
        await settle(pilot, app)
        assert not isinstance(app.screen, InfoScreen)
        assert "web1: remote-viewer started" in notifications(app)


@pytest.mark.parametrize(("size", "tunnel"), [
    ((80, 24), "ssh -fL {port}:… alice@198.51.100.…"),  # v shows the whole line
    ((100, 30), "ssh -fL {port}:…/vnc.sock alice@198.51.100.7 sleep 10"),
    ((160, 45), "ssh -fL {port}:/run/user/1000/hypercore/ab12cd34/web1/vnc.sock "
                "alice@198.51.100.7 sleep 10"),
])
async def test_vnc_and_tunnel_lines_fit_on_one_line(size: tuple[int, int], tunnel: str) -> None:
    port = preferred_port("web1")
    app = HypercoreApp(FakeBackend(), environ=ENVIRON)
    async with app.run_test(size=size) as pilot:
        await select(pilot, app, "web1")
        await pilot.pause()
        access = app.dashboard.detail.query_one("#detail-access", Static)
        lines = plain(access).split("\n")
        assert lines[1] == f"Tunnel   {tunnel.format(port=port)}"
        assert lines[0].startswith("VNC      ") and lines[0].endswith("/web1/vnc.sock")
        viewer = f"then remote-viewer vnc://localhost:{port}"
        assert lines[2].strip() == viewer or (size[0] == 80 and lines[2].strip().endswith("…")
                                              and viewer.startswith(lines[2].strip()[:-1]))
        assert lines[3].strip() == "v: the viewer, or the whole line"
        assert all(len(line) <= access.size.width for line in lines), lines
        assert access.size.height == len(lines)  # nothing wrapped


async def test_no_color_is_respected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NO_COLOR", "1")
    app = HypercoreApp(FakeBackend(), environ={})
    async with app.run_test(size=SIZE) as pilot:
        await select(pilot, app, "web1")
        assert app.no_color
        # States stay readable without colour: each has its own symbol.
        assert row_state(app, "web1").split()[1:3] == ["▶", "running"]
        assert row_state(app, "old").split()[1:3] == ["✗", "crashed"]


async def test_quit_key_exits(app: HypercoreApp) -> None:
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("q")
        await pilot.pause()
        assert not app.is_running


def test_vm_list_narrow_and_wide_columns_fit() -> None:
    from hypercore_tui.ui.widgets.vm_list import NARROW_COLUMNS, WIDE_AT, WIDE_COLUMNS

    assert sum(NARROW_COLUMNS) <= 32 - 1  # the list is 32 wide at 80 columns (border)
    assert sum(WIDE_COLUMNS) <= 56 - 1
    assert WIDE_AT <= 56 - 1
    assert issubclass(VmList, object)


# -- the event log and the key bar ----------------------------------------------------------


def log_entries(app: HypercoreApp) -> list[str]:
    return [entry.plain for entry in app.dashboard.event_log.entries]


async def test_event_log_lines_use_the_pane_width() -> None:
    """Written while the Events tab is hidden (as most lines are), after it was shown once:
    the lines used to wrap at RichLog's minimum width (20) instead of the pane's."""
    app = HypercoreApp(FakeBackend(), environ=ENVIRON)
    async with app.run_test(size=(120, 36)) as pilot:
        log = app.dashboard.event_log
        await pilot.press("3")
        await pilot.pause()
        assert log.size.width == 64
        await pilot.press("1")
        await pilot.pause()
        sixty = "x" * (60 - len("00:00:00 web1 DONE "))
        log.add("web1", "DONE", sixty, 1_767_225_600.0)
        long = " ".join(["word"] * 30)
        log.add("web1", "DONE", long, 1_767_225_600.0)
        await pilot.press("3")
        await pilot.pause()
        rows = [line.text.rstrip() for line in log.lines]
        assert rows[0] == f"00:00:00 web1 DONE {sixty}"
        assert len(rows) == 1 + 3  # 169 characters: three rows of at most 63
        assert all(len(row) > 55 for row in rows[1:3]), rows
        assert " ".join(rows[1:]) == f"00:00:00 web1 DONE {long}"
        await pilot.resize_terminal(160, 45)
        await pilot.pause()
        await pilot.pause()
        rows = [line.text.rstrip() for line in log.lines]
        assert len(rows) == 1 + 2  # wrapped again at the new width
        assert " ".join(rows[1:]) == f"00:00:00 web1 DONE {long}"


async def test_pull_key_logs_the_copy_and_its_failure(app: HypercoreApp,
                                                      backend: FakeBackend) -> None:
    clipboard = backend.clipboard
    assert clipboard is not None
    async with app.run_test(size=SIZE) as pilot:
        await select(pilot, app, "web1")
        await pilot.press("y")
        await settle(pilot, app)
        assert clipboard.calls == [("pull", "web1")]
        assert app.dashboard.last_paste == "text from the guest"
        summary = "web1: 19 characters copied from its clipboard (xclip)"
        assert notifications(app)[-1] == summary
        assert log_entries(app)[-1].endswith(f" web1 DONE {summary}")
        clipboard.fail = "web1: clipboard helper failed in the guest: xclip: no display"
        await pilot.press("y")
        await settle(pilot, app)
        assert log_entries(app)[-1].endswith(
            " web1 ERROR copy: web1: clipboard helper failed in the guest: xclip: no display")


def split_labels(text: str, labels: set[str]) -> list[str]:
    """``text`` as whole key labels separated by one space; fails on anything else."""
    found: list[str] = []
    rest = text
    while rest:
        match = next((label for label in sorted(labels, key=len, reverse=True)
                      if rest == label or rest.startswith(label + " ")), None)
        assert match is not None, f"not a whole key label at {rest!r} in {text!r}"
        found.append(match)
        rest = rest[len(match):].removeprefix(" ")
    return found


@pytest.mark.parametrize("columns", [80, 100, 120, 160])
async def test_key_bar_shows_whole_labels_most_important_first(columns: int) -> None:
    app = HypercoreApp(FakeBackend(), environ=ENVIRON)
    async with app.run_test(size=(columns, 24)) as pilot:
        await select(pilot, app, "web1")
        await pilot.pause()
        bar = app.dashboard.query_one(KeyFooter)
        shown = bar.render_line(0).text
        assert len(shown) == columns
        labels = {f"{app.get_key_display(b)} {b.description}"
                  for _, b, _, _ in app.dashboard.active_bindings.values()}
        left, separator, right = shown.partition(" │ ")
        assert separator, shown
        assert split_labels(right.strip(), labels) == ["? Help", "^p palette"]
        keys = split_labels(left.strip(), labels)
        assert keys[:5] == ["b Start", "s Stop", "c Console", "v Display", "y Copy from VM"]
        if columns >= 160:  # every key the dashboard shows (no demo key: VMs exist)
            assert len(keys) == 13
        if columns >= 100:
            assert keys[5] == "6 Screen"


def test_fit_path_keeps_whole_trailing_components() -> None:
    from hypercore_tui.ui.text import fit_path

    assert fit_path("/a/bb/ccc", 0) == "/a/bb/ccc"  # width not known yet
    assert fit_path("/a/bb/ccc", 9) == "/a/bb/ccc"
    assert fit_path("/a/bb/ccc", 8) == "…/bb/ccc"
    assert fit_path("/a/bb/ccc", 7) == "…/ccc"
    assert fit_path("/a/bb/ccc", 4) == "…"


async def test_clipboard_mode_is_shown_and_picked_through_the_backend(
        app: HypercoreApp, backend: FakeBackend) -> None:
    async with app.run_test(size=SIZE) as pilot:
        await select(pilot, app, "web1")
        access = app.dashboard.detail.query_one("#detail-access", Static)
        assert "Clip     sync: both ways · m changes it" in plain(access)
        await pilot.press("m")
        await pilot.pause()
        picker = app.screen
        assert isinstance(picker, ClipboardModeScreen)
        assert "(now)" in plain(picker.query_one("#clipmode-modes", Static)).splitlines()[0]
        await pilot.press("o")
        await settle(pilot, app)
        assert ("clipboard-mode", "web1") in backend.calls
        assert backend.views["web1"].clipboard is ClipboardMode.OFF
        assert notifications(app)[-1] == "web1: clipboard=off (was sync)"
        assert "Clip     off: never read nor written" in plain(access)
        # Escape picks nothing; the same mode again is said to be already set.
        await pilot.press("m")
        await pilot.pause()
        await pilot.press("escape")
        await settle(pilot, app)
        assert backend.calls.count(("clipboard-mode", "web1")) == 1
        await pilot.press("m", "o")
        await settle(pilot, app)
        assert notifications(app)[-1] == "web1: clipboard is already off"
        # A stopped VM shows its mode too, and the palette offers the action.
        await select(pilot, app, "build")
        assert "Clip     sync: both ways" in plain(access)
        entries = [text for text, _, _ in app.dashboard.palette_entries()]
        assert "Clipboard: sync / push-only / off: build" in entries


async def test_clipboard_refusals_reach_the_user_as_notifications(
        app: HypercoreApp, backend: FakeBackend) -> None:
    clipboard = backend.clipboard
    assert clipboard is not None
    async with app.run_test(size=SIZE) as pilot:
        await select(pilot, app, "web1")
        refused = "web1: its clipboard is off (hypercore set web1 clipboard=sync to change)"
        clipboard.fail = refused
        await pilot.press("y")
        await settle(pilot, app)
        assert notifications(app)[-1] == refused
        assert log_entries(app)[-1].endswith(f" web1 ERROR copy: {refused}")
