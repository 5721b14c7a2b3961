"""The ``keys`` section of scripts/bench.py: key -> screen updated, with N VMs listed.

The real dashboard app (``HypercoreApp``, 120x36, headless: everything but the final
write to a terminal) over the in-memory service layer of the UI tests
(tests/ui/fakes.py), holding N running VMs, each with a full 300-sample history: this is
the UI's own cost per key, with no monitor sampling meanwhile (what sampling costs is
the ``dashboard`` section's refresh figure, and what it adds to the event loop comes on
top of these figures).

A key is posted to the app as the terminal driver posts it; its latency runs from there
to the end of the last paint it caused (``App.post_display_hook``) within 0.4 s, with
the app's default (no) animations; the process's CPU time over that window is given
beside it. Kinds: the selection (down, up), a tab switch (2, 3, 1), a dialog (help:
``?``, then Esc), a filter keystroke (``/``, ``v``, Backspace, Esc) and the palette
(Ctrl+P, Esc). p50/p95 of both over ``--rounds`` x 4 passes of each, for each N of
``--key-vms`` (10,50,200), the widgets on the screen, and whether every kind meets the
issue's target at 50 VMs: wall p95 <= 50 ms.

The garbage collector (``--key-gc``): ``entry`` (the default) as the ``hypercore``
command runs the dashboard (hypercore_tui.start): held while the app starts, then one
collection and ``gc.freeze()`` after its first frame; the VMs' histories are made again
after that, as a session's samples are made after its start (not frozen: the full
collections walk them). ``plain``: the collector as Python leaves it (everything,
Textual's start-up included, in the collections), as this bench ran before.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from textual import events  # noqa: E402

from hypercore_tui import start  # noqa: E402
from hypercore_tui.core.models import VmState  # noqa: E402
from hypercore_tui.services.monitor import AgentStatus, VmView  # noqa: E402
from hypercore_tui.ui.app import HypercoreApp  # noqa: E402
from tests.ui.fakes import FakeBackend, _history  # noqa: E402

SIZE = (120, 36)
SEQUENCE = [("down", "selection"), ("up", "selection"), ("2", "tab"), ("3", "tab"),
            ("1", "tab"), ("question_mark", "dialog"), ("escape", "dialog"),
            ("slash", "filter"), ("v", "filter"), ("backspace", "filter"),
            ("escape", "filter"), ("ctrl+p", "palette"), ("escape", "palette")]
CHARACTERS = {"question_mark": "?", "slash": "/", "v": "v", "1": "1", "2": "2", "3": "3"}
WINDOW = 0.4
#: The target (issue 16): key -> screen updated, p95, at TARGET_VMS VMs.
TARGET_MS = 50.0
TARGET_VMS = 50


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("keys (scripts/bench_keys.py)")
    group.add_argument("--key-vms", default="10,50,200", help="VM counts, comma separated")
    group.add_argument("--key-gc", choices=("entry", "plain"), default="entry",
                       help="the collector as `hypercore` runs the dashboard (held during "
                            "start-up, then start-up frozen), or as Python leaves it")


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


def views(count: int) -> dict[str, VmView]:
    made: dict[str, VmView] = {}
    for index in range(count):
        name = f"vm{index:03d}"
        made[name] = VmView(name=name, state=VmState.RUNNING, pid=10_000 + index,
                            ram_mb=512, cpus=1, disk=f"/srv/vms/{name}/disk.qcow2",
                            agent=AgentStatus.SILENT)
    sample(made)
    return made


def sample(made: dict[str, VmView]) -> None:
    """Each VM's full 300-sample history and last sample, made now."""
    for index, view in enumerate(made.values()):
        view.history, view.sample = _history(index, cpu_scale=30.0, mem=512 * 2**19,
                                             disk=2**20)


class TimedApp(HypercoreApp):
    def __init__(self, backend: FakeBackend) -> None:
        super().__init__(backend, environ={"USER": "bench", "PATH": "/usr/bin"})
        self.paints: list[float] = []

    def post_display_hook(self) -> None:
        self.paints.append(time.perf_counter())


async def measure(count: int, passes: int, collector: str = "entry") -> dict[str, Any]:
    if collector == "entry":
        start.hold_collector()  # (released, start-up frozen, by the app after its first frame)
    made = views(count)
    app = TimedApp(FakeBackend(made))
    walls: dict[str, list[float]] = {}
    cpus: dict[str, list[float]] = {}
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause(0.5)
        if collector == "entry":
            if not gc.isenabled():
                raise RuntimeError("the app did not give the collector back after its "
                                   "first frame")
            sample(made)  # (a session's samples come after its start: not frozen)
        widgets = sum(1 for _ in app.screen.walk_children(with_self=True))
        for _ in range(passes):
            for key, kind in SEQUENCE:
                app.paints.clear()
                started, cpu = time.perf_counter(), time.process_time()
                app.post_message(events.Key(key, CHARACTERS.get(key)))
                await asyncio.sleep(WINDOW)
                if not app.paints:
                    raise RuntimeError(f"key {key!r} painted nothing")
                walls.setdefault(kind, []).append(app.paints[-1] - started)
                cpus.setdefault(kind, []).append(time.process_time() - cpu)
    result: dict[str, Any] = {"widgets": widgets}
    for kind, values in walls.items():
        result[kind] = {
            "ms_p50": round(statistics.median(values) * 1000, 1),
            "ms_p95": round(percentile(values, 0.95) * 1000, 1),
            "cpu_ms_p50": round(statistics.median(cpus[kind]) * 1000, 1),
            "cpu_ms_p95": round(percentile(cpus[kind], 0.95) * 1000, 1),
            "n": len(values),
        }
    return result


def bench_keys(args: argparse.Namespace, load: Any) -> dict[str, Any]:
    counts = [int(n) for n in str(args.key_vms).split(",") if n.strip()]
    results: dict[str, Any] = {"load_before": load(), "collector": args.key_gc}
    for count in counts:
        results[str(count)] = asyncio.run(measure(count, max(1, args.rounds) * 4,
                                                  args.key_gc))
    results["load_after"] = load()
    kinds = list(dict.fromkeys(kind for _, kind in SEQUENCE))
    if str(TARGET_VMS) in results:
        row = results[str(TARGET_VMS)]
        results["target"] = {"ms_p95": TARGET_MS, "vms": TARGET_VMS,
                             "met": {k: row[k]["ms_p95"] <= TARGET_MS for k in kinds}}
    if not args.json:
        print(f"keys: key -> last paint, wall ms p50/p95 and CPU ms p50/p95, "
              f"{SIZE[0]}x{SIZE[1]}, UI only, collector {args.key_gc}; load "
              f"{results['load_before']} -> {results['load_after']}")
        print(f"  {'VMs':>4} {'widgets':>7}  {'kind':<9} {'n':>3} {'wall p50':>8} {'p95':>6}"
              f"  {'CPU p50':>7} {'p95':>6}")
        for count in counts:
            row = results[str(count)]
            for number, kind in enumerate(kinds):
                cell = row[kind]
                lead = f"{count:>4} {row['widgets']:>7}" if number == 0 else " " * 12
                print(f"  {lead}  {kind:<9} {cell['n']:>3} {cell['ms_p50']:>8} {cell['ms_p95']:>6}"
                      f"  {cell['cpu_ms_p50']:>7} {cell['cpu_ms_p95']:>6}")
        if "target" in results:
            met = results["target"]["met"]
            verdict = ", ".join(f"{k} {'met' if ok else 'NOT met'}" for k, ok in met.items())
            print(f"  target at {TARGET_VMS} VMs, wall p95 <= {TARGET_MS:.0f} ms: {verdict}")
    return results
