"""Layers point one way: core imports no I/O or UI library; the UI no socket code.

Checked in a fresh interpreter, by looking at sys.modules after the import
(the same check Harlequin uses beside its import-linter contracts).
"""

from __future__ import annotations

import json
import pkgutil
import re
import subprocess
import sys
from pathlib import Path

import hypercore_tui.core

FORBIDDEN_IN_CORE = {"textual", "rich", "qemu", "rados", "rbd", "psutil", "pyperclip", "socket",
                     "asyncio", "subprocess"}


def _modules_after_import(modules: list[str]) -> set[str]:
    code = (
        "import sys, json\n"
        f"for m in {modules!r}: __import__(m)\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    return {name.split(".")[0] for name in json.loads(out.stdout)}


def test_core_imports_no_io_library() -> None:
    core_modules = [
        f"hypercore_tui.core.{m.name}"
        for m in pkgutil.iter_modules(hypercore_tui.core.__path__)
    ]
    assert len(core_modules) >= 5
    loaded = _modules_after_import(core_modules)
    assert loaded & FORBIDDEN_IN_CORE == set()


def test_import_linter_contracts_hold() -> None:
    lint_imports = Path(sys.executable).with_name("lint-imports")
    out = subprocess.run([str(lint_imports), "--no-cache"], capture_output=True, text=True,
                         check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    assert re.search(r"Contracts: [3-9]\d* kept, 0 broken", out.stdout), out.stdout
