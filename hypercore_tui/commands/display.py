"""``hypercore display NAME``: remote-viewer on the VM's screen here, or the line to run on
the user's own machine (DESIGN §3)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from hypercore_tui.commands import Handler, out, plain
from hypercore_tui.services import display
from hypercore_tui.services.context import Context


def register(sub: Any) -> dict[str, Handler]:
    p = sub.add_parser(
        "display", help="a VM's screen in remote-viewer, or the ssh line for it",
        description="With a graphical session on this host (DISPLAY or WAYLAND_DISPLAY, "
                    "ssh -X included), start remote-viewer (virt-viewer) on the running VM's "
                    "VNC or SPICE socket. Otherwise print the one line to run on your own "
                    "machine: an ssh forward of the socket to a local port, then "
                    "remote-viewer on that port (the tunnel closes with the viewer).",
        epilog="The display servers listen on unix sockets in the VM's private runtime "
               "directory only, never on a TCP port.")
    p.add_argument("name")
    return {"display": cmd_display}


def cmd_display(ctx: Context, args: argparse.Namespace) -> int:
    outcome = display.open_display(ctx, args.name)
    if outcome.started:
        out(outcome.message)
        return 0
    sys.stderr.write(plain(outcome.message) + "\n")
    sys.stderr.flush()
    out(outcome.access.laptop_command)
    if outcome.access.next_boot is not None:
        sys.stderr.write(plain(f"{args.name}: {outcome.access.pending_note}") + "\n")
    return 0
