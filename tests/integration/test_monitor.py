"""The monitor service and `hypercore stats` against real QEMU (TCG) and the test guest."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from dataclasses import dataclass, field

import pytest

from hypercore_tui.core.models import VmState
from hypercore_tui.services.monitor import (
    AgentStatus,
    Monitor,
    MonitorNotice,
    MonitorSettings,
    VmsChanged,
    VmStateChanged,
    VmView,
)

from ..conftest import GuestImage, HcEnv, create_guest_vm
from ..helpers import wait_until_async

pytestmark = [pytest.mark.qemu, pytest.mark.timeout(240)]


@dataclass
class Recorder:
    notices: list[tuple[float, MonitorNotice]] = field(default_factory=list)

    def __call__(self, notice: MonitorNotice) -> None:
        self.notices.append((time.monotonic(), notice))

    def state_reached(self, name: str, state: VmState, after: float) -> float | None:
        for stamp, notice in self.notices:
            if (stamp >= after and isinstance(notice, VmStateChanged) and notice.name == name
                    and notice.new is state):
                return stamp
        return None


async def cli(env: HcEnv, *args: str) -> None:
    proc = await asyncio.to_thread(env.run, *args)
    assert proc.returncode == 0, f"hypercore {' '.join(args)}: {proc.stderr!r}"


def view_of(monitor: Monitor, name: str) -> VmView:
    view = monitor.view(name)
    assert view is not None
    return view


def test_monitor_follows_a_real_guest(hc_env: HcEnv, test_guest: GuestImage) -> None:
    asyncio.run(_follow_a_real_guest(hc_env, test_guest))


async def _follow_a_real_guest(env: HcEnv, guest: GuestImage) -> None:
    recorder = Recorder()
    monitor = Monitor(env.ctx, recorder, MonitorSettings(rescan_interval=1.0))
    monitor.set_focus("mon1")
    task = asyncio.create_task(monitor.run())
    try:
        # A VM defined after the monitor started is picked up by the rescan.
        await asyncio.to_thread(create_guest_vm, env, guest, "mon1")
        await wait_until_async("mon1 to be listed", lambda: monitor.view("mon1") is not None, 5)
        assert any(isinstance(n, VmsChanged) and "mon1" in n.names for _, n in recorder.notices)
        assert view_of(monitor, "mon1").state is VmState.STOPPED

        # Booted by the CLI while the monitor watches: attached, sampled.
        await cli(env, "boot-vm", "mon1", "--wait-agent", "60")
        booted = time.monotonic()
        view = view_of(monitor, "mon1")
        await wait_until_async("running", lambda: view.state is VmState.RUNNING, 3)
        await wait_until_async("a sample with rates", lambda: view.sample is not None
                               and view.sample.cpu_percent is not None
                               and view.sample.disk_wr_bps is not None, 5)
        sample = view.sample
        assert sample is not None and sample.cpu_percent is not None
        assert 0.0 <= sample.cpu_percent <= 100.0 + 20  # one vCPU + QEMU's own threads
        assert sample.rss_bytes is not None and sample.rss_bytes > 32 * 2**20
        assert sample.disk_rd_bytes is not None and sample.disk_wr_bytes is not None
        assert sample.uptime_seconds is not None and sample.uptime_seconds < 120
        assert view.watch == "events"
        # Per-vCPU figures for the focused VM (query-cpus-fast thread ids + psutil).
        await wait_until_async("per-vCPU percentages", lambda: view.sample is not None
                               and len(view.sample.vcpu_percent) >= 1
                               and all(v is not None for v in view.sample.vcpu_percent), 5)

        # Guest memory from the balloon, guest facts from the agent.
        await wait_until_async("guest memory", lambda: view.sample is not None
                               and view.sample.guest_mem_used_bytes is not None, 15)
        sample = view.sample
        assert sample is not None and sample.guest_mem_total_bytes is not None
        assert sample.guest_mem_used_bytes is not None
        assert 0 < sample.guest_mem_used_bytes < sample.guest_mem_total_bytes <= 256 * 2**20
        await wait_until_async("guest facts", lambda: view.guest is not None, 15)
        assert view.agent is AgentStatus.ANSWERING
        assert view.guest is not None and view.guest.hostname == "hc-testguest"
        assert "10.0.2.15" in view.guest.addresses
        print(f"guest memory and facts {time.monotonic() - booted:.1f}s after boot")

        # The guest writes 8 MiB to its disk: the block counters grow by that much.
        before = view.sample.disk_wr_bytes if view.sample else None
        assert before is not None
        await cli(env, "exec", "mon1", "--", "/bin/dd", "if=/dev/zero", "of=/dev/vda",
                  "bs=64k", "count=128", "conv=fsync")
        await wait_until_async("disk writes counted", lambda: view.sample is not None
                               and (view.sample.disk_wr_bytes or 0) >= before + 8 * 2**20, 5)
        read_before = view.sample.disk_rd_bytes if view.sample else None
        assert read_before is not None
        # A region the guest has not touched yet: not in its page cache, really read.
        await cli(env, "exec", "mon1", "--", "/bin/dd", "if=/dev/vda", "of=/dev/null",
                  "bs=64k", "skip=512", "count=64")
        await wait_until_async("disk reads counted", lambda: view.sample is not None
                               and (view.sample.disk_rd_bytes or 0) >= read_before + 4 * 2**20, 5)

        # Pause and resume from the CLI: QMP events change the state within a second.
        for verb, state in (("pause-vm", VmState.PAUSED), ("resume-vm", VmState.RUNNING)):
            sent = time.monotonic()
            await cli(env, verb, "mon1")
            returned = time.monotonic()
            await wait_until_async(f"{state.value} after {verb}",
                                   lambda s=state: view.state is s, 1.0)
            reached = recorder.state_reached("mon1", state, sent)
            assert reached is not None and reached - returned <= 1.0
            print(f"{verb}: state {state.value} {reached - returned:+.3f}s after the CLI "
                  "returned")

        # SIGKILL: shown as crashed (not stopped) within 2 s.
        pid = view.pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        killed = time.monotonic()
        took = await wait_until_async("crashed", lambda: view.state is VmState.CRASHED, 2.0)
        print(f"crash noticed {took:.2f}s after SIGKILL")
        assert recorder.state_reached("mon1", VmState.CRASHED, killed) is not None
        assert view.sample is None
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


def test_stats_json_contract(hc_env: HcEnv, running_vm: str) -> None:
    time.sleep(4)  # the balloon reports guest memory every 2 s
    proc = hc_env.run("stats", running_vm, "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    for key in ("cpu_percent", "rss_bytes", "disk_rd_bps", "disk_wr_bps"):
        assert key in data
    assert isinstance(data["cpu_percent"], float) and data["cpu_percent"] >= 0
    assert isinstance(data["rss_bytes"], int) and data["rss_bytes"] > 0
    assert isinstance(data["guest_mem_used_bytes"], int) and data["guest_mem_used_bytes"] > 0
    for key in ("disk_rd_bytes", "disk_wr_bytes"):
        assert isinstance(data[key], int) and data[key] >= 0
    for key in ("disk_rd_bps", "disk_wr_bps"):
        assert isinstance(data[key], float) and data[key] >= 0
    assert data["name"] == running_vm and data["state"] == "running"
    assert isinstance(data["pid"], int)
    assert data["agent"] is True and data["guest"]["hostname"] == "hc-testguest"

    text = hc_env.run("stats", running_vm)
    assert text.returncode == 0 and b"cpu " in text.stdout and b"disk write" in text.stdout

    missing = hc_env.run("stats", "nope", "--json")
    assert missing.returncode == 2 and missing.stderr.startswith(b"hypercore: error: ")
    hc_env.run("stop-vm", running_vm, "--force", check=True)
    stopped = hc_env.run("stats", running_vm, "--json")
    assert stopped.returncode == 1
    assert stopped.stderr == f"hypercore: error: {running_vm} is not running (stopped)\n".encode()
