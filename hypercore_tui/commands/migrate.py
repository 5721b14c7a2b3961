"""``hypercore migrate NAME HOST``: a running Ceph-backed VM moved live to another host;
``hypercore migrate-incoming NAME`` is its other end, run there over SSH (internal)."""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from collections.abc import Mapping
from typing import Any

from hypercore_tui.commands import Handler, out, run_async, seconds, whole_number
from hypercore_tui.core.errors import InvalidInput, OperationFailed
from hypercore_tui.core.sizes import format_bytes
from hypercore_tui.services import migrate, migrate_incoming, migrate_offline
from hypercore_tui.services.context import Context


def register(sub: Any) -> dict[str, Handler]:
    p = sub.add_parser(
        "migrate", help="move a running VM (disks on Ceph) to another host, live",
        description="Move a running VM whose disk is on a Ceph cluster both hosts reach to "
                    "another host (see `hypercore hosts`) without stopping it: its RAM goes "
                    "over SSH (or --via a migration network), the disk stays on Ceph. Any "
                    "failure before the switch-over leaves it running here as before.")
    p.add_argument("name", metavar="NAME")
    p.add_argument("host", metavar="HOST")
    p.add_argument("--via", metavar="tcp:ADDR:PORT",
                   help="send the stream over plain TCP to that address of the target "
                        "(a migration network) instead of through SSH")
    p.add_argument("--offline", action="store_true",
                   help="move a stopped VM: its definition, and a local disk copied "
                        "(checked with sha256 on both hosts, then removed here)")
    p.add_argument("--downtime-ms", type=whole_number, default=migrate.DEFAULT_DOWNTIME_MS,
                   metavar="MS", help="the longest pause the guest may see at the "
                                      f"switch-over (default {migrate.DEFAULT_DOWNTIME_MS})")
    p.add_argument("--bandwidth-mbps", type=whole_number, metavar="MBIT",
                   help="limit the stream to MBIT megabits per second")
    p.add_argument("--timeout", type=seconds, default=migrate.DEFAULT_TIMEOUT,
                   metavar="SECONDS", help="cancel a migration still running after this "
                                           f"long (default {migrate.DEFAULT_TIMEOUT:g})")
    p.add_argument("--force-unmount", action="store_true",
                   help="a shared folder in use in the guest is detached lazily (programs "
                        "using it lose it) instead of refusing the migration")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    q = sub.add_parser("migrate-incoming",  # (no help=: not listed in --help)
                       description="Internal: the target end of `hypercore migrate`, run "
                                   "over SSH; JSON lines on stdin and stdout.")
    q.add_argument("name", metavar="NAME")
    q.add_argument("--abort", action="store_true",
                   help="remove what a migration in that was cut off left here")
    q.add_argument("--offline", action="store_true",
                   help="take a stopped VM (and its local disk's bytes)")
    r = sub.add_parser("migrate-recover",  # (no help=: not listed in --help)
                       description="Internal: started after a migration given up on a "
                                   "stalled QEMU; sees the guest run here again.")
    r.add_argument("name", metavar="NAME")
    return {"migrate": cmd_migrate, "migrate-incoming": cmd_migrate_incoming,
            "migrate-recover": cmd_migrate_recover}


def cmd_migrate_recover(ctx: Context, args: argparse.Namespace) -> int:
    out(run_async(migrate.recover_after_stall(ctx, args.name)))
    return 0


def cmd_migrate(ctx: Context, args: argparse.Namespace) -> int:
    if args.downtime_ms <= 0:
        raise InvalidInput("--downtime-ms must be at least 1")
    if args.bandwidth_mbps is not None and args.bandwidth_mbps <= 0:
        raise InvalidInput("--bandwidth-mbps must be at least 1")
    if args.offline:
        return _migrate_offline(ctx, args)

    def progress(p: migrate.MigrationProgress) -> None:
        if not args.json:
            out(f"{args.name}: {p.describe()}")

    async def run() -> migrate.MigrationResult:
        # SIGTERM and SIGHUP (the terminal gone) end it as Ctrl-C does: cancelled, the VM
        # running here as before, the target cleaned.
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        for signum in (signal.SIGTERM, signal.SIGHUP):
            loop.add_signal_handler(signum, task.cancel)
        return await migrate.migrate_vm(
            ctx, args.name, args.host, via=args.via, downtime_ms=args.downtime_ms,
            bandwidth_mbps=args.bandwidth_mbps, timeout=args.timeout,
            force_unmount=args.force_unmount, progress=progress)

    try:
        result = run_async(run())
    except (KeyboardInterrupt, asyncio.CancelledError):
        raise OperationFailed(f"{args.name}: migration interrupted; the VM runs on this host "
                              "as before") from None
    if args.json:
        out(json.dumps({"name": result.name, "target": result.target, "via": result.via,
                        "downtime_ms": round(result.downtime_ms, 1),
                        "qemu_downtime_ms": result.qemu_downtime_ms,
                        "total_s": round(result.total_s, 3),
                        "switchover_s": round(result.switchover_s, 3),
                        "transferred_bytes": result.transferred, "share": result.share,
                        "share_forced": result.share_forced}))
        return 0
    out(f"{result.name}: migrated to {result.target}: running there after "
        f"{result.switchover_s:.1f} s (done here after {result.total_s:.1f} s), downtime "
        f"{result.downtime_ms:.0f} ms (QEMU: {result.qemu_downtime_ms} ms)")
    if result.share_forced:
        out(f"{result.name}: the shared folder was in use in the guest: unmounted by force "
            "(lazily) before the migration")
    if result.share:
        out(f"{result.name}: shared folder there: {result.share}")
    return 0


def _migrate_offline(ctx: Context, args: argparse.Namespace) -> int:
    if args.via is not None or args.force_unmount:
        raise InvalidInput(f"{'--via' if args.via is not None else '--force-unmount'} is for "
                           "a live migration, not with --offline")

    def progress(sent: int, total: int) -> None:
        if not args.json:
            share = f" ({sent * 100 // total}%)" if total else ""
            out(f"{args.name}: copying the disk: {format_bytes(sent)} of "
                f"{format_bytes(total)}{share}")

    async def run() -> migrate_offline.OfflineResult:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        for signum in (signal.SIGTERM, signal.SIGHUP):
            loop.add_signal_handler(signum, task.cancel)
        return await migrate_offline.move_offline(ctx, args.name, args.host,
                                                  bandwidth_mbps=args.bandwidth_mbps,
                                                  progress=progress)

    try:
        result = run_async(run())
    except (KeyboardInterrupt, asyncio.CancelledError):
        raise OperationFailed(f"{args.name}: move interrupted; the VM stays on this host as "
                              "before") from None
    if args.json:
        out(json.dumps({"name": result.name, "target": result.target, "offline": True,
                        "disk": result.disk, "copied_bytes": result.copied,
                        "sha256": result.sha256, "source_disk": result.source_disk,
                        "total_s": round(result.total_s, 3)}))
    else:
        out(migrate_offline.describe(result))
    return 0


def cmd_migrate_incoming(ctx: Context, args: argparse.Namespace) -> int:
    if args.abort:
        migrate_incoming.abort_pending(ctx, args.name)
        return 0

    def reply(message: Mapping[str, Any]) -> None:
        sys.stdout.write(json.dumps(message) + "\n")
        sys.stdout.flush()

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader),
                                     sys.stdin.buffer)
        if args.offline:
            await migrate_offline.serve_offline(ctx, args.name, reader, reply)
        else:
            await migrate_incoming.serve_incoming(ctx, args.name, reader, reply)

    run_async(serve())
    return 0

