"""What this host offers the person at the terminal: a summary line (CPU, memory,
load, free disk) and the demo VM. (A VM's serial console: :mod:`.console`; its
display: :mod:`.display`.)

Everything here is synchronous and may block briefly (procfs, a subprocess):
the dashboard calls it from worker threads.
"""

from __future__ import annotations

import logging
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path

from hypercore_tui.adapters import process
from hypercore_tui.adapters.procstats import HostProbe, HostReading
from hypercore_tui.core.errors import OperationFailed, Timeout
from hypercore_tui.core.models import VmSpec
from hypercore_tui.services import create, registry
from hypercore_tui.services.context import Context

log = logging.getLogger("hypercore.host")
log.addHandler(logging.NullHandler())


@dataclass(frozen=True)
class HostSummary(HostReading):
    """Host CPU %, memory, load and the free space of HYPERCORE_HOME's filesystem."""

    #: Why VMs boot under TCG although /dev/kvm opens (this host boot's KVM probe failed).
    accel_note: str | None = None


class HostWatch:
    """Reads the host summary; CPU % is the use since the previous read."""

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx
        self._probe = HostProbe(ctx.layout.home)

    def read(self) -> HostSummary:
        reading = self._probe.read()
        # The cached verdict only (a small file): the probe itself runs at the first boot.
        note = process.known_accel_note(self._ctx.environ,
                                        cache_dir=self._ctx.layout.runtime_base)
        return HostSummary(**{f.name: getattr(reading, f.name) for f in fields(reading)},
                           accel_note=note)


# -- the demo VM ----------------------------------------------------------------------

DEMO_NAME = "demo"
DEMO_RAM_MB = 128
GUEST_BUILDER_ENV = "HYPERCORE_GUEST_BUILDER"


def find_guest_builder(environ: Mapping[str, str]) -> Path | None:
    """scripts/build-test-guest.sh: $HYPERCORE_GUEST_BUILDER, else beside the package."""
    override = environ.get(GUEST_BUILDER_ENV)
    if override:
        return Path(override) if Path(override).is_file() else None
    candidate = Path(__file__).resolve().parents[2] / "scripts" / "build-test-guest.sh"
    return candidate if candidate.is_file() else None


@dataclass(frozen=True)
class GuestFiles:
    kernel: Path
    initrd: Path
    append: str


def build_demo_guest(ctx: Context, *, timeout: float = 900.0) -> GuestFiles:
    """Build (or take from its cache) the small test guest: kernel, initrd, cmdline."""
    script = find_guest_builder(ctx.environ)
    if script is None:
        raise OperationFailed("the demo needs scripts/build-test-guest.sh (a source checkout) "
                              f"or {GUEST_BUILDER_ENV}=/path/to/build-test-guest.sh")
    try:
        proc = subprocess.run(["bash", str(script)], env=dict(ctx.environ), capture_output=True,
                              timeout=timeout, stdin=subprocess.DEVNULL, check=False)
    except subprocess.TimeoutExpired:
        raise Timeout(f"building the demo guest took over {timeout:g}s") from None
    except OSError as exc:
        raise OperationFailed(f"cannot run {script}: {exc.strerror}") from None
    if proc.returncode != 0:
        lines = proc.stderr.decode(errors="replace").strip().splitlines()
        raise OperationFailed(f"building the demo guest failed: {lines[-1] if lines else '?'}")
    out = proc.stdout.decode(errors="replace").strip().splitlines()
    directory = Path(out[-1]) if out else Path()
    files = GuestFiles(directory / "vmlinuz", directory / "initrd.img",
                       _read_text(directory / "cmdline"))
    if not files.kernel.is_file() or not files.initrd.is_file():
        raise OperationFailed(f"the demo guest build left no kernel/initrd in {directory}")
    return files


def _read_text(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def free_demo_name(ctx: Context) -> str:
    taken = set(registry.vm_names(ctx))
    if DEMO_NAME not in taken:
        return DEMO_NAME
    index = 2
    while f"{DEMO_NAME}-{index}" in taken:
        index += 1
    return f"{DEMO_NAME}-{index}"


def create_demo_vm(ctx: Context, name: str | None = None) -> VmSpec:
    """Define a small VM that boots the test guest (no ISO, 64 MiB disk)."""
    guest = build_demo_guest(ctx)
    request = create.CreateRequest(
        name=name or free_demo_name(ctx), ram_mb=DEMO_RAM_MB, cpus=1, disk_size="64M",
        kernel=str(guest.kernel), initrd=str(guest.initrd), append=guest.append or None,
    )
    return create.create_vm(ctx, request)
