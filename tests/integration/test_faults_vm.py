"""Real QEMU (TCG) killed or robbed of its runtime files in the middle of operations.

Each test kills QEMU with SIGKILL (or removes its runtime directory) at a bad moment and
checks that the CLI fails in one line, nothing is lost and the VM can be used again.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from hypercore_tui.adapters.process import process_alive

from ..conftest import HYPERCORE, GuestImage, HcEnv, create_guest_vm
from ..helpers import wait_until

pytestmark = pytest.mark.qemu


def vm_list(env: HcEnv) -> dict[str, dict[str, object]]:
    proc = env.run("list", "--json", check=True)
    return {row["name"]: row for row in json.loads(proc.stdout)}


def qemu_pid(env: HcEnv, name: str) -> int:
    pid = int(env.ctx.vm_paths(name).pidfile.read_text().strip())
    assert process_alive(pid)
    return pid


def lock_held(path: Path) -> bool:
    """True if another process holds an flock on ``path``."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)
    return False


def start_cli(env: HcEnv, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([*HYPERCORE, *args], env=env.environ, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def kill_and_wait(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while process_alive(pid):
        assert time.monotonic() < deadline, "QEMU survived SIGKILL"
        time.sleep(0.02)


def assert_one_error_line(proc: subprocess.Popen[bytes], label: str) -> str:
    _out, err = proc.communicate(timeout=60)
    text = err.decode(errors="replace")
    assert proc.returncode == 1, f"{label}: exit {proc.returncode}: {text}"
    assert "Traceback" not in text, text
    errors = [line for line in text.splitlines() if line.startswith("hypercore: error:")]
    assert len(errors) == 1, f"{label}: {text!r}"
    print(f"{label}: {errors[0]}")
    return errors[0]


def test_sigkill_during_live_snapshot(hc_env: HcEnv, test_guest: GuestImage) -> None:
    create_guest_vm(hc_env, test_guest, "fk1", "--no-shared")
    hc_env.run("boot-vm", "fk1", "--wait-agent", "60", check=True)
    paths = hc_env.ctx.vm_paths("fk1")
    pid = qemu_pid(hc_env, "fk1")
    # 48 MiB of random data in the guest's RAM: the RAM save takes long enough to hit.
    filled = hc_env.run("exec", "fk1", "--", "/bin/dd", "if=/dev/urandom", "of=/tmp/fill",
                        "bs=1M", "count=48")
    assert filled.returncode == 0, filled.stderr
    disk = paths.default_disk
    before = disk.stat().st_size
    snap = start_cli(hc_env, "snapshot", "create", "fk1", "s1")
    # QEMU writes the RAM state into the qcow2 file (its monitor does not answer during the
    # save): kill QEMU once 8 MiB of it have been written, long before the 48 MiB are.
    wait_until("the RAM save to start",
               lambda: disk.stat().st_size > before + (8 << 20) or snap.poll() is not None, 60,
               step=0.01)
    assert snap.poll() is None, "the snapshot finished before QEMU could be killed"
    kill_and_wait(pid)
    print(f"killed QEMU after {(disk.stat().st_size - before) >> 20} MiB of the save")
    assert_one_error_line(snap, "snapshot create killed")

    assert vm_list(hc_env)["fk1"]["state"] == "crashed"
    json.loads(paths.definition.read_text())
    check = subprocess.run(["qemu-img", "check", str(disk)], capture_output=True, text=True)
    # 0 = clean, 3 = leaked clusters only (wasted space, "no harm to data"); 2 = corruption.
    assert check.returncode in (0, 3), check.stdout + check.stderr
    assert "corrupt" not in (check.stdout + check.stderr).lower().replace("no corrupt", "")
    info = subprocess.run(["qemu-img", "snapshot", "-l", str(disk)], capture_output=True,
                          text=True, check=True)
    print(f"qemu-img check exit {check.returncode}: "
          f"{' '.join((check.stdout + check.stderr).split())!r}; snapshots after the "
          f"kill: {info.stdout.strip() or 'none'!r}")

    hc_env.run("boot-vm", "fk1", "--wait-agent", "60", check=True)
    assert vm_list(hc_env)["fk1"]["agent"] is True
    hc_env.run("stop-vm", "fk1", "--force", check=True)
    print("sigkill during live snapshot: 1 case")


def test_sigkill_during_copy_from_guest(hc_env: HcEnv, test_guest: GuestImage) -> None:
    create_guest_vm(hc_env, test_guest, "fk2", "--no-shared")
    hc_env.run("boot-vm", "fk2", "--wait-agent", "60", check=True)
    pid = qemu_pid(hc_env, "fk2")
    made = hc_env.run("exec", "fk2", "--", "/bin/dd", "if=/dev/urandom", "of=/tmp/big",
                      "bs=1M", "count=20")
    assert made.returncode == 0, made.stderr
    dest_dir = hc_env.home.parent / "dst"
    dest_dir.mkdir()
    dest = dest_dir / "big"
    cp = start_cli(hc_env, "cp", "--via", "agent", "fk2:/tmp/big", str(dest))
    # Kill once the transfer has started writing on the host side (a temp file appears).
    wait_until("the copy to start", lambda: any(dest_dir.iterdir()) or cp.poll() is not None,
               60, step=0.01)
    assert cp.poll() is None, "the copy finished before QEMU could be killed"
    kill_and_wait(pid)
    assert_one_error_line(cp, "cp guest->host killed")
    assert not dest.exists()
    assert list(dest_dir.iterdir()) == [], list(dest_dir.iterdir())
    print("sigkill during cp guest->host: 1 case")


def test_runtime_dir_removed_while_running(hc_env: HcEnv, test_guest: GuestImage) -> None:
    create_guest_vm(hc_env, test_guest, "fk3", "--no-shared")
    create_guest_vm(hc_env, test_guest, "fk4", "--no-shared")
    hc_env.run("boot-vm", "fk3", check=True)
    paths = hc_env.ctx.vm_paths("fk3")
    pid = qemu_pid(hc_env, "fk3")
    shutil.rmtree(paths.run_dir)

    listing = hc_env.run("list", "--json")
    assert listing.returncode == 0, listing.stderr
    rows = json.loads(listing.stdout)
    assert sorted(row["name"] for row in rows) == ["fk3", "fk4"]
    row = {r["name"]: r for r in rows}["fk3"]
    print(f"list after rm -rf of the run dir: state={row['state']} error={row.get('error')!r}")
    # QEMU still runs: it must not be shown as stopped (a boot would start a second QEMU).
    assert row["state"] == "running"
    assert "stop-vm fk3 --force" in str(row.get("error"))
    # A second QEMU must not be started for it.
    again = hc_env.run("boot-vm", "fk3")
    print(f"boot-vm while that QEMU runs: exit {again.returncode}: "
          f"{again.stderr.decode(errors='replace').strip()}")
    assert again.returncode != 0
    assert process_alive(pid)

    stop = hc_env.run("stop-vm", "fk3", "--force")
    print(f"stop-vm --force: exit {stop.returncode}: "
          f"{(stop.stdout + stop.stderr).decode(errors='replace').strip()}")
    assert stop.returncode == 0, stop.stderr
    deadline = time.monotonic() + 10
    while process_alive(pid):
        assert time.monotonic() < deadline, "stop-vm --force left QEMU running"
        time.sleep(0.05)
    assert vm_list(hc_env)["fk3"]["state"] == "stopped"
    hc_env.run("boot-vm", "fk3", check=True)
    hc_env.run("stop-vm", "fk3", "--force", check=True)
    print("runtime dir removed: 1 case")
