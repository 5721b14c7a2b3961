"""Defining a VM: ``create_vm`` (its definition and its disk) and the install flow
(``installation_state.json``: an ISO VM boots from the CD until it is marked installed)."""

from __future__ import annotations

import datetime as dt
import logging
import secrets
import shutil
from dataclasses import dataclass

from hypercore_tui.adapters import images
from hypercore_tui.adapters.fs import atomic_write_json, check_regular_file, read_json
from hypercore_tui.core.errors import InvalidInput, OperationFailed
from hypercore_tui.core.layout import VmPaths
from hypercore_tui.core.models import (
    DiskKind,
    DiskSpec,
    NetSpec,
    SharedMode,
    VmSpec,
    mac_from_bytes,
    parse_clipboard_mode,
    parse_display,
    parse_rbd_disk,
    validate_resources,
)
from hypercore_tui.core.names import validate_vm_name
from hypercore_tui.core.sizes import parse_size
from hypercore_tui.services import rbd_disks, registry
from hypercore_tui.services.context import Context

log = logging.getLogger("hypercore.vm")
log.addHandler(logging.NullHandler())


@dataclass(frozen=True)
class CreateRequest:
    name: str
    ram_mb: int
    cpus: int
    disk: str | None = None  # None / "auto" / path / rbd:POOL/IMAGE[:conf=PATH]
    iso: str | None = None
    disk_size: str = "20G"
    kernel: str | None = None
    initrd: str | None = None
    append: str | None = None
    net: str = "user"
    shared: bool = True
    shared_mode: str = "9p"
    clipboard: str = "sync"
    display: str = "vnc"
    extra_args: tuple[str, ...] = ()


def host_memory_mb() -> int | None:
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) // 1024
    except OSError:
        return None
    return None


def create_vm(ctx: Context, req: CreateRequest) -> VmSpec:
    """Define a VM (and make its disk). A failure leaves nothing behind."""
    name = validate_vm_name(req.name)
    validate_resources(req.ram_mb, req.cpus)
    total = host_memory_mb()
    if total is not None and req.ram_mb > total:
        raise InvalidInput(f"RAM {req.ram_mb} MB is more than this host has ({total} MB)")
    net = NetSpec.parse(req.net)
    try:
        shared_mode = SharedMode(req.shared_mode)
    except ValueError:
        raise InvalidInput(f"invalid shared mode {req.shared_mode!r}: use 9p or virtiofs") from None
    clipboard = parse_clipboard_mode(req.clipboard)
    display = parse_display(req.display)
    iso = str(check_regular_file(req.iso, "ISO")) if req.iso else None
    kernel = str(check_regular_file(req.kernel, "kernel")) if req.kernel else None
    initrd = str(check_regular_file(req.initrd, "initrd")) if req.initrd else None
    if (req.initrd or req.append) and not req.kernel:
        raise InvalidInput("--initrd and --append need --kernel")
    size = parse_size(req.disk_size)
    disk_arg = req.disk or "auto"
    rbd_disk = parse_rbd_disk(disk_arg) if disk_arg.startswith("rbd:") else None
    if rbd_disk is not None:
        rbd_disks.conf_for(ctx, rbd_disk)  # no cluster configured: fail before anything

    paths = registry.claim_vm_dir(ctx, name)
    disk: DiskSpec | None = None
    try:
        if rbd_disk is not None:
            disk = rbd_disks.prepare_disk(ctx, rbd_disk, size)
        elif disk_arg == "auto":
            images.create_image(paths.default_disk, size, fmt="qcow2")
            disk = DiskSpec(kind=DiskKind.QCOW2, path=str(paths.default_disk), owned=True)
        else:
            image = check_regular_file(disk_arg, "disk image")
            info = images.image_info(image)
            if info.format not in ("qcow2", "raw"):
                raise InvalidInput(f"disk image {disk_arg!r} is {info.format}; use qcow2 or raw")
            disk = DiskSpec(kind=DiskKind(info.format), path=str(image), owned=False)
        spec = VmSpec(
            name=name, ram_mb=req.ram_mb, cpus=req.cpus, disk=disk,
            mac=mac_from_bytes(secrets.token_bytes(3)), iso=iso, kernel=kernel, initrd=initrd,
            append=req.append, net=net, shared=req.shared, shared_mode=shared_mode,
            clipboard=clipboard, display=display,
            extra_args=tuple(req.extra_args),
            created=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        )
        if iso:
            write_installation_state(paths, installed=False)
        registry.save(ctx, spec)
    except BaseException:
        shutil.rmtree(paths.vm_dir, ignore_errors=True)
        if disk is not None and disk.is_rbd:
            rbd_disks.discard_disk(ctx, disk)  # only an image made in this attempt (owned)
        raise
    log.info("created VM %s", name)
    return spec


def write_installation_state(paths: VmPaths, *, installed: bool) -> None:
    """The original Hypercore's installation_state.json."""
    now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    atomic_write_json(paths.installation_state, {"isInstalled": installed, "lastModified": now})


def is_installed(paths: VmPaths) -> bool:
    try:
        data = read_json(paths.installation_state)
    except FileNotFoundError:
        return True
    except OperationFailed:
        return False
    return bool(isinstance(data, dict) and data.get("isInstalled"))


def mark_installed(ctx: Context, name: str, installed: bool = True) -> None:
    spec = registry.load(ctx, name)
    if not spec.iso:
        raise InvalidInput(f"{name} has no ISO; there is nothing to mark")
    write_installation_state(ctx.vm_paths(name), installed=installed)
