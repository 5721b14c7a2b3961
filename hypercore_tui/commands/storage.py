"""``hypercore storage list``: the Ceph cluster's RBD images and the VMs that use them.

It reads the cluster named by ``--conf``, else the configured one (HYPERCORE_CEPH_CONF,
else ``$HYPERCORE_HOME/ceph/ceph.conf``), and fails within seconds with one line when
it does not answer.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from hypercore_tui.commands import Handler, out, run_async
from hypercore_tui.core.sizes import format_bytes
from hypercore_tui.services import storage
from hypercore_tui.services.context import Context


def register(sub: Any) -> dict[str, Handler]:
    p = sub.add_parser("storage", help="Ceph RBD images and the VMs that use them")
    actions = p.add_subparsers(dest="storage_action", metavar="ACTION", required=True,
                               parser_class=type(p))
    a = actions.add_parser("list", help="list the cluster's RBD images")
    a.add_argument("--json", action="store_true", help="a JSON array, one object per image")
    a.add_argument("--conf", metavar="PATH", help="ceph.conf of the cluster (default: the "
                   "configured one)")
    return {"storage": cmd_storage}


def _vms(row: storage.ImageRow) -> str:
    if not row.vms:
        return "-"
    return ", ".join(f"{vm.name} ({vm.state.value})" for vm in row.vms)


def cmd_storage(ctx: Context, args: argparse.Namespace) -> int:
    report = run_async(storage.storage_report(ctx, args.conf))
    if args.json:
        out(json.dumps([row.to_json() for row in report.images], indent=2))
        return 0
    rows = report.images
    if not rows:
        out(f"no RBD images in the cluster at {report.conf}")
    else:
        width = max(24, *(len(r.spec) for r in rows)) + 1
        out(f"{'IMAGE':<{width}} {'SIZE':>10} {'USED':>10} {'SNAPS':>5} {'OPEN':>4}  VM")
        for r in rows:
            out(f"{r.spec:<{width}} {format_bytes(r.size):>10} {format_bytes(r.used):>10} "
                f"{len(r.snapshots):>5} {r.clients:>4}  {_vms(r)}")
    for vm, image in report.missing:
        out(f"missing: {image}, the disk of VM {vm}, is not in the cluster")
    return 0
