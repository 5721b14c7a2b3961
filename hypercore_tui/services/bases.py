"""Bases of linked clones: a VM whose disk is the backing file of other VMs' disks.

A base's disk must never change while a linked clone is built on it (a changed
backing file silently corrupts every clone), so a base is frozen: it cannot be
booted, deleted or have snapshots made, restored or deleted. ``VmSpec.base_of``
lists its clones; each clone's ``VmSpec.linked_to`` names its base.

Bookkeeping order, so that a crash never leaves a base unprotected:
a new linked clone is added to ``base_of`` *before* its overlay is made, and
removed only *after* the clone is deleted. A crash in between leaves a stale
``base_of`` entry (safe), which :func:`live_clones` ignores.

Every function here expects the caller to hold the base's VM lock.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

from hypercore_tui.adapters.fs import locked
from hypercore_tui.core.errors import HypercoreError, InvalidState
from hypercore_tui.core.models import VmSpec
from hypercore_tui.services import registry
from hypercore_tui.services.context import Context

log = logging.getLogger("hypercore.bases")
log.addHandler(logging.NullHandler())

LOCK_WAIT = 60.0


def live_clones(ctx: Context, base: VmSpec) -> tuple[str, ...]:
    """The entries of ``base.base_of`` that are real linked clones of ``base``.

    A clone whose definition cannot be read counts as live (the safe side); a name
    with no definition, or one now linked to another VM, is a stale entry.
    """
    live = []
    for name in base.base_of:
        try:
            clone = registry.load(ctx, name)
        except HypercoreError as exc:
            if registry.exists(ctx, name):
                log.warning("%s: clone %s unreadable (%s); keeping it as live", base.name, name,
                            exc)
                live.append(name)
            continue
        if clone.linked_to == base.name:
            live.append(name)
    return tuple(live)


def refresh(ctx: Context, base: VmSpec) -> VmSpec:
    """``base`` with stale ``base_of`` entries dropped (and saved when that changed)."""
    if not base.base_of:
        return base
    live = live_clones(ctx, base)
    if live == base.base_of:
        return base
    log.info("%s: dropping stale linked-clone entries %s", base.name,
             sorted(set(base.base_of) - set(live)))
    base = base.with_changes(base_of=live)
    registry.save(ctx, base)
    return base


def check_not_base(ctx: Context, spec: VmSpec, doing: str) -> VmSpec:
    """Raise :class:`InvalidState` if ``spec`` is the base of live linked clones.

    ``doing`` completes "NAME is the base of linked clones (...): ``doing``".
    """
    spec = refresh(ctx, spec)
    if spec.base_of:
        raise InvalidState(f"{spec.name} is the base of linked clones "
                           f"({', '.join(spec.base_of)}): {doing}")
    return spec


def add_clone(ctx: Context, base_name: str, clone: str) -> VmSpec:
    """Record ``clone`` in the base's definition (atomic write)."""
    base = registry.load(ctx, base_name)
    if clone not in base.base_of:
        base = base.with_changes(base_of=(*base.base_of, clone))
        registry.save(ctx, base)
    return base


def remove_clone(ctx: Context, base_name: str, clone: str) -> None:
    """Forget ``clone`` in the base's definition (atomic write); a missing base is fine."""
    if not registry.exists(ctx, base_name):
        return
    base = registry.load(ctx, base_name)
    if clone in base.base_of:
        registry.save(ctx, base.with_changes(
            base_of=tuple(n for n in base.base_of if n != clone)))


@contextlib.contextmanager
def unlinking_from_base(ctx: Context, clone: VmSpec) -> Iterator[None]:
    """Around deleting ``clone``: hold its base's lock, then drop it from ``base_of``.

    The base's lock is taken first, so if the base is busy nothing is deleted; the
    entry goes only after the block succeeded (the clone is gone).
    """
    base = clone.linked_to
    if base is None or not registry.exists(ctx, base):
        yield
        return
    with locked(ctx.vm_paths(base).lock, what=f"{base}: unlink clone {clone.name}",
                timeout=LOCK_WAIT):
        yield
        remove_clone(ctx, base, clone.name)
