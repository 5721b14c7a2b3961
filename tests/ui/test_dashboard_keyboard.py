"""The dashboard's keyboard mode (k, left with Ctrl+]) and text typed into a VM (T, a paste
in keyboard mode), with the fake service layer: every key reaches the backend in order
from a worker thread, the bar says where keys go, refusals and confirmations."""

from __future__ import annotations

from typing import Any

import pytest
from textual import events
from textual.pilot import Pilot
from textual.widgets import Input, Static

from hypercore_tui.core.models import VmState
from hypercore_tui.ui.app import HypercoreApp
from hypercore_tui.ui.keyboard import key_spec
from hypercore_tui.ui.messages import KeysSent
from hypercore_tui.ui.screens.confirm import ConfirmScreen
from hypercore_tui.ui.screens.dashboard import DashboardScreen
from hypercore_tui.ui.screens.help import HelpScreen
from hypercore_tui.ui.screens.key_combo import KeyComboScreen
from hypercore_tui.ui.screens.keyboard_layout import KeyboardLayoutScreen
from hypercore_tui.ui.widgets.key_footer import KeyFooter
from hypercore_tui.ui.widgets.keyboard_bar import KeyboardBar

from .conftest import ENVIRON
from .fakes import FakeBackend, FakeKeyboard
from .test_dashboard import notifications, plain, select, settle

pytestmark = pytest.mark.timeout(60)

SIZE = (100, 30)
Compare = Any  # the snap_compare fixture


def keyboard_of(backend: FakeBackend) -> FakeKeyboard:
    assert backend.keyboard is not None
    return backend.keyboard


def bar(app: HypercoreApp) -> KeyboardBar:
    return app.dashboard.query_one(KeyboardBar)


async def keys_arrived(pilot: Pilot[None], app: HypercoreApp, fake: FakeKeyboard,
                       count: int) -> None:
    for _ in range(500):
        if len(fake.keys()) >= count:
            break
        await pilot.pause(0.02)
    await settle(pilot, app)


@pytest.mark.parametrize(("key", "character", "spec"), [
    ("a", "a", "a"), ("A", "A", "A"), ("ctrl+a", "\x01", "ctrl+a"), ("alt+x", "x", "alt+x"),
    ("alt+shift+a", "A", "alt+shift+a"), ("plus", "+", "+"), ("ctrl+plus", None, "ctrl++"),
    ("at", "@", "@"), ("ctrl+@", "\x00", "ctrl+@"), ("underscore", "_", "_"),
    ("backslash", "\\", "\\"), ("ctrl+backslash", "\x1c", "ctrl+\\"),
    ("full_stop", ".", "."), ("question_mark", "?", "?"), ("space", " ", "space"),
    ("enter", "\r", "enter"), ("tab", "\t", "tab"), ("shift+tab", None, "shift+tab"),
    ("escape", "\x1b", "escape"), ("backspace", "\x7f", "backspace"),
    ("ctrl+shift+up", None, "ctrl+shift+up"), ("pageup", None, "pageup"),
    ("f5", None, "f5"), ("shift+f1", None, "shift+f1"), ("é", "é", "é"),
    ("hyper+a", None, None),
])
def test_textual_keys_are_named_as_core_names_them(key: str, character: str | None,
                                                   spec: str | None) -> None:
    assert key_spec(key, character) == spec


async def test_every_key_goes_to_the_vm_until_ctrl_right_bracket(
        app: HypercoreApp, backend: FakeBackend) -> None:
    fake = keyboard_of(backend)
    async with app.run_test(size=SIZE) as pilot:
        await select(pilot, app, "web1")
        footer = app.dashboard.query_one(KeyFooter)
        assert not bar(app).display and footer.display
        await pilot.press("k")
        await pilot.pause()
        assert bar(app).display and not footer.display
        assert plain(bar(app)) == ("Keyboard → web1 (us) · every key goes to the VM · "
                                   "Ctrl+] leaves")
        # The dashboard's, the app's and the palette's keys all go to the VM now.
        pressed = ["a", "B", "ctrl+c", "tab", "enter", "escape", "up", "f2", "ctrl+p", "q",
                   "question_mark", "ctrl+q", "k", "slash"]
        await pilot.press(*pressed)
        await keys_arrived(pilot, app, fake, len(pressed))
        assert fake.keys() == ["a", "B", "ctrl+c", "tab", "enter", "escape", "up", "f2",
                               "ctrl+p", "q", "?", "ctrl+q", "k", "/"]
        assert {call[1] for call in fake.calls} == {"web1"}
        assert {call[3] for call in fake.calls} == {"us"}
        assert isinstance(app.screen, DashboardScreen)  # no palette, no help, no quit
        assert app.is_running
        assert "main" not in " ".join(fake.threads).lower()
        await pilot.press("ctrl+right_square_bracket")
        await pilot.pause()
        assert not bar(app).display and footer.display
        await pilot.press("question_mark")  # the dashboard's keys again
        await pilot.pause()
        assert isinstance(app.screen, HelpScreen)
        assert len(fake.keys()) == len(pressed)


async def test_keys_keep_their_order_and_never_wait_for_the_vm(
        app: HypercoreApp, backend: FakeBackend, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = keyboard_of(backend)
    # each backend call takes 250 ms: longer than typing 20 keys takes even on a loaded
    # machine (at 50 ms, keys pressed slower than that each went alone: seen under load)
    fake.delay = 0.25
    sent: list[KeysSent] = []
    monkeypatch.setattr(DashboardScreen, "on_keys_sent",
                        lambda self, message: sent.append(message))
    async with app.run_test(size=SIZE) as pilot:
        await select(pilot, app, "web1")
        await pilot.press("k")
        typed = list("abcdefghijklmnopqrst")
        await pilot.press(*typed)
        await keys_arrived(pilot, app, fake, len(typed))
        assert fake.keys() == typed
        # Keys pressed while a call was under way went together in the next one.
        assert len(fake.calls) < len(typed)
        assert sum(m.count for m in sent) == len(typed) and {m.name for m in sent} == {"web1"}


async def test_keyboard_mode_needs_a_running_vm(app: HypercoreApp) -> None:
    async with app.run_test(size=SIZE) as pilot:
        for name, state in (("build", "stopped"), ("db1", "paused")):
            await select(pilot, app, name)
            await pilot.press("k")
            await pilot.pause()
            assert not bar(app).display
            assert notifications(app)[-1] == f"{name} is {state}: keys sent now would be lost"


async def test_keyboard_mode_ends_when_the_vm_stops_or_keys_fail(
        app: HypercoreApp, backend: FakeBackend) -> None:
    fake = keyboard_of(backend)
    async with app.run_test(size=SIZE) as pilot:
        await select(pilot, app, "web1")
        await pilot.press("k")
        assert backend.monitor is not None
        backend.monitor.set_state("web1", VmState.STOPPED, "QEMU exited")
        await pilot.pause()
        assert not bar(app).display
        assert "keyboard mode left: web1 is stopped" in notifications(app)

        await select(pilot, app, "evil")
        await pilot.press("k")
        fake.fail = "evil is not running (stopped)"
        await pilot.press("x")
        await settle(pilot, app)
        assert not bar(app).display
        assert notifications(app)[-1] == "keys not sent to evil: evil is not running (stopped)"


async def test_a_key_the_layout_lacks_is_said_and_not_sent(
        app: HypercoreApp, backend: FakeBackend) -> None:
    fake = keyboard_of(backend)
    async with app.run_test(size=SIZE) as pilot:
        await select(pilot, app, "web1")
        await pilot.press("k", "ä", "b")
        await keys_arrived(pilot, app, fake, 1)
        assert fake.keys() == ["b"]
        assert "the us keymap has no key for 'ä'" in notifications(app)
        assert bar(app).display  # still on


async def test_the_layout_is_chosen_per_vm(app: HypercoreApp, backend: FakeBackend) -> None:
    fake = keyboard_of(backend)
    async with app.run_test(size=SIZE) as pilot:
        await select(pilot, app, "web1")
        app.dashboard.action_keyboard_layout()
        await pilot.pause()
        assert isinstance(app.screen, KeyboardLayoutScreen)
        await pilot.press("d")
        await pilot.pause()
        assert notifications(app)[-1] == "web1: keys and typed text as a de keyboard"
        await pilot.press("k")
        await pilot.pause()
        assert "Keyboard → web1 (de)" in plain(bar(app))
        await pilot.press("ä", "z")
        await keys_arrived(pilot, app, fake, 2)
        assert fake.calls[-1][3] == "de" and fake.keys() == ["ä", "z"]
        assert app.dashboard.keyboard_mode is not None
        assert app.dashboard.keyboard_mode.layout("evil") == "us"


async def test_a_paste_in_keyboard_mode_is_typed(app: HypercoreApp,
                                                 backend: FakeBackend) -> None:
    fake = keyboard_of(backend)
    clipboard = backend.clipboard
    assert clipboard is not None
    async with app.run_test(size=SIZE) as pilot:
        await select(pilot, app, "web1")
        await pilot.press("k")
        app.post_message(events.Paste("ls -l\n"))
        await settle(pilot, app)
        assert ("type", "web1", "ls -l\n", "us") in fake.calls
        assert clipboard.calls == []  # not the clipboard
        assert "web1: typed 6 characters (us keymap, 0.1 s)" in notifications(app)


async def test_t_types_the_hubs_current_entry(app: HypercoreApp, backend: FakeBackend) -> None:
    fake = keyboard_of(backend)
    clipsync = backend.clipsync
    assert clipsync is not None
    clipsync.texts[2] = "root\tpassword\n"
    async with app.run_test(size=SIZE) as pilot:
        await select(pilot, app, "web1")
        await pilot.press("T")  # no sync runs, nothing pasted
        await settle(pilot, app)
        assert notifications(app)[-1].startswith("Nothing to type: paste text")
        await pilot.press("C")  # the sync on: its newest entry is text 2
        await settle(pilot, app)
        await pilot.press("T")
        await settle(pilot, app)
        assert fake.calls == [("type", "web1", "root\tpassword\n", "us")]
        assert "Typing 14 characters into web1 (us)…" in notifications(app)


async def test_t_without_a_sync_types_the_last_paste(app: HypercoreApp,
                                                     backend: FakeBackend) -> None:
    fake = keyboard_of(backend)
    async with app.run_test(size=SIZE) as pilot:
        await select(pilot, app, "web1")
        app.dashboard.last_paste = "pasted\n"
        await pilot.press("T")
        await settle(pilot, app)
        assert fake.calls == [("type", "web1", "pasted\n", "us")]


async def test_untypeable_text_is_refused_with_the_characters(
        app: HypercoreApp, backend: FakeBackend) -> None:
    fake = keyboard_of(backend)
    async with app.run_test(size=SIZE) as pilot:
        await select(pilot, app, "web1")
        app.dashboard.last_paste = "Grüße\x1b[2J"
        await pilot.press("T")
        await settle(pilot, app)
        assert fake.calls == []
        assert notifications(app)[-1] == (
            "web1: nothing typed: the us keymap cannot type 3 characters of this text: "
            "ü ß \\x1b")


async def test_a_long_text_is_typed_once_confirmed(app: HypercoreApp,
                                                   backend: FakeBackend) -> None:
    fake = keyboard_of(backend)
    text = "x" * 2500
    async with app.run_test(size=SIZE) as pilot:
        await select(pilot, app, "web1")
        app.dashboard.last_paste = text
        await pilot.press("T")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmScreen)
        assert "Type 2500 characters into web1?" in plain(
            app.screen.query_one("#confirm-title", Static))
        await pilot.press("escape")
        await settle(pilot, app)
        assert fake.calls == []
        await pilot.press("T")
        await pilot.pause()
        await pilot.press("y")
        await settle(pilot, app)
        assert fake.calls == [("type", "web1", text, "us")]


async def test_help_and_palette_offer_the_keyboard(app: HypercoreApp) -> None:
    async with app.run_test(size=SIZE) as pilot:
        await select(pilot, app, "web1")
        rows = dict(app.dashboard.help_rows())
        assert rows["k"].startswith("Keyboard mode: every key to the VM (Ctrl+] leaves)")
        assert rows["T"] == "Type the clipboard into the VM as key presses"
        assert rows["Ctrl+]"].startswith("Keyboard mode: leave it")
        entries = [entry[0] for entry in app.dashboard.palette_entries()]
        assert "Keyboard layout of web1: us" in entries
        assert "Send Ctrl+Alt+Del to web1" in entries
        assert any(e.startswith("Keyboard mode: every key to the VM") for e in entries)


async def test_ctrl_alt_del_is_confirmed_then_sent(app: HypercoreApp,
                                                   backend: FakeBackend) -> None:
    fake = keyboard_of(backend)
    async with app.run_test(size=SIZE) as pilot:
        await select(pilot, app, "web1")
        app.dashboard.action_send_ctrl_alt_del()
        await pilot.pause()
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("y")
        await keys_arrived(pilot, app, fake, 1)
        assert fake.keys() == ["ctrl+alt+delete"]


async def test_keys_a_terminal_cannot_send_are_named_in_a_dialog(
        app: HypercoreApp, backend: FakeBackend) -> None:
    fake = keyboard_of(backend)
    async with app.run_test(size=SIZE) as pilot:
        await select(pilot, app, "web1")
        assert "Send keys to web1…" in [e[0] for e in app.dashboard.palette_entries()]
        app.dashboard.action_send_key_combo()
        await pilot.pause()
        assert isinstance(app.screen, KeyComboScreen)
        await pilot.press(*"ctrl+alt+f2 alt+sysrq", "enter")
        await pilot.pause()
        assert isinstance(app.screen, KeyComboScreen)  # stays open, says why, sends nothing
        error = app.screen.query_one("#keys-error", Static)
        assert "no key named 'alt+sysrq'" in plain(error)
        field = app.screen.query_one("#keys", Input)
        field.value = "ctrl+alt+f2 alt+f4"
        await pilot.press("enter")
        await keys_arrived(pilot, app, fake, 2)
        assert not isinstance(app.screen, KeyComboScreen)
        assert fake.keys() == ["ctrl+alt+f2", "alt+f4"]


async def test_no_keyboard_in_the_backend_hides_it(backend: FakeBackend) -> None:
    backend.keyboard = None
    app = HypercoreApp(backend, environ=ENVIRON)
    async with app.run_test(size=SIZE) as pilot:
        await select(pilot, app, "web1")
        await pilot.press("k", "T")
        await pilot.pause()
        assert not bar(app).display
        assert "k" not in dict(app.dashboard.help_rows())


def test_keyboard_mode_snapshot(snap_compare: Compare) -> None:
    async def run_before(pilot: Pilot[None]) -> None:
        app = pilot.app
        assert isinstance(app, HypercoreApp)
        await pilot.pause()
        app.dashboard.select_vm("web1")
        await pilot.pause(0.4)
        await pilot.press("k")
        await pilot.pause()

    assert snap_compare(HypercoreApp(FakeBackend(), environ=ENVIRON), terminal_size=(80, 24),
                        run_before=run_before)
