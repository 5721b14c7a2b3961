"""`hypercore screenshot NAME FILE.png` against a real TCG test guest: a PNG of the VGA
screen; a stopped VM gets one clear line."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from ..conftest import GuestImage, HcEnv, create_guest_vm

pytestmark = [pytest.mark.qemu, pytest.mark.timeout(300)]


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR", data[:16]
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_screenshot_png_and_stopped_refused(hc_env: HcEnv, test_guest: GuestImage,
                                           tmp_path: Path) -> None:
    create_guest_vm(hc_env, test_guest, "shot1")
    stopped = hc_env.run("screenshot", "shot1", str(tmp_path / "none.png"))
    assert stopped.returncode == 1, stopped
    assert stopped.stderr.decode().startswith("hypercore: error: shot1 is not running")
    assert not (tmp_path / "none.png").exists()

    hc_env.run("boot-vm", "shot1", "--wait-agent", "60", check=True)
    target = tmp_path / "shot1.png"
    saved = hc_env.run("screenshot", "shot1", str(target), check=True)
    assert b"screen saved to" in saved.stdout
    width, height = png_size(target.read_bytes())
    assert width >= 640 and height >= 350, (width, height)
    piped = hc_env.run("screenshot", "shot1", "-", check=True).stdout
    assert png_size(piped) == (width, height)
    leftovers = list(hc_env.ctx.vm_paths("shot1").run_dir.glob("screen-*"))
    assert leftovers == [], leftovers
    hc_env.run("stop-vm", "shot1", "--force", check=True)
