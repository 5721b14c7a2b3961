"""The ``startup`` section of scripts/bench.py: how long ``hypercore`` takes to show something.

* imports: ``python -X importtime -m hypercore_tui --help`` (what every CLI command pays
  before it runs) and ``-X importtime -c "import hypercore_tui.cli, hypercore_tui.ui.launch"``
  (what the dashboard pays before Textual starts): the total, median of ``--rounds`` x 3
  runs, and the packages taking most of it (own time per package, of the fastest run);
  and the wall time of ``hypercore --help``.
* first frame: the real ``hypercore`` in a private tmux session (120x36) in a throwaway
  HYPERCORE_HOME holding one stopped VM (nothing boots: no QEMU slot needed), from
  starting the process to the host line and the VM list's header in ``tmux
  capture-pane`` (polled every 5 ms); beside it a bare Textual app (one ``Static``, no
  CSS) measured the same way on the same machine. Median and max of ``--rounds`` x 3
  each, the ratio of the medians, and the load average. Both run as installed, from
  byte-compiled modules (a private PYTHONPYCACHEPREFIX, filled by a first run); the
  first frame of a checkout started with PYTHONDONTWRITEBYTECODE=1 (every module of
  hypercore_tui compiled at each start) is given apart.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

BARE_APP = '''\
from textual.app import App, ComposeResult
from textual.widgets import Static


class Bare(App[None]):
    def compose(self) -> ComposeResult:
        yield Static("hypercore State")


Bare().run()
'''


def log(text: str) -> None:
    sys.stderr.write(f"bench: {text}\n")
    sys.stderr.flush()


def package_of(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2]) if parts[0] == "hypercore_tui" else parts[0]


def import_times(python: str, environ: dict[str, str], *args: str) -> dict[str, int]:
    """Import time (µs) of one run of ``python -X importtime ARGS``, each module's own
    time summed per package (``hypercore_tui.X`` per subpackage): the sum is the total."""
    proc = subprocess.run([python, "-X", "importtime", *args], env=environ,
                          capture_output=True, text=True, timeout=60, check=False)
    totals: dict[str, int] = {}
    for line in proc.stderr.splitlines():
        match = re.match(r"import time:\s+(\d+) \|\s+(\d+) \| \s*(\S+)", line)
        if match:
            package = package_of(match.group(3))
            totals[package] = totals.get(package, 0) + int(match.group(1))
    return totals


def import_summary(python: str, environ: dict[str, str], rounds: int, *args: str
                   ) -> dict[str, Any]:
    runs = [import_times(python, environ, *args) for _ in range(rounds)]
    totals = [sum(r.values()) for r in runs]
    best = runs[totals.index(min(totals))]
    biggest = sorted(best.items(), key=lambda kv: -kv[1])[:8]
    return {"total_ms_median": round(statistics.median(totals) / 1000),
            "largest_ms": {name: round(us / 1000) for name, us in biggest}}


def first_frame(argv: list[str], environ: dict[str, str], marks: tuple[str, ...]) -> float:
    sock = f"hc-start-{uuid.uuid4().hex[:8]}"

    def tmux(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["tmux", "-L", sock, "-f", "/dev/null", *args],
                              capture_output=True, text=True, timeout=10, check=False)

    variables = [f"{k}={v}" for k, v in environ.items()
                 if k.startswith(("HYPERCORE_", "PYTHON")) or k in ("PATH", "HOME", "LANG")]
    unset = [arg for k in ("COLUMNS", "LINES", "PYTHONDONTWRITEBYTECODE", "PYTHONPYCACHEPREFIX")
             if k not in environ for arg in ("-u", k)]
    started = time.monotonic()
    proc = tmux("new-session", "-d", "-s", "s", "-x", "120", "-y", "36", "env", *unset,
                *variables, *argv)
    if proc.returncode != 0:
        raise RuntimeError(f"tmux: {proc.stderr.strip()}")
    try:
        while time.monotonic() - started < 30:
            screen = tmux("capture-pane", "-p", "-t", "s").stdout
            if all(mark in screen for mark in marks):
                return time.monotonic() - started
            time.sleep(0.005)
    finally:
        tmux("kill-server")
    raise RuntimeError(f"{argv[-1]}: nothing painted within 30 s")


def bench_startup(args: argparse.Namespace, python: str, load: Callable[[], str]
                  ) -> dict[str, Any]:
    rounds = max(1, int(args.rounds)) * 3
    base = Path(tempfile.mkdtemp(prefix="hc-start-", dir="/tmp"))
    environ = dict(os.environ)
    environ.pop("XDG_RUNTIME_DIR", None)
    environ.update(HYPERCORE_HOME=str(base / "home"), HYPERCORE_RUNTIME_DIR=str(base / "run"),
                   PYTHONPATH=str(ROOT))
    environ.setdefault("HYPERCORE_ACCEL", "tcg")
    # As installed: a wheel's modules are byte-compiled. A checkout run with
    # PYTHONDONTWRITEBYTECODE=1 compiles every module of hypercore_tui at each start;
    # measured once, apart ("no bytecode"). The cache is private to this run.
    environ.pop("PYTHONDONTWRITEBYTECODE", None)
    environ["PYTHONPYCACHEPREFIX"] = str(base / "pycache")
    uncached = dict(environ, PYTHONDONTWRITEBYTECODE="1")
    uncached.pop("PYTHONPYCACHEPREFIX")
    try:
        subprocess.run([python, "-m", "hypercore_tui", "create-vm", "st1", "64", "1",
                        "--disk-size", "1M", "--net", "none", "--no-shared"], env=environ,
                       capture_output=True, timeout=60, check=True)
        bare = base / "bare_app.py"
        bare.write_text(BARE_APP)
        for argv in ([python, "-m", "hypercore_tui"], [python, str(bare)]):  # the cache filled
            first_frame(argv, environ, ("hypercore", "State"))
        load_before = load()
        results: dict[str, Any] = {
            "imports_help": import_summary(python, environ, rounds, "-m", "hypercore_tui",
                                           "--help"),
            "imports_dashboard": import_summary(
                python, environ, rounds, "-c", "import hypercore_tui.cli, hypercore_tui.ui.launch"),
        }
        helps = []
        for _ in range(rounds):
            started = time.monotonic()
            subprocess.run([python, "-m", "hypercore_tui", "--help"], env=environ,
                           capture_output=True, timeout=60, check=True)
            helps.append(time.monotonic() - started)
        results["help_wall_ms_median"] = round(statistics.median(helps) * 1000)
        results["first_frame_no_bytecode_ms_median"] = round(statistics.median(
            first_frame([python, "-m", "hypercore_tui"], uncached, ("hypercore", "State"))
            for _ in range(3)) * 1000)
        ours, theirs = [], []
        for _ in range(rounds):  # interleaved: both see the same load
            ours.append(first_frame([python, "-m", "hypercore_tui"], environ,
                                    ("hypercore", "State")))
            theirs.append(first_frame([python, str(bare)], environ, ("hypercore State",)))
        results.update(
            first_frame_ms_median=round(statistics.median(ours) * 1000),
            first_frame_ms_max=round(max(ours) * 1000),
            bare_textual_ms_median=round(statistics.median(theirs) * 1000),
            bare_textual_ms_max=round(max(theirs) * 1000),
            load=f"{load_before} before, {load()} after",
        )
        results["ratio"] = round(results["first_frame_ms_median"]
                                 / results["bare_textual_ms_median"], 2)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    if not args.json:
        h, d = results["imports_help"], results["imports_dashboard"]
        print("startup:")
        print(f"  imports, hypercore --help: {h['total_ms_median']} ms "
              f"(wall {results['help_wall_ms_median']} ms); largest {h['largest_ms']}")
        print(f"  imports, the dashboard's modules: {d['total_ms_median']} ms; "
              f"largest {d['largest_ms']}")
        print(f"  first frame: hypercore {results['first_frame_ms_median']} ms median "
              f"(max {results['first_frame_ms_max']}), bare Textual app "
              f"{results['bare_textual_ms_median']} ms (max {results['bare_textual_ms_max']}),"
              f" ratio {results['ratio']}; load {results['load']}")
        print(f"  first frame without bytecode (a checkout, PYTHONDONTWRITEBYTECODE=1): "
              f"{results['first_frame_no_bytecode_ms_median']} ms median")
    return results
