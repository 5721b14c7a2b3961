"""``hypercore cp SRC DST [--via auto|agent|share] [--no-verify]``: a file between the host
and guests (DESIGN §3); a guest path is ``NAME:/path``, one of another host's guests
``HOST:NAME:/path``. ``hypercore cp-stream send|receive VM PATH`` is the other host's end
of such a copy, run there over SSH (internal)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
import time
from typing import Any

from hypercore_tui.commands import Handler, out, plain, run_async
from hypercore_tui.core import cpwire
from hypercore_tui.core.errors import InvalidInput
from hypercore_tui.core.names import validate_vm_name
from hypercore_tui.core.sizes import format_bytes
from hypercore_tui.services import transfer
from hypercore_tui.services.context import Context
from hypercore_tui.services.transfer import far_end
from hypercore_tui.services.transfer.locations import parse_location


def register(sub: Any) -> dict[str, Handler]:
    p = sub.add_parser("cp", help="copy a file between the host and guests (NAME:/path)")
    p.add_argument("src", metavar="SRC", help="a host path, NAME:/path in a guest, or "
                   "HOST:NAME:/path in a guest of another host (see `hypercore hosts`)")
    p.add_argument("dst", metavar="DST", help="a host path, NAME:/path or HOST:NAME:/path "
                   "(a directory: the file keeps its name)")
    p.add_argument("--via", choices=list(transfer.CHANNELS), default="auto",
                   help="channel: auto (fastest: the shared folder when mounted), agent, share")
    p.add_argument("--no-verify", action="store_true", help="skip the sha256 comparison")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress, no summary")
    q = sub.add_parser("cp-stream",  # (no help=: not listed in --help)
                       description="Internal: this host's end of `hypercore cp` to or from "
                                   "another host's guest, run over SSH; the file and "
                                   "messages on stdin and stdout.")
    q.add_argument("direction", choices=("send", "receive"))
    q.add_argument("vm", metavar="VM")
    q.add_argument("path", metavar="PATH")
    q.add_argument("--via", choices=list(transfer.CHANNELS), default="auto")
    q.add_argument("--no-verify", action="store_true")
    return {"cp": cmd_cp, "cp-stream": cmd_cp_stream}


class ProgressBar:
    """``  42%  8.4 MiB / 20.0 MiB  3.1 MiB/s`` on stderr, redrawn in place (TTY only)."""

    def __init__(self, stream: Any, label: str) -> None:
        self.stream = stream
        self.label = label
        self.started = time.monotonic()
        self.last = 0.0
        self.shown = False

    def __call__(self, stage: str, done: float | None, total: float) -> None:
        if done is None:
            return
        now = time.monotonic()
        if now - self.last < 0.1 and done < total:
            return
        self.last = now
        pct = int(100 * done // total) if total else 100
        rate = done / max(now - self.started, 1e-6)
        width = 20
        filled = width * pct // 100
        bar = "#" * filled + "-" * (width - filled)
        line = (f"\r{self.label[:30]} [{bar}] {pct:3d}% {format_bytes(done)} / "
                f"{format_bytes(total)}  {format_bytes(rate)}/s ")
        self.stream.write(line)
        self.stream.flush()
        self.shown = True

    def finish(self) -> None:
        if self.shown:
            self.stream.write("\r\x1b[K")
            self.stream.flush()


def cmd_cp(ctx: Context, args: argparse.Namespace) -> int:
    bar = None
    if not args.quiet and sys.stderr.isatty():
        bar = ProgressBar(sys.stderr, args.src.rsplit("/", 1)[-1])
    try:
        result = run_async(transfer.copy(ctx, args.src, args.dst, progress=bar,
                                         channel=args.via, verify=not args.no_verify))
    finally:
        if bar is not None:
            bar.finish()
    if not args.quiet:
        check = f", sha256 {result.sha256[:16]}…" if result.sha256 and not args.no_verify else ""
        out(f"copied {format_bytes(result.bytes)} to {plain(result.destination)} via "
            f"{result.channel} in {result.seconds:.2f}s "
            f"({result.mib_per_second:.1f} MiB/s){check}")
    return 0


def cmd_cp_stream(ctx: Context, args: argparse.Namespace) -> int:
    validate_vm_name(args.vm)
    if not args.path.startswith("/"):
        raise InvalidInput(f"guest paths must be absolute (got {args.path!r})")
    location = parse_location(f"{args.vm}:{args.path}")  # (VM:/...: never HOST:VM:/...)
    out_pipe = sys.stdout.buffer

    async def serve() -> None:
        # SIGTERM and SIGHUP end it as a cut connection does: what it wrote is removed.
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        for signum in (signal.SIGTERM, signal.SIGHUP):
            loop.add_signal_handler(signum, task.cancel)
        if args.direction == "send":
            await far_end.serve_send(ctx, args.vm, location.path, out_pipe,
                                     channel=args.via, verify=not args.no_verify)
            return
        reader = asyncio.StreamReader(limit=cpwire.MAX_LINE)
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader),
                                     sys.stdin.buffer)
        await far_end.serve_receive(ctx, args.vm, location.path, reader, out_pipe,
                                    channel=args.via, verify=not args.no_verify)

    try:
        run_async(serve())
    except asyncio.CancelledError:
        logging.getLogger("hypercore.transfer").info("cp-stream %s %s: ended by a signal",
                                                     args.direction, args.vm)
        return 1
    return 0
