"""Start the dashboard for the `hypercore` / `hypercore tui` command."""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import replace

from hypercore_tui.core.errors import HypercoreError, InvalidInput
from hypercore_tui.services.context import Context
from hypercore_tui.services.monitor import MonitorSettings
from hypercore_tui.ui.app import HypercoreApp
from hypercore_tui.ui.backend import LiveBackend

log = logging.getLogger("hypercore.ui")

KEYMAP_FILE = "keymap.json"


def load_keymap(ctx: Context) -> dict[str, str]:
    """``$HYPERCORE_HOME/keymap.json``: ``{"vm.start": "u", ...}`` (binding id -> keys)."""
    path = ctx.layout.home / KEYMAP_FILE
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise InvalidInput(f"{path}: not a valid keymap ({exc})") from None
    if not isinstance(data, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in data.items()):
        raise InvalidInput(f"{path}: use an object of binding id -> keys, e.g. "
                           '{"vm.start": "u"}')
    return dict(data)


def run_dashboard(ctx: Context, *, interval: float = 1.0,
                  background_interval: float | None = None,
                  poll_budget: float | None = None) -> int:
    if not sys.stdin.isatty() or not sys.stdout.isatty():
        raise InvalidInput("the dashboard needs a terminal; for scripts use "
                           "`hypercore list --json` or `hypercore stats NAME --json`")
    settings = MonitorSettings(interval=interval,
                               background_interval=background_interval or max(2.0, interval))
    if poll_budget is not None:
        settings = replace(settings, background_polls_per_second=poll_budget)
    app = HypercoreApp(LiveBackend(ctx, settings), environ=ctx.environ)
    app.set_keymap(load_keymap(ctx))
    app.run()
    if app.crash_message is not None:
        raise HypercoreError(f"the dashboard stopped on an internal error: {app.crash_message} "
                             f"(details in {ctx.layout.log_file})")
    return 0
