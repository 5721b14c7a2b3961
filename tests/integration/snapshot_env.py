"""What the snapshot and clone tests share: booting a test VM, where its disk is, a marker
the guest writes at the start of that disk and reads back, and ``qemu-img check``."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from ..conftest import HcEnv
from ..helpers import guest_output


def disk_of(env: HcEnv, name: str) -> Path:
    data = json.loads((env.home / "vms" / name / "vm.json").read_text())
    return Path(data["disk"]["path"])


def qemu_img_check(path: Path) -> None:
    proc = subprocess.run(["qemu-img", "check", "-U", str(path)], capture_output=True,
                          text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "No errors were found" in proc.stdout


def boot(env: HcEnv, name: str) -> None:
    env.run("boot-vm", name, "--wait-agent", "90", check=True)


def write_disk_marker(env: HcEnv, name: str, text: str) -> None:
    """The guest writes ``text`` at the start of its disk (/dev/vda) and syncs it."""
    guest_output(env, name, f"printf '%-16s' {text} | dd of=/dev/vda bs=16 count=1 conv=fsync "
                            "2>/dev/null; sync")


def read_disk_marker(env: HcEnv, name: str) -> str:
    return guest_output(env, name, "dd if=/dev/vda bs=16 count=1 2>/dev/null").strip()
