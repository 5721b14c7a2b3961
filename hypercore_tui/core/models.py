"""The data Hypercore keeps about a VM, and its (de)serialisation.

``vm.json`` holds a :class:`VmSpec` as written by :func:`VmSpec.to_dict`.
Reading is strict: an unknown disk kind or a malformed field is an error with
the file named, never a silently different VM.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from hypercore_tui.core.errors import InvalidInput
from hypercore_tui.core.names import validate_rbd_component, validate_vm_name

SPEC_VERSION = 1
MIN_RAM_MB = 16
MAX_RAM_MB = 4 * 1024 * 1024
MIN_CPUS = 1
MAX_CPUS = 255
SHARE_TAG = "hypercore_share"
#: Where Hypercore mounts the shared folder in a Linux guest.
GUEST_MOUNTPOINT = "/shared"
AGENT_PORT_NAME = "org.qemu.guest_agent.0"
#: The virtio-serial port on which a guest's clipboard watcher says "changed" (one byte
#: per change; the host reads the content through the agent, never from this port).
CLIP_PORT_NAME = "org.hypercore.clipboard.0"


class VmState(enum.StrEnum):
    STOPPED = "stopped"
    STARTING = "starting"
    RUNNING = "running"
    PAUSED = "paused"
    SHUTTING_DOWN = "shutting-down"
    CRASHED = "crashed"

    @property
    def is_active(self) -> bool:
        """True while a QEMU process exists for the VM."""
        return self in (VmState.STARTING, VmState.RUNNING, VmState.PAUSED, VmState.SHUTTING_DOWN)


class DiskKind(enum.StrEnum):
    QCOW2 = "qcow2"
    RAW = "raw"
    RBD = "rbd"


class NetMode(enum.StrEnum):
    USER = "user"
    NONE = "none"
    BRIDGE = "bridge"


class SharedMode(enum.StrEnum):
    NINEP = "9p"
    VIRTIOFS = "virtiofs"


class ClipboardMode(enum.StrEnum):
    """How a VM's clipboard takes part in the shared one."""

    SYNC = "sync"  # follows the shared clipboard both ways
    PUSH_ONLY = "push-only"  # the shared clipboard is written into it, never read from it
    OFF = "off"  # never read, never written

    @property
    def readable(self) -> bool:
        """Whether Hypercore may read this VM's clipboard."""
        return self is ClipboardMode.SYNC

    @property
    def writable(self) -> bool:
        """Whether Hypercore may write this VM's clipboard."""
        return self is not ClipboardMode.OFF


def parse_clipboard_mode(text: str) -> ClipboardMode:
    """A clipboard mode as the user wrote it, or :class:`InvalidInput` listing the modes."""
    try:
        return ClipboardMode(text)
    except ValueError:
        modes = ", ".join(m.value for m in ClipboardMode)
        raise InvalidInput(f"invalid clipboard mode {text!r}: use {modes}") from None


class DisplayKind(enum.StrEnum):
    """A VM's screen and how a viewer reaches it (a unix socket in its runtime directory)."""

    VNC = "vnc"  # VGA, VNC server on a unix socket
    SPICE = "spice"  # qxl-vga, SPICE server on a unix socket, vdagent channel, USB redirection
    NONE = "none"  # no display device: serial console only


def parse_display(text: str) -> DisplayKind:
    """A display kind as the user wrote it, or :class:`InvalidInput` listing the kinds."""
    try:
        return DisplayKind(text)
    except ValueError:
        kinds = ", ".join(k.value for k in DisplayKind)
        raise InvalidInput(f"invalid display {text!r}: use {kinds}") from None


#: What each display kind means, for help texts.
DISPLAY_KINDS_HELP = ("vnc: VGA with a VNC server; spice: QXL with a SPICE server (clipboard "
                      "and file drag-and-drop with spice-vdagent in the guest, USB "
                      "redirection); none: no screen, serial console only. Both servers "
                      "listen on a unix socket, never on a TCP port")


#: What each clipboard mode means, for help texts.
CLIPBOARD_MODES_HELP = ("sync: the clipboard follows the shared one both ways; push-only: the "
                        "shared clipboard is written into this VM, never read from it; off: "
                        "never read, never written")


@dataclass(frozen=True)
class DiskSpec:
    """A VM's main disk: a local image file or a Ceph RBD image."""

    kind: DiskKind
    path: str | None = None  # local image (absolute)
    pool: str | None = None  # rbd
    image: str | None = None  # rbd
    conf: str | None = None  # rbd: ceph.conf path; None = the configured cluster
    owned: bool = True  # created by Hypercore (deleted with the VM)

    @property
    def is_rbd(self) -> bool:
        return self.kind is DiskKind.RBD

    def describe(self) -> str:
        if self.kind is DiskKind.RBD:
            return f"rbd:{self.pool}/{self.image}"
        return str(self.path)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"kind": self.kind.value, "owned": self.owned}
        if self.kind is DiskKind.RBD:
            data.update(pool=self.pool, image=self.image, conf=self.conf)
        else:
            data["path"] = self.path
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DiskSpec:
        kind = DiskKind(_get(data, "kind", str))
        owned = bool(data.get("owned", True))
        if kind is DiskKind.RBD:
            conf = data.get("conf")
            return cls(
                kind=kind,
                pool=validate_rbd_component("pool", _get(data, "pool", str)),
                image=validate_rbd_component("image", _get(data, "image", str)),
                conf=str(conf) if conf is not None else None,
                owned=owned,
            )
        return cls(kind=kind, path=_get(data, "path", str), owned=owned)


_RBD_SPEC = re.compile(r"rbd:(?P<pool>[^/:]+)/(?P<image>[^/:]+)(?::conf=(?P<conf>.+))?")


def parse_rbd_disk(text: str) -> DiskSpec:
    """Parse the original CLI's ``rbd:POOL/IMAGE[:conf=PATH]`` syntax."""
    match = _RBD_SPEC.fullmatch(text)
    if not match:
        raise InvalidInput(f"invalid RBD disk {text!r}: use rbd:POOL/IMAGE[:conf=PATH]")
    pool = validate_rbd_component("pool", match["pool"])
    image = validate_rbd_component("image", match["image"])
    return DiskSpec(kind=DiskKind.RBD, pool=pool, image=image, conf=match["conf"])


@dataclass(frozen=True)
class NetSpec:
    mode: NetMode = NetMode.USER
    bridge: str | None = None

    @classmethod
    def parse(cls, text: str) -> NetSpec:
        """``user``, ``none`` or ``bridge=BR``."""
        if text == "user":
            return cls(NetMode.USER)
        if text == "none":
            return cls(NetMode.NONE)
        if text.startswith("bridge="):
            bridge = text.removeprefix("bridge=")
            if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,14}", bridge):
                raise InvalidInput(f"invalid bridge name {bridge!r}")
            return cls(NetMode.BRIDGE, bridge)
        raise InvalidInput(f"invalid --net {text!r}: use user, none or bridge=BRIDGE")

    def __str__(self) -> str:
        return f"bridge={self.bridge}" if self.mode is NetMode.BRIDGE else self.mode.value


@dataclass(frozen=True)
class VmSpec:
    """Everything needed to start a VM. Written to ``vm.json``."""

    name: str
    ram_mb: int
    cpus: int
    disk: DiskSpec
    mac: str
    iso: str | None = None
    kernel: str | None = None
    initrd: str | None = None
    append: str | None = None
    net: NetSpec = field(default_factory=NetSpec)
    shared: bool = True
    shared_mode: SharedMode = SharedMode.NINEP
    machine: str = "q35"
    cpu_model: str | None = None  # None: host under KVM, max under TCG
    hugepages: bool = False
    extra_args: tuple[str, ...] = ()
    display: DisplayKind = DisplayKind.VNC
    created: str | None = None
    base_of: tuple[str, ...] = ()  # linked clones that use this VM's disk as backing file
    linked_to: str | None = None  # linked clone: the VM whose disk is this one's backing file
    clipboard: ClipboardMode = ClipboardMode.SYNC

    def __post_init__(self) -> None:
        validate_vm_name(self.name)
        if self.linked_to is not None:
            validate_vm_name(self.linked_to)
        validate_resources(self.ram_mb, self.cpus)
        validate_mac(self.mac)
        if not isinstance(self.display, DisplayKind):  # a plain string from a caller
            object.__setattr__(self, "display", parse_display(str(self.display)))

    def with_changes(self, **changes: Any) -> VmSpec:
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": SPEC_VERSION,
            "name": self.name,
            "ram_mb": self.ram_mb,
            "cpus": self.cpus,
            "disk": self.disk.to_dict(),
            "mac": self.mac,
            "iso": self.iso,
            "kernel": self.kernel,
            "initrd": self.initrd,
            "append": self.append,
            "net": {"mode": self.net.mode.value, "bridge": self.net.bridge},
            "shared": self.shared,
            "shared_mode": self.shared_mode.value,
            "machine": self.machine,
            "cpu_model": self.cpu_model,
            "hugepages": self.hugepages,
            "extra_args": list(self.extra_args),
            "display": self.display.value,
            "created": self.created,
            "base_of": list(self.base_of),
            "linked_to": self.linked_to,
            "clipboard": self.clipboard.value,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> VmSpec:
        version = data.get("version", SPEC_VERSION)
        if version != SPEC_VERSION:
            raise InvalidInput(f"unsupported vm.json version {version!r}")
        net = data.get("net") or {}
        if not isinstance(net, Mapping):
            raise InvalidInput("vm.json: 'net' must be an object")
        try:
            return cls(
                name=_get(data, "name", str),
                ram_mb=_get(data, "ram_mb", int),
                cpus=_get(data, "cpus", int),
                disk=DiskSpec.from_dict(_get(data, "disk", dict)),
                mac=_get(data, "mac", str),
                iso=_opt(data, "iso", str),
                kernel=_opt(data, "kernel", str),
                initrd=_opt(data, "initrd", str),
                append=_opt(data, "append", str),
                net=NetSpec(NetMode(net.get("mode", "user")), net.get("bridge")),
                shared=bool(data.get("shared", True)),
                shared_mode=SharedMode(data.get("shared_mode", "9p")),
                machine=str(data.get("machine", "q35")),
                cpu_model=_opt(data, "cpu_model", str),
                hugepages=bool(data.get("hugepages", False)),
                extra_args=tuple(str(a) for a in data.get("extra_args", [])),
                display=parse_display(str(data.get("display", "vnc"))),
                created=_opt(data, "created", str),
                base_of=tuple(str(a) for a in data.get("base_of", [])),
                linked_to=_opt(data, "linked_to", str),
                clipboard=ClipboardMode(data.get("clipboard", "sync")),
            )
        except ValueError as exc:  # an enum given an unknown value
            raise InvalidInput(f"vm.json: {exc}") from None


def validate_resources(ram_mb: int, cpus: int) -> None:
    if not MIN_RAM_MB <= ram_mb <= MAX_RAM_MB:
        raise InvalidInput(f"RAM {ram_mb} MB is out of range ({MIN_RAM_MB}-{MAX_RAM_MB} MB)")
    if not MIN_CPUS <= cpus <= MAX_CPUS:
        raise InvalidInput(f"CPU count {cpus} is out of range ({MIN_CPUS}-{MAX_CPUS})")


_MAC = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}")


def validate_mac(mac: str) -> str:
    if not _MAC.fullmatch(mac):
        raise InvalidInput(f"invalid MAC address {mac!r}")
    if int(mac[:2], 16) & 1:
        raise InvalidInput(f"invalid MAC address {mac!r}: multicast bit set")
    return mac


def mac_from_bytes(raw: bytes) -> str:
    """A locally administered unicast MAC in QEMU's 52:54:00 range from 3 random bytes."""
    if len(raw) != 3:
        raise ValueError("need 3 bytes")
    return "52:54:00:" + ":".join(f"{b:02x}" for b in raw)


def _get(data: Mapping[str, Any], key: str, kind: type) -> Any:
    value = data.get(key)
    if kind is int and isinstance(value, bool):
        value = None
    if not isinstance(value, kind):
        raise InvalidInput(f"vm.json: field {key!r} is missing or not a {kind.__name__}")
    return value


def _opt(data: Mapping[str, Any], key: str, kind: type) -> Any:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, kind):
        raise InvalidInput(f"vm.json: field {key!r} is not a {kind.__name__}")
    return value
