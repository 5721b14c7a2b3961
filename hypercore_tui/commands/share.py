"""``hypercore share status [NAME...] [--json]`` / ``hypercore share mount NAME``: the shared
folder in the guests (DESIGN §3)."""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any

from hypercore_tui.commands import PROG, Handler, out, plain, run_async, seconds
from hypercore_tui.core.errors import HypercoreError, OperationFailed
from hypercore_tui.services import registry, share_mounter, shared
from hypercore_tui.services.context import Context


def register(sub: Any) -> dict[str, Handler]:
    share = sub.add_parser("share", help="the shared folder in the guests")
    share_sub = share.add_subparsers(dest="share_command", metavar="ACTION", required=True)
    p = share_sub.add_parser("status", help="is the shared folder mounted in each guest")
    p.add_argument("names", nargs="*", metavar="NAME", help="default: every VM")
    p.add_argument("--json", action="store_true")
    p = share_sub.add_parser("mount", help="mount the shared folder at /shared in a guest")
    p.add_argument("name")
    p.add_argument("--wait", type=seconds, metavar="SECONDS",
                   help="wait up to SECONDS for the guest agent to answer, then mount (ends "
                        "early when QEMU exits; boot-vm starts this by itself)")
    return {"share": cmd_share}


def cmd_share(ctx: Context, args: argparse.Namespace) -> int:
    if args.share_command == "mount":
        if args.wait is not None:
            state = run_async(share_mounter.mount_when_agent_answers(ctx, args.name, args.wait))
        else:
            state = run_async(shared.ensure_share_mounted(ctx, args.name))
        if not state.mounted:
            raise OperationFailed(f"{args.name}: shared folder {state.describe()}")
        out(f"{args.name}: shared folder mounted at {plain(state.mountpoint or '?')} "
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
        out(f"{name:<20} {plain(state.describe())}")
    if any(s.status is shared.ShareStatus.NOT_MOUNTED for s in states):
        out(f"hint: `{PROG} share mount NAME` mounts it now. Hypercore mounts it after every "
            "boot and snapshot restore, and a running dashboard mounts it again when a guest "
            "reboots; a guest that rebooted itself while none ran stays without it until "
            f"`{PROG} share mount`, `{PROG} cp` or a dashboard")
    return 0


async def _states(ctx: Context, names: list[str]) -> list[shared.ShareState]:
    async def one(name: str) -> shared.ShareState:
        try:
            return await shared.share_state(ctx, name)
        except HypercoreError as exc:
            return shared.ShareState(shared.ShareStatus.FAILED, None, message=str(exc))

    return list(await asyncio.gather(*(one(n) for n in names)))
