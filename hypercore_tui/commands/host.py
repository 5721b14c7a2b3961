"""``hypercore check-env``: what this host offers Hypercore."""

from __future__ import annotations

import argparse
from typing import Any

from hypercore_tui.adapters.hostcheck import run_checks
from hypercore_tui.commands import Handler, out
from hypercore_tui.core.errors import HypercoreError
from hypercore_tui.services.context import Context


def register(sub: Any) -> dict[str, Handler]:
    sub.add_parser("check-env", help="check what this host offers")
    return {"check-env": cmd_check_env}


def cmd_check_env(ctx: Context, args: argparse.Namespace) -> int:
    checks = run_checks(ctx.layout.home, ctx.layout.runtime_base)
    for check in checks:
        out(f"{check.label:<5} {check.name:<17} {check.detail}")
    failed = [c.name for c in checks if c.required and not c.ok]
    if failed:
        raise HypercoreError(f"required: {', '.join(failed)} (see above)")
    return 0
