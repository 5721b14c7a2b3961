"""``hypercore hosts add NAME SSH_DEST | list [--json] | remove NAME`` and ``hypercore
watch --json`` (``--host NAME COMMAND ...`` is ``commands/remote.py``)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from hypercore_tui.commands import PROG, Handler, out, plain, run_async, seconds
from hypercore_tui.core.errors import HypercoreError
from hypercore_tui.core.hosts import DEFAULT_REMOTE_COMMAND, LOCAL_HOST, Host
from hypercore_tui.services.context import Context
from hypercore_tui.services.hosts import connection, registry
from hypercore_tui.services.monitor import MonitorSettings
from hypercore_tui.services.watch import WatchStream


def register(sub: Any) -> dict[str, Handler]:
    p = sub.add_parser(
        "hosts", help="the other hosts `--host NAME` reaches over SSH",
        description="The hosts `hypercore --host NAME COMMAND ...` runs commands on, "
                    "through OpenSSH (your keys, agent, ~/.ssh/config and known_hosts). "
                    "Each needs the same Hypercore version on the SSH user's PATH. "
                    f"{LOCAL_HOST!r} is this host.")
    hosts = p.add_subparsers(dest="hosts_command", metavar="ACTION", required=True)
    add = hosts.add_parser("add", help="add a host: NAME and where `ssh` logs in",
                           description="Add a host, then check it answers (a host that "
                                       "does not is kept, with a note).")
    add.add_argument("name")
    add.add_argument("destination", metavar="SSH_DEST",
                     help="[user@]host, ssh://[user@]host[:port] or a ~/.ssh/config alias")
    add.add_argument("--command", dest="remote_command", default=DEFAULT_REMOTE_COMMAND,
                     metavar="PATH",
                     help="the hypercore program there (default: `hypercore` on the SSH "
                          "user's PATH; a relative path starts in their home directory)")
    add.add_argument("--no-check", action="store_true", help="do not connect to it now")
    listing = hosts.add_parser("list", help="every host (local first)")
    listing.add_argument("--json", action="store_true")
    listing.add_argument("--check", action="store_true",
                         help="connect to each and say whether it answers, with its version")
    remove = hosts.add_parser("remove", help="forget a host (and close its connection)")
    remove.add_argument("name")

    w = sub.add_parser(
        "watch", help="this host's VMs as a stream of JSON lines (for remote dashboards)",
        description="Newline-delimited JSON on stdout: the VMs, their samples, state changes "
                    "and events as the dashboard sees them, and a heartbeat when quiet; "
                    "until interrupted or the reader goes away.")
    w.add_argument("--json", action="store_true", required=True,
                   help="JSON lines (the only format)")
    w.add_argument("--interval", type=seconds, default=2.0, metavar="SECONDS",
                   help="time between two samples of a VM (2)")
    return {"hosts": cmd_hosts, "watch": cmd_watch}


def cmd_hosts(ctx: Context, args: argparse.Namespace) -> int:
    if args.hosts_command == "add":
        return _add(ctx, args)
    if args.hosts_command == "remove":
        host = registry.remove_host(ctx, args.name)
        connection.HostConnection(ctx, host).close()
        out(f"removed {host.name} (ssh {plain(host.destination or '')})")
        return 0
    return _list(ctx, args)


def _add(ctx: Context, args: argparse.Namespace) -> int:
    host = registry.add_host(ctx, args.name, args.destination, args.remote_command)
    out(f"added {host.name} (ssh {plain(host.destination or '')})")
    if args.no_check:
        return 0
    try:
        ready = connection.HostConnection(ctx, host).ensure_ready()
    except HypercoreError as exc:
        sys.stderr.write(f"{PROG}: note: {plain(str(exc))} (the host is kept; `hypercore "
                         f"hosts list --check` tries again)\n")
        return 0
    out(f"{host.name}: Hypercore {ready.version} answers there")
    return 0


def _list(ctx: Context, args: argparse.Namespace) -> int:
    hosts = registry.list_hosts(ctx)
    checks = connection.check_hosts(ctx, hosts) if args.check else None
    if args.json:
        rows = []
        for host in hosts:
            row = host.as_json()
            if checks is not None:
                row["status"] = checks[host.name]
            rows.append(row)
        out(json.dumps(rows, indent=2))
        return 0
    width = max(len(host.name) for host in hosts)
    for host in hosts:
        line = f"{host.name:<{width}}  {_where(host)}"
        if checks is not None:
            line += f"  {checks[host.name]}"
        out(line)
    return 0


def _where(host: Host) -> str:
    if host.is_local:
        return "(this host)"
    where = f"ssh {host.destination}"
    if host.command != DEFAULT_REMOTE_COMMAND:
        where += f" ({host.command})"
    return where


def cmd_watch(ctx: Context, args: argparse.Namespace) -> int:
    settings = MonitorSettings(interval=args.interval,
                               background_interval=args.interval)

    async def follow() -> None:
        await WatchStream(ctx, sys.stdout.fileno(), settings=settings).run()

    sys.stdout.flush()
    run_async(follow())
    return 0
