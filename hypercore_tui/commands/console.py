"""``hypercore console NAME``: the user's terminal joined to a VM's serial console until
Ctrl+] (DESIGN §3)."""

from __future__ import annotations

import argparse
import contextlib
import sys
from typing import Any

from hypercore_tui.commands import Handler, plain
from hypercore_tui.services import console
from hypercore_tui.services.context import Context


def register(sub: Any) -> dict[str, Handler]:
    p = sub.add_parser(
        "console", help=f"this terminal on a VM's serial console ({console.DETACH_KEY} detaches)",
        description="Attach this terminal to a running VM's serial console: every key goes "
                    f"to the guest (Ctrl+C included) until {console.DETACH_KEY}, which "
                    "detaches and leaves the VM running. Works in any terminal, in tmux or "
                    "not. One client at a time: a second one is told who holds it.",
        epilog="The guest's console output is also kept in HYPERCORE_HOME/vms/NAME/serial.log.")
    p.add_argument("name")
    return {"console": cmd_console}


def _say(line: str) -> None:
    with contextlib.suppress(OSError):  # (the terminal may be gone: a hangup)
        sys.stderr.write(plain(line) + "\n")
        sys.stderr.flush()


def cmd_console(ctx: Context, args: argparse.Namespace) -> int:
    sys.stdout.flush()
    end = console.attach(ctx, args.name, in_fd=sys.stdin.fileno(),
                         out_fd=sys.stdout.fileno(), say=_say)
    _say("\n" + console.ended(args.name, end))
    return 0
