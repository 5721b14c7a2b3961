"""``hypercore set NAME KEY=VALUE [KEY=VALUE ...]``: change settings in a VM's definition,
running or not. Keys: ``clipboard`` (at once), ``display`` (from the next boot)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from hypercore_tui.commands import Handler, out, run_async
from hypercore_tui.core.models import CLIPBOARD_MODES_HELP, DISPLAY_KINDS_HELP
from hypercore_tui.services import vmsettings
from hypercore_tui.services.context import Context


def register(sub: Any) -> dict[str, Handler]:
    p = sub.add_parser(
        "set", help="change a VM's settings (running or not)",
        description="Change settings in a VM's definition, running or not. clipboard "
                    "applies at once; display is a device: a running VM gets it at its next "
                    "boot (and keeps its current display until then).",
        epilog=f"Keys: clipboard=sync|push-only|off ({CLIPBOARD_MODES_HELP}). "
               f"display=vnc|spice|none ({DISPLAY_KINDS_HELP}).")
    p.add_argument("name")
    p.add_argument("assignments", nargs="+", metavar="KEY=VALUE")
    p.add_argument("--json", action="store_true",
                   help="print the VM's settings afterwards as a JSON object")
    return {"set": cmd_set}


def cmd_set(ctx: Context, args: argparse.Namespace) -> int:
    wanted = vmsettings.parse_assignments(args.assignments)
    changes, settings = run_async(vmsettings.change_settings(ctx, args.name, wanted))
    if args.json:
        out(json.dumps(settings, indent=2))
        return 0
    for change in changes:
        out(change.describe(args.name))
    return 0
