"""The VM list's rows as one Line-API widget (VmRows): cursor keys, paging, clicks,
the filter, and a VM's line repainted only when its text changed."""

from __future__ import annotations

from textual.geometry import Region
from textual.scrollbar import ScrollBar

from hypercore_tui.core.models import VmState
from hypercore_tui.services.monitor import AgentStatus, VmView
from hypercore_tui.ui.app import HypercoreApp

from .conftest import ENVIRON
from .fakes import FakeBackend

SIZE = (100, 20)


def many(count: int) -> dict[str, VmView]:
    return {f"vm{i:02d}": VmView(name=f"vm{i:02d}", state=VmState.STOPPED, ram_mb=512, cpus=1,
                                 agent=AgentStatus.UNKNOWN) for i in range(count)}


async def test_keys_page_and_click_move_the_selection() -> None:
    app = HypercoreApp(FakeBackend(many(40)), environ=ENVIRON)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        rows = app.dashboard.vm_list.rows_view
        assert app.dashboard.selected == "vm00" and app.focused is rows
        await pilot.press("down", "down")
        assert app.dashboard.selected == "vm02"
        await pilot.press("end")
        await pilot.pause()
        assert app.dashboard.selected == "vm39"
        assert rows.scroll_offset.y > 0, "the last row was scrolled into view"
        await pilot.press("home")
        await pilot.pause()
        assert app.dashboard.selected == "vm00" and rows.scroll_offset.y == 0
        height = rows.scrollable_content_region.height
        await pilot.press("pagedown")
        assert app.dashboard.selected == f"vm{height:02d}"
        await pilot.press("up")
        assert app.dashboard.selected == f"vm{height - 1:02d}"
        await pilot.press("home")
        await pilot.pause()
        await pilot.click(rows, offset=(2, 3))
        await pilot.pause()
        assert app.dashboard.selected == "vm03"


async def test_filter_shows_only_matches_and_the_cursor_follows() -> None:
    app = HypercoreApp(FakeBackend(many(25)), environ=ENVIRON)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("slash", "2")
        await pilot.pause()
        assert app.dashboard.vm_list.visible_names() == ["vm02", "vm12", "vm20", "vm21",
                                                         "vm22", "vm23", "vm24"]
        assert app.dashboard.selected == "vm02"
        await pilot.press("enter", "down", "down")
        assert app.dashboard.selected == "vm20"
        await pilot.press("escape")
        await pilot.pause()
        assert len(app.dashboard.vm_list.visible_names()) == 25
        assert app.dashboard.selected == "vm20"


async def test_a_line_is_repainted_only_when_its_text_changed() -> None:
    app = HypercoreApp(FakeBackend(many(5)), environ=ENVIRON)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        vm_list = app.dashboard.vm_list
        rows = vm_list.rows_view
        version = rows._versions["vm01"]
        vm_list.refresh_rows(["vm01"])  # same figures
        assert rows._versions["vm01"] == version
        view = app.dashboard.views["vm01"]
        view.state = VmState.PAUSED
        vm_list.refresh_rows(["vm01"])
        assert rows._versions["vm01"] == version + 1
        assert "paused" in vm_list.row_text("vm01")


async def test_a_long_list_scrolls_down_only_and_keeps_its_last_row() -> None:
    """More VMs than lines: a vertical scroll bar, no horizontal one (it took the list's
    last line for a bar with nothing to scroll), and the scroll bar is not repainted when
    the screen is laid out again for another reason (the selection, shown in the detail
    pane: the list did not move)."""
    app = HypercoreApp(FakeBackend(many(40)), environ=ENVIRON)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        rows = app.dashboard.vm_list.rows_view
        assert rows.show_vertical_scrollbar and not rows.show_horizontal_scrollbar
        assert rows.scrollable_content_region.height == rows.size.height
        bar = rows.vertical_scrollbar
        refreshed: list[object] = []
        original = bar.refresh

        def refresh(*regions: Region, **flags: bool) -> ScrollBar:
            refreshed.append(regions)
            return original(*regions, **flags)

        bar.refresh = refresh  # type: ignore[method-assign]
        await pilot.press("down")
        await pilot.pause()
        await pilot.press("down")
        await pilot.pause()
        assert app.dashboard.selected == "vm02"
        assert refreshed == []
