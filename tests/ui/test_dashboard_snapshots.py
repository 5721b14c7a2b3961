"""SVG snapshots of the dashboard (fake services, fixed data, no clock, no blinking).

Regenerate after an intended change: pytest tests/ui --snapshot-update
"""

from __future__ import annotations

from typing import Any

import pytest
from textual.pilot import Pilot
from textual.widgets import Input

from hypercore_tui.ui.app import HypercoreApp
from hypercore_tui.ui.screens.create_vm import CreateVmScreen

from .conftest import ENVIRON
from .fakes import FakeBackend

pytestmark = pytest.mark.timeout(120)

Compare = Any  # the snap_compare fixture


def dashboard(**kwargs: Any) -> HypercoreApp:
    return HypercoreApp(FakeBackend(**kwargs), environ=ENVIRON)


async def select_web1(pilot: Pilot[None]) -> None:
    app = pilot.app
    assert isinstance(app, HypercoreApp)
    await pilot.pause()
    app.dashboard.select_vm("web1")
    await pilot.pause(0.4)  # the list's batched row refresh (0.3 s)


async def no_blinking(pilot: Pilot[None]) -> None:
    for field in pilot.app.screen.query(Input):
        field.cursor_blink = False
    await pilot.pause()


@pytest.mark.parametrize("size", [(80, 24), (160, 45)])
def test_dashboard(snap_compare: Compare, size: tuple[int, int]) -> None:
    assert snap_compare(dashboard(), terminal_size=size, run_before=select_web1)


def test_first_run(snap_compare: Compare) -> None:
    assert snap_compare(dashboard(views={}), terminal_size=(80, 24))


def test_force_stop_confirmation(snap_compare: Compare) -> None:
    async def run_before(pilot: Pilot[None]) -> None:
        await select_web1(pilot)
        await pilot.press("S")
        await pilot.pause()

    assert snap_compare(dashboard(), terminal_size=(80, 24), run_before=run_before)


def test_create_form_with_errors(snap_compare: Compare) -> None:
    async def run_before(pilot: Pilot[None]) -> None:
        await pilot.pause()
        await pilot.press("n")
        await pilot.pause()
        form = pilot.app.screen
        assert isinstance(form, CreateVmScreen)
        form.query_one("#field-name", Input).value = "-bad"
        form.query_one("#field-ram", Input).value = "99999999"
        await no_blinking(pilot)
        await pilot.press("ctrl+s")
        await pilot.pause()
        await no_blinking(pilot)

    assert snap_compare(dashboard(), terminal_size=(80, 24), run_before=run_before)


def test_snapshots_tab(snap_compare: Compare) -> None:
    async def run_before(pilot: Pilot[None]) -> None:
        await select_web1(pilot)
        await pilot.press("2")
        listing = [w for w in pilot.app.workers if w.group == "snapshot-list"]
        if listing:  # an empty list would wait for every worker, the monitor included
            await pilot.app.workers.wait_for_complete(listing)
        await pilot.pause(0.2)

    assert snap_compare(dashboard(), terminal_size=(80, 24), run_before=run_before)


def test_screen_tab(snap_compare: Compare) -> None:
    """The selected VM's screen in half-blocks (the fake's fixed frame)."""
    async def run_before(pilot: Pilot[None]) -> None:
        await select_web1(pilot)
        await pilot.press("6")
        app = pilot.app
        assert isinstance(app, HypercoreApp)
        for _ in range(40):
            if app.dashboard.screen_pane.frame is not None:
                break
            await pilot.pause(0.05)
        await pilot.pause(0.2)

    app = HypercoreApp(FakeBackend(), environ={**ENVIRON, "HYPERCORE_SCREEN_MODE": "halfblock"})
    assert snap_compare(app, terminal_size=(80, 24), run_before=run_before)
