"""``hypercore snapshot create|list|restore|delete`` and ``hypercore clone-vm``."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from hypercore_tui.commands import Handler, note_clock, out, run_async
from hypercore_tui.core.models import VmState
from hypercore_tui.core.progress import fraction
from hypercore_tui.core.sizes import format_bytes
from hypercore_tui.core.snapshots import SnapshotInfo
from hypercore_tui.services import clones, snapshots, vmstate
from hypercore_tui.services.context import Context


def register(sub: Any) -> dict[str, Handler]:
    p = sub.add_parser("snapshot", help="create, list, restore or delete VM snapshots")
    actions = p.add_subparsers(dest="snapshot_action", metavar="ACTION", required=True,
                               parser_class=type(p))
    a = actions.add_parser("create", help="snapshot a VM (RAM + disk when it is running)")
    a.add_argument("name", metavar="NAME")
    a.add_argument("tag", nargs="?", metavar="TAG", help="default: snap-YYYYmmdd-HHMMSS")
    a.add_argument("--disk-only", action="store_true",
                   help="running VM: snapshot the disk only (crash-consistent, no pause)")
    a.add_argument("--json", action="store_true", help="print the new snapshot as JSON")
    a = actions.add_parser("list", help="list a VM's snapshots")
    a.add_argument("name", metavar="NAME")
    a.add_argument("--json", action="store_true")
    for verb, text in (("restore", "bring a VM back to a snapshot"),
                       ("delete", "delete a snapshot")):
        a = actions.add_parser(verb, help=text)
        a.add_argument("name", metavar="NAME")
        a.add_argument("tag", metavar="TAG")
        a.add_argument("--json", action="store_true", help=argparse.SUPPRESS)

    p = sub.add_parser("clone-vm", help="clone a stopped VM (full copy or linked clone)")
    p.add_argument("source", metavar="SOURCE")
    p.add_argument("new", metavar="NEW")
    p.add_argument("--linked", action="store_true",
                   help="a qcow2 overlay on SOURCE's disk; SOURCE becomes a frozen base")
    return {"snapshot": cmd_snapshot, "clone-vm": cmd_clone}


# -- progress on a terminal only ------------------------------------------------------


class _Progress:
    """One rewritten status line on stderr when it is a terminal; nothing otherwise."""

    def __init__(self) -> None:
        self.enabled = sys.stderr.isatty()
        self.shown = False

    def line(self, text: str) -> None:
        if self.enabled:
            sys.stderr.write("\r\x1b[K" + text)
            sys.stderr.flush()
            self.shown = True

    def stage(self, stage: str, done: float | None, total: float) -> None:
        part = fraction(done, total)
        self.line(stage if part is None else f"{stage} {part * 100:3.0f}%")

    def copy(self, stage: str, done: float | None, total: float) -> None:
        part = fraction(done, total)
        self.line("copying disk" if part is None else f"copying disk {part * 100:5.1f}%")

    def done(self) -> None:
        if self.shown:
            sys.stderr.write("\r\x1b[K")
            sys.stderr.flush()
            self.shown = False


# -- snapshot -------------------------------------------------------------------------


def _row(snap: SnapshotInfo) -> str:
    date = snap.date.astimezone().strftime("%Y-%m-%d %H:%M:%S")
    clock = _clock(snap.vm_clock_seconds)
    ram = "yes" if snap.has_ram else "no"
    size = format_bytes(snap.vmstate_bytes) if snap.has_ram else "-"
    return f"{snap.tag:<32} {date:<19} {clock:>12} {size:>10} {ram}"


def _clock(seconds: float) -> str:
    whole = int(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}.{int((seconds - whole) * 1000):03d}"


def cmd_snapshot(ctx: Context, args: argparse.Namespace) -> int:
    action = args.snapshot_action
    name = args.name
    progress = _Progress()
    try:
        if action == "list":
            snaps = run_async(snapshots.list_snapshots(ctx, name))
            if args.json:
                out(json.dumps([s.to_json() for s in snaps], indent=2))
            elif not snaps:
                out(f"{name} has no snapshots")
            else:
                out(f"{'TAG':<32} {'DATE':<19} {'VM CLOCK':>12} {'VMSTATE':>10} RAM")
                for snap in snaps:
                    out(_row(snap))
            return 0
        if action == "create":
            stages: list[str] = []

            def on_stage(stage: str, done: float | None, total: float) -> None:
                stages.append(stage)
                progress.stage(stage, done, total)

            snap = run_async(snapshots.create_snapshot(ctx, name, args.tag,
                                                       disk_only=args.disk_only,
                                                       progress=on_stage))
            progress.done()
            if args.json:
                out(json.dumps(snap.to_json(), indent=2))
            else:
                what = (f"RAM + disk, vmstate {format_bytes(snap.vmstate_bytes)}"
                        if snap.has_ram else "disk only")
                for said in ("guest was paused", "guest clock set"):
                    stage = [s for s in stages if s.startswith(said)]
                    if stage:
                        what += "; " + stage[-1]
                out(f"created snapshot {snap.tag} of {name} ({what})")
            return 0
        if action == "restore":
            before, _ = vmstate.process_state(ctx.vm_paths(name))
            clock = run_async(snapshots.restore_snapshot(ctx, name, args.tag,
                                                         progress=progress.stage))
            progress.done()
            if before is not VmState.RUNNING:
                after, pid = vmstate.process_state(ctx.vm_paths(name))
                if after is VmState.RUNNING:
                    out(f"restored {name} to snapshot {args.tag}: booted into the saved state "
                        f"(pid {pid})")
                else:
                    out(f"restored {name}'s disk to snapshot {args.tag}")
            else:
                out(f"restored {name} to snapshot {args.tag} (RAM + disk)")
            note_clock(clock)
            return 0
        run_async(snapshots.delete_snapshot(ctx, name, args.tag, progress=progress.stage))
        progress.done()
        out(f"deleted snapshot {args.tag} of {name}")
        return 0
    finally:
        progress.done()


# -- clone ----------------------------------------------------------------------------


def cmd_clone(ctx: Context, args: argparse.Namespace) -> int:
    progress = _Progress()
    try:
        spec = run_async(clones.clone_vm(ctx, args.source, args.new, linked=args.linked,
                                         progress=None if args.linked else progress.copy))
    finally:
        progress.done()
    if args.linked:
        out(f"cloned {args.source} to {spec.name} (linked clone, disk {spec.disk.describe()}); "
            f"{args.source} is now its base: it cannot be booted or deleted while linked "
            "clones exist")
    else:
        out(f"cloned {args.source} to {spec.name} (full copy, disk {spec.disk.describe()})")
    return 0
