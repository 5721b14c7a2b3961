"""The opt-in OSC 52 copy (issue 13) with the fake sync: off by default; ``O`` turns it
on (the header says ``osc52``); then each new text entry from a VM or the host, and only
those, goes to the user's terminal through ``App.copy_to_clipboard``; an entry too large
for OSC 52 is said once and not sent."""

from __future__ import annotations

import pytest

from hypercore_tui.ui.app import HypercoreApp
from hypercore_tui.ui.backend import ClipEntry
from hypercore_tui.ui.screens.dashboard import OSC52_MAX

from .fakes import FakeBackend, FakeClipSync
from .test_dashboard import SIZE, notifications, settle

pytestmark = pytest.mark.timeout(60)


def clip(backend: FakeBackend) -> FakeClipSync:
    assert backend.clipsync is not None
    return backend.clipsync


def header(app: HypercoreApp) -> str:
    return app.dashboard.host_bar.summary_text().plain


def change(sync: FakeClipSync, entry_id: int, source: str, text: str, *,
           size: int | None = None, kind: str = "text") -> None:
    sync.texts[entry_id] = text
    entry = ClipEntry(entry_id, kind, len(text.encode()) if size is None else size, source,
                      4000.0 + entry_id, text[:60])
    sync.entries.insert(0, entry)
    sync.say("change", f"entry {entry_id}", vm=source[3:] if source.startswith("vm:")
             else None, entry=entry)


async def test_osc52_is_opt_in_and_copies_vm_and_host_entries(
        app: HypercoreApp, backend: FakeBackend, monkeypatch: pytest.MonkeyPatch) -> None:
    copied: list[str] = []
    monkeypatch.setattr(app, "copy_to_clipboard", copied.append)
    sync = clip(backend)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("C")
        await settle(pilot, app)
        assert "clip sync" in header(app) and "osc52" not in header(app)

        change(sync, 3, "vm:web1", "copied in web1")  # off by default: not sent
        await settle(pilot, app)
        assert copied == [] and ("text_of", 3) not in sync.calls

        await pilot.press("O")
        await settle(pilot, app)
        assert app.dashboard.osc52
        assert "clip sync osc52" in header(app)
        assert any(n.startswith("OSC 52 on") for n in notifications(app))

        change(sync, 4, "vm:web1", "hostile \x1b]52;c;SGk=\x07 text\n")
        change(sync, 5, "host:tmux", "from the tmux buffer")
        change(sync, 6, "dashboard", "pasted by the user")  # came from the terminal
        change(sync, 7, "history", "made current again")
        await settle(pilot, app)
        assert copied == ["hostile \x1b]52;c;SGk=\x07 text\n", "from the tmux buffer"]

        big = "x" * (OSC52_MAX + 1)
        change(sync, 8, "vm:db1", big)
        change(sync, 9, "host:x11", big + "y", size=80 * 1024)
        await settle(pilot, app)
        assert len(copied) == 2
        too_large = [n for n in notifications(app) if "too large for OSC 52" in n]
        assert too_large == ["clipboard entry too large for OSC 52 (74 KiB): not copied to "
                             "your terminal"]
        change(sync, 10, "vm:db1", "small again")
        await settle(pilot, app)
        assert copied[-1] == "small again"

        await pilot.press("O")
        await settle(pilot, app)
        assert not app.dashboard.osc52 and "osc52" not in header(app)
        change(sync, 11, "vm:web1", "after it was turned off")
        await settle(pilot, app)
        assert copied[-1] == "small again" and len(copied) == 3


async def test_osc52_is_in_the_help_and_shown_without_the_sync(
        app: HypercoreApp, backend: FakeBackend) -> None:
    async with app.run_test(size=SIZE) as pilot:
        rows = dict(app.dashboard.help_rows())
        assert any("OSC 52" in text and "off by default" in text for text in rows.values())
        assert "osc52" not in header(app)
        await pilot.press("O")
        await settle(pilot, app)
        assert "osc52" in header(app)
