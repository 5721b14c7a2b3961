"""Bad input and failures reach the user as one line with the right exit code."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from ..conftest import HcEnv


def assert_one_line_error(proc: subprocess.CompletedProcess[bytes], code: int,
                          fragment: str) -> None:
    err = proc.stderr.decode()
    assert proc.returncode == code, err
    assert err.startswith("hypercore: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    assert fragment in err, err


@pytest.mark.parametrize("args,code,fragment", [
    (["create-vm", "--", "-bad", "256", "1"], 2, "invalid VM name"),
    (["create-vm", "-bad", "256", "1"], 2, "required"),
    (["create-vm", "../etc", "256", "1"], 2, "invalid VM name"),
    (["create-vm", "ok", "8", "1"], 2, "RAM 8 MB is out of range"),
    (["create-vm", "ok", "256", "0"], 2, "CPU count 0 is out of range"),
    (["create-vm", "ok", "99999999", "1"], 2, "out of range"),
    (["create-vm", "ok", "256", "1", "auto", "/nonexistent.iso"], 2, "ISO '/nonexistent.iso'"),
    (["create-vm", "ok", "256", "1", "--kernel", "/nope/vmlinuz"], 2, "kernel '/nope/vmlinuz'"),
    (["create-vm", "ok", "256", "1", "/no/such/disk.qcow2"], 2, "does not exist"),
    (["create-vm", "ok", "256", "1", "--disk-size", "lots"], 2, "invalid size"),
    (["create-vm", "ok", "256", "1", "--net", "wifi"], 2, "invalid --net"),
    (["create-vm", "ok", "abc", "1"], 2, "not a whole number"),
    (["boot-vm", "ghost"], 2, "no VM named 'ghost'"),
    (["stop-vm", "ghost"], 2, "no VM named"),
    (["exec", "ghost", "--", "true"], 2, "no VM named"),
    (["frobnicate"], 2, "invalid choice"),
    (["boot-vm"], 2, "required"),
])
def test_bad_input(hc_env: HcEnv, args: list[str], code: int, fragment: str) -> None:
    assert_one_line_error(hc_env.run(*args), code, fragment)
    assert not (hc_env.home / "vms" / "ok").exists()


def test_occupied_name_and_not_running(hc_env: HcEnv) -> None:
    hc_env.run("create-vm", "dup", "64", "1", "--disk-size", "16M", check=True)
    assert_one_line_error(hc_env.run("create-vm", "dup", "64", "1"), 2, "already exists")
    assert_one_line_error(hc_env.run("stop-vm", "dup"), 1, "dup is not running")
    assert_one_line_error(hc_env.run("exec", "dup", "--", "true"), 1, "not running")
    assert_one_line_error(hc_env.run("exec", "dup"), 2, "needs a command")


def test_existing_image_used_in_place(hc_env: HcEnv, tmp_path: Path) -> None:
    image = tmp_path / "base.raw"
    subprocess.run(["qemu-img", "create", "-q", "-f", "raw", str(image), "16M"], check=True)
    hc_env.run("create-vm", "inplace", "64", "1", str(image), check=True)
    rows = json.loads(hc_env.run("list", "--json", check=True).stdout)
    assert rows[0]["disk"] == str(image)
    definition = json.loads((hc_env.home / "vms" / "inplace" / "vm.json").read_text())
    assert definition["disk"] == {"kind": "raw", "owned": False, "path": str(image)}
    hc_env.run("delete-vm", "inplace", "--yes", check=True)
    assert image.exists()  # an image Hypercore did not create is never deleted


@pytest.fixture
def tiny_home(hc_env: HcEnv) -> Iterator[HcEnv]:
    """HYPERCORE_HOME on a 1 MiB tmpfs: the disk fills up."""
    hc_env.home.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1M,mode=0700", "tmpfs",
                    str(hc_env.home)], check=True)
    try:
        yield hc_env
    finally:
        subprocess.run(["umount", "-l", str(hc_env.home)], check=False)


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root (CI runs as root)")
def test_full_disk_fails_cleanly(tiny_home: HcEnv) -> None:
    (tiny_home.home / "filler").write_bytes(b"\0" * (1024 * 1024 - 8192))
    proc = tiny_home.run("create-vm", "full", "64", "1", "--disk-size", "1G")
    assert proc.returncode == 1, proc.stderr
    err = proc.stderr.decode()
    assert err.startswith("hypercore: error: ") and err.count("\n") == 1
    assert "space" in err.lower()
    assert not (tiny_home.home / "vms" / "full").exists()  # nothing half-made


def test_usage_error_is_one_line(hc_env: HcEnv) -> None:
    proc = hc_env.run("list", "--bogus")
    assert_one_line_error(proc, 2, "unrecognized arguments")
