"""Start the dashboard for the `hypercore` / `hypercore tui` command."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import sys
from dataclasses import replace
from typing import Any

from rich.text import Text
from textual.app import App

from hypercore_tui.core.errors import HypercoreError, InvalidInput
from hypercore_tui.core.text import printable
from hypercore_tui.services.context import Context
from hypercore_tui.services.display import tmux_terminal_features
from hypercore_tui.services.monitor import MonitorSettings
from hypercore_tui.ui.app import HypercoreApp
from hypercore_tui.ui.backend import LiveBackend
from hypercore_tui.ui.screen_image import load as load_screen_rendering

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
    # textual-image asks the terminal what it can draw (Kitty graphics, Sixel, the cell
    # size) while stdin is still ours: before the app starts, and only for the dashboard.
    rendering = load_screen_rendering(ctx.environ,
                                      tmux_features=tmux_terminal_features(ctx.environ))
    log.info("screen tab: %s (%s)", rendering.label, rendering.why)
    settings = MonitorSettings(interval=interval,
                               background_interval=background_interval or max(2.0, interval))
    if poll_budget is not None:
        settings = replace(settings, background_polls_per_second=poll_budget)
    app = HypercoreApp(LiveBackend(ctx, settings), environ=ctx.environ)
    app.set_keymap(load_keymap(ctx))
    crash = run_reporting_crashes(app)
    if crash is not None:
        raise HypercoreError(f"the dashboard stopped on an internal error: {crash} "
                             f"(details in {ctx.layout.log_file})")
    return 0


def run_reporting_crashes(app: App[Any], *, headless: bool = False) -> str | None:
    """Run ``app``; None when it ended normally, else the one-line reason it stopped on
    an unexpected error (``Type: message``), its traceback written to the log.

    Textual handles such an error itself: the app exits with return code 1 and prints
    the traceback on stderr once the terminal is restored. That print is taken here
    (Textual draws on the terminal's own stream, not on ``sys.stderr``), so the user gets
    one line instead of a screenful, and the log the details.
    """
    captured = io.StringIO()
    try:
        with contextlib.redirect_stderr(captured):
            app.run(headless=headless)
    except BaseException:
        sys.stderr.write(captured.getvalue())
        raise
    report = Text.from_ansi(captured.getvalue()).plain.rstrip()
    if app.return_code != 1:
        sys.stderr.write(captured.getvalue())  # nothing of ours: passed on as it came
        return None
    log.error("dashboard crashed:\n%s", report)
    return error_line(report) or "unknown error"


def error_line(report: str) -> str:
    """The last exception's ``Type: message`` from a traceback as Rich draws it (a box
    of frames, then the exception, wrapped at the terminal's width), on one line."""
    lines = report.splitlines()
    box_ends = [i for i, line in enumerate(lines) if line.startswith("╰")]
    tail = lines[box_ends[-1] + 1:] if box_ends else lines[-1:]
    words: list[str] = []
    for line in tail:
        if not line.strip():
            break  # (a note on other errors may follow)
        words.append(line.strip())
    return printable(" ".join(words), limit=300)
