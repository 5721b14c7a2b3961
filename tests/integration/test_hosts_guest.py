"""A real guest on host b, used from host a through ``--host b`` (``sshhosts.py``): stdin
and the guest command's exit code pass through two hops (SSH, then the guest agent), and
``watch --json`` over SSH carries the VM's samples and state changes (last: it stops the
VM)."""

from __future__ import annotations

import hashlib
import json
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ..conftest import GuestImage
from .dashboard_probe import DashboardProbe
from .sshhosts import (
    SshHosts,
    cmdline_of,
    netns_pids,
    one_line,
    require_root,
    size_of,
    ssh_hosts,
    ssh_master_pids,
)

pytestmark = [pytest.mark.qemu,
              pytest.mark.skipif(require_root() is not None, reason=str(require_root()))]


@pytest.fixture(scope="module")
def guest_on_b(test_guest: GuestImage) -> Iterator[SshHosts]:
    with ssh_hosts() as hosts:
        a = hosts.a
        assert a.run("hosts", "add", "b", hosts.b.destination).returncode == 0
        created = a.run("--host", "b", "create-vm", "tg1", "256", "1", "--disk-size", "64M",
                        "--kernel", str(test_guest.kernel), "--initrd", str(test_guest.initrd),
                        f"--append={test_guest.append}")
        assert created.returncode == 0, created.stderr
        booted = a.run("--host", "b", "boot-vm", "tg1", "--wait-agent", "90", timeout=180)
        assert booted.returncode == 0, booted.stderr
        yield hosts
        hosts.b.run("stop-vm", "tg1", "--force")


def test_stdin_and_exit_codes_pass_through(guest_on_b: SshHosts) -> None:
    a = guest_on_b.a
    data = bytes(range(256)) * 64 + b"\nlast line without newline"
    echoed = a.run("--host", "b", "exec", "tg1", "--stdin", "--", "cat", stdin=data)
    assert (echoed.returncode, echoed.stdout) == (0, data), echoed.stderr
    script = 'echo "out $1"; echo "err $2" >&2; exit 7'
    proc = a.run("--host", "b", "exec", "tg1", "--", "sh", "-c", script, "sh", "a b", "$(x)")
    assert (proc.returncode, proc.stdout, proc.stderr) == (7, b"out a b\n", b"err $(x)\n")


def test_the_dashboard_on_a_copies_pastes_and_types_into_bs_guest(
        guest_on_b: SshHosts) -> None:
    """The real dashboard on a, b's running guest selected: y copies its clipboard
    (through --host b), i pastes that text back into it after the guest's clipboard
    changed, D on it is refused while it runs. The guest's clipboard is read on b."""
    a, b = guest_on_b.a, guest_on_b.b
    first = "from b's guest: $(rm -rf /) 'quoted' ; ünïcode"
    pushed = b.run("clip", "push", "tg1", "--text", first)
    assert pushed.returncode == 0, pushed.stderr
    probe = DashboardProbe(a)
    try:
        probe.wait_for("b's guest listed", 30, lambda r: "b/tg1" in r
                       and "running" in str(r["b/tg1"][0]))
        probe.do("select b/tg1")
        probe.do("press y")
        probe.until("the copy said", 30, lambda: any(
            n.startswith("b/tg1: ") and "copied" in n for n in probe.notes()))
        pushed = b.run("clip", "push", "tg1", "--text", "something else")
        assert pushed.returncode == 0, pushed.stderr
        probe.do("press i")
        probe.until("the paste said", 30, lambda: any(
            n.startswith("b: ") and "tg1" in n for n in probe.notes()))
        pulled = b.run("clip", "pull", "--raw", "tg1")
        assert (pulled.returncode, pulled.stdout.decode()) == (0, first), probe.notes()
        probe.do("press D")
        probe.until("delete refused", 10, lambda: any(
            "b/tg1 is running: stop it before deleting it" in n for n in probe.notes()))
        assert b.run("list", "--json").stdout.count(b'"tg1"') == 1
    finally:
        probe.stop()


def test_cp_across_hosts(guest_on_b: SshHosts) -> None:
    """``cp FILE b:VM:/path`` and back, typed on a, the guest on b; a connection cut
    mid-copy leaves nothing under the final name on either side."""
    a, b = guest_on_b.a, guest_on_b.b
    started = time.monotonic()
    hostile = "/tmp/z $(touch hc-pwned);'`touch hc-pwned`\"a"
    try:
        data = os.urandom(3 << 20)
        src = a.root / "random.bin"
        src.write_bytes(data)
        src.chmod(0o640)
        up = a.run("cp", str(src), "b:tg1:/tmp/x")
        assert up.returncode == 0, up.stderr
        assert b"to b:tg1:/tmp/x via " in up.stdout and b"SSH" in up.stdout
        # Out of the guest and back in, under a name no shell may read.
        within = a.run("cp", "-q", "b:tg1:/tmp/x", f"b:tg1:{hostile}")
        assert (within.returncode, within.stdout) == (0, b""), within.stderr
        back = a.root / "back.bin"
        down = a.run("cp", f"b:tg1:{hostile}", str(back))
        assert down.returncode == 0, down.stderr
        assert hashlib.sha256(back.read_bytes()).hexdigest() == hashlib.sha256(data).hexdigest()
        assert back.stat().st_mode & 0o777 == 0o640
        copied_after = time.monotonic() - started

        refused = {
            ("c:tg1:/tmp/x", str(back)): (2, "hypercore: error: no host named 'c'"),
            ("b:nosuch:/tmp/x", str(back)): (2, "hypercore: error: b: "),
            ("b:tg1:/no/such", str(back)): (2, "hypercore: error: b: tg1: "),
        }
        for (source, target), (code, start) in refused.items():
            proc = a.run("cp", source, target)
            assert proc.returncode == code and one_line(proc).startswith(start), proc

        # The connection cut while b places the file in the guest (through the agent, the
        # slow leg): b's end is told by its stdin ending and removes its temporary file.
        staging = b.home / "shared_folder" / ".hypercore-transfer"
        cut = a.popen([sys.executable, "-m", "hypercore_tui", "cp", "--via", "agent", str(src),
                       "b:tg1:/tmp/y"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 20
        while not any(size_of(p) == len(data) for p in staging.glob("receive-*")):
            assert cut.poll() is None and time.monotonic() < deadline, cut.communicate()
            time.sleep(0.01)
        masters = ssh_master_pids(a)
        assert masters, [cmdline_of(pid) for pid in netns_pids(a.netns)]
        for pid in masters:
            os.kill(pid, signal.SIGKILL)
        _, err = cut.communicate(timeout=20)
        assert cut.returncode == 1 and len(err.decode().splitlines()) == 1, err
        assert err.decode().startswith("hypercore: error: b: the SSH connection to "), err
        assert "nothing was placed at b:tg1:/tmp/y" in err.decode()
        deadline = time.monotonic() + 15
        while any(b"cp-stream" in cmdline_of(pid) for pid in netns_pids(b.netns)):
            assert time.monotonic() < deadline, "b's end of the copy still runs"
            time.sleep(0.1)
        listed = a.run("--host", "b", "exec", "tg1", "--", "ls", "-a", "/tmp")
        assert listed.returncode == 0, listed.stderr
        names = listed.stdout.decode().split()
        assert "x" in names and "y" not in names, names
        assert a.run("--host", "b", "exec", "tg1", "--", "test", "-f", hostile).returncode == 0
        assert not (b.user_home / "hc-pwned").exists() and not Path("hc-pwned").exists()
        assert not [n for n in names if "hypercore" in n], \
            (names, (b.home / "hypercore.log").read_text(errors="replace")[-3000:])
        assert not list(staging.glob("receive-*"))
        assert not [p for p in a.root.iterdir() if "hypercore" in p.name]
        print(f"\n  copied there and back after {copied_after:.1f} s, all done after "
              f"{time.monotonic() - started:.1f} s")
    finally:
        a.run("--host", "b", "exec", "tg1", "--", "rm", "-f", "/tmp/x", "/tmp/y", hostile)


def _read_lines(proc: subprocess.Popen[bytes], timeout: float,
                done: Callable[[list[dict[str, object]]], bool]) -> list[dict[str, object]]:
    """The stream's lines until ``done(lines)`` (or ``timeout`` seconds)."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    os.set_blocking(fd, False)
    buffer, lines = b"", []
    until = time.monotonic() + timeout
    while time.monotonic() < until and not done(lines):
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            buffer += chunk
            *complete, buffer = buffer.split(b"\n")
            lines += [json.loads(line) for line in complete]
    return lines


def test_watch_over_ssh_carries_samples_and_states(guest_on_b: SshHosts) -> None:
    a, b = guest_on_b.a, guest_on_b.b
    watch = a.popen([sys.executable, "-m", "hypercore_tui", "--host", "b", "watch", "--json",
                     "--interval", "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        lines = _read_lines(watch, 15, lambda seen: "host" in _kinds(seen)
                            and _kinds(seen).count("sample") >= 3)
        kinds = [line["type"] for line in lines]
        assert kinds[0] == "hello" and lines[0]["version"]
        vms = next(line for line in lines if line["type"] == "vms")["vms"]
        assert isinstance(vms, list) and [(vm["name"], vm["state"]) for vm in vms] == \
            [("tg1", "running")]
        samples = [line for line in lines if line["type"] == "sample"]
        assert len(samples) >= 3 and all(s["vm"] == "tg1" for s in samples)
        assert samples[-1]["cpu_percent"] is not None and samples[-1]["rss_bytes"]
        assert "host" in kinds
        stopped = b.run("stop-vm", "tg1", "--force")
        assert stopped.returncode == 0, stopped.stderr
        refused = a.run("cp", "/etc/hostname", "b:tg1:/tmp/w")
        assert refused.returncode == 1 and refused.stderr.decode().splitlines() == [
            "hypercore: error: b: tg1 is not running (stopped)"], refused.stderr
        later = _read_lines(watch, 10, lambda seen: any(
            line["type"] == "state" and line["new"] == "stopped" for line in seen))
        states = [(line["vm"], line["old"], line["new"]) for line in later
                  if line["type"] == "state"]
        assert states == [("tg1", "running", "shutting-down"),
                          ("tg1", "shutting-down", "stopped")], later
        assert {"type": "event", "vm": "tg1", "event": "SHUTDOWN"}.items() <= \
            next(line for line in later if line["type"] == "event").items()
    finally:
        watch.terminate()
        watch.wait(timeout=10)


def _kinds(lines: list[dict[str, object]]) -> list[object]:
    return [line["type"] for line in lines]
