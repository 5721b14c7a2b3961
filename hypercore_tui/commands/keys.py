"""``hypercore type NAME [--text TEXT] [--keymap us] [--yes]``: text typed into a running
VM as key presses (DESIGN §3), for guests without an agent: an installer, a BIOS, a
login prompt.

The text is ``--text``, else stdin when it is not a terminal, else the clipboard hub's
current entry (the running ``clip sync``), else the host clipboard. A text with a
character the keymap cannot type is refused before any key is sent (one line naming
them, exit 2); above :data:`~hypercore_tui.services.keys.CONFIRM_ABOVE` characters it is
typed once confirmed on the terminal, or with ``--yes``.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from hypercore_tui.adapters import hostclip
from hypercore_tui.commands import PROG, Handler, out, run_async
from hypercore_tui.commands.clipboard import given_text, host_clipboard_text
from hypercore_tui.core import keyboard
from hypercore_tui.core.errors import InvalidInput
from hypercore_tui.core.progress import Progress
from hypercore_tui.services import keys
from hypercore_tui.services.clipsync import control
from hypercore_tui.services.context import Context

#: For the confirmation's estimate of how long typing takes.
CHARACTERS_PER_SECOND = 400


def register(sub: Any) -> dict[str, Handler]:
    p = sub.add_parser(
        "type", help="type text into a running VM as key presses",
        description="Type text into a running VM as key presses (for guests without an "
        "agent: installers, a BIOS, a login prompt). Line breaks are typed as Enter, tabs "
        "as Tab. Characters the keymap cannot type are refused before any key is sent.",
        epilog=f"Keymaps: {', '.join(keyboard.layout_names())} (xkb's default variants; "
        f"dead keys typed as such). Default: ${keys.KEYMAP_VARIABLE}, else us.")
    p.add_argument("name")
    p.add_argument("--text", help="the text (else stdin when piped, else the clipboard "
                   "hub's current entry, else the host clipboard)")
    p.add_argument("--keymap", help="the guest's keyboard layout: "
                   f"{', '.join(keyboard.layout_names())}")
    p.add_argument("--yes", action="store_true",
                   help=f"type a text above {keys.CONFIRM_ABOVE} characters without asking")
    return {"type": cmd_type}


def _text_to_type(ctx: Context, args: argparse.Namespace) -> tuple[str, str]:
    """(text, where it came from)."""
    given = given_text(args)
    if given is not None:
        return given
    hub = run_async(_hub_text(ctx))
    if hub is not None:
        return hub
    boards = hostclip.host_clipboards(ctx.environ)
    found = host_clipboard_text(boards)
    if found is not None:
        return found
    where = (f"the host clipboard ({' and '.join(b.name for b in boards)}) is empty"
             if boards else "no clipboard sync runs and no host clipboard is reachable")
    raise InvalidInput(f"nothing to type: pass --text TEXT or pipe it on stdin ({where})")


async def _hub_text(ctx: Context) -> tuple[str, str] | None:
    """The running clipboard sync's current entry, when one runs and holds text."""
    status = await control.request(ctx, "status")
    if status is None:
        return None
    current = status.get("current")
    if not isinstance(current, dict):
        raise InvalidInput("nothing to type: the clipboard hub holds nothing yet (pass "
                           "--text TEXT or pipe it on stdin)")
    if current.get("kind") != "text":
        raise InvalidInput(f"nothing to type: the clipboard hub's current entry is "
                           f"{str(current.get('kind'))[:20]}, not text")
    reply = await control.request(ctx, "text", id=current.get("id"))
    text = (reply or {}).get("text")
    if not isinstance(text, str):
        raise InvalidInput("nothing to type: the clipboard hub's entry is gone")
    return text, f"clipboard entry {current.get('id')}"


def _confirmed(args: argparse.Namespace, count: int, origin: str) -> bool:
    if args.yes or count <= keys.CONFIRM_ABOVE:
        return True
    seconds = max(1, round(count / CHARACTERS_PER_SECOND))
    if not (sys.stdin.isatty() and sys.stderr.isatty()):
        raise InvalidInput(f"{count} characters to type (above {keys.CONFIRM_ABOVE}): pass "
                           "--yes to type them")
    sys.stderr.write(f"Type {count} characters from {origin} into {args.name} "
                     f"(about {seconds} s)? [y/N] ")
    sys.stderr.flush()
    answer = sys.stdin.readline().strip().lower()
    return answer in ("y", "yes")


def _progress_line() -> Progress | None:
    """``typing 1200/5000`` on a terminal's stderr, rewritten in place."""
    if not sys.stderr.isatty():
        return None

    def show(stage: str, done: float | None, total: float) -> None:
        sys.stderr.write(f"\r{stage} {int(done or 0)}/{int(total)}")
        if done is not None and done >= total:
            sys.stderr.write("\r\x1b[K")
        sys.stderr.flush()

    return show


def cmd_type(ctx: Context, args: argparse.Namespace) -> int:
    layout = keys.resolve_keymap(ctx, args.keymap)
    run_async(keys.check_target(ctx, args.name))
    text, origin = _text_to_type(ctx, args)
    if not text:
        raise InvalidInput(f"nothing to type: {origin} is empty")
    strokes = keyboard.text_strokes(text, layout)  # refuses what the keymap cannot type
    if not _confirmed(args, len(strokes), origin):
        sys.stderr.write(f"{PROG}: nothing typed\n")
        return 1
    typed = run_async(keys.type_text(ctx, args.name, text, keymap=layout.name,
                                     progress=_progress_line()))
    out(typed.describe())
    return 0
