"""``hypercore clip sync [NAME ...|--all] [--link HOST ...|--link-all]``, ``hypercore clip
status [--json]`` and ``hypercore clip link`` (internal: the other end of a ``--link``)."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
import time

from hypercore_tui.commands import PROG, out, run_async
from hypercore_tui.core.errors import InvalidInput
from hypercore_tui.core.hosts import Host
from hypercore_tui.services import registry
from hypercore_tui.services.clipsync import control, link
from hypercore_tui.services.clipsync.engine import SyncEngine, SyncEvent, describe_status
from hypercore_tui.services.context import Context
from hypercore_tui.services.hosts import registry as hosts_registry


def cmd(ctx: Context, args: argparse.Namespace) -> int:
    if args.clip_command == "status":
        status = run_async(control.status(ctx))
        if args.json:
            sys.stdout.write(json.dumps(status, sort_keys=True) + "\n")
        else:
            for line in describe_status(status):
                out(line)
        return 0
    if args.clip_command == "link":
        return run_async(link.serve_link(ctx, args.peer))
    if args.all and args.names:
        raise InvalidInput("give VM names or --all, not both")
    names = list(dict.fromkeys(args.names)) or None
    for name in names or ():
        registry.load(ctx, name)  # an unknown VM is an error now, not a state later
    engine = SyncEngine(ctx, names, on_event=_print_event, host=args.host,
                        links=linked_hosts(ctx, args.link, every=args.link_all))
    engine.acquire()
    try:
        return run_async(_run(engine))
    finally:
        engine.release()


def linked_hosts(ctx: Context, names: list[str], *, every: bool) -> list[Host]:
    """The hosts ``--link`` names (``--link-all``: every configured one), checked now."""
    if every:
        return [h for h in hosts_registry.list_hosts(ctx) if not h.is_local]
    hosts = []
    for name in dict.fromkeys(names):
        host = hosts_registry.get_host(ctx, name)
        if host.is_local:
            raise InvalidInput(f"{name!r} is this host: its clipboards are synced already")
        hosts.append(host)
    return hosts


def _print_event(event: SyncEvent) -> None:
    stamp = time.strftime("%H:%M:%S", time.localtime(event.at or time.time()))
    if event.kind == "fault":
        sys.stderr.write(f"{PROG}: warning: {stamp} {event.message}\n")
        sys.stderr.flush()
        return
    out(f"{stamp} {event.message}")


async def _run(engine: SyncEngine) -> int:
    task = asyncio.create_task(engine.run(ready=lambda: _started(engine)))
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        loop.add_signal_handler(sig, task.cancel)
    try:
        await task
    except asyncio.CancelledError:
        out("clipboard sync stopped")
    stragglers = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    if stragglers:
        # Cancelled, and still not ended after the engine's grace (a guest operation
        # waiting in a thread): asyncio.run would wait for them for ever. The lock and
        # the control socket are released already; leave now.
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
    return 0


def _started(engine: SyncEngine) -> None:
    which = ", ".join(engine.vms) or "none yet"
    scope = "every VM" if engine.names is None else "the VMs named"
    host = ", ".join([*(peer.name for peer in engine.hosts),
                      *(f"link:{h.name}" for h in engine.link_hosts)])
    also = f" and {host}" if host else ""
    out(f"clipboard sync: {scope} ({which}){also}; Ctrl+C stops")
