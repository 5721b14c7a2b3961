"""Two hypercore commands racing on one VM (real QEMU, TCG): the VM lock decides,
exactly one outcome wins, nothing is lost. (Two boots at once: test_lifecycle.)"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from hypercore_tui.adapters.process import process_alive

from ..conftest import HYPERCORE, GuestImage, HcEnv, create_guest_vm

pytestmark = pytest.mark.qemu


def find_by_pidfile_arg(pidfile: Path) -> int | None:  # independent of the product
    """The live process of this user started with ``-pidfile PIDFILE``, found in /proc:
    the way back to a QEMU whose pidfile was deleted (e.g. its runtime dir removed)."""
    target = str(pidfile).encode()
    uid = os.getuid()
    try:
        entries = list(os.scandir("/proc"))
    except OSError:
        return None
    for entry in entries:
        if not entry.name.isdigit():
            continue
        try:
            if entry.stat().st_uid != uid:
                continue
            with open(f"{entry.path}/cmdline", "rb") as fh:
                args = fh.read().split(b"\0")
        except OSError:
            continue
        for flag, value in zip(args, args[1:], strict=False):
            if flag == b"-pidfile" and value == target:
                pid = int(entry.name)
                if process_alive(pid):
                    return pid
    return None


def start_cli(env: HcEnv, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([*HYPERCORE, *args], env=env.environ, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def finish(proc: subprocess.Popen[bytes]) -> tuple[int, str]:
    _out, err = proc.communicate(timeout=120)
    text = err.decode(errors="replace")
    assert "Traceback" not in text, text
    if proc.returncode != 0:
        lines = [line for line in text.splitlines() if line.startswith("hypercore: error:")]
        assert len(lines) == 1, text
    return proc.returncode, text.strip()


def states(env: HcEnv) -> dict[str, str]:
    proc = env.run("list", "--json", check=True)
    return {row["name"]: row["state"] for row in json.loads(proc.stdout)}


def test_stop_while_snapshot_create_runs(hc_env: HcEnv, test_guest: GuestImage) -> None:
    create_guest_vm(hc_env, test_guest, "cc1", "--no-shared")
    hc_env.run("boot-vm", "cc1", "--wait-agent", "60", check=True)
    paths = hc_env.ctx.vm_paths("cc1")
    pid = int(paths.pidfile.read_text())
    # Random data in guest RAM so the RAM save lasts long enough to race with.
    filled = hc_env.run("exec", "cc1", "--", "/bin/dd", "if=/dev/urandom", "of=/tmp/fill",
                        "bs=1M", "count=48")
    assert filled.returncode == 0, filled.stderr
    disk = paths.default_disk
    before = disk.stat().st_size
    snap = start_cli(hc_env, "snapshot", "create", "cc1", "s1")
    deadline = time.monotonic() + 60
    while disk.stat().st_size <= before + (4 << 20) and snap.poll() is None:
        assert time.monotonic() < deadline, "the RAM save did not start"
        time.sleep(0.01)
    assert snap.poll() is None, "the snapshot finished before the stop could race it"
    stop = start_cli(hc_env, "stop-vm", "cc1", "--force")
    snap_rc, snap_err = finish(snap)
    stop_rc, stop_err = finish(stop)
    print(f"snapshot create: exit {snap_rc} {snap_err!r}; stop-vm: exit {stop_rc} {stop_err!r}")
    assert snap_rc == 0, snap_err
    # The stop waited for the VM lock (or said busy); it never cut the save short.
    assert stop_rc == 0 or "busy" in stop_err.lower() or "in use" in stop_err.lower(), stop_err
    if stop_rc != 0:
        hc_env.run("stop-vm", "cc1", "--force", check=True)
    assert not process_alive(pid)
    json.loads(paths.definition.read_text())
    listed = hc_env.run("snapshot", "list", "cc1", check=True).stdout.decode()
    assert "s1" in listed, listed
    check = subprocess.run(["qemu-img", "check", str(disk)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    print("stop during snapshot create: 1 case")


@pytest.mark.parametrize("delay", [-0.15, 0.0, 0.4, 1.2])
def test_delete_while_boot_runs(hc_env: HcEnv, test_guest: GuestImage, delay: float) -> None:
    create_guest_vm(hc_env, test_guest, "cc2", "--no-shared")
    paths = hc_env.ctx.vm_paths("cc2")
    # delay < 0: the delete starts first.
    first, second = ("delete-vm", "cc2", "--yes"), ("boot-vm", "cc2")
    if delay >= 0:
        first, second = second, first
    one = start_cli(hc_env, *first)
    time.sleep(abs(delay))
    two = start_cli(hc_env, *second)
    boot, delete_proc = (two, one) if delay < 0 else (one, two)
    boot_rc, boot_err = finish(boot)
    delete_rc, delete_text = finish(delete_proc)
    print(f"delay {delay}s: boot-vm exit {boot_rc} {boot_err!r}; "
          f"delete-vm exit {delete_rc} {delete_text!r}")
    qemu = find_by_pidfile_arg(paths.pidfile)
    if boot_rc == 0:
        # The boot won: the delete was refused (running, or busy) and nothing was removed.
        assert delete_rc != 0, delete_text
        assert qemu is not None and paths.definition.is_file()
        assert states(hc_env)["cc2"] == "running"
        hc_env.run("stop-vm", "cc2", "--force", check=True)
    else:
        # The delete won: the boot found no VM, and no QEMU runs for it.
        assert delete_rc == 0, delete_text
        assert "cc2" in boot_err and qemu is None
        assert "cc2" not in states(hc_env)
    # Never a running QEMU without a definition.
    assert qemu is None or paths.definition.is_file()
    print("delete during boot: 1 case")
