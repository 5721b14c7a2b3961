"""Facts about the host for ``hypercore check-env``: each check is one line."""

from __future__ import annotations

import glob
import importlib
import os
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from hypercore_tui.adapters import kvmprobe, process
from hypercore_tui.adapters.fs import ensure_private_dir
from hypercore_tui.core.errors import HypercoreError
from hypercore_tui.core.sizes import format_bytes

MIN_FREE_BYTES = 2 << 30


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    required: bool = True

    @property
    def label(self) -> str:
        if self.ok:
            return "ok"
        return "FAIL" if self.required else "warn"


def _version(argv: list[str]) -> str | None:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False,
                             stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return None
    first = (out.stdout or out.stderr).strip().splitlines()
    return first[0] if out.returncode == 0 and first else None


def _qemu_module_dirs() -> list[str]:
    return glob.glob("/usr/lib/*/qemu") + ["/usr/lib/qemu"]


def find_virtiofsd() -> str | None:
    found = shutil.which("virtiofsd")
    if found:
        return found
    for candidate in ("/usr/libexec/virtiofsd", "/usr/lib/qemu/virtiofsd"):
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def kvm_check(cache_dir: Path, environ: Mapping[str, str] = os.environ) -> Check:
    """Whether guests run under KVM: /dev/kvm opens and a probe guest ran (this host
    boot's cached verdict, else a probe of up to 3 s). ``HYPERCORE_ACCEL`` does not
    stop the probe here: this says what the host can do."""
    forced = environ.get("HYPERCORE_ACCEL", "").strip().lower()
    consequence = (f"; HYPERCORE_ACCEL={forced} forces the accelerator" if forced else
                   "; using TCG")
    reason = kvmprobe.device_error()
    if reason:
        return Check("kvm", False, f"{kvmprobe.KVM_DEVICE} cannot be opened: {reason}"
                     + consequence, required=False)
    try:
        qemu = process.find_qemu(environ)
    except HypercoreError:
        return Check("kvm", False, f"{kvmprobe.KVM_DEVICE} opens; not probed: "
                     f"{process.QEMU_BINARY} missing", required=False)
    result = kvmprobe.probe_kvm(cache_dir, qemu=qemu, environ=environ)
    if result.runs:
        when = "earlier this host boot" if result.cached else "now"
        detail = f"usable: {result.verdict} ({result.seconds:.2f}s, {when})"
        return Check("kvm", True, detail + (consequence if forced else ""), required=False)
    return Check("kvm", False, result.verdict + consequence, required=False)


def spice_check(qemu: str | None) -> Check:
    """Whether ``--display spice`` can boot: QEMU's SPICE server and QXL (Debian 13 ships
    them as qemu-system-modules-spice; Debian 12 in qemu-system-common), and USB
    redirection."""
    if not qemu:
        return Check("spice", False, "not checked: qemu-system-x86_64 missing", required=False)
    devices = process.qemu_devices(qemu)
    if "qxl-vga" not in devices or not process.qemu_has_spice(qemu):
        return Check("spice", False, "missing: --display spice unavailable (apt install "
                     "qemu-system-modules-spice, or qemu-system-common on Debian 12)",
                     required=False)
    usb = "usb-redir" in devices and "qemu-xhci" in devices
    return Check("spice", True, "SPICE server and qxl-vga" + (
        ", USB redirection (usb-redir)" if usb else "; no usb-redir: no USB redirection"),
        required=False)


def run_checks(home: Path, runtime_base: Path) -> list[Check]:
    checks: list[Check] = [kvm_check(runtime_base)]

    qemu = shutil.which(process.QEMU_BINARY)
    qv = _version([qemu, "--version"]) if qemu else None
    checks.append(Check("qemu", qv is not None, qv or "qemu-system-x86_64 missing "
                        "(apt install qemu-system-x86)"))
    iv = _version(["qemu-img", "--version"]) if shutil.which("qemu-img") else None
    checks.append(Check("qemu-img", iv is not None,
                        iv or "qemu-img missing (apt install qemu-utils)"))

    rbd_modules = [p for d in _qemu_module_dirs() for p in glob.glob(f"{d}/block-rbd.so")]
    checks.append(Check("qemu rbd driver", bool(rbd_modules),
                        rbd_modules[0] if rbd_modules else
                        "missing: Ceph disks unavailable (apt install qemu-block-extra)",
                        required=False))
    qga = shutil.which("qemu-ga") or ("/usr/sbin/qemu-ga" if os.path.exists("/usr/sbin/qemu-ga")
                                      else None)
    checks.append(Check("qemu-ga", qga is not None,
                        qga or "missing on the host (only tests need it: apt install "
                        "qemu-guest-agent)", required=False))
    vfs = find_virtiofsd()
    checks.append(Check("virtiofsd", vfs is not None,
                        vfs or "missing: --shared-mode virtiofs unavailable", required=False))
    ninep = False
    if qemu:
        try:
            out = subprocess.run([qemu, "-device", "help"], capture_output=True, text=True,
                                 timeout=10, check=False, stdin=subprocess.DEVNULL)
            ninep = "virtio-9p-pci" in out.stdout + out.stderr
        except (OSError, subprocess.TimeoutExpired):
            ninep = False
    checks.append(Check("9p shared folder", ninep,
                        "virtio-9p-pci available (guests need the 9p, 9pnet_virtio modules)"
                        if ninep else "QEMU lacks virtio-9p-pci: the shared folder is unavailable",
                        required=False))
    checks.append(spice_check(qemu))
    viewer = shutil.which("remote-viewer")
    checks.append(Check("remote-viewer", viewer is not None,
                        viewer or "missing: `hypercore display` of a SPICE VM can only print "
                        "the ssh line for another machine (apt install virt-viewer)",
                        required=False))
    vnc_viewer = shutil.which("vncviewer")
    checks.append(Check("vncviewer", vnc_viewer is not None,
                        vnc_viewer or "missing: `hypercore display` of a VNC VM can only print "
                        "the ssh line for another machine (apt install tigervnc-viewer)",
                        required=False))
    missing = []
    for module in ("rados", "rbd"):
        try:
            importlib.import_module(module)
        except ImportError:
            missing.append(module)
    checks.append(Check("ceph bindings", not missing,
                        "python3-rados and python3-rbd import" if not missing else
                        f"cannot import {', '.join(missing)} (apt install python3-rados "
                        "python3-rbd; the venv needs --system-site-packages)", required=False))
    try:
        ensure_private_dir(runtime_base)
        checks.append(Check("runtime dir", True, f"{runtime_base} (0700)"))
    except HypercoreError as exc:
        checks.append(Check("runtime dir", False, str(exc)))
    probe = home if home.exists() else home.parent
    try:
        usage = shutil.disk_usage(probe)
        checks.append(Check("free disk", usage.free >= MIN_FREE_BYTES,
                            f"{format_bytes(usage.free)} free under {probe}"
                            + ("" if usage.free >= MIN_FREE_BYTES else " (need at least 2 GiB)")))
    except OSError as exc:
        checks.append(Check("free disk", False, f"{probe}: {exc.strerror}"))
    return checks
