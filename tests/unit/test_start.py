"""The entry points hold the garbage collector during start-up and give it back."""

from __future__ import annotations

import gc
import subprocess
import sys

from hypercore_tui import start


def test_release_without_hold_leaves_the_collector_alone() -> None:
    assert gc.isenabled()
    start.release_collector(freeze=True)
    assert gc.isenabled() and gc.get_freeze_count() == 0


def test_hold_then_release_with_freeze() -> None:
    start.hold_collector()
    try:
        assert not gc.isenabled()
        start.hold_collector()  # (twice: still one hold)
    finally:
        start.release_collector(freeze=True)
    try:
        assert gc.isenabled() and gc.get_freeze_count() > 0
        start.release_collector()  # (nothing held any more: no effect)
        assert gc.isenabled()
    finally:
        gc.unfreeze()


def test_a_cli_command_runs_with_the_collector_back() -> None:
    """`python -m hypercore_tui CMD` holds it while importing, and releases it before the
    command runs (a long `clip sync` or `watch` must not run without it)."""
    code = ("import gc, sys; from hypercore_tui import cli, start; "
            "start.hold_collector(); "
            "cli.build_parser = (lambda *a: (_ for _ in ()).throw(SystemExit("
            "'enabled' if gc.isenabled() else 'disabled'))); cli.main(['list'])")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=False)
    assert proc.stderr.strip() == "enabled", proc.stderr
