"""A running VM whose guest never showed anything (no serial output, no agent answer) is
shown as such instead of "is qemu-ga installed?" (issue 12: a KVM guest on a nested host
sits at 100 % CPU and never runs). The watcher's :class:`LifeWatch` with real files and a
real process; the real QEMU path: tests/integration/test_monitor_no_life.py."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hypercore_tui.adapters.procstats import ProcessReading
from hypercore_tui.core.argv import accel_of
from hypercore_tui.core.models import VmState
from hypercore_tui.services.context import Context
from hypercore_tui.services.monitor import (
    AgentStatus,
    GuestInfoChanged,
    Monitor,
    MonitorNotice,
    MonitorSettings,
    NoSignOfLife,
    VmWatcher,
    liveness,
)


@pytest.mark.parametrize(("argv", "accel"), [
    (["qemu-system-x86_64", "-machine", "q35", "-accel", "kvm", "-cpu", "host"], "kvm"),
    (["qemu", "-accel", "tcg,thread=multi", "-accel", "kvm"], "tcg"),
    (["qemu", "-enable-kvm"], "kvm"),
    (["qemu", "-machine", "q35,accel=kvm:tcg"], "kvm"),
    (["qemu", "-M", "pc,accel=tcg"], "tcg"),
    (["qemu", "-m", "256M"], None),
    (["qemu", "-accel"], None),
])
def test_accel_of(argv: list[str], accel: str | None) -> None:
    """7 cases: the accelerator a QEMU command line asks for first, in its spellings."""
    assert accel_of(argv) == accel


def test_describe() -> None:
    """3 cases: KVM names the likely cause and the way out; TCG and unknown say what is
    known and where to look."""
    assert NoSignOfLife("kvm").describe("75s") == (
        "no sign of life: no serial output and no agent 75s after boot (under KVM on a "
        "nested host guests may never run; try HYPERCORE_ACCEL=tcg)")
    assert NoSignOfLife("tcg").describe("2m") == (
        "no sign of life: no serial output and no agent 2m after boot (under TCG; is it "
        "booting? v shows its screen)")
    assert NoSignOfLife(None).describe("2m").endswith("after boot (is it booting? v shows "
                                                      "its screen)")


@pytest.fixture
def qemu_like() -> Iterator[subprocess.Popen[bytes]]:
    """A real process whose command line says ``-accel kvm`` (as QEMU's would)."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)",
                             "-accel", "kvm"])
    # Until the child has exec'd, /proc/PID/cmdline is still pytest's (a loaded machine).
    deadline = time.monotonic() + 10
    while b"-accel" not in Path(f"/proc/{proc.pid}/cmdline").read_bytes():
        assert time.monotonic() < deadline, "the child never exec'd"
        time.sleep(0.01)
    yield proc
    proc.kill()
    proc.wait()


def make_watcher(tmp_path: Path, after: float = 60.0) -> tuple[VmWatcher, list[MonitorNotice]]:
    notices: list[MonitorNotice] = []
    ctx = Context.from_environ({"HYPERCORE_HOME": str(tmp_path / "home"),
                                "HYPERCORE_RUNTIME_DIR": str(tmp_path / "run")})
    vm = VmWatcher(Monitor(ctx, notices.append, MonitorSettings(no_sign_of_life_after=after)),
                   "web")
    vm.view.state, vm.view.agent = VmState.RUNNING, AgentStatus.SILENT
    vm.paths.vm_dir.mkdir(parents=True)
    vm.paths.run_dir.mkdir(parents=True)
    return vm, notices


def reading(pid: int, uptime: float) -> ProcessReading:
    return ProcessReading(pid=pid, timestamp=time.monotonic(), cpu_seconds=uptime,
                          rss_bytes=1, started_at=time.time() - uptime, thread_cpu_seconds={})


def set_mtime(path: Path, epoch: float) -> None:
    os.utime(path, (epoch, epoch))


def changes(notices: list[MonitorNotice]) -> int:
    return sum(isinstance(n, GuestInfoChanged) for n in notices)


def test_no_sign_of_life_is_seen_and_cleared(tmp_path: Path,
                                            qemu_like: subprocess.Popen[bytes],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """8 cases: nothing before the threshold; past it, a silent agent and an empty serial
    log give the verdict with QEMU's accelerator, one notice; output from an earlier boot
    (older than the pidfile) does not count; the next look waits LOOK_EVERY; output since
    the start clears it for good; an agent answer does too; a new QEMU starts over; an
    agent answering, or a VM that is paused, is never looked at."""
    monkeypatch.setattr(liveness, "LOOK_EVERY", 0.3)
    vm, notices = make_watcher(tmp_path)
    pid = qemu_like.pid
    paths = vm.paths
    paths.pidfile.write_text(f"{pid}\n")
    paths.serial_log.write_bytes(b"")

    vm.life.check(reading(pid, 59.0))
    assert vm.view.no_sign_of_life is None and changes(notices) == 0

    vm.life.check(reading(pid, 61.0))
    assert vm.view.no_sign_of_life == NoSignOfLife("kvm")
    assert changes(notices) == 1
    vm.life.check(reading(pid, 62.0))
    assert changes(notices) == 1  # the same verdict: no new notice

    # The log of an earlier boot (appended across boots): older than the pidfile.
    vm.life.forget()
    assert vm.view.no_sign_of_life is None
    paths.serial_log.write_bytes(b"an earlier boot's kernel log\n")
    set_mtime(paths.serial_log, time.time() - 600)
    vm.life.check(reading(pid, 65.0))
    assert vm.view.no_sign_of_life == NoSignOfLife("kvm")

    # The guest prints: cleared at the next look (not before LOOK_EVERY), for good.
    with paths.serial_log.open("ab") as fh:
        fh.write(b"SeaBIOS\n")
    set_mtime(paths.serial_log, time.time() + 1)  # past the pidfile whatever the clock tick
    vm.life.check(reading(pid, 66.0))
    assert vm.view.no_sign_of_life is not None
    time.sleep(0.35)
    vm.life.check(reading(pid, 67.0))
    assert vm.view.no_sign_of_life is None
    paths.serial_log.unlink()
    time.sleep(0.35)
    vm.life.check(reading(pid, 120.0))
    assert vm.view.no_sign_of_life is None

    # A new QEMU: looked at again; the agent answering ends it.
    vm.life.forget()
    vm.life.check(reading(pid, 61.0))
    assert vm.view.no_sign_of_life is not None
    vm.view.agent = AgentStatus.ANSWERING
    vm.life.check(reading(pid, 62.0))
    assert vm.view.no_sign_of_life is None
    vm.view.agent = AgentStatus.SILENT
    time.sleep(0.35)
    vm.life.check(reading(pid, 70.0))
    assert vm.view.no_sign_of_life is None

    # Paused: the agent cannot answer, the guest cannot print: not a verdict.
    vm.life.forget()
    vm.view.state = VmState.PAUSED
    vm.life.check(reading(pid, 600.0))
    assert vm.view.no_sign_of_life is None


def test_unknown_accelerator_and_missing_files(tmp_path: Path) -> None:
    """2 cases: a process whose command line cannot be read gives no accelerator; no
    pidfile and no serial log still give a verdict."""
    vm, _ = make_watcher(tmp_path, after=1.0)
    gone = subprocess.Popen(["/bin/true"])
    gone.wait()
    vm.life.check(reading(gone.pid, 5.0))
    assert vm.view.no_sign_of_life == NoSignOfLife(None)
