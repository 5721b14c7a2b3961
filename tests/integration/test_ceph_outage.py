"""The Ceph cluster stopped under a running VM, then started again.

These tests run their OWN persistent cluster (bluestore on a sparse file, its own
/tmp dir and free port, purged afterwards even on failure): they stop and restart it,
so they never touch the suite's shared memstore cluster (HYPERCORE_TEST_CEPH_CONF).

While the cluster is down every command must end within :data:`BOUND` seconds with
either its right output (where Ceph is not needed: ``list``, ``stats``) or one
``hypercore: error:`` line, never a hang or a traceback, and leave no stray QEMU and no
half-made VM or snapshot. Once the cluster is back, the guest's blocked I/O resumes and
nothing written before the outage is lost. Measured figures are printed (``-s``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest

from ..conftest import GuestImage, HcEnv
from ..helpers import QemuImgTripwire, wait_until, wait_until_async
from .conftest import CEPH_DEV, POOL, CephCluster, MiB, free_port, unique

pytestmark = [pytest.mark.ceph, pytest.mark.qemu, pytest.mark.timeout(900)]

#: Seconds any command may take while the cluster is down. Measured: about 5.2 s (the
#: 5 s librados timeout + start-up); generous for a loaded 2-core CI machine.
BOUND = 25.0
#: Seconds the guest's blocked I/O may take to finish once the cluster is back.
RESUME_BOUND = 120.0
DEAD = "did not answer within 5 s: is it running?"

BS = 64 * 1024
A_OFFSET, A_SIZE = 1 * MiB, 2 * MiB  # written and synced before the outage
B_OFFSET, B_SIZE = 8 * MiB, 1 * MiB  # written by the guest while the cluster is down
C_OFFSET = 12 * MiB  # written after the restart


def pattern(seed: str, size: int) -> bytes:
    """Deterministic, non-repeating bytes (sha256 chain)."""
    blocks = (hashlib.sha256(f"{seed}-{i}".encode()).digest() for i in range(size // 32))
    return b"".join(blocks)


# -- the cluster of this module -------------------------------------------------------


@dataclass
class OwnCluster:
    directory: Path
    port: int
    conf: str = ""

    def _script(self, command: str, timeout: float) -> subprocess.CompletedProcess[str]:
        env = dict(os.environ, HYPERCORE_CEPH_PORT=str(self.port))
        return subprocess.run(["bash", str(CEPH_DEV), command, "--dir", str(self.directory)],
                              capture_output=True, text=True, timeout=timeout, env=env,
                              check=False, stdin=subprocess.DEVNULL)

    def up(self) -> float:
        started = time.monotonic()
        proc = self._script("up", 240)
        if proc.returncode != 0:
            pytest.fail(f"ceph-dev.sh up failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
        self.conf = proc.stdout.strip().splitlines()[-1]
        return time.monotonic() - started

    def down(self) -> float:
        started = time.monotonic()
        proc = self._script("down", 120)
        assert proc.returncode == 0, proc.stderr
        return time.monotonic() - started

    def purge(self) -> None:
        self._script("purge", 120)

    @property
    def client(self) -> CephCluster:
        return CephCluster(self.conf)


@pytest.fixture(scope="module")
def own_cluster() -> Iterator[OwnCluster]:
    directory = Path(tempfile.mkdtemp(prefix="hc-ceph-outage-", dir="/tmp"))
    cluster = OwnCluster(directory / "ceph", free_port())
    try:
        took = cluster.up()
        print(f"\noutage cluster (bluestore) created in {took:.1f}s: {cluster.conf}")
        yield cluster
    finally:
        cluster.purge()
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def cluster(own_cluster: OwnCluster) -> OwnCluster:
    """The module's cluster, running (a test that failed mid-outage left it down)."""
    own_cluster.up()
    return own_cluster


@pytest.fixture
def outage_env(hc_env: HcEnv, cluster: OwnCluster) -> Iterator[HcEnv]:
    """``hc_env`` on this module's cluster, with the qemu-img tripwire of ``rbd_env``."""
    tripwire = QemuImgTripwire(hc_env.home.parent / "tripwire")
    hc_env.environ["PATH"] = tripwire.path_for(hc_env.environ)
    hc_env.environ["HYPERCORE_CEPH_CONF"] = cluster.conf
    yield hc_env
    # QEMUs first (hc_env kills leftovers too, but after this): an image in use stays.
    for pid in qemu_pids(hc_env):
        with contextlib.suppress(psutil.Error):
            psutil.Process(pid).kill()
    with contextlib.suppress(Exception):
        cluster.up()
        for image in IMAGES.pop(hc_env.home, []):
            cluster.client.purge(image)
    tripwire.assert_never_ran()


# -- helpers ----------------------------------------------------------------------------


def qemu_pids(env: HcEnv) -> list[int]:
    """QEMU processes of this test's home (their argv names its runtime dir)."""
    runtime = str(env.runtime)
    found = []
    for proc in psutil.process_iter(["pid", "name", "cmdline"]):
        with contextlib.suppress(psutil.Error):
            cmdline = proc.info["cmdline"] or []
            if (cmdline and "qemu-system" in os.path.basename(cmdline[0])
                    and any(runtime in arg for arg in cmdline)):
                found.append(proc.info["pid"])
    return found


def qemu_of(env: HcEnv, name: str) -> list[int]:
    runtime = str(env.runtime)
    out = []
    for pid in qemu_pids(env):
        with contextlib.suppress(psutil.Error):
            argv = psutil.Process(pid).cmdline()
            if f"{name},debug-threads=on" in argv and any(runtime in a for a in argv):
                out.append(pid)
    return out


def timed(env: HcEnv, *args: str, stdin: bytes | None = None, timeout: float = 180
          ) -> tuple[subprocess.CompletedProcess[bytes], float]:
    started = time.monotonic()
    proc = env.run(*args, stdin=stdin, timeout=timeout)
    return proc, time.monotonic() - started


def one_error_line(proc: subprocess.CompletedProcess[bytes]) -> str:
    err = proc.stderr.decode(errors="replace")
    assert err.startswith("hypercore: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    return err.strip()


#: Images each test made (by its home), purged after it.
IMAGES: dict[Path, list[str]] = {}


def rbd_vm(env: HcEnv, guest: GuestImage, name: str) -> str:
    image = unique(name)
    IMAGES.setdefault(env.home, []).append(image)
    env.run("create-vm", name, "256", "1", f"rbd:{POOL}/{image}", "--disk-size", "32M",
            "--kernel", str(guest.kernel), "--initrd", str(guest.initrd),
            f"--append={guest.append}", "--no-shared", check=True)
    return image


def guest_write(env: HcEnv, name: str, data: bytes, offset: int) -> None:
    proc = env.run("exec", name, "--stdin", "--", "/bin/dd", "of=/dev/vda", f"bs={BS}",
                   f"seek={offset // BS}", "conv=fsync", stdin=data)
    assert proc.returncode == 0, proc.stderr


def guest_read(env: HcEnv, name: str, offset: int, size: int, *, timeout: float = 60
               ) -> bytes:
    proc = env.run("exec", name, "--timeout", str(timeout), "--", "/bin/dd", "if=/dev/vda",
                   f"bs={BS}", f"skip={offset // BS}", f"count={size // BS}", "iflag=direct",
                   timeout=timeout + 30)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def start_blocked_write(env: HcEnv, name: str, data: bytes, offset: int) -> None:
    """The guest writes ``data`` at ``offset`` and syncs, in the background: with the
    cluster down the sync blocks; ``/tmp/b.done`` gets dd's status when it ends."""
    env.run("exec", name, "--stdin", "--", "/bin/dd", "of=/tmp/b.bin", stdin=data,
            check=True)
    script = (f"(dd if=/tmp/b.bin of=/dev/vda bs={BS} seek={offset // BS} conv=fsync; "
              "echo $? > /tmp/b.done) </dev/null >/dev/null 2>&1 &")
    env.run("exec", name, "--", "/bin/sh", "-c", script, check=True)


def blocked_write_status(env: HcEnv, name: str) -> str | None:
    proc = env.run("exec", name, "--timeout", "20", "--", "/bin/cat", "/tmp/b.done",
                   timeout=60)
    return proc.stdout.decode().strip() if proc.returncode == 0 else None


def listed(env: HcEnv) -> dict[str, dict[str, Any]]:
    proc = env.run("list", "--json", check=True)
    return {row["name"]: row for row in json.loads(proc.stdout)}


# -- the cluster stops under two running VMs, then comes back ----------------------------


def test_running_vms_through_a_cluster_outage(outage_env: HcEnv, cluster: OwnCluster,
                                              test_guest: GuestImage) -> None:
    """One outage, two running VMs (booted in parallel): ``alive`` rides it out, ``stuck``
    is stopped during it. 25 cases.

    ``alive`` (21): data written before the outage (1); during it, 9 commands each bounded
    with the right output or one error line (list, stats, snapshot list, snapshot create,
    storage list, ceph status, create-vm, boot-vm, the running VM's agent), no stray QEMU
    or half-made VM/snapshot (3); the dashboard (monitor keeps sampling, storage pane and
    snapshots pane give one-line errors, the UI loop never stalls) (4); after the restart
    the blocked guest write completes, new I/O works, old data intact, graceful stop (4).

    ``stuck`` (4): a graceful stop while the guest's I/O waits on the stopped cluster fails
    with one line naming --force, within its --timeout (1); --force kills QEMU within a
    bound and leaves no runtime files (1); after the restart the VM boots again once the
    killed QEMU's watch expires (one-line refusal until then) (1), and the data synced
    before the outage is intact (1)."""
    env = outage_env
    figures: dict[str, float] = {}
    stuck_figures: dict[str, float] = {}
    image = rbd_vm(env, test_guest, "alive")
    stuck_image = rbd_vm(env, test_guest, "stuck")
    rbd_vm(env, test_guest, "idle")
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        boots = [pool.submit(timed, env, "boot-vm", name, "--wait-agent", "120")
                 for name in ("alive", "stuck")]
        for future in boots:
            boot, figures["boot (two in parallel)"] = future.result()
            assert boot.returncode == 0, boot.stderr

    data_a, data_b, data_c = (pattern("a", A_SIZE), pattern("b", B_SIZE),
                              pattern("c", B_SIZE))
    data_f = pattern("force", A_SIZE)
    guest_write(env, "alive", data_a, A_OFFSET)
    guest_write(env, "stuck", data_f, A_OFFSET)
    assert guest_read(env, "alive", A_OFFSET, A_SIZE) == data_a
    assert cluster.client.read(image, A_SIZE, A_OFFSET) == data_a  # really in Ceph
    idle_definition = (env.home / "vms" / "idle" / "vm.json").read_bytes()
    [stuck_pid] = qemu_of(env, "stuck")

    figures["down"] = cluster.down()
    outage_started = time.monotonic()
    start_blocked_write(env, "alive", data_b, B_OFFSET)
    start_blocked_write(env, "stuck", pattern("lost", B_SIZE), B_OFFSET)
    time.sleep(2)
    # The guests' syncs wait for Ceph.
    assert blocked_write_status(env, "alive") is None
    assert blocked_write_status(env, "stuck") is None

    # -- stuck: stopped while its QEMU waits on the cluster ----------------------------
    graceful, stuck_figures["graceful stop (--timeout 10)"] = timed(
        env, "stop-vm", "stuck", "--timeout", "10")
    assert graceful.returncode == 1
    assert "stop-vm stuck --force" in one_error_line(graceful)
    assert psutil.pid_exists(stuck_pid)

    force, stuck_figures["force stop"] = timed(env, "stop-vm", "stuck", "--force")
    assert force.returncode == 0, force.stderr
    assert stuck_figures["force stop"] < BOUND
    assert (not psutil.pid_exists(stuck_pid)
            or psutil.Process(stuck_pid).status() == psutil.STATUS_ZOMBIE)
    assert qemu_of(env, "stuck") == []
    assert listed(env)["stuck"]["state"] == "stopped"
    leftovers = [p.name for p in env.runtime.glob("*/stuck/*") if not p.name.endswith(".lock")]
    assert leftovers == []

    # -- alive: commands while the cluster is down ----------------------------------------
    rows_proc, figures["list"] = timed(env, "list", "--json")
    assert rows_proc.returncode == 0, rows_proc.stderr
    rows = {row["name"]: row for row in json.loads(rows_proc.stdout)}
    assert rows["alive"]["state"] == "running" and rows["idle"]["state"] == "stopped"

    stats, figures["stats"] = timed(env, "stats", "alive", "--json")
    assert stats.returncode == 0, stats.stderr
    assert json.loads(stats.stdout)["rss_bytes"] > 0

    agent, figures["exec (agent)"] = timed(env, "exec", "alive", "--", "/bin/echo", "alive")
    assert agent.returncode == 0 and agent.stdout == b"alive\n", agent.stderr

    failing = {
        "snapshot list": ("snapshot", "list", "alive"),
        "snapshot create": ("snapshot", "create", "alive", "during", "--disk-only"),
        "storage list": ("storage", "list"),
        "ceph status": ("ceph", "status"),
        "create-vm": ("create-vm", "late", "64", "1", f"rbd:{POOL}/{unique('late')}",
                      "--disk-size", "8M"),
        "boot-vm": ("boot-vm", "idle", "--wait-agent", "60"),
    }
    for what, args in failing.items():
        proc, figures[what] = timed(env, *args)
        assert proc.returncode == 1, (what, proc.stdout, proc.stderr)
        line = one_error_line(proc)
        assert f"Ceph cluster at {cluster.conf} {DEAD}" in line, line
        assert proc.stdout == b"", (what, proc.stdout)
    assert not (env.home / "vms" / "late").exists()
    assert (env.home / "vms" / "idle" / "vm.json").read_bytes() == idle_definition
    assert qemu_of(env, "idle") == [] and len(qemu_of(env, "alive")) == 1
    assert not list(env.runtime.glob("*/idle/qemu.pid"))
    assert listed(env)["alive"]["state"] == "running"

    # -- the dashboard while the cluster is down --------------------------------------
    figures.update(asyncio.run(_dashboard_during_outage(env, cluster.conf)))
    for what, seconds in figures.items():
        if what not in ("boot (two in parallel)", "down"):
            assert seconds < BOUND, f"{what} took {seconds:.1f}s during the outage"
    assert blocked_write_status(env, "alive") is None  # still waiting for the cluster
    figures["outage"] = time.monotonic() - outage_started

    # -- the cluster comes back ---------------------------------------------------------
    figures["up"] = cluster.up()
    back = time.monotonic()
    # stuck tries to boot again (refused while the killed QEMU's watch lingers, ~30 s on
    # the OSD) beside alive's checks.
    refusals: list[str] = []

    def boots_again() -> bool:
        proc = env.run("boot-vm", "stuck", "--wait-agent", "120", timeout=240)
        if proc.returncode == 0:
            return True
        refusals.append(one_error_line(proc))
        return False

    def boot_stuck() -> float:
        wait_until("the force-stopped VM to boot again", boots_again, 120, step=2)
        return time.monotonic() - back

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        stuck_boot = pool.submit(boot_stuck)
        wait_until("the guest's blocked write to finish",
                   lambda: blocked_write_status(env, "alive") is not None, RESUME_BOUND, step=0.5)
        figures["blocked write done after up"] = time.monotonic() - back
        assert blocked_write_status(env, "alive") == "0"
        started = time.monotonic()
        guest_write(env, "alive", data_c, C_OFFSET)
        figures["new write+sync after resume"] = time.monotonic() - started
        assert guest_read(env, "alive", A_OFFSET, A_SIZE) == data_a
        assert guest_read(env, "alive", B_OFFSET, B_SIZE) == data_b
        assert guest_read(env, "alive", C_OFFSET, B_SIZE) == data_c

        # Nothing half-made: the refused snapshot does not exist, not even later.
        snaps = env.run("snapshot", "list", "alive", "--json", check=True)
        assert json.loads(snaps.stdout) == []
        assert cluster.client.stat(image).snapshots == ()

        stop, figures["graceful stop"] = timed(env, "stop-vm", "alive", "--timeout", "120")
        assert stop.returncode == 0, stop.stderr
        assert qemu_of(env, "alive") == []
        for offset, data in ((A_OFFSET, data_a), (B_OFFSET, data_b), (C_OFFSET, data_c)):
            assert cluster.client.read(image, len(data), offset) == data

        # -- stuck boots again once the killed QEMU's watch is gone ---------------------------
        stuck_figures["boot again after up"] = stuck_boot.result()
    for line in refusals:  # the killed QEMU's watch, until the OSD drops it
        assert "is open by 1 client(s)" in line and "killed while the cluster was down" \
            in line, line
    assert guest_read(env, "stuck", A_OFFSET, A_SIZE) == data_f
    env.run("stop-vm", "stuck", "--timeout", "120", check=True)
    assert qemu_pids(env) == []
    assert cluster.client.read(stuck_image, A_SIZE, A_OFFSET) == data_f
    print("\nCeph outage under a running VM (seconds): "
          + ", ".join(f"{k} {v:.1f}" for k, v in figures.items()))
    print(f"force stop under the outage (seconds; {len(refusals)} refused boots while the "
          "watch lingered): " + ", ".join(f"{k} {v:.1f}" for k, v in stuck_figures.items()))


async def _dashboard_during_outage(env: HcEnv, conf: str) -> dict[str, float]:
    """The headless dashboard (LiveBackend): samples of the running VM keep coming,
    the storage and snapshots panes show one-line errors, the UI loop never stalls."""
    from textual.widgets import Static

    from hypercore_tui.services.context import Context
    from hypercore_tui.ui.app import HypercoreApp
    from hypercore_tui.ui.backend import LiveBackend
    from hypercore_tui.ui.widgets.storage_pane import StoragePane

    environ = {k: v for k, v in env.environ.items() if k not in ("TMUX", "DISPLAY")}
    app = HypercoreApp(LiveBackend(Context.from_environ(environ)), environ=environ)
    figures: dict[str, float] = {}
    worst = 0.0

    async def heartbeat() -> None:
        nonlocal worst
        last = time.monotonic()
        while True:
            await asyncio.sleep(0.05)
            now = time.monotonic()
            worst = max(worst, now - last)
            last = now

    async with app.run_test(size=(120, 36)) as pilot:
        beat = asyncio.create_task(heartbeat())
        try:
            await wait_until_async("the running VM selected",
                                   lambda: app.dashboard.selected == "alive", BOUND)
            view = app.monitor.view("alive")
            assert view is not None
            await wait_until_async("a sample", lambda: view.sample is not None, BOUND)
            stamps: list[float] = []

            def new_samples() -> bool:
                if view.sample is not None and (not stamps
                                                or view.sample.timestamp != stamps[-1]):
                    stamps.append(view.sample.timestamp)
                return len(stamps) >= 4

            await wait_until_async("samples during the outage", new_samples, 4 * BOUND)
            figures["dashboard sample gap"] = max(b - a for a, b in zip(stamps, stamps[1:],
                                                                          strict=False))
            assert view.state.value == "running"

            await pilot.press("4")
            pane = app.query_one(StoragePane)
            pane.refresh_report()
            figures["storage pane error"] = await wait_until_async(
                "the storage pane's error", lambda: pane.error is not None, BOUND)
            error = pane.error or ""
            assert f"Ceph cluster at {conf} {DEAD}" in error and "\n" not in error
            status = str(pane.query_one("#storage-status", Static).render())
            assert "did not answer" in status
            assert "unavailable" in str(pane.query_one("#storage-health", Static).render())

            await pilot.press("2")
            title = app.dashboard.snapshots_pane.query_one("#snap-title", Static)
            figures["snapshots pane error"] = await wait_until_async(
                "the snapshots pane's error", lambda: DEAD in str(title.render()), BOUND)
            assert "\n" not in str(title.render()).strip()
            await pilot.press("1")
            await pilot.pause(0.5)
            assert view.state.value == "running"
        finally:
            beat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beat
    figures["dashboard worst loop stall"] = worst
    assert worst < 2.5, f"the dashboard's loop stalled for {worst:.2f}s"
    assert app.return_code != 1  # no crash
    return figures
