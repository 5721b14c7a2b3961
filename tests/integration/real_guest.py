"""The real-distribution test guest: Debian 12 made with debootstrap (systemd, Debian's
qemu-guest-agent started by its udev rule, Debian's kernel with 9p/virtiofs as modules, Xvfb
on :0 and hcuser logged in on tty1 with a session process whose environment has DISPLAY=:0).

:func:`real_guest` builds it with ``scripts/build-real-guest.sh`` or takes it from the cache
(and fails, never skips, when it cannot). :func:`booted_real_guest` boots one VM of it through
the real CLI (:func:`defined_real_guest` only creates it), on a qcow2 overlay of its own:
nothing ever writes to the cached image.

The guest leaves the Hypercore share alone (not in fstab, never mounted by the guest itself):
whether it is mounted at ``/shared`` is Hypercore's doing.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from ..conftest import ROOT, HcEnv, _kill_leftover_qemus

BUILD_SCRIPT = ROOT / "scripts" / "build-real-guest.sh"
#: A fresh build takes about a minute on a fast mirror; allow for a slow one.
BUILD_TIMEOUT = 1800
#: Boot to the agent answering under TCG is 25-70 s (more on a loaded machine).
AGENT_WAIT = 180
USER = "hcuser"
UID = 1000


@dataclass(frozen=True)
class RealGuestImage:
    """The cached guest: a base disk that is only ever used as a backing file."""

    directory: Path
    build_seconds: float  # how long real_guest() took (a build or a cache check)

    @property
    def disk(self) -> Path:
        return self.directory / "disk.qcow2"

    @property
    def kernel(self) -> Path:
        return self.directory / "vmlinuz"

    @property
    def initrd(self) -> Path:
        return self.directory / "initrd.img"

    @property
    def append(self) -> str:
        return (self.directory / "cmdline").read_text().strip()

    def stamp(self) -> dict[str, str]:
        """The build stamp (``build-id``): key, package versions, sizes."""
        fields: dict[str, str] = {}
        for line in (self.directory / "build-id").read_text().splitlines():
            key, _, value = line.partition("=")
            fields.setdefault(key, value)
        return fields


def build_real_guest(*, force: bool = False) -> RealGuestImage:
    """Run the build script (a build, or a quick cache check) and return the image."""
    started = time.monotonic()
    argv = ["bash", str(BUILD_SCRIPT), *(["--force"] if force else [])]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=BUILD_TIMEOUT)
    except subprocess.TimeoutExpired:
        pytest.fail(f"building the real test guest took over {BUILD_TIMEOUT} s")
    if proc.returncode != 0:
        pytest.fail(f"building the real test guest failed ({proc.returncode}):\n"
                    f"{proc.stderr[-4000:]}")
    directory = Path(proc.stdout.strip().splitlines()[-1])
    image = RealGuestImage(directory, time.monotonic() - started)
    for path in (image.disk, image.kernel, image.initrd, directory / "cmdline"):
        if not path.is_file():
            pytest.fail(f"the real test guest build left no {path}")
    return image


@functools.cache
def real_guest() -> RealGuestImage:
    """The real test guest, built or cached (once per test process)."""
    return build_real_guest()


def overlay_disk(image: RealGuestImage, path: Path) -> Path:
    """A new qcow2 overlay at ``path`` backed by the cached image (which stays unwritten)."""
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(image.disk),
                    "-F", "qcow2", str(path)], check=True, capture_output=True, timeout=60)
    return path


def private_env(base: Path) -> HcEnv:
    """A Hypercore home and a short runtime dir under ``base``, TCG forced."""
    environ = dict(os.environ)
    environ.update(HYPERCORE_HOME=str(base / "home"), HYPERCORE_RUNTIME_DIR=str(base / "run"),
                   HYPERCORE_ACCEL="tcg")
    environ.pop("XDG_RUNTIME_DIR", None)
    return HcEnv(home=base / "home", runtime=base / "run", environ=environ)


def create_real_vm(env: HcEnv, image: RealGuestImage, name: str, disk: Path, *extra: str,
                   ram: str = "1024", cpus: str = "1") -> None:
    """``create-vm`` with the real guest's kernel, initrd and command line on ``disk``."""
    env.run("create-vm", name, ram, cpus, str(disk), "--kernel", str(image.kernel),
            "--initrd", str(image.initrd), f"--append={image.append}", *extra, check=True)


@dataclass(frozen=True)
class RealVm:
    env: HcEnv
    name: str
    disk: Path  # the VM's overlay
    boot_seconds: float  # `boot-vm --wait-agent` until it returned


def boot_real_vm(env: HcEnv, name: str, *, wait_agent: bool = True) -> float:
    """``boot-vm NAME --wait-agent`` (or a plain ``boot-vm NAME``); the seconds until it
    returned (with the agent: until the agent answered)."""
    started = time.monotonic()
    wait = ["--wait-agent", str(AGENT_WAIT)] if wait_agent else []
    env.run("boot-vm", name, *wait, check=True, timeout=AGENT_WAIT + 60)
    return time.monotonic() - started


@contextmanager
def defined_real_guest(name: str = "rg1", *extra: str, ram: str = "1024",
                       cpus: str = "1") -> Iterator[RealVm]:
    """One VM of the real guest in a private home, created but not booted (``boot_seconds``
    0); stopped (forced if running) and removed with its overlay afterwards."""
    image = real_guest()
    base = Path(tempfile.mkdtemp(prefix="hcrg-", dir="/tmp"))
    env = private_env(base)
    disk = overlay_disk(image, base / f"{name}.qcow2")
    try:
        create_real_vm(env, image, name, disk, *extra, ram=ram, cpus=cpus)
        yield RealVm(env, name, disk, 0.0)
    finally:
        env.run("stop-vm", name, "--force", timeout=90)
        _kill_leftover_qemus(env)
        shutil.rmtree(base, ignore_errors=True)


@contextmanager
def booted_real_guest(name: str = "rg1", *extra: str, ram: str = "1024",
                      cpus: str = "1", wait_agent: bool = True) -> Iterator[RealVm]:
    """:func:`defined_real_guest`, booted until its agent answers (``wait_agent``) or by a
    plain ``boot-vm`` that returns once QEMU runs."""
    with defined_real_guest(name, *extra, ram=ram, cpus=cpus) as vm:
        yield dataclasses.replace(vm, boot_seconds=boot_real_vm(vm.env, name,
                                                                wait_agent=wait_agent))
