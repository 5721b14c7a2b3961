"""``hypercore stats NAME [--json]``: one sample of a running VM (DESIGN §3).

Rates need two readings: the command reads the VM twice, ``--gap`` seconds apart
(0.5 s by default), over a short session on the VM's ``qmp.sock``.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from hypercore_tui.commands import Handler, out, run_async
from hypercore_tui.core.series import format_duration, format_percent, format_rate
from hypercore_tui.core.sizes import format_bytes
from hypercore_tui.core.text import printable
from hypercore_tui.services.context import Context
from hypercore_tui.services.monitor import StatsResult, sample_once


def _gap(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0.1 <= value <= 10:
        raise argparse.ArgumentTypeError("the gap must be between 0.1 and 10 seconds")
    return value


def register(sub: Any) -> dict[str, Handler]:
    p = sub.add_parser("stats", help="one sample of a running VM's CPU, memory and disk")
    p.add_argument("name")
    p.add_argument("--json", action="store_true")
    p.add_argument("--gap", type=_gap, default=0.5, metavar="SECONDS",
                   help="time between the two readings rates are computed from (0.5)")
    return {"stats": cmd_stats}


def cmd_stats(ctx: Context, args: argparse.Namespace) -> int:
    result: StatsResult = run_async(sample_once(ctx, args.name, gap=args.gap))
    if args.json:
        out(json.dumps(result.as_json(), indent=2))
        return 0
    for line in format_stats(result):
        out(line)
    return 0


def format_stats(result: StatsResult) -> list[str]:
    s = result.sample
    vcpus = " ".join(format_percent(v) for v in s.vcpu_percent) or "—"
    mem = format_bytes(s.guest_mem_used_bytes)
    if s.guest_mem_total_bytes is not None:
        mem += f" of {format_bytes(s.guest_mem_total_bytes)}"
    lines = [
        f"{result.name}: {result.state.value}, pid {result.pid}, up "
        f"{format_duration(s.uptime_seconds)}",
        f"cpu         {format_percent(s.cpu_percent)} (vCPUs: {vcpus})",
        f"host rss    {format_bytes(s.rss_bytes)}",
        f"guest mem   {mem} used, {format_bytes(s.guest_mem_available_bytes)} available",
        f"disk read   {format_bytes(s.disk_rd_bytes)} ({format_rate(s.disk_rd_bps)})",
        f"disk write  {format_bytes(s.disk_wr_bytes)} ({format_rate(s.disk_wr_bps)})",
        f"network     rx {format_bytes(s.net_rx_bytes)}, tx {format_bytes(s.net_tx_bytes)}",
    ]
    guest = result.guest
    if guest is None:
        lines.append("agent       not answering")
    else:
        # Guest-provided text: control characters are shown escaped, never sent raw.
        lines.append(f"agent       {_plain(guest.hostname)}, {_plain(guest.os_name)}, "
                     f"{', '.join(_plain(a) for a in guest.addresses) or 'no address'}")
    return lines


def _plain(text: str | None) -> str:
    if text is None:
        return "—"
    return printable(text, limit=None)
