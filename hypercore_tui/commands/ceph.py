"""``hypercore ceph status``: the Ceph cluster Hypercore uses.

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
    p = sub.add_parser("ceph", help="the Ceph cluster Hypercore uses")
    actions = p.add_subparsers(dest="ceph_action", metavar="ACTION", required=True,
                               parser_class=type(p))
    a = actions.add_parser("status", help="health, monitors, OSDs and capacity")
    a.add_argument("--json", action="store_true")
    a.add_argument("--conf", metavar="PATH", help="ceph.conf of the cluster (default: the "
                   "configured one)")
    return {"ceph": cmd_ceph}


def cmd_ceph(ctx: Context, args: argparse.Namespace) -> int:
    report = run_async(storage.storage_report(ctx, args.conf))
    if args.json:
        out(json.dumps(report.to_json(), indent=2))
        return 0
    st = report.status
    out(f"cluster   {report.conf}" + (f" (fsid {st.fsid})" if st.fsid else ""))
    out(f"health    {st.health}")
    for check in st.checks:
        out(f"          {check}")
    out(f"monitors  {st.mons} ({st.quorum} in quorum)")
    out(f"osds      {st.osds_up} up, {st.osds_in} in, {st.osds} total")
    if st.bytes_total:
        out(f"capacity  {format_bytes(st.bytes_used)} used of {format_bytes(st.bytes_total)}")
    else:
        out("capacity  unknown (no ceph-mgr running)")
    for pool in report.pools:
        out(f"pool      {pool.name}: {len(pool.images)} image(s), "
            f"{format_bytes(pool.provisioned)} provisioned, {format_bytes(pool.used)} used")
    return 0
