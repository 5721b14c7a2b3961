"""A running VM that never showed a sign of life (no serial output, no agent answer), in
the dashboard (fake services, notices as the real monitor sends them): the detail pane
says what is known instead of asking whether qemu-ga is installed. The monitor's side:
tests/unit/test_monitor_no_sign_of_life.py; with a real QEMU:
tests/integration/test_monitor_no_life.py."""

from __future__ import annotations

import pytest
from rich.text import Text
from textual.pilot import Pilot
from textual.widgets import Static

from hypercore_tui.services.monitor import AgentStatus, GuestInfoChanged, NoSignOfLife
from hypercore_tui.ui.app import HypercoreApp

from .fakes import FakeBackend

pytestmark = pytest.mark.timeout(60)

AGENT_HINT = "is qemu-ga installed and running in the guest?"
KVM_LINE = ("no sign of life: no serial output and no agent 3h 16m after boot (under KVM on a "
            "nested host guests may never run; try HYPERCORE_ACCEL=tcg)")


def guest_text(app: HypercoreApp) -> str:
    content = app.dashboard.detail.query_one("#detail-guest", Static).content
    assert isinstance(content, Text)  # never markup
    return " ".join(content.plain.split())


async def show(pilot: Pilot[None], app: HypercoreApp, name: str) -> None:
    app.dashboard.select_vm(name)
    for _ in range(5):
        await pilot.pause()
        if app.dashboard.selected == name:
            break
    assert app.dashboard.selected == name


@pytest.mark.parametrize("size", [(120, 36), (80, 24)])
async def test_no_sign_of_life_replaces_the_agent_hint(
        app: HypercoreApp, backend: FakeBackend, size: tuple[int, int]) -> None:
    """4 cases, at 120x36 and 80x24: a silent agent that never answered gets the qemu-ga
    hint; with the monitor's verdict (KVM) the line says so, whole and wrapped, without
    the hint;
    under TCG it says what to look at; once the agent answers, neither line."""
    view = backend.views["web1"]
    view.agent, view.guest = AgentStatus.SILENT, None
    async with app.run_test(size=size) as pilot:
        monitor = backend.monitor
        assert monitor is not None
        await show(pilot, app, "web1")
        assert "not answering" in guest_text(app)
        assert AGENT_HINT in guest_text(app)

        view.no_sign_of_life = NoSignOfLife("kvm")
        monitor.sink(GuestInfoChanged("web1"))
        await pilot.pause()
        text = guest_text(app)
        assert "not answering" in text and KVM_LINE in text, text
        assert AGENT_HINT not in text
        # Wrapped onto rows of its own (the pane is 45 or 62 columns wide), not cut.
        assert app.dashboard.detail.query_one("#detail-guest", Static).size.height >= 4

        view.no_sign_of_life = NoSignOfLife("tcg")
        monitor.sink(GuestInfoChanged("web1"))
        await pilot.pause()
        assert "(under TCG; is it booting? v shows its screen)" in guest_text(app)

        view.agent = AgentStatus.ANSWERING  # (the monitor also drops the verdict then)
        monitor.sink(GuestInfoChanged("web1"))
        await pilot.pause()
        text = guest_text(app)
        assert "no sign of life" not in text and AGENT_HINT not in text
        assert "answering" in text
