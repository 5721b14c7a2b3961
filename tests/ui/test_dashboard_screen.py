"""The Screen tab with a fake backend: frames only while the tab is visible and the VM
runs (counted backend calls), the nudge after a key, failures as one line, the states
said in words, the half-block picture equal to the frame scaled, the mode override."""

from __future__ import annotations

import io

import pytest
from PIL import Image
from textual.geometry import Region
from textual.pilot import Pilot

from hypercore_tui.core.errors import InvalidInput
from hypercore_tui.core.models import VmState
from hypercore_tui.ui.app import HypercoreApp
from hypercore_tui.ui.screen_image import load
from hypercore_tui.ui.widgets.screen_pane import ScreenPane

from ..helpers import halfblock_image, strip_cells, wait_until_async
from .conftest import ENVIRON
from .fakes import SCREEN_PNG, FakeBackend

pytestmark = pytest.mark.timeout(60)

SIZE = (100, 30)


def pane(app: HypercoreApp) -> ScreenPane:
    return app.dashboard.screen_pane


def status(app: HypercoreApp) -> str:
    return str(pane(app).status.content)


async def select(pilot: Pilot[None], app: HypercoreApp, name: str) -> None:
    app.dashboard.select_vm(name)
    await pilot.pause()


async def test_no_frame_while_the_tab_is_hidden_one_a_second_while_shown(
        app: HypercoreApp, backend: FakeBackend) -> None:
    async with app.run_test(size=SIZE) as pilot:
        await select(pilot, app, "web1")  # running, on the overview tab
        await pilot.pause(1.3)
        assert backend.screendumps == []
        await pilot.press("6")
        await wait_until_async("the first frame", lambda: pane(app).frame is not None, 2,
                               lambda: status(app), pause=pilot.pause)
        assert "web1 · 720x400 · half-blocks · 1 frame/s" in status(app)
        first = len(backend.screendumps)
        await pilot.pause(2.1)
        assert 2 <= len(backend.screendumps) - first <= 3, backend.screendumps
        await pilot.press("3")  # events: hidden again
        await pilot.pause(0.1)
        hidden_at = len(backend.screendumps)
        await pilot.pause(1.3)
        assert len(backend.screendumps) == hidden_at
        assert pane(app)._timer is None  # nothing scheduled at all
        assert set(backend.screendumps) == {"web1"}


async def test_nudge_takes_five_frames_a_second_for_two_seconds(
        app: HypercoreApp, backend: FakeBackend) -> None:
    async with app.run_test(size=SIZE) as pilot:
        await select(pilot, app, "web1")
        await pilot.press("6")
        await wait_until_async("the first frame", lambda: pane(app).frame is not None, 2,
                               pause=pilot.pause)
        before = len(backend.screendumps)
        pane(app).nudge()
        await pilot.pause(1.0)
        assert "5 frames/s" in status(app)
        fast = len(backend.screendumps) - before
        assert fast >= 4, backend.screendumps
        await pilot.pause(1.3)  # the window closes 2 s after the nudge
        after = len(backend.screendumps)
        await pilot.pause(1.0)
        assert len(backend.screendumps) - after <= 1
        assert "1 frame/s" in status(app)


async def test_paused_vm_one_frame_then_nothing_stopped_and_no_display_said(
        app: HypercoreApp, backend: FakeBackend) -> None:
    backend.views["evil"].display = "none"
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("6")
        await select(pilot, app, "db1")  # paused, never shown: one frame
        await wait_until_async("the paused VM's frame", lambda: pane(app).frame is not None,
                               2, pause=pilot.pause)
        await pilot.pause(1.5)
        assert backend.screendumps == ["db1"]
        assert "db1 · paused · 720x400" in status(app)
        await pilot.press("1")
        await pilot.press("6")  # shown again: its frame may be old, one more
        await pilot.pause(1.2)
        assert backend.screendumps == ["db1", "db1"]
        await select(pilot, app, "build")
        await pilot.pause(1.2)
        assert status(app) == "build: stopped" and pane(app).frame is None
        await select(pilot, app, "evil")
        await pilot.pause(1.2)
        assert status(app) == "evil: no display device (display=none)"
        await select(pilot, app, "old")
        assert status(app) == "old: crashed (QEMU is gone)"
        assert backend.screendumps == ["db1", "db1"]


async def test_pause_keeps_the_last_frame_and_stops_the_frames(
        app: HypercoreApp, backend: FakeBackend) -> None:
    async with app.run_test(size=SIZE) as pilot:
        await select(pilot, app, "web1")
        await pilot.press("6")
        await wait_until_async("a frame", lambda: pane(app).frame is not None, 2,
                               pause=pilot.pause)
        before = len(backend.screendumps)
        await pilot.press("p")  # pause (the fake monitor reports STOP)
        await wait_until_async("paused", lambda: "paused" in status(app), 2,
                               lambda: status(app), pause=pilot.pause)
        await pilot.pause(0.3)
        count = len(backend.screendumps)
        assert before < count <= before + 2  # the paused screen, once (+ one that was due)
        await pilot.pause(1.5)
        assert len(backend.screendumps) == count
        assert pane(app).frame is not None
        assert backend.monitor is not None
        backend.monitor.set_state("web1", VmState.STOPPED, "QEMU exited")
        await pilot.pause()
        assert status(app) == "web1: stopped" and pane(app).frame is None


async def test_a_failed_frame_is_one_line_and_retried_at_the_usual_pace(
        app: HypercoreApp, backend: FakeBackend) -> None:
    backend.fail["screendump"] = "web1: QEMU refused screendump: no surface\nsecond line"
    async with app.run_test(size=SIZE) as pilot:
        await select(pilot, app, "web1")
        await pilot.press("6")
        await wait_until_async("the error", lambda: "refused" in status(app), 2,
                               pause=pilot.pause)
        assert "\n" not in status(app) and "-error" in pane(app).status.classes
        await pilot.pause(2.1)
        assert 3 <= len(backend.screendumps) <= 4, backend.screendumps
        del backend.fail["screendump"]
        await wait_until_async("a frame", lambda: pane(app).frame is not None, 2,
                               pause=pilot.pause)
        assert "refused" not in status(app)
        assert "-error" not in pane(app).status.classes


async def test_halfblock_picture_is_the_frame_scaled_to_the_pane(
        app: HypercoreApp) -> None:
    async with app.run_test(size=(120, 40)) as pilot:
        await select(pilot, app, "web1")
        await pilot.press("6")
        await wait_until_async("a frame", lambda: pane(app).frame is not None, 2,
                               pause=pilot.pause)
        await pilot.pause()
        image_widget = pane(app).image
        width, height = image_widget.content_size
        frame = pane(app).query_one("#screen-frame").content_size
        assert width == frame.width or height == frame.height  # fills one dimension
        assert width <= frame.width and height <= frame.height
        # the aspect ratio kept (cells are 1:2; two pixels a cell)
        assert abs(width / (2 * height) - 720 / 400) < 0.1
        shown = halfblock_image(strip_cells(
            image_widget.render_lines(Region(0, 0, width, height))))
        expected = Image.open(io.BytesIO(SCREEN_PNG)).convert("RGB").resize(
            (width, 2 * height))
        assert shown.tobytes() == expected.tobytes()  # type: ignore[attr-defined]


def test_mode_override_is_checked() -> None:
    assert load({"HYPERCORE_SCREEN_MODE": "halfblock"}).mode == "halfblock"
    assert load({"HYPERCORE_SCREEN_MODE": "Kitty"}).mode == "kitty"
    sixel = load({"HYPERCORE_SCREEN_MODE": "sixel"})
    assert (sixel.mode, sixel.why) == ("sixel", "HYPERCORE_SCREEN_MODE")
    assert load({}).mode == "halfblock"  # no terminal here: half-blocks
    in_tmux = load({}, tmux_features=("256", "RGB", "title"))  # Debian 12's tmux: no Sixel
    assert in_tmux.mode == "halfblock" and "tmux" in in_tmux.why
    assert load({"HYPERCORE_SCREEN_MODE": "sixel"}, tmux_features=()).mode == "sixel"
    assert load({}, tmux_features=("RGB", "sixel")).mode == "sixel"
    over_ssh = load({"TERM": "screen-256color"})  # a tmux pane on the user's machine
    assert over_ssh.mode == "halfblock" and "TERM=screen-256color" in over_ssh.why
    assert load({"TERM": "tmux-256color", "HYPERCORE_SCREEN_MODE": "kitty"}).mode == "kitty"
    with pytest.raises(InvalidInput, match="HYPERCORE_SCREEN_MODE='vga'"):
        load({"HYPERCORE_SCREEN_MODE": "vga"})
    with pytest.raises(InvalidInput):
        HypercoreApp(FakeBackend(), environ={**ENVIRON, "HYPERCORE_SCREEN_MODE": "x"})


async def test_zoom_gives_the_screen_the_whole_terminal(app: HypercoreApp) -> None:
    async with app.run_test(size=SIZE) as pilot:
        await select(pilot, app, "web1")
        await pilot.press("z")  # from the overview: the Screen tab, maximized
        await wait_until_async("a frame", lambda: pane(app).frame is not None, 2,
                               pause=pilot.pause)
        await pilot.pause()
        assert app.dashboard.maximized is pane(app)
        assert status(app).endswith("(z or Esc: back)")
        columns, rows = pane(app).image.content_size
        assert columns == SIZE[0] or rows >= SIZE[1] - 3  # nearly the whole terminal
        await pilot.press("escape")
        await pilot.pause()
        assert app.dashboard.maximized is None
        assert "Esc" not in status(app)
        assert pane(app).image.content_size.width < columns
