"""``hypercore screenshot NAME FILE.png``: the VM's screen (DESIGN §3)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from hypercore_tui.adapters.fs import atomic_write_bytes
from hypercore_tui.commands import Handler, out, run_async
from hypercore_tui.core.errors import InvalidInput
from hypercore_tui.core.sizes import format_bytes
from hypercore_tui.services.context import Context
from hypercore_tui.services.screen import screendump


def register(sub: Any) -> dict[str, Handler]:
    p = sub.add_parser("screenshot", help="save a running VM's screen as a PNG file")
    p.add_argument("name")
    p.add_argument("file", help="where the PNG goes (- for stdout)")
    return {"screenshot": cmd_screenshot}


def cmd_screenshot(ctx: Context, args: argparse.Namespace) -> int:
    data = run_async(screendump(ctx, args.name))
    if args.file == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return 0
    target = Path(args.file)
    if target.is_dir():
        raise InvalidInput(f"{args.file} is a directory; name the PNG file")
    atomic_write_bytes(target, data)
    out(f"{args.name}: screen saved to {target} ({format_bytes(len(data))})")
    return 0
