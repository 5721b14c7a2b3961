"""Shared fixtures: private Hypercore homes, the real test guest, real VMs."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from hypercore_tui.services.context import Context

ROOT = Path(__file__).resolve().parent.parent
HYPERCORE = [sys.executable, "-m", "hypercore_tui"]


@dataclass(frozen=True)
class GuestImage:
    directory: Path

    @property
    def kernel(self) -> Path:
        # The uncompressed kernel boots directly (PVH): ~3 s faster under TCG than vmlinuz.
        vmlinux = self.directory / "vmlinux"
        return vmlinux if vmlinux.is_file() else self.directory / "vmlinuz"

    @property
    def initrd(self) -> Path:
        return self.directory / "initrd.img"

    @property
    def append(self) -> str:
        return (self.directory / "cmdline").read_text().strip()


@dataclass
class HcEnv:
    """A private HYPERCORE_HOME and runtime dir, TCG forced, for one test."""

    home: Path
    runtime: Path
    environ: dict[str, str]

    @property
    def ctx(self) -> Context:
        return Context.from_environ(self.environ)

    def run(self, *args: str, stdin: bytes | None = None, timeout: float = 120,
            check: bool = False) -> subprocess.CompletedProcess[bytes]:
        """Run the real `hypercore` command in a child process."""
        proc = subprocess.run([*HYPERCORE, *args], env=self.environ, input=stdin,
                              capture_output=True, timeout=timeout,
                              stdin=None if stdin is not None else subprocess.DEVNULL)
        if check and proc.returncode != 0:
            raise AssertionError(f"hypercore {' '.join(args)} failed ({proc.returncode}): "
                                 f"{proc.stderr.decode(errors='replace')}")
        return proc


@contextlib.contextmanager
def private_hc_env() -> Iterator[HcEnv]:
    """A private HYPERCORE_HOME and runtime dir; what ran in it is killed and it is
    removed afterwards (``hc_env`` for one test; a module-scoped fixture may share one)."""
    # Short paths: AF_UNIX socket paths are limited to 107 bytes.
    base = Path(tempfile.mkdtemp(prefix="hc-", dir="/tmp"))
    home, runtime = base / "home", base / "run"
    environ = dict(os.environ)
    environ.update(HYPERCORE_HOME=str(home), HYPERCORE_RUNTIME_DIR=str(runtime),
                   HYPERCORE_ACCEL="tcg")
    environ.pop("XDG_RUNTIME_DIR", None)
    env = HcEnv(home=home, runtime=runtime, environ=environ)
    try:
        yield env
    finally:
        _kill_leftover_qemus(env)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def hc_env() -> Iterator[HcEnv]:
    with private_hc_env() as env:
        yield env


def _kill_leftover_qemus(env: HcEnv) -> None:
    """Whatever a failed test left running in this home is killed."""
    for pidfile in env.runtime.glob("*/*/qemu.pid"):
        try:
            pid = int(pidfile.read_text().strip())
            os.kill(pid, 9)
        except (OSError, ValueError):
            pass


@pytest.fixture(scope="session")
def test_guest() -> GuestImage:
    """The real test guest (Debian kernel + busybox + qemu-ga), built or cached."""
    script = ROOT / "scripts" / "build-test-guest.sh"
    proc = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        pytest.fail(f"building the test guest failed:\n{proc.stderr[-3000:]}")
    directory = Path(proc.stdout.strip().splitlines()[-1])
    guest = GuestImage(directory)
    assert guest.kernel.is_file() and guest.initrd.is_file()
    return guest


def create_guest_vm(env: HcEnv, guest: GuestImage, name: str, *extra: str,
                    ram: str = "256") -> None:
    env.run("create-vm", name, ram, "1", "--disk-size", "64M", "--kernel", str(guest.kernel),
            "--initrd", str(guest.initrd), f"--append={guest.append}", *extra, check=True)


@pytest.fixture
def running_vm(hc_env: HcEnv, test_guest: GuestImage) -> Iterator[str]:
    """A booted test guest whose agent answers; force-stopped afterwards."""
    create_guest_vm(hc_env, test_guest, "tg1")
    hc_env.run("boot-vm", "tg1", "--wait-agent", "60", check=True)
    yield "tg1"
    hc_env.run("stop-vm", "tg1", "--force")


def run_async(coro: object) -> object:
    return asyncio.run(coro)  # type: ignore[arg-type]
