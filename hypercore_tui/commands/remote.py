"""``hypercore --host NAME COMMAND ...``: any command, run on another host over SSH."""

from __future__ import annotations

import sys

from hypercore_tui.core.errors import InvalidInput
from hypercore_tui.core.hosts import LOCAL_HOST
from hypercore_tui.services.context import Context
from hypercore_tui.services.hosts import registry, remote


def run_on_host(ctx: Context, name: str, argv: list[str]) -> int:
    """The command runs there, its stdin, stdout, stderr and exit code passed through; a
    person at a terminal gets one there too (the dashboard, a console, Ctrl-C)."""
    host = registry.get_host(ctx, name)
    if host.is_local:
        raise InvalidInput(f"--host {LOCAL_HOST} is this host: run the command without --host")
    tty = sys.stdin.isatty() and sys.stdout.isatty()
    sys.stdout.flush()
    return remote.run_attached(ctx, host, argv, tty=tty)
