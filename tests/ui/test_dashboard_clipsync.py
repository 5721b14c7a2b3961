"""The clipboard sync in the dashboard (issue 13) with a fake sync: the C toggle, the
header, the Clipboard tab (hostile previews shown literally), re-pushes, a sync that
another process runs, pastes offered to the sync, faults and changes."""

from __future__ import annotations

import html
import re
from pathlib import Path

import pytest
from rich.text import Text
from textual import events

from hypercore_tui.ui.app import HypercoreApp
from hypercore_tui.ui.backend import ClipEntry
from hypercore_tui.ui.screens.help import HelpScreen
from hypercore_tui.ui.screens.paste_file import PasteFileScreen
from hypercore_tui.ui.widgets.clip_pane import OFF_TEXT

from .fakes import FakeBackend, FakeClipSync
from .test_dashboard import SIZE, notifications, select, settle

pytestmark = pytest.mark.timeout(60)


def clip(backend: FakeBackend) -> FakeClipSync:
    assert backend.clipsync is not None
    return backend.clipsync


def header(app: HypercoreApp) -> str:
    return app.dashboard.host_bar.summary_text().plain


def screen_text(app: HypercoreApp) -> str:
    """What the terminal shows, as text (from the SVG screenshot)."""
    rows: dict[float, list[tuple[float, str]]] = {}
    for x, y, piece in re.findall(r'<text class="[^"]*" x="([\d.]+)" y="([\d.]+)"[^>]*>(.*?)'
                                  r"</text>", app.export_screenshot()):
        rows.setdefault(float(y), []).append((float(x), html.unescape(piece)))
    return "\n".join("".join(p for _, p in sorted(row)).replace("\xa0", " ")
                     for _, row in sorted(rows.items()))


async def test_c_toggles_the_sync_and_the_header_says_so(app: HypercoreApp,
                                                          backend: FakeBackend) -> None:
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        assert "clip sync" not in header(app)
        assert app.dashboard.clip_pane.status_text(clip(backend).view()).plain == OFF_TEXT
        await pilot.press("C")
        await settle(pilot, app)
        assert clip(backend).calls == [("start",)]
        assert "clip sync" in header(app) and "pid" not in header(app)
        assert "clipboard sync on (every VM)" in notifications(app)
        await pilot.press("C")
        await settle(pilot, app)
        assert clip(backend).calls == [("start",), ("stop",)]
        assert "clip sync" not in header(app)


async def test_the_clipboard_tab_shows_hostile_previews_literally(
        app: HypercoreApp, backend: FakeBackend) -> None:
    async with app.run_test(size=(120, 30)) as pilot:
        await pilot.press("5")
        await pilot.pause()
        assert app.dashboard.tabs.active == "clipboard"
        assert "C starts the clipboard sync" in screen_text(app)
        await pilot.press("C")
        await settle(pilot, app)
        table = app.dashboard.clip_pane.table
        assert table.row_count == 2
        cells = table.get_row("2")
        assert all(isinstance(c, Text | str) for c in cells)
        preview = cells[-1]
        assert isinstance(preview, Text) and not preview.spans  # no markup parsed
        assert preview.plain.startswith("[b]x[/b]") and "\x1b" not in preview.plain
        assert [str(c) for c in cells[:5]] == ["2", "01:00:00", "vm:evil", "text", "24 B"]
        shown = screen_text(app)
        assert "[b]x[/b]" in shown and "\x1b" not in shown and "\x07" not in shown
        assert "web1: sync, watching (x11 :0 uid=1000)" in shown
        assert "evil: push-only, push-only" in shown


async def test_enter_pushes_an_entry_to_every_vm_and_t_to_the_selected_one(
        app: HypercoreApp, backend: FakeBackend) -> None:
    async with app.run_test(size=SIZE) as pilot:
        await select(pilot, app, "web1")
        await pilot.press("C", "5")
        await settle(pilot, app)
        assert app.focused is app.dashboard.clip_pane.table
        await pilot.press("enter")
        await settle(pilot, app)
        assert clip(backend).calls[-1] == ("again", 2)
        assert "clipboard entry 2 is current again" in notifications(app)
        await pilot.press("down", "t")
        await settle(pilot, app)
        assert clip(backend).calls[-1] == ("push_to", 1, "web1")
        assert "web1: clipboard entry 1 written" in notifications(app)


async def test_a_sync_of_another_process_is_shown_not_started_again(
        app: HypercoreApp, backend: FakeBackend) -> None:
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        clip(backend).elsewhere = 777
        clip(backend).say("state", "clipboard sync runs in pid 777 (hypercore clip sync)")
        await pilot.pause()
        assert "clip sync pid 777" in header(app)
        assert "runs in pid 777" in app.dashboard.clip_pane.status.content.plain  # type: ignore[union-attr]
        await pilot.press("C")
        await settle(pilot, app)
        assert clip(backend).calls == []
        assert any("runs in pid 777" in n and "stop it there" in n for n in notifications(app))
        await select(pilot, app, "web1")
        app.post_message(events.Paste("to every VM"))
        await settle(pilot, app)
        assert clip(backend).calls == [("offer", "to every VM")]
        assert backend.clipboard is not None and backend.clipboard.calls == []
        clip(backend).elsewhere = None
        clip(backend).say("state", "the clipboard sync of pid 777 stopped")
        await pilot.pause()
        assert "clip sync" not in header(app)
        app.post_message(events.Paste("to web1 only"))
        await settle(pilot, app)
        assert backend.clipboard.calls == [("push", "web1", "to web1 only")]


async def test_faults_are_notified_and_changes_logged_under_their_vm(
        app: HypercoreApp, backend: FakeBackend) -> None:
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("C")
        await settle(pilot, app)
        sync = clip(backend)
        sync.say("fault", "db1: clipboard not written: [b]paused[/b]", vm="db1")
        entry = ClipEntry(3, "text", 12, "vm:web1", 7200.0, "hello world!")
        sync.say("change", "entry 3: text 12 B from vm:web1", vm="web1", entry=entry)
        await pilot.pause()
        assert "db1: clipboard not written: [b]paused[/b]" in notifications(app)
        lines = [t.plain for t in app.dashboard.event_log.entries]
        assert "02:00:00 web1 CLIPBOARD text 12 B copied, sent to 2 VMs" in lines
        assert any("db1 CLIPBOARD db1: clipboard not written" in line for line in lines)


async def test_help_lists_the_clipboard_keys(app: HypercoreApp) -> None:
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("question_mark")
        await pilot.pause()
        assert isinstance(app.screen, HelpScreen)
        rows = dict(app.screen.rows)
        assert rows["C"] == "Clip sync"
        assert rows["5"] == "Clipboard"
        assert rows["enter"].startswith("Clipboard tab")
        assert "Entry to the selected VM" in rows.values()


def modal_buttons(app: HypercoreApp) -> list[str]:
    from textual.widgets import Button

    return [str(b.id) for b in app.screen.query(Button)]


async def test_a_dropped_folder_goes_on_every_vms_clipboard_by_default_with_a_sync(
        app: HypercoreApp, backend: FakeBackend, tmp_path: Path) -> None:
    folder = tmp_path / "my folder"
    folder.mkdir()
    async with app.run_test(size=(80, 24)) as pilot:
        await select(pilot, app, "web1")
        await pilot.press("C")
        await settle(pilot, app)
        app.post_message(events.Paste(f"'{folder}' "))  # as GNOME Terminal pastes a drop
        await pilot.pause()
        assert isinstance(app.screen, PasteFileScreen)
        # a folder: no copy into the VM or the shared folder (one file only)
        assert modal_buttons(app) == ["choice-clipboard", "choice-text", "choice-"]
        assert app.screen.focused is not None and app.screen.focused.id == "choice-clipboard"
        assert "folder/█" in screen_text(app)  # (said to be a folder)
        await pilot.press("enter")  # the default
        await settle(pilot, app)
        assert clip(backend).calls[-1] == ("offer_files", (folder,))
        assert "clipboard entry 3: 1 items; offered on every VM's clipboard" in \
            notifications(app)


async def test_a_dropped_file_offers_the_clipboard_first_and_c_chooses_it(
        app: HypercoreApp, backend: FakeBackend, tmp_path: Path) -> None:
    files = [tmp_path / "a b.txt", tmp_path / "-c\xff"]
    for path in files:
        path.write_bytes(b"x")
    async with app.run_test(size=(80, 24)) as pilot:
        await select(pilot, app, "web1")
        await pilot.press("C")
        await settle(pilot, app)
        app.post_message(events.Paste(str(files[0])))
        await pilot.pause()
        assert modal_buttons(app) == ["choice-clipboard", "choice-vm", "choice-shared",
                                      "choice-text", "choice-"]
        assert app.screen.focused is not None and app.screen.focused.id == "choice-clipboard"
        await pilot.press("escape")
        await pilot.pause()
        # several drops, one a line: one entry with both
        app.post_message(events.Paste("\n".join(str(p) for p in files) + "\n"))
        await pilot.pause()
        assert isinstance(app.screen, PasteFileScreen)
        assert "You pasted 2 files and folders" in screen_text(app)
        await pilot.press("v")  # not offered for two items: nothing happens
        await pilot.pause()
        assert isinstance(app.screen, PasteFileScreen)
        await pilot.press("c")
        await settle(pilot, app)
        assert clip(backend).calls[-1] == ("offer_files", tuple(files))


async def test_without_a_sync_the_clipboard_choice_says_how_to_start_one(
        app: HypercoreApp, backend: FakeBackend, tmp_path: Path) -> None:
    source = tmp_path / "notes.txt"
    source.write_text("x")
    clipboard = backend.clipboard
    assert clipboard is not None
    async with app.run_test(size=(80, 24)) as pilot:
        await select(pilot, app, "web1")
        app.post_message(events.Paste(str(source)))
        await pilot.pause()
        assert modal_buttons(app) == ["choice-vm", "choice-shared", "choice-text", "choice-"]
        assert app.screen.focused is not None and app.screen.focused.id == "choice-vm"
        assert "start the clipboard sync first: C" in screen_text(app)
        await pilot.press("c")  # no sync: not a choice
        await pilot.pause()
        assert isinstance(app.screen, PasteFileScreen)
        await pilot.press("enter")  # the default: into the selected VM
        await settle(pilot, app)
        assert clipboard.calls == [("copy_in", source, "web1")]
        assert not any(call[0] == "offer_files" for call in clip(backend).calls)
