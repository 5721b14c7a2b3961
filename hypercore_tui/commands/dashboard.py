"""``hypercore tui``: the dashboard, also what ``hypercore`` alone runs."""

from __future__ import annotations

import argparse
from typing import Any

from hypercore_tui.commands import Handler, seconds
from hypercore_tui.services.context import Context


def register(sub: Any) -> dict[str, Handler]:
    p = sub.add_parser("tui", help="the dashboard (default)")
    p.add_argument("--interval", type=seconds, default=1.0, metavar="SECONDS",
                   help="refresh of the selected VM (default 1)")
    p.add_argument("--background-interval", type=seconds, metavar="SECONDS",
                   help="refresh of the other VMs (default: 2, or --interval if longer)")
    p.add_argument("--poll-budget", type=seconds, metavar="POLLS",
                   help="most polls a second for the other VMs together: their refresh "
                        "stretches with their number (default 10; 0: no limit)")
    return {"tui": cmd_tui}


def cmd_tui(ctx: Context, args: argparse.Namespace) -> int:
    """Also run for a bare ``hypercore``: then ``args`` holds none of the options."""
    from hypercore_tui.ui.launch import run_dashboard  # Textual loads only for the dashboard

    interval = getattr(args, "interval", 1.0) or 1.0
    return run_dashboard(ctx, interval=max(interval, 0.2),
                         background_interval=getattr(args, "background_interval", None),
                         poll_budget=getattr(args, "poll_budget", None))
