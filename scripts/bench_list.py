"""The ``list`` section of scripts/bench.py: how long ``hypercore list --json`` takes.

In a throwaway HYPERCORE_HOME: ``--list-vms`` VMs (10 by default), one of them the real
test guest booted until its agent answers, the others 64 MB, 1 vCPU, a 1 MiB qcow2 disk,
no network, no shared folder and no kernel (SeaBIOS idles: no guest agent will ever
answer), all running under TCG. Then ``hypercore list --json`` (the real CLI, a new
process each time) ``--rounds`` x 5 times: wall time median and max, and the rows'
``agent`` values (the test guest must say true, the others false).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from hypercore_tui.services import boot, create  # noqa: E402
from hypercore_tui.services.context import Context  # noqa: E402

HomeFactory = Callable[..., AbstractContextManager[Any]]


def log(text: str) -> None:
    sys.stderr.write(f"bench: {text}\n")
    sys.stderr.flush()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("list (scripts/bench_list.py)")
    group.add_argument("--list-vms", type=int, default=10,
                       help="VMs for `list`: one test guest with its agent, the rest none")


async def make_silent_vms(ctx: Context, names: list[str]) -> None:
    gate = asyncio.Semaphore(4)

    async def one(name: str) -> None:
        await asyncio.to_thread(create.create_vm, ctx, create.CreateRequest(
            name=name, ram_mb=64, cpus=1, disk_size="1M", net="none", shared=False))
        async with gate:
            await boot.boot_vm(ctx, name)

    await asyncio.gather(*(one(n) for n in names))


def time_list(environ: dict[str, str], python: str, rounds: int) -> tuple[list[float], Any]:
    walls: list[float] = []
    rows: Any = None
    for _ in range(rounds):
        started = time.monotonic()
        proc = subprocess.run([python, "-m", "hypercore_tui", "list", "--json"], env=environ,
                              capture_output=True, text=True, timeout=120, check=True)
        walls.append(time.monotonic() - started)
        rows = json.loads(proc.stdout)
    return walls, rows


def bench_list(args: argparse.Namespace, private_home: HomeFactory, guest_args: list[str],
               python: str, load: Callable[[], str]) -> dict[str, Any]:
    count = max(1, int(args.list_vms))
    with private_home() as home:
        ctx = Context.from_environ(home.environ)
        log(f"list: booting the test guest and {count - 1} VM(s) with no agent")
        home.run("create-vm", "agent0", "128", "1", "--disk-size", "16M", "--no-shared",
                 *guest_args)
        home.run("boot-vm", "agent0", "--wait-agent", "120", timeout=300)
        asyncio.run(make_silent_vms(ctx, [f"mute{i:02d}" for i in range(1, count)]))
        time.sleep(2)  # past boot: SeaBIOS idle
        before = load()
        walls, rows = time_list(home.environ, python, max(1, args.rounds) * 5)
        agents = {r["name"]: r["agent"] for r in rows}
    results = {
        "vms": f"{count} running (1 test guest with qemu-ga, {count - 1} SeaBIOS idle), TCG",
        "wall_ms_median": round(statistics.median(walls) * 1000),
        "wall_ms_max": round(max(walls) * 1000),
        "agents_true": sorted(n for n, a in agents.items() if a),
        "load": before,
    }
    if not args.json:
        print(f"list --json: {results['vms']}")
        print(f"  wall {results['wall_ms_median']} ms median (max {results['wall_ms_max']} ms)"
              f" over {len(walls)} runs; agent true: {', '.join(results['agents_true'])}; "
              f"load {before}")
    return results
