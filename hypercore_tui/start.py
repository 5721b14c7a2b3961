"""The ``hypercore`` command's entry points, with the garbage collector held during start-up.

Almost everything start-up allocates (modules, classes, the dashboard's widgets and
styles) lives as long as the process, so the collections Python runs meanwhile find
nothing to free: about 30 ms of the dashboard's 210-245 ms of imports were collections
(measured with ``gc.disable()`` before the same imports, 2 cores, Debian 12), and the
first frame comes ~13 ms sooner (``bench.py startup``: 341-342 ms against 354-355 ms
with the collector running, medians of 6, interleaved). The
collector is held from the first line here; a CLI command releases it before it runs,
the dashboard after its first frame (:func:`release_collector`), then collects once and
freezes what start-up made (``gc.freeze``), so the full collections of a long session
walk only what it allocates later (shorter pauses under a key).

Only these entry points hold it: importing hypercore_tui (tests, other programs) leaves
the collector alone, and :func:`release_collector` does nothing there.
"""

from __future__ import annotations

import gc
import sys
from typing import NoReturn

_held = False


def hold_collector() -> None:
    global _held
    if gc.isenabled():
        gc.disable()
        _held = True


def release_collector(*, freeze: bool = False) -> None:
    """Give the collector back if an entry point held it. ``freeze``: collect once, then
    leave everything alive now out of later collections (for a long-lived dashboard)."""
    global _held
    if not _held:
        return
    _held = False
    if freeze:
        gc.collect()
        gc.freeze()
    gc.enable()


def entry() -> NoReturn:
    hold_collector()
    from hypercore_tui.cli import main

    sys.exit(main())


def create_vm_alias() -> NoReturn:
    hold_collector()
    from hypercore_tui.cli import main

    sys.exit(main(["create-vm", *sys.argv[1:]]))


def boot_vm_alias() -> NoReturn:
    hold_collector()
    from hypercore_tui.cli import main

    sys.exit(main(["boot-vm", *sys.argv[1:]]))
