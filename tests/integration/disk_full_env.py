"""A HYPERCORE_HOME on a small tmpfs for the full-disk tests: filled to leave an exact
number of bytes free, freed again, and the checks a VM must pass afterwards (its images
clean, still running with its agent, a clean stop)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from ..conftest import HcEnv, _kill_leftover_qemus
from ..helpers import vm_row

PAGE = 4096
FILLER = "filler"
LOG = "hypercore.log"


def mount_tmpfs(directory: Path, size_mb: int) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mb}M,mode=0700", "tmpfs",
                    str(directory)], check=True, capture_output=True)


def unmount(directory: Path) -> None:
    deadline = time.monotonic() + 15
    while subprocess.run(["umount", str(directory)], capture_output=True).returncode != 0:
        if time.monotonic() > deadline:  # still busy (a QEMU dying): detach it anyway
            subprocess.run(["umount", "-l", str(directory)], check=False)
            return
        time.sleep(0.2)


@contextlib.contextmanager
def small_home(env: HcEnv, size_mb: int) -> Iterator[HcEnv]:
    """``env`` with HYPERCORE_HOME on a tmpfs of ``size_mb`` MiB (runtime dir elsewhere);
    unmounted afterwards, also when the test fails."""
    mount_tmpfs(env.home, size_mb)
    try:
        yield env
    finally:
        _kill_leftover_qemus(env)
        unmount(env.home)


def avail(directory: Path) -> int:
    st = os.statvfs(directory)
    return st.f_bavail * st.f_frsize


def pad(path: Path) -> None:
    """Pad a text file to a page boundary: anything written to it next needs a new page."""
    if path.exists() and path.stat().st_size % PAGE:
        with open(path, "a") as fh:
            fh.write("#" * (-(path.stat().st_size + 1) % PAGE) + "\n")


def fill(directory: Path, leave: int) -> None:
    """Leave exactly ``leave`` bytes free on ``directory``'s tmpfs. The log is padded
    first: a log record that cannot be written must not reach the terminal either."""
    (directory / FILLER).unlink(missing_ok=True)
    pad(directory / LOG)
    size = avail(directory) - leave
    assert size >= 0, f"less than {leave} bytes free already"
    fd = os.open(directory / FILLER, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        if size:
            os.posix_fallocate(fd, 0, size)
    finally:
        os.close(fd)
    assert avail(directory) == leave


def free(directory: Path) -> None:
    (directory / FILLER).unlink(missing_ok=True)


def images(*roots: Path) -> list[Path]:
    return sorted(p for root in roots for p in root.rglob("*.qcow2"))


def check_images(*roots: Path) -> int:
    """``qemu-img check`` of every image (VMs stopped): exit 0, no leak, no corruption."""
    found = images(*roots)
    assert found
    for image in found:
        proc = subprocess.run(["qemu-img", "check", str(image)], capture_output=True,
                              text=True, timeout=120)
        assert proc.returncode == 0, f"{image}: {proc.stdout}{proc.stderr}"
    return len(found)


def assert_running(env: HcEnv, name: str, label: str) -> None:
    row = vm_row(env, name)
    assert row["state"] == "running" and row["agent"] is True, f"{label}: {row}"
    proc = env.run("exec", name, "--", "/bin/true")
    assert proc.returncode == 0, f"{label}: {proc.stderr!r}"


def stop_cleanly(env: HcEnv, name: str) -> None:
    proc = env.run("stop-vm", name, "--force", check=True)
    # QEMU must get to finish its writes: a SIGKILL after `quit` left qcow2 metadata behind.
    assert b"(QMP quit)" in proc.stdout, proc.stdout
