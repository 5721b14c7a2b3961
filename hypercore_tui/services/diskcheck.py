"""The disk check before a boot: ``qemu-img check`` of a local qcow2 image whose QEMU died
without a clean stop (``records.unclean_stop``), or a repair on request (``--repair``)."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

from hypercore_tui.adapters import images
from hypercore_tui.core.errors import HypercoreError, InvalidState, OperationFailed
from hypercore_tui.core.models import DiskKind, VmSpec
from hypercore_tui.services import records

log = logging.getLogger("hypercore.vm")
log.addHandler(logging.NullHandler())


def local_qcow2(spec: VmSpec) -> bool:
    return spec.disk.kind is DiskKind.QCOW2 and not spec.disk.is_rbd and bool(spec.disk.path)


async def check_disk(spec: VmSpec, unclean: records.UncleanStop | None, *,
                      repair: bool) -> tuple[str, ...]:
    """The checks before a boot: none after a clean stop (nor for RBD and raw disks)."""
    if not local_qcow2(spec) or (unclean is None and not repair):
        return ()
    if not Path(str(spec.disk.path)).exists():
        return ()  # the boot says it is missing
    note = await asyncio.to_thread(_check_and_repair, spec.name, Path(str(spec.disk.path)),
                                   unclean, repair)
    if note:
        log.warning("%s: %s", spec.name, note)
    return (note,) if note else ()


def _plural(count: int, what: str) -> str:
    return f"{count} {what}{'' if count == 1 else 's'}"


def _given_back(disk: Path, leaks: int) -> str:
    try:
        size = leaks * images.qcow2_cluster_size(disk)
    except HypercoreError:
        return ""
    return f" ({size / (1 << 20):.1f} MiB given back)"


def _check_and_repair(name: str, disk: Path, unclean: records.UncleanStop | None,
                      repair: bool) -> str | None:
    """``qemu-img check`` (blocking): leaks are repaired, errors refuse the boot unless
    ``repair`` (``-r all``, then a check that must be clean). The note for the user."""
    cause = f"{unclean.cause}; " if unclean else ""
    found = _first_check(disk)
    if found.clean:
        return f"{cause}qemu-img check found nothing to repair" if repair else None
    if not repair and found.status != images.CHECK_LEAKS:
        raise OperationFailed(_refusal(name, disk, unclean, found))
    fixed = images.check_qcow2(disk, repair="all" if repair else "leaks")
    after = images.check_qcow2(disk) if repair else fixed  # (-r reports what is left)
    if not after.clean:
        if not repair:
            raise OperationFailed(_refusal(name, disk, unclean, after))
        raise OperationFailed(
            f"{name}: qemu-img check -r all could not repair its disk image {disk} "
            f"({_findings(after)}); not booting it: restore the image from a backup")
    done = [_plural(found.corruptions, "error")] if found.corruptions else []
    if found.leaks:
        done.append(_plural(found.leaks, "leaked cluster") + _given_back(disk, found.leaks))
    return f"{cause}repaired {' and '.join(done) or 'the image'}"


#: A killed QEMU's leader is reaped before its last threads exit, and its image lock goes
#: with the last of them: a boot right after the kill may find the image still locked.
DEAD_QEMU_LOCK_WAIT = 3.0


def _first_check(disk: Path) -> images.CheckResult:
    deadline = time.monotonic() + DEAD_QEMU_LOCK_WAIT
    while True:
        try:
            return images.check_qcow2(disk)
        except InvalidState:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.1)


def _refusal(name: str, disk: Path, unclean: records.UncleanStop | None,
             found: images.CheckResult) -> str:
    what = unclean.cause if unclean else "QEMU"
    return (f"{name}: {what} and left its disk image {disk} with {_findings(found)}; not "
            f"booting it: `hypercore boot-vm {name} --repair` repairs it (qemu-img check "
            "-r all; copy the image first to keep the damaged original)")


def _findings(result: images.CheckResult) -> str:
    text = _plural(result.corruptions, "error") if result.corruptions else "errors"
    if result.leaks:
        text += f" and {_plural(result.leaks, 'leaked cluster')}"
    return f"{text}: {result.detail}" if result.detail else text
