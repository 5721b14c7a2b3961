"""The common storage space from the command line (DESIGN §3):

``hypercore clip push (NAME...|--all) [--text TEXT]``  (else stdin, else the host clipboard)
``hypercore clip pull NAME [--to-host] [--raw]``         prints the guest clipboard
``hypercore cp SRC DST [--via auto|agent|share] [--no-verify]``
``hypercore share status [NAME...] [--json]`` / ``hypercore share mount NAME``
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from hypercore_tui.adapters import hostclip
from hypercore_tui.commands import Handler, out, run_async
from hypercore_tui.core.errors import HypercoreError, InvalidInput, OperationFailed
from hypercore_tui.core.sizes import format_bytes
from hypercore_tui.core.text import printable
from hypercore_tui.services import clipboard, registry, shared, transfer
from hypercore_tui.services.context import Context


def register(sub: Any) -> dict[str, Handler]:
    clip = sub.add_parser("clip", help="the clipboard hub: push text to guests, pull it back")
    clip_sub = clip.add_subparsers(dest="clip_command", metavar="ACTION", required=True)
    p = clip_sub.add_parser("push", help="put text on guests' clipboards")
    p.add_argument("names", nargs="*", metavar="NAME", help="the VMs to push to")
    p.add_argument("--all", action="store_true", help="every running VM")
    p.add_argument("--text", help="the text (else stdin, else the host clipboard)")
    p = clip_sub.add_parser("pull", help="print a guest's clipboard")
    p.add_argument("name")
    p.add_argument("--to-host", action="store_true",
                   help="also put it on the host clipboard (local display or tmux buffer)")
    p.add_argument("--raw", action="store_true",
                   help="write the exact bytes even to a terminal (escape sequences included)")

    p = sub.add_parser("cp", help="copy a file between the host and guests (NAME:/path)")
    p.add_argument("src", metavar="SRC", help="a host path or NAME:/path in a guest")
    p.add_argument("dst", metavar="DST", help="a host path or NAME:/path (a directory: "
                   "the file keeps its name)")
    p.add_argument("--via", choices=list(transfer.CHANNELS), default="auto",
                   help="channel: auto (fastest: the shared folder when mounted), agent, share")
    p.add_argument("--no-verify", action="store_true", help="skip the sha256 comparison")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress, no summary")

    share = sub.add_parser("share", help="the shared folder in the guests")
    share_sub = share.add_subparsers(dest="share_command", metavar="ACTION", required=True)
    p = share_sub.add_parser("status", help="is the shared folder mounted in each guest")
    p.add_argument("names", nargs="*", metavar="NAME", help="default: every VM")
    p.add_argument("--json", action="store_true")
    p = share_sub.add_parser("mount", help="mount the shared folder at /shared in a guest")
    p.add_argument("name")
    return {"clip": cmd_clip, "cp": cmd_cp, "share": cmd_share}


# -- clip ------------------------------------------------------------------------------------


def _text_to_push(ctx: Context, args: argparse.Namespace) -> tuple[str, str]:
    """(text, where it came from): --text, else piped stdin, else the host clipboard."""
    if args.text is not None:
        return args.text, "--text"
    if not sys.stdin.isatty():
        data = sys.stdin.buffer.read()
        if data:
            try:
                return data.decode("utf-8"), "stdin"
            except UnicodeDecodeError:
                raise InvalidInput("the text on stdin is not valid UTF-8") from None
    boards = hostclip.host_clipboards(ctx.environ)
    if not boards:
        raise InvalidInput("nothing to push: pass --text TEXT or pipe the text on stdin "
                           "(no local display or tmux session holds a host clipboard)")
    for board in boards:
        text = board.read()
        if text:
            return text, f"the {board.name} clipboard"
    names = " and ".join(b.name for b in boards)
    raise InvalidInput(f"nothing to push: the host clipboard ({names}) is empty")


def cmd_clip(ctx: Context, args: argparse.Namespace) -> int:
    if args.clip_command == "pull":
        detail = run_async(clipboard.pull_detail(ctx, args.name))
        text = detail.text or ""
        if detail.note:
            sys.stderr.write(f"hypercore: note: {_plain(detail.note)}\n")
        if args.to_host:
            board = hostclip.host_clipboard(ctx.environ)
            if board is None:
                raise OperationFailed("no host clipboard here (no local display, not in tmux)")
            board.write(text)
        if sys.stdout.isatty() and not args.raw and text != _terminal_safe(text):
            # The guest chose these bytes: on a terminal, an escape sequence in them could
            # set the user's clipboard (OSC 52), retitle or clear the screen. Piped or
            # redirected output (and --raw) stays byte-exact.
            sys.stderr.write("hypercore: note: control characters shown escaped (stdout is a "
                             "terminal); pipe it or pass --raw for the exact bytes\n")
            text = _terminal_safe(text)
        sys.stdout.buffer.write(text.encode("utf-8"))
        sys.stdout.buffer.flush()
        return 0

    if args.all and args.names:
        raise InvalidInput("give VM names or --all, not both")
    if args.all:
        names = clipboard.running_vms(ctx)
        if not names:
            raise OperationFailed("no VM is running")
    elif args.names:
        names = list(dict.fromkeys(args.names))
        for name in names:
            registry.load(ctx, name)
    else:
        raise InvalidInput("name the VMs to push to, or pass --all")
    text, origin = _text_to_push(ctx, args)
    clipboard.check_text(text)
    results = run_async(clipboard.push(ctx, names, text))
    size = len(text.encode("utf-8"))
    for r in results:
        if r.ok:
            how = r.method or "?"
            if r.method == "file":
                how = f"fallback file {clipboard.FALLBACK_FILE}"
            session = f", {r.session}" if r.session else ""
            out(f"{r.name}: {size} bytes from {origin} -> {how}{session}")
            if r.note:
                sys.stderr.write(f"hypercore: note: {r.name}: {_plain(r.note)}\n")
        else:
            sys.stderr.write(f"hypercore: error: {_plain(r.error or '')}\n")
    return 0 if all(r.ok for r in results) else 1


def _terminal_safe(text: str) -> str:
    """``text`` with every control and bidi character escaped, line breaks kept."""
    return "\n".join(printable(line, limit=None) for line in text.split("\n"))


# -- cp ---------------------------------------------------------------------------------------


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
        out(f"copied {format_bytes(result.bytes)} to {_plain(result.destination)} via "
            f"{result.channel} in {result.seconds:.2f}s "
            f"({result.mib_per_second:.1f} MiB/s){check}")
    return 0


def _plain(text: str) -> str:
    """A path as it may be printed: control characters escaped."""
    return printable(text, limit=None)


# -- share ------------------------------------------------------------------------------------


def cmd_share(ctx: Context, args: argparse.Namespace) -> int:
    if args.share_command == "mount":
        state = run_async(shared.ensure_share_mounted(ctx, args.name))
        if not state.mounted:
            raise OperationFailed(f"{args.name}: shared folder {state.describe()}")
        out(f"{args.name}: shared folder mounted at {_plain(state.mountpoint or '?')} "
            f"({state.mode.value if state.mode else '?'}); host side "
            f"{shared.host_share_dir(ctx)}")
        return 0
    names = list(dict.fromkeys(args.names)) or registry.vm_names(ctx)
    for name in names:
        registry.load(ctx, name)  # an unknown name is bad input, not a share state
    states = run_async(_states(ctx, names))
    if args.json:
        out(json.dumps([{"name": n, "status": s.status.value,
                         "mode": s.mode.value if s.mode else None,
                         "mountpoint": s.mountpoint, "message": s.message}
                        for n, s in zip(names, states, strict=True)], indent=2))
        return 0
    out(f"host side: {ctx.layout.shared_folder}")
    for name, state in zip(names, states, strict=True):
        out(f"{name:<20} {_plain(state.describe())}")
    return 0


async def _states(ctx: Context, names: list[str]) -> list[shared.ShareState]:
    import asyncio

    async def one(name: str) -> shared.ShareState:
        try:
            return await shared.share_state(ctx, name)
        except HypercoreError as exc:
            return shared.ShareState(shared.ShareStatus.FAILED, None, message=str(exc))

    return list(await asyncio.gather(*(one(n) for n in names)))
