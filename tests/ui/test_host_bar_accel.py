"""The header says TCG when this host boot's KVM probe failed (HostSummary.accel_note),
at 80 and 120 columns, and nothing about it otherwise. The real probe and its cache:
tests/integration/test_kvm_probe.py, tests/unit/test_kvm_probe_cache.py."""

from __future__ import annotations

import dataclasses

import pytest
from textual.app import App, ComposeResult

from hypercore_tui.ui.widgets.host_bar import ACCEL_LABEL, HostBar

from .fakes import HOST

pytestmark = pytest.mark.timeout(60)

NOTE = "KVM opens but guests do not run (nested virtualisation?); using TCG"


class BarApp(App[None]):
    def compose(self) -> ComposeResult:
        yield HostBar(id="host-bar")


@pytest.mark.parametrize("size", [(80, 24), (120, 36)])
async def test_header_says_tcg_when_kvm_guests_do_not_run(size: tuple[int, int]) -> None:
    app = BarApp()
    async with app.run_test(size=size) as pilot:
        bar = app.query_one(HostBar)
        bar.show_host(HOST, [])
        await pilot.pause()
        assert ACCEL_LABEL not in bar.summary_text().plain
        bar.show_host(dataclasses.replace(HOST, accel_note=NOTE), [])
        await pilot.pause()
        line = bar.summary_text().plain
        # Right after the name: never the part an 80-column terminal cuts off.
        assert line.startswith(f"hypercore │ {ACCEL_LABEL} │ cpu 23%"), line
        if size[0] < 100:  # the load gives way to it; the free space stays
            assert "load" not in line and "free 412G" in line, line
        rendered = "".join(seg.text for seg in bar.render_line(0))
        assert ACCEL_LABEL in rendered, rendered
