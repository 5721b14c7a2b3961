"""Build the QEMU command line for a VM: a pure function, unit-tested.

Block devices and most ``-device`` options use QEMU's JSON syntax so that no
path or name is ever parsed as a QemuOpts option list; the few options that
only take QemuOpts (``-chardev``, ``-fsdev``, ``-vnc``) get commas doubled.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from hypercore_tui.core.layout import VmPaths
from hypercore_tui.core.models import (
    AGENT_PORT_NAME,
    CLIP_PORT_NAME,
    SHARE_TAG,
    DiskKind,
    DisplayKind,
    NetMode,
    SharedMode,
    VmSpec,
)

DISK_NODE = "disk0"
CDROM_NODE = "cd0"
BALLOON_ID = "balloon0"
#: The chardev of the guest agent's virtio-serial port (``query-chardev`` label).
AGENT_CHARDEV = "qga0"
CLIP_CHARDEV = "hcclip0"
#: The SPICE agent channel (spice-vdagent in the guest: clipboard, file drag-and-drop,
#: resolution following the viewer's window) and its virtio-serial port.
VDAGENT_CHARDEV = "vdagent"
VDAGENT_PORT_NAME = "com.redhat.spice.0"
#: USB devices a SPICE viewer can redirect into the guest at once.
USB_REDIRECT_SLOTS = 2
MEMORY_BACKEND_ID = "mem0"


@dataclass(frozen=True)
class LaunchPlan:
    """What the host decided for one boot of a VM (everything not in VmSpec)."""

    qemu_binary: str
    accel: str  # "kvm" or "tcg"
    shared_dir: str
    boot_from_cdrom: bool = False
    rbd_conf: str | None = None  # resolved ceph.conf for an RBD disk
    loadvm: str | None = None  # start from this internal snapshot (RAM + disks): -loadvm
    usb_redirect: bool = True  # QEMU has usb-redir and qemu-xhci (display=spice only)
    #: the target of a live migration: ``-incoming defer`` (the URI comes later through
    #: QMP) and ``-S`` (the guest runs only once the source let go: ``cont``)
    incoming: bool = False


def qemu_opt(value: str) -> str:
    """Escape a value for a QemuOpts option list (``,`` is doubled)."""
    return value.replace(",", ",,")


def _json(obj: dict[str, Any]) -> str:
    return json.dumps(obj, separators=(",", ":"), sort_keys=False)


def _chardev_socket(chardev_id: str, path: str, extra: str = "") -> list[str]:
    return [
        "-chardev",
        f"socket,id={chardev_id},path={qemu_opt(path)},server=on,wait=off{extra}",
    ]


def accel_of(argv: Sequence[str]) -> str | None:
    """The accelerator a QEMU command line asks for first (``-accel kvm``, ``-enable-kvm``,
    ``-machine ...,accel=tcg``); None when it names none (QEMU then picks)."""
    for i, arg in enumerate(argv):
        if arg == "-enable-kvm":
            return "kvm"
        value = argv[i + 1] if i + 1 < len(argv) else ""
        if arg == "-accel":
            name = value.split(",", 1)[0]
            return name.removeprefix("accel=") or None
        if arg in ("-machine", "-M"):
            for option in value.split(","):
                if option.startswith("accel="):
                    return option.removeprefix("accel=").split(":", 1)[0] or None
    return None


def build_qemu_argv(spec: VmSpec, paths: VmPaths, plan: LaunchPlan) -> list[str]:
    """The full argv (binary first) that boots ``spec`` detached."""
    accel = plan.accel
    if accel not in ("kvm", "tcg"):
        raise ValueError(f"unknown accelerator {accel!r}")
    cpu_model = spec.cpu_model or ("host" if accel == "kvm" else "max")
    needs_backend = spec.hugepages or (spec.shared and spec.shared_mode is SharedMode.VIRTIOFS)
    machine = spec.machine
    if needs_backend:
        machine += f",memory-backend={MEMORY_BACKEND_ID}"

    argv: list[str] = [
        plan.qemu_binary,
        "-name", f"{spec.name},debug-threads=on",
        "-machine", machine,
        "-accel", accel,
        "-cpu", cpu_model,
        "-m", f"{spec.ram_mb}M",
        "-smp", str(spec.cpus),
        "-nodefaults",
        "-no-user-config",
        "-msg", "timestamp=on",
        "-daemonize",
        "-pidfile", str(paths.pidfile),
    ]
    if needs_backend:
        size = spec.ram_mb * 1024 * 1024
        if spec.hugepages:
            backend = {
                "qom-type": "memory-backend-file", "id": MEMORY_BACKEND_ID, "size": size,
                "mem-path": "/dev/hugepages", "share": True, "prealloc": True,
            }
        else:
            backend = {
                "qom-type": "memory-backend-memfd", "id": MEMORY_BACKEND_ID, "size": size,
                "share": True,
            }
        argv += ["-object", _json(backend)]

    # Control: two QMP monitors (short sessions / a long-lived watcher), the agent channel.
    argv += _chardev_socket("qmp", str(paths.qmp_socket))
    argv += ["-mon", "chardev=qmp,mode=control"]
    argv += _chardev_socket("qmpmon", str(paths.qmp_monitor_socket))
    argv += ["-mon", "chardev=qmpmon,mode=control"]
    argv += _chardev_socket(AGENT_CHARDEV, str(paths.qga_socket))
    argv += [
        "-device", _json({"driver": "virtio-serial-pci", "id": "vser0"}),
        "-device", _json({
            "driver": "virtserialport", "bus": "vser0.0", "chardev": AGENT_CHARDEV,
            "name": AGENT_PORT_NAME,
        }),
    ]
    # The clipboard watcher's notification port (services/clipsync reads it).
    argv += _chardev_socket(CLIP_CHARDEV, str(paths.clip_socket))
    argv += ["-device", _json({
        "driver": "virtserialport", "bus": "vser0.0", "chardev": CLIP_CHARDEV,
        "name": CLIP_PORT_NAME,
    })]
    # Serial console on a socket, everything it prints also kept in serial.log.
    argv += _chardev_socket(
        "serial0", str(paths.serial_socket),
        f",logfile={qemu_opt(str(paths.serial_log))},logappend=on",
    )
    argv += ["-serial", "chardev:serial0"]

    argv += ["-device", _json({"driver": "virtio-balloon-pci", "id": BALLOON_ID})]
    argv += ["-device", _json({"driver": "virtio-rng-pci", "id": "rng0"})]

    argv += _disk_args(spec, plan)
    if plan.boot_from_cdrom and spec.iso:
        argv += [
            "-blockdev", _json({
                "driver": "file", "filename": spec.iso, "node-name": f"{CDROM_NODE}-file",
                "read-only": True,
            }),
            "-blockdev", _json({
                "driver": "raw", "file": f"{CDROM_NODE}-file", "node-name": CDROM_NODE,
                "read-only": True,
            }),
            "-device", _json({"driver": "ide-cd", "drive": CDROM_NODE, "bootindex": 0}),
        ]

    argv += _net_args(spec)
    argv += _shared_args(spec, paths, plan)

    argv += _display_args(spec, paths, plan)

    if spec.kernel:
        argv += ["-kernel", spec.kernel]
        if spec.initrd:
            argv += ["-initrd", spec.initrd]
        if spec.append:
            argv += ["-append", spec.append]

    if plan.loadvm:
        argv += ["-loadvm", plan.loadvm]
    if plan.incoming:
        argv += ["-S", "-incoming", "defer"]

    argv += list(spec.extra_args)
    return argv


def _display_args(spec: VmSpec, paths: VmPaths, plan: LaunchPlan) -> list[str]:
    """The screen: none, VGA + VNC, or QXL + SPICE; the servers listen on unix sockets in
    the VM's private runtime directory only (no TCP port, so no password is needed)."""
    argv = ["-display", "none"]
    if spec.display is DisplayKind.NONE:
        return argv
    if spec.display is DisplayKind.VNC:
        argv += ["-device", _json({"driver": "VGA", "id": "video0"})]
        return argv + ["-vnc", f"unix:{qemu_opt(str(paths.vnc_socket))}"]
    argv += ["-device", _json({"driver": "qxl-vga", "id": "video0"})]
    argv += ["-spice",
             f"unix=on,addr={qemu_opt(str(paths.spice_socket))},disable-ticketing=on"]
    argv += ["-chardev", f"spicevmc,id={VDAGENT_CHARDEV},name=vdagent"]
    argv += ["-device", _json({
        "driver": "virtserialport", "bus": "vser0.0", "chardev": VDAGENT_CHARDEV,
        "name": VDAGENT_PORT_NAME,
    })]
    if plan.usb_redirect:
        argv += ["-device", _json({"driver": "qemu-xhci", "id": "usb0"})]
        for slot in range(USB_REDIRECT_SLOTS):
            argv += ["-chardev", f"spicevmc,id=usbredir{slot},name=usbredir"]
            argv += ["-device", _json({"driver": "usb-redir", "chardev": f"usbredir{slot}",
                                       "id": f"usbredir{slot}dev", "bus": "usb0.0"})]
    return argv


def _disk_args(spec: VmSpec, plan: LaunchPlan) -> list[str]:
    disk = spec.disk
    # cache=writeback: host page cache on (direct off), guest flushes honoured.
    cache = {"direct": False, "no-flush": False}
    protocol: dict[str, Any]
    if disk.kind is DiskKind.RBD:
        protocol = {
            "driver": "rbd", "pool": disk.pool, "image": disk.image,
            "node-name": f"{DISK_NODE}-file", "cache": cache, "discard": "unmap",
        }
        conf = disk.conf or plan.rbd_conf
        if conf:
            protocol["conf"] = conf
        fmt = "raw"
    else:
        protocol = {
            "driver": "file", "filename": disk.path, "node-name": f"{DISK_NODE}-file",
            "cache": cache, "discard": "unmap",
        }
        fmt = disk.kind.value
    fmt_node = {
        "driver": fmt, "file": f"{DISK_NODE}-file", "node-name": DISK_NODE,
        "cache": cache, "discard": "unmap",
    }
    device: dict[str, Any] = {
        "driver": "virtio-blk-pci", "drive": DISK_NODE, "id": f"{DISK_NODE}dev",
        "write-cache": "on",
    }
    if spec.iso:
        device["bootindex"] = 1
    return ["-blockdev", _json(protocol), "-blockdev", _json(fmt_node), "-device", _json(device)]


def _net_args(spec: VmSpec) -> list[str]:
    net = spec.net
    if net.mode is NetMode.NONE:
        return ["-nic", "none"]
    if net.mode is NetMode.BRIDGE:
        netdev = {"type": "bridge", "id": "net0", "br": net.bridge}
    else:
        netdev = {"type": "user", "id": "net0"}
    return [
        "-netdev", _json(netdev),
        "-device", _json({"driver": "virtio-net-pci", "netdev": "net0", "mac": spec.mac,
                          "id": "net0dev"}),
    ]


def _shared_args(spec: VmSpec, paths: VmPaths, plan: LaunchPlan) -> list[str]:
    if not spec.shared:
        return []
    if spec.shared_mode is SharedMode.VIRTIOFS:
        return [
            "-chardev", f"socket,id=vfs0,path={qemu_opt(str(paths.virtiofs_socket))}",
            "-device", _json({"driver": "vhost-user-fs-pci", "chardev": "vfs0",
                              "tag": SHARE_TAG, "id": "vfs0dev"}),
        ]
    # mapped-xattr: guest ownership/modes live in xattrs, so QEMU needs no root and the
    # guest can never create a real set-uid file or a real symlink on the host.
    return [
        "-fsdev",
        f"local,id=fs0,path={qemu_opt(plan.shared_dir)},security_model=mapped-xattr",
        "-device", _json({"driver": "virtio-9p-pci", "fsdev": "fs0", "mount_tag": SHARE_TAG,
                          "id": "fs0dev"}),
    ]
