"""The ``migrate`` section of scripts/bench.py: live migration's downtime and total time.

Two hosts on this machine as the tests make them (``tests/integration/sshhosts.py``,
bridged: network namespaces a and b, each with its own sshd, home and runtime dir) and a
throwaway single-node Ceph cluster on the bridge. For each guest size (``--mig-sizes``,
MiB of RAM, default 256,1024) one TCG test guest with an RBD disk is booted on a, then
for each workload:

* ``idle``: the guest as booted (its RAM mostly untouched: zero pages);
* ``dirty``: a loop in the guest rewrites 32 MiB of its RAM (a file on its initramfs)
  from /dev/urandom without pause;

and for each transport, ``ssh`` (the default: a forwarded unix socket through the hosts'
SSH connection) and ``tcp`` (``--via tcp:ADDR:PORT`` on the bridge, the "migration
network"), the guest goes a→b and back b→a ``--mig-rounds`` times (default 1: two
migrations). Each migration's ``--json`` result gives the measured downtime (the source's
STOP to the target's ``cont`` answered), QEMU's own downtime figure, the total time and
the bytes sent. Median and max per combination are reported.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.conftest import GuestImage  # noqa: E402
from tests.integration.conftest import (  # noqa: E402
    POOL,
    free_port,
    start_cluster,
    stop_cluster,
    unique,
)
from tests.integration.sshhosts import BRIDGE_ADDRESS, SshHost, ssh_hosts  # noqa: E402

VM = "bm1"
#: In the guest: 32 MiB of its RAM (the initramfs is RAM) rewritten without pause.
DIRTY_LOOP = ("dd if=/dev/zero of=/dirty bs=1M count=32 2>/dev/null; while :; do "
              "dd if=/dev/urandom of=/dirty bs=1M count=32 conv=notrunc 2>/dev/null; done")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("migrate (scripts/bench_migrate.py)")
    group.add_argument("--mig-sizes", default="256,1024", help="guest RAM sizes, MiB")
    group.add_argument("--mig-rounds", type=int, default=1,
                       help="a->b->a round trips per size, workload and transport")


def log(text: str) -> None:
    sys.stderr.write(f"bench: {text}\n")
    sys.stderr.flush()


def _guest(on: SshHost, a: SshHost, *argv: str) -> str:
    where = [] if on is a else ["--host", on.name]
    proc = a.run(*where, "exec", VM, "--", *argv, timeout=60)
    if proc.returncode != 0:
        raise RuntimeError(f"exec in the guest: {proc.stderr.decode().strip()}")
    return proc.stdout.decode()


def _migrate(source: SshHost, target: SshHost, via: list[str]) -> dict[str, Any]:
    proc = source.run("migrate", VM, target.name, "--json", *via, timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"migrate {source.name}->{target.name}: "
                           f"{proc.stderr.decode().strip()}")
    result: dict[str, Any] = json.loads(proc.stdout.splitlines()[-1])
    return result


def bench_migrate(args: argparse.Namespace, guest: GuestImage,
                  load: Any) -> dict[str, Any]:
    sizes = [int(s) for s in str(args.mig_sizes).split(",") if s.strip()]
    ceph_dir = Path(tempfile.mkdtemp(prefix="hc-ceph-bench-mig-", dir="/tmp"))
    conf = str(ceph_dir / "ceph.conf")
    figures: dict[str, Any] = {"load_before": load()}
    rows: list[tuple[str, str, str, dict[str, Any]]] = []
    try:
        with ssh_hosts(bridged=True, extra_env={"HYPERCORE_CEPH_CONF": conf}) as hosts:
            start_cluster(ceph_dir, free_port(), address=BRIDGE_ADDRESS)
            a, b = hosts.a, hosts.b
            a.run("hosts", "add", "b", b.destination)
            b.run("hosts", "add", "a", a.destination)
            for size in sizes:
                image = unique("bmig")
                created = a.run("create-vm", VM, str(size), "1", f"rbd:{POOL}/{image}",
                                "--disk-size", "32M", "--kernel", str(guest.kernel),
                                "--initrd", str(guest.initrd), f"--append={guest.append}")
                if created.returncode != 0:
                    raise RuntimeError(created.stderr.decode())
                booted = a.run("boot-vm", VM, "--wait-agent", "120", timeout=240)
                if booted.returncode != 0:
                    raise RuntimeError(booted.stderr.decode())
                here = a
                for workload in ("idle", "dirty"):
                    if workload == "dirty":
                        _guest(here, a, "sh", "-c", f"({DIRTY_LOOP}) </dev/null "
                                                    ">/dev/null 2>&1 &")
                        time.sleep(2)
                    for transport in ("ssh", "tcp"):
                        results = []
                        for _ in range(args.mig_rounds * 2):
                            there = b if here is a else a
                            via = ["--via", f"tcp:{there.address}:{free_port()}"] \
                                if transport == "tcp" else []
                            result = _migrate(here, there, via)
                            results.append(result)
                            log(f"{size} MiB {workload} {transport} {here.name}->{there.name}: "
                                f"downtime {result['downtime_ms']} ms, total "
                                f"{result['total_s']} s, {result['transferred_bytes'] >> 20} MiB")
                            here = there
                            time.sleep(1)
                        rows.append((f"{size} MiB", workload, transport, {
                            "downtime_ms_median": round(statistics.median(
                                r["downtime_ms"] for r in results), 1),
                            "downtime_ms_max": round(max(r["downtime_ms"] for r in results), 1),
                            "qemu_downtime_ms_median": statistics.median(
                                r["qemu_downtime_ms"] for r in results),
                            "total_s_median": round(statistics.median(
                                r["total_s"] for r in results), 2),
                            "sent_mib_median": round(statistics.median(
                                r["transferred_bytes"] for r in results) / 2**20, 1),
                            "n": len(results)}))
                here.run("stop-vm", VM, "--force", timeout=60)
                here.run("delete-vm", VM, "--yes", "--remove-image", timeout=60)
    finally:
        stop_cluster(ceph_dir)
        shutil.rmtree(ceph_dir, ignore_errors=True)
    figures["load_after"] = load()
    print(f"\nlive migration, TCG test guest with an RBD disk, a<->b (load average "
          f"{figures['load_before']} -> {figures['load_after']})")
    print(f"{'guest':>9} {'workload':>8} {'via':>4}  {'downtime p50/max':>18}  "
          f"{'QEMU p50':>8}  {'total p50':>9}  {'sent p50':>9}")
    for size, workload, transport, row in rows:
        print(f"{size:>9} {workload:>8} {transport:>4}  "
              f"{row['downtime_ms_median']:>8} / {row['downtime_ms_max']:>6} ms  "
              f"{row['qemu_downtime_ms_median']:>5} ms  {row['total_s_median']:>7} s  "
              f"{row['sent_mib_median']:>5} MiB")
        figures[f"{size} {workload} {transport}"] = row
    return figures
