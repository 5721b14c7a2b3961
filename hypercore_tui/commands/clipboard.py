"""``hypercore clip``: the clipboard hub from the command line (DESIGN §3).

``hypercore clip push (NAME...|--all) [--text TEXT]``  (else stdin, else the host clipboard;
``--text ''`` empties the guests' clipboards)
``hypercore clip push --files PATH...``                 host files and folders offered on every
VM's clipboard by the running ``clip sync`` (one entry; one line when no sync runs)
``hypercore clip pull NAME [--to-host] [--raw]``         prints the guest clipboard (an empty
one: nothing on stdout, a note on stderr, exit 0)
``hypercore clip sync [NAME...|--all] [--no-host] [--link HOST...|--link-all]``, ``clip
status [--json]``: the sync (``commands/clipsync.py``); ``clip link`` is the far end of a
``--link``, run over SSH (internal, not listed)

A VM whose clipboard mode (``hypercore set NAME clipboard=...``) is ``off`` is never read
nor written (``push --all`` skips it with a note); ``push-only`` is written, never read.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from hypercore_tui.adapters import hostclip
from hypercore_tui.commands import Handler, out, plain, run_async
from hypercore_tui.commands import clipsync as clipsync_cli
from hypercore_tui.core.errors import InvalidInput, OperationFailed
from hypercore_tui.core.text import printable
from hypercore_tui.services import clipboard, registry
from hypercore_tui.services.clipsync import control
from hypercore_tui.services.context import Context


def register(sub: Any) -> dict[str, Handler]:
    clip = sub.add_parser(
        "clip", help="the shared clipboard: push, pull, keep it in sync across guests and the host")
    clip_sub = clip.add_subparsers(dest="clip_command", metavar="ACTION", required=True)
    p = clip_sub.add_parser("push", help="put text on guests' clipboards (--files: host files)")
    p.add_argument("names", nargs="*", metavar="NAME",
                   help="the VMs to push to (with --files: the host files and folders)")
    p.add_argument("--all", action="store_true", help="every running VM")
    p.add_argument("--text", help="the text (else stdin, else the host clipboard); "
                   "--text '' empties the guests' clipboards")
    p.add_argument("--files", action="store_true",
                   help="the arguments are host files and folders: copied into the shared "
                   "folder as one clipboard entry that the running clip sync offers on every "
                   "VM's clipboard (-- before a name that starts with -)")
    p = clip_sub.add_parser("pull", help="print a guest's clipboard")
    p.add_argument("name")
    p.add_argument("--to-host", action="store_true",
                   help="also put it on the host clipboard (local display or tmux buffer)")
    p.add_argument("--raw", action="store_true",
                   help="write the exact bytes even to a terminal (escape sequences included)")
    p = clip_sub.add_parser(
        "sync", help="keep one clipboard across the host and the guests (foreground)",
        description="Keep every named VM's clipboard (default: every VM, also ones created "
        "later) and the host's (tmux paste buffer, local display) equal to the newest copy "
        "made in any of them. Runs until Ctrl+C; one sync per HYPERCORE_HOME (a second "
        "one, or a dashboard, uses the running one).")
    p.add_argument("names", nargs="*", metavar="NAME", help="the VMs to sync")
    p.add_argument("--all", action="store_true", help="every VM (the default)")
    p.add_argument("--no-host", dest="host", action="store_false",
                   help="leave the host's own clipboards out (by default the tmux paste "
                   "buffer when run inside tmux, and a local X11/Wayland display's "
                   "clipboard, are synced too)")
    p.add_argument("--link", action="append", default=[], metavar="HOST",
                   help="also keep the clipboards of this configured host (`hypercore "
                   "hosts`) in sync, over SSH; repeatable")
    p.add_argument("--link-all", action="store_true",
                   help="link every configured host (see --link)")
    p = clip_sub.add_parser("status", help="who syncs which VMs, and the last change")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p = clip_sub.add_parser(  # (no help=: internal, run over SSH by `clip sync --link`)
        "link", description="Internal: this host's end of another host's `clip sync "
        "--link`; the clipboard link's stream on stdin and stdout.")
    p.add_argument("--from", dest="peer", default="peer", metavar="NAME")
    return {"clip": cmd_clip}


def given_text(args: argparse.Namespace) -> tuple[str, str] | None:
    """(text, where it came from): ``--text``, else what is piped on stdin; None when
    neither gives one. Only ``--text ''`` is an empty text: an empty pipe means "no text
    here", as no pipe does. (``clip push`` and ``type``.)"""
    if args.text is not None:
        return args.text, "--text"
    if not sys.stdin.isatty():
        data = sys.stdin.buffer.read()
        if data:
            try:
                return data.decode("utf-8"), "stdin"
            except UnicodeDecodeError:
                raise InvalidInput("the text on stdin is not valid UTF-8") from None
    return None


def host_clipboard_text(boards: list[hostclip.HostClipboard]) -> tuple[str, str] | None:
    """(text, where it came from): the first of the host's clipboards holding text."""
    for board in boards:
        text = board.read()
        if text:
            return text, f"the {board.name} clipboard"
    return None


def _text_to_push(ctx: Context, args: argparse.Namespace) -> tuple[str, str]:
    """(text, where it came from): --text, else piped stdin, else the host clipboard
    (``--text ''`` empties the guests' clipboards)."""
    given = given_text(args)
    if given is not None:
        return given
    boards = hostclip.host_clipboards(ctx.environ)
    if not boards:
        raise InvalidInput("nothing to push: pass --text TEXT or pipe the text on stdin "
                           "(no local display or tmux session holds a host clipboard)")
    found = host_clipboard_text(boards)
    if found is not None:
        return found
    names = " and ".join(b.name for b in boards)
    raise InvalidInput(f"nothing to push: the host clipboard ({names}) is empty")


def cmd_clip(ctx: Context, args: argparse.Namespace) -> int:
    if args.clip_command in ("sync", "status", "link"):
        return clipsync_cli.cmd(ctx, args)
    if args.clip_command == "pull":
        detail = run_async(clipboard.pull_detail(ctx, args.name))
        text = detail.text or ""
        if detail.note:
            sys.stderr.write(f"hypercore: note: {plain(detail.note)}\n")
        if detail.empty or not text:  # stdout stays empty: say why, where scripts won't read
            sys.stderr.write(f"hypercore: note: {args.name}: the clipboard is empty\n")
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

    if args.files:
        return _push_files(ctx, args)
    if args.all and args.names:
        raise InvalidInput("give VM names or --all, not both")
    if args.all:
        names, skipped = clipboard.push_targets(ctx)
        for name in skipped:
            sys.stderr.write(f"hypercore: note: skipped {name} (clipboard off)\n")
        if not names:
            raise OperationFailed("no running VM takes the clipboard (each one's is off)"
                                  if skipped else "no VM is running")
    elif args.names:
        names = list(dict.fromkeys(args.names))
        for name in names:  # (a VM named whose clipboard is off: nothing is pushed)
            clipboard.check_writable(registry.load(ctx, name))
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
                sys.stderr.write(f"hypercore: note: {r.name}: {plain(r.note)}\n")
        else:
            sys.stderr.write(f"hypercore: error: {plain(r.error or '')}\n")
    return 0 if all(r.ok for r in results) else 1


def _push_files(ctx: Context, args: argparse.Namespace) -> int:
    """``clip push --files PATH...``: through the running sync (control.offer_files)."""
    if args.all or args.text is not None:
        raise InvalidInput("--files takes host files and folders only (no --all, no --text): "
                           "the running clipboard sync offers them to every VM")
    if not args.names:
        raise InvalidInput("name the host files and folders: clip push --files PATH...")
    item = run_async(control.offer_files(ctx, args.names))
    out(f"clipboard entry {item.get('id')}: {item.get('preview')}; offered on every VM's "
        "clipboard by the clipboard sync")
    return 0


def _terminal_safe(text: str) -> str:
    """``text`` with every control and bidi character escaped, line breaks kept."""
    return "\n".join(printable(line, limit=None) for line in text.split("\n"))
