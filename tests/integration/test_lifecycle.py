"""The VM lifecycle against real QEMU (TCG) booting the real test guest."""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import signal
import subprocess
import time

import pytest

from hypercore_tui.adapters.fs import FileLock
from hypercore_tui.adapters.process import process_alive
from hypercore_tui.core.layout import socket_lock
from hypercore_tui.core.models import VmState
from hypercore_tui.services import lifecycle

from ..conftest import HYPERCORE, GuestImage, HcEnv, create_guest_vm

pytestmark = pytest.mark.qemu


def vm_list(env: HcEnv) -> dict[str, dict[str, object]]:
    proc = env.run("list", "--json", check=True)
    return {row["name"]: row for row in json.loads(proc.stdout)}


def qemu_pid(env: HcEnv, name: str) -> int:
    pid = vm_list(env)[name]["pid"]
    assert isinstance(pid, int)
    return pid


def test_boot_agent_exec_graceful_stop(hc_env: HcEnv, test_guest: GuestImage) -> None:
    create_guest_vm(hc_env, test_guest, "life1")
    assert vm_list(hc_env)["life1"]["state"] == "stopped"

    started = time.monotonic()
    boot = hc_env.run("boot-vm", "life1", "--wait-agent", "60")
    assert boot.returncode == 0, boot.stderr
    boot_to_agent = time.monotonic() - started
    print(f"boot-vm to agent answering (TCG): {boot_to_agent:.2f}s")

    row = vm_list(hc_env)["life1"]
    assert row["state"] == "running" and row["agent"] is True
    pid = qemu_pid(hc_env, "life1")

    out = hc_env.run("exec", "life1", "--", "/bin/sh", "-c", "echo hello from $(hostname); exit 5")
    assert out.returncode == 5
    assert out.stdout == b"hello from hc-testguest\n"

    err = hc_env.run("exec", "life1", "--", "/bin/sh", "-c", "echo oops >&2")
    assert err.returncode == 0 and err.stderr == b"oops\n"

    piped = hc_env.run("exec", "life1", "--stdin", "--", "/bin/cat", stdin=b"line1\n\x00\xffend")
    assert piped.returncode == 0 and piped.stdout == b"line1\n\x00\xffend"

    stop = hc_env.run("stop-vm", "life1", "--timeout", "60")
    assert stop.returncode == 0, stop.stderr
    assert b"guest agent" in stop.stdout
    assert not process_alive(pid)
    assert vm_list(hc_env)["life1"]["state"] == "stopped"


def test_force_stop_and_crash_detection(hc_env: HcEnv, test_guest: GuestImage) -> None:
    create_guest_vm(hc_env, test_guest, "life2")
    hc_env.run("boot-vm", "life2", check=True)
    pid = qemu_pid(hc_env, "life2")
    stop = hc_env.run("stop-vm", "life2", "--force")
    assert stop.returncode == 0, stop.stderr
    assert not process_alive(pid)
    assert vm_list(hc_env)["life2"]["state"] == "stopped"

    hc_env.run("boot-vm", "life2", check=True)
    pid = qemu_pid(hc_env, "life2")
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 2
    while process_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert vm_list(hc_env)["life2"]["state"] == "crashed"
    # A crashed VM boots again (stale runtime files are cleaned up first).
    hc_env.run("boot-vm", "life2", check=True)
    assert vm_list(hc_env)["life2"]["state"] == "running"
    hc_env.run("stop-vm", "life2", "--force", check=True)


def test_vm_outlives_hypercore_and_tmux(hc_env: HcEnv, test_guest: GuestImage) -> None:
    """Boot from inside a real tmux session, then kill the tmux server: the VM lives on."""
    create_guest_vm(hc_env, test_guest, "life3")
    socket_name = f"hc-test-{os.getpid()}"
    env_args = " ".join(f"{k}={shlex.quote(v)}" for k, v in hc_env.environ.items()
                        if k.startswith("HYPERCORE_") or k == "PATH")
    command = f"env {env_args} {' '.join(map(shlex.quote, HYPERCORE))} boot-vm life3; sleep 600"
    subprocess.run(["tmux", "-L", socket_name, "new-session", "-d", "-s", "boot", command],
                   check=True, env=hc_env.environ)
    try:
        deadline = time.monotonic() + 120
        while vm_list(hc_env)["life3"]["state"] != "running":
            assert time.monotonic() < deadline, "boot inside tmux did not finish"
            time.sleep(0.2)
    finally:
        subprocess.run(["tmux", "-L", socket_name, "kill-server"], check=False)
    pid = qemu_pid(hc_env, "life3")
    time.sleep(1.0)
    assert process_alive(pid)
    assert vm_list(hc_env)["life3"]["state"] == "running"
    assert os.getsid(pid) != os.getsid(0)  # QEMU runs in a session of its own
    hc_env.run("stop-vm", "life3", "--force", check=True)


def test_pause_resume_reset(hc_env: HcEnv, test_guest: GuestImage) -> None:
    create_guest_vm(hc_env, test_guest, "life4")
    hc_env.run("boot-vm", "life4", check=True)
    hc_env.run("pause-vm", "life4", check=True)
    assert vm_list(hc_env)["life4"]["state"] == "paused"
    hc_env.run("resume-vm", "life4", check=True)
    assert vm_list(hc_env)["life4"]["state"] == "running"
    hc_env.run("reset-vm", "life4", check=True)
    assert vm_list(hc_env)["life4"]["state"] == "running"
    # A paused VM still stops gracefully (it is resumed first).
    hc_env.run("pause-vm", "life4", check=True)
    stop = hc_env.run("stop-vm", "life4", "--timeout", "90")
    assert stop.returncode == 0, stop.stderr


def test_two_boots_at_once_exactly_one_wins(hc_env: HcEnv, test_guest: GuestImage) -> None:
    create_guest_vm(hc_env, test_guest, "race1")
    procs = [subprocess.Popen([*HYPERCORE, "boot-vm", "race1"], env=hc_env.environ,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for _ in range(2)]
    results = [(p.wait(120), p.stderr.read() if p.stderr else b"") for p in procs]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 1], results
    loser = [err for code, err in results if code == 1][0]
    assert b"already running" in loser
    assert loser.startswith(b"hypercore: error: ") and loser.count(b"\n") == 1
    hc_env.run("stop-vm", "race1", "--force", check=True)


def test_stop_timeout_names_force(hc_env: HcEnv, test_guest: GuestImage) -> None:
    # No agent in the guest (hc.noagent=1; with one, a guest that powers off within the
    # agent's 1 s grace stops "in 0 s"): the graceful path is the ACPI button, which the
    # test guest ignores.
    hc_env.run("create-vm", "slow1", "256", "1", "--disk-size", "64M", "--kernel",
               str(test_guest.kernel), "--initrd", str(test_guest.initrd),
               f"--append={test_guest.append} hc.noagent=1", check=True)
    hc_env.run("boot-vm", "slow1", check=True)
    stop = hc_env.run("stop-vm", "slow1", "--timeout", "0")
    if stop.returncode == 0:
        pytest.fail("a graceful stop cannot finish in 0 s")
    assert stop.returncode == 1
    assert b"--force" in stop.stderr
    hc_env.run("stop-vm", "slow1", "--force")  # may already be off by now
    assert vm_list(hc_env)["slow1"]["state"] == "stopped"


def test_delete_refuses_running_and_removes_stopped(hc_env: HcEnv,
                                                    test_guest: GuestImage) -> None:
    create_guest_vm(hc_env, test_guest, "del1")
    hc_env.run("boot-vm", "del1", check=True)
    refused = hc_env.run("delete-vm", "del1", "--yes")
    assert refused.returncode == 1 and b"stop it first" in refused.stderr
    hc_env.run("stop-vm", "del1", "--force", check=True)
    unconfirmed = hc_env.run("delete-vm", "del1")
    assert unconfirmed.returncode == 2 and b"--yes" in unconfirmed.stderr
    assert (hc_env.home / "vms" / "del1" / "vm.json").exists()
    hc_env.run("delete-vm", "del1", "--yes", check=True)
    assert not (hc_env.home / "vms" / "del1").exists()
    assert "del1" not in vm_list(hc_env)


def test_service_state_matches_cli(hc_env: HcEnv, test_guest: GuestImage) -> None:
    create_guest_vm(hc_env, test_guest, "svc1")
    hc_env.run("boot-vm", "svc1", check=True)
    status = asyncio.run(lifecycle.vm_status(hc_env.ctx, "svc1", check_agent=False))
    assert status.state is VmState.RUNNING and status.pid == qemu_pid(hc_env, "svc1")
    hc_env.run("stop-vm", "svc1", "--force", check=True)
    status = asyncio.run(lifecycle.vm_status(hc_env.ctx, "svc1"))
    assert status.state is VmState.STOPPED and status.pid is None


def test_list_never_waits_on_agents(hc_env: HcEnv, test_guest: GuestImage) -> None:
    """`list` with an agent that answers, one in use by another hypercore process (its
    lock held), and three that never will: a guest without qemu-ga (its port never
    opens), a guest whose qemu-ga is stopped (SIGSTOP: its port stays open) and a QEMU
    with no kernel (SeaBIOS idles). The old code waited 1.5 s for each silent agent (all
    at once) and 1.5 s for a held lock; now nothing is waited for beyond a 0.3 s ping."""
    env = hc_env
    create_guest_vm(env, test_guest, "la1", "--no-shared", ram="128")
    create_guest_vm(env, test_guest, "lhung", "--no-shared", ram="128")
    env.run("create-vm", "lnoag", "128", "1", "--disk-size", "64M", "--no-shared",
            "--kernel", str(test_guest.kernel), "--initrd", str(test_guest.initrd),
            f"--append={test_guest.append} hc.noagent=1", check=True)
    env.run("create-vm", "lbios", "64", "1", "--disk-size", "1M", "--net", "none",
            "--no-shared", check=True)
    env.run("create-vm", "loff", "64", "1", "--disk-size", "1M", "--net", "none",
            "--no-shared", check=True)
    for name in ("la1", "lhung"):
        env.run("boot-vm", name, "--wait-agent", "90", check=True, timeout=180)
    for name in ("lnoag", "lbios"):
        env.run("boot-vm", name, check=True)
    env.run("exec", "lhung", "--", "/bin/sh", "-c",
            "(sleep 1; kill -STOP $(cat /run/qemu-ga.pid)) </dev/null >/dev/null 2>&1 &",
            check=True)
    time.sleep(8)  # qemu-ga stopped; the guest without one past its boot

    expected = {"la1": (True, "answering"), "lhung": (False, "silent"),
                "lnoag": (False, "not running"), "lbios": (False, "not running"),
                "loff": (False, "not running")}
    started = time.monotonic()
    statuses = asyncio.run(lifecycle.list_vms(env.ctx))
    took = time.monotonic() - started
    print(f"\n  list_vms, 1 agent answering, 3 silent: {took:.2f}s")
    assert {s.name: (s.agent, s.agent_state.value) for s in statuses} == expected
    assert took < 1.2, "list waited on a silent agent"

    started = time.monotonic()
    rows = vm_list(env)
    took = time.monotonic() - started
    print(f"  hypercore list --json (a new process): {took:.2f}s")
    assert {n: (r["agent"], r["agent_state"]) for n, r in rows.items()} == expected
    assert rows["la1"]["state"] == rows["lbios"]["state"] == "running"
    assert rows["loff"]["state"] == "stopped"
    assert took < 2.0

    # Another hypercore process talks to la1's agent: list does not wait for its lock;
    # the port is open and the agent in use, so it is there.
    lock = FileLock(socket_lock(env.ctx.vm_paths("la1").qga_socket), "test: agent in use")
    assert lock.try_acquire()
    try:
        started = time.monotonic()
        rows = vm_list(env)
        took = time.monotonic() - started
    finally:
        lock.release()
    print(f"  hypercore list --json, la1's agent lock held: {took:.2f}s")
    assert (rows["la1"]["agent"], rows["la1"]["agent_state"]) == (True, "busy")
    assert took < 2.0
    for name in ("la1", "lhung", "lnoag", "lbios"):
        env.run("stop-vm", name, "--force")
