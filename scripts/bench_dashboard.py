"""The ``dashboard`` section of scripts/bench.py: what watching N VMs costs.

For each N (``--vms``, default 1,10,50) in a throwaway HYPERCORE_HOME:

* N lightweight VMs: 32 MB RAM, 1 vCPU, a 1 MiB qcow2 disk, no network, no shared
  folder, no kernel: SeaBIOS finds nothing to boot and the vCPU idles (QEMU ~0.8 %
  CPU, ~37 MB RSS each under TCG). They are *running* (not ``-S``), so the monitor
  does every query it does for a real guest (blockstats, balloon stats, process).
  ``--paused`` starts them with ``-S`` instead.
* refresh: the monitor (in this process) polls all N VMs once, concurrently; wall
  time and CPU time of one full refresh, median and p95 of ``--rounds`` x 10.
* dashboard: the real ``hypercore`` dashboard in a private tmux session (120x36)
  for ``--seconds`` (30) after a 30 s warm-up: its own CPU (% of one core) and RSS,
  with the default schedule (selected VM every 1 s, the others every 2 s, stretched
  to at most 10 polls a second: 5 s with 50 VMs) and with every VM at 1 s
  (``--background-interval 1 --poll-budget 0``).
* first frame: time from starting ``hypercore`` to the first painted frame (the
  host line and the VM list's header visible in ``tmux capture-pane``), median of 5.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from hypercore_tui.services import boot, create  # noqa: E402
from hypercore_tui.services.context import Context  # noqa: E402
from hypercore_tui.services.monitor import Monitor  # noqa: E402

HomeFactory = Callable[..., AbstractContextManager[Any]]
#: Start-up, first attach of every VM, and the first few probes of their (absent) guest
#: agents, which back off to once a minute: the figures are the steady state.
WARM_UP = 30.0


def log(text: str) -> None:
    sys.stderr.write(f"bench: {text}\n")
    sys.stderr.flush()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("dashboard (scripts/bench_dashboard.py)")
    group.add_argument("--vms", default="1,10,50", help="VM counts, comma separated")
    group.add_argument("--seconds", type=float, default=30.0,
                       help="how long the dashboard's CPU use is measured")
    group.add_argument("--paused", action="store_true",
                       help="start the VMs paused (-S) instead of idling in SeaBIOS")


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


# -- VMs ----------------------------------------------------------------------------------


async def make_vms(ctx: Context, count: int, paused: bool) -> None:
    extra = ("-S",) if paused else ()
    gate = asyncio.Semaphore(4)

    async def one(index: int) -> None:
        name = f"b{index:02d}"
        await asyncio.to_thread(create.create_vm, ctx, create.CreateRequest(
            name=name, ram_mb=32, cpus=1, disk_size="1M", net="none", shared=False,
            extra_args=extra))
        async with gate:
            await boot.boot_vm(ctx, name)

    await asyncio.gather(*(one(i) for i in range(count)))


async def measure_refresh(ctx: Context, rounds: int) -> dict[str, float]:
    monitor = Monitor(ctx, lambda _notice: None)
    await monitor.rescan()
    await monitor.refresh_all()  # attaches: QMP sessions, vCPU threads, first reading
    await asyncio.sleep(0.6)
    walls: list[float] = []
    cpus: list[float] = []
    try:
        for _ in range(rounds * 10):
            cpu = time.process_time()
            walls.append(await monitor.refresh_all())
            cpus.append(time.process_time() - cpu)
            await asyncio.sleep(0.55)  # past the monitor's minimum gap between samples
    finally:
        await monitor.close()
    return {
        "wall_ms_median": round(statistics.median(walls) * 1000, 1),
        "wall_ms_p95": round(percentile(walls, 0.95) * 1000, 1),
        "cpu_ms_median": round(statistics.median(cpus) * 1000, 1),
    }


# -- the real dashboard in tmux -------------------------------------------------------------


class Dashboard:
    def __init__(self, environ: dict[str, str], *extra: str) -> None:
        self.socket = f"hc-bench-{uuid.uuid4().hex[:8]}"
        self.environ = environ
        self.extra = extra

    def tmux(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["tmux", "-L", self.socket, "-f", "/dev/null", *args],
                              capture_output=True, text=True, timeout=10, check=False)

    def __enter__(self) -> Dashboard:
        variables = [f"{k}={v}" for k, v in self.environ.items()
                     if k.startswith("HYPERCORE_") or k in ("PATH", "HOME", "LANG")]
        proc = self.tmux("new-session", "-d", "-s", "dash", "-x", "120", "-y", "36", "env",
                         "-u", "COLUMNS", "-u", "LINES", *variables, sys.executable, "-m",
                         "hypercore_tui", *self.extra)
        if proc.returncode != 0:
            raise RuntimeError(f"tmux: {proc.stderr.strip()}")
        self.started = time.monotonic()
        return self

    def pid(self) -> int:
        return int(self.tmux("display", "-p", "-t", "dash", "#{pane_pid}").stdout.strip())

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p", "-t", "dash").stdout

    def __exit__(self, *exc: object) -> None:
        self.tmux("kill-server")


def first_frame(environ: dict[str, str]) -> float:
    with Dashboard(environ) as dash:
        while time.monotonic() - dash.started < 30:
            screen = dash.screen()
            if "hypercore" in screen and "State" in screen:
                return time.monotonic() - dash.started
            time.sleep(0.005)
    raise RuntimeError("the dashboard painted nothing within 30 s")


def dashboard_cost(environ: dict[str, str], seconds: float, *extra: str) -> dict[str, float]:
    with Dashboard(environ, *extra) as dash:
        time.sleep(WARM_UP)
        proc = psutil.Process(dash.pid())
        before = proc.cpu_times()
        started = time.monotonic()
        time.sleep(seconds)
        after = proc.cpu_times()
        elapsed = time.monotonic() - started
        rss = proc.memory_info().rss
        running = sum(1 for line in dash.screen().splitlines() if "running" in line
                      or "paused" in line)
    used = (after.user + after.system) - (before.user + before.system)
    return {"cpu_percent": round(used / elapsed * 100, 2), "rss_mib": round(rss / 2**20, 1),
            "vm_rows_seen": running}


# -- the section ------------------------------------------------------------------------------


def bench_dashboard(args: argparse.Namespace, private_home: HomeFactory) -> dict[str, Any]:
    counts = [int(n) for n in str(args.vms).split(",") if n.strip()]
    results: dict[str, Any] = {
        "vms": "32 MB, 1 vCPU, 1 MiB qcow2, no net/share/kernel, "
               + ("paused (-S)" if args.paused else "running (SeaBIOS idle)") + ", TCG",
    }
    for count in counts:
        with private_home() as home:
            ctx = Context.from_environ(home.environ)
            log(f"{count} VM(s): creating and booting")
            asyncio.run(make_vms(ctx, count, args.paused))
            row: dict[str, Any] = {}
            row["refresh"] = asyncio.run(measure_refresh(ctx, args.rounds))
            log(f"{count} VM(s): refresh {row['refresh']}")
            row["default_schedule"] = dashboard_cost(home.environ, args.seconds)
            log(f"{count} VM(s): dashboard, default schedule {row['default_schedule']}")
            row["all_at_1s"] = dashboard_cost(home.environ, args.seconds, "tui",
                                              "--background-interval", "1",
                                              "--poll-budget", "0")
            log(f"{count} VM(s): dashboard, all VMs at 1 s {row['all_at_1s']}")
            if count == counts[0]:
                frames = [first_frame(home.environ) for _ in range(5)]
                results["first_frame_ms_median"] = round(statistics.median(frames) * 1000)
                results["first_frame_ms_max"] = round(max(frames) * 1000)
            results[str(count)] = row
    if not args.json:
        print(f"dashboard: {results['vms']}")
        print(f"  {'VMs':>4} {'refresh ms (p50/p95)':>21} {'cpu ms':>7} "
              f"{'dash CPU% default':>18} {'dash CPU% all@1s':>17} {'RSS MiB':>8}")
        for count in counts:
            r = results[str(count)]
            print(f"  {count:>4} {r['refresh']['wall_ms_median']:>12}/"
                  f"{r['refresh']['wall_ms_p95']:<8} {r['refresh']['cpu_ms_median']:>7} "
                  f"{r['default_schedule']['cpu_percent']:>18} "
                  f"{r['all_at_1s']['cpu_percent']:>17} {r['all_at_1s']['rss_mib']:>8}")
        print(f"  first painted frame: {results['first_frame_ms_median']} ms median "
              f"(max {results['first_frame_ms_max']} ms)")
    return results
