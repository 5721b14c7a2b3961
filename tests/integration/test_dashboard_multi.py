"""Several dashboards on one VM, and a dashboard (or the CLI) killed in the middle of a
RAM snapshot: the VM keeps running, a new dashboard shows the truth (the QEMU job,
running or concluded), and the shared folder the save unmounted is mounted again.

Real tmux (one private server per dashboard, same HYPERCORE_HOME), real QEMU under TCG,
the real test guest, the real CLI. Screens are read with capture-pane.

To make a RAM snapshot last long enough to kill its dashboard during the QEMU job, the
guest's RAM is backed by a file of non-zero bytes (``memory-backend-file``, private
mapping): every page must be written into the image (QEMU 7.2's snapshot-save ignores
the migration bandwidth limit, so that cannot slow it down).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from hypercore_tui.adapters.process import process_alive

from ..conftest import HYPERCORE, GuestImage, HcEnv, create_guest_vm
from ..helpers import Tmux, screens, vm_state, wait_until

pytestmark = [pytest.mark.qemu, pytest.mark.timeout(600)]

#: RAM of the slow-to-snapshot guest: snapshot-save takes 3-12 s on the 2-core test host
#: (2 GiB took 2-8 s, depending on the page cache and the other guests' load).
FILL_MB = 3072
MiB = 1 << 20


# -- helpers --------------------------------------------------------------------------


@pytest.fixture
def dashboards(hc_env: HcEnv) -> Iterator[Callable[[], Tmux]]:
    """Make dashboards (each its own tmux server); every server is killed afterwards."""
    assert shutil.which("tmux"), "tmux is required (scripts/setup.sh installs it)"
    made: list[Tmux] = []

    def make() -> Tmux:
        session = Tmux()
        made.append(session)
        return session

    yield make
    for session in made:
        session.kill()


def flat(screen: str) -> str:
    """The screen as one line of words (toasts wrap their text, with a border)."""
    return " ".join(screen.replace("▌", " ").replace("▐", " ").split())


def pane(screen: str) -> str:
    """The right-hand pane (right of the VM list's border) as one line of words: its
    long lines wrap."""
    return " ".join(" ".join(line.partition("│")[2] for line in screen.splitlines()[1:])
                    .split())


def dashboard_pid(session: Tmux) -> int:
    proc = session.tmux("list-panes", "-t", "dash", "-F", "#{pane_pid}")
    pid = int(proc.stdout.strip())
    with open(f"/proc/{pid}/cmdline", "rb") as fh:
        assert b"hypercore_tui" in fh.read()
    return pid


def qemu_processes(pidfile: Path) -> list[int]:
    """Live processes of this user started with ``-pidfile PIDFILE`` (independent of the
    product's own bookkeeping)."""
    target, found = str(pidfile).encode(), []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"{entry.path}/cmdline", "rb") as fh:
                args = fh.read().split(b"\0")
        except OSError:
            continue
        if any(a == b"-pidfile" and b == target for a, b in zip(args, args[1:], strict=False)):
            if process_alive(int(entry.name)):
                found.append(int(entry.name))
    return found


def share_mounted(env: HcEnv, name: str) -> bool:
    proc = env.run("exec", name, "--", "/bin/cat", "/proc/mounts", timeout=60)
    return proc.returncode == 0 and b"hypercore_share" in proc.stdout


def agent_answers(env: HcEnv, name: str) -> bool:
    return env.run("exec", name, "--", "/bin/true", timeout=60).returncode == 0


def snapshot_tags(env: HcEnv, name: str) -> list[tuple[str, bool]]:
    proc = env.run("snapshot", "list", name, "--json", check=True, timeout=180)
    return [(row["tag"], row["has_ram"]) for row in json.loads(proc.stdout)]


def detail_lines(screen: str, needle: str) -> list[str]:
    """The lines of the right-hand pane that contain ``needle``."""
    return [line.partition("│")[2].strip() for line in screen.splitlines()
            if needle in line.partition("│")[2]]


@pytest.fixture(scope="module")
def nonzero_ram() -> Iterator[Path]:
    """FILL_MB of non-zero bytes for a guest's RAM (a random 64 MiB chunk, repeated)."""
    directory = Path(tempfile.mkdtemp(prefix="hc-ram-", dir="/tmp"))
    path = directory / "ram.bin"
    chunk = os.urandom(64 * MiB)
    with open(path, "wb") as fh:
        for _ in range(FILL_MB // 64):
            fh.write(chunk)
    yield path
    shutil.rmtree(directory, ignore_errors=True)


def create_filled_vm(env: HcEnv, guest: GuestImage, name: str, ram_file: Path) -> None:
    """The test guest with FILL_MB of RAM full of non-zero pages, shared folder attached."""
    create_guest_vm(env, guest, name, "--qemu-arg=-object",
                    f"--qemu-arg=memory-backend-file,id=hcfill,size={FILL_MB}M,"
                    f"mem-path={ram_file},share=off",
                    "--qemu-arg=-machine", "--qemu-arg=memory-backend=hcfill",
                    ram=str(FILL_MB))
    env.run("boot-vm", name, "--wait-agent", "120", check=True, timeout=240)


def wait_for_save_to_write(disk: Path, before: int, what: Callable[[], bool]) -> float:
    """Seconds until the RAM save has written 64 MiB into the image (while ``what()``)."""
    started = time.monotonic()
    while disk.stat().st_size <= before + 64 * MiB:
        assert what(), "the snapshot ended before the RAM save was seen writing"
        assert time.monotonic() - started < 120, "the RAM save did not start"
        time.sleep(0.02)
    return time.monotonic() - started


# -- two dashboards and the CLI on one VM ----------------------------------------------


def test_two_dashboards_and_the_cli_on_one_vm(hc_env: HcEnv, test_guest: GuestImage,
                                              dashboards: Callable[[], Tmux]) -> None:
    """4 cases on one VM watched by two dashboards: a stop from one shows in the other;
    both start it at once (one boot, one busy/already-running message, one QEMU); a CLI
    RAM snapshot appears in both snapshot lists, identically, without a key pressed;
    the definition is the same at the end."""
    name = "md1"
    create_guest_vm(hc_env, test_guest, name)  # with the 9p share: a RAM save unmounts it
    hc_env.run("boot-vm", name, "--wait-agent", "60", check=True)
    paths = hc_env.ctx.vm_paths(name)
    definition = json.loads(paths.definition.read_text())
    one, two = dashboards(), dashboards()
    one.start_dashboard(hc_env.environ)
    two.start_dashboard(hc_env.environ)
    wait_until("both dashboards to show it running",
               lambda: all("▶ running" in d.screen() for d in (one, two)), 30,
               show=screens(one, two))

    # 1. Stopped from dashboard one: dashboard two follows.
    one.keys("s")
    wait_until("the confirmation", lambda: f"Stop {name}?" in one.screen(), 10, show=screens(one))
    one.keys("y")
    stop_seen = wait_until("dashboard two to show it stopped",
                           lambda: "■ stopped" in two.screen(), 120, show=screens(one, two))
    assert vm_state(hc_env, name) == "stopped"
    assert qemu_processes(paths.pidfile) == []

    # 2. Started from both at once: the VM lock lets one boot; the other says why not.
    wait_until("dashboard one to show it stopped", lambda: "■ stopped" in one.screen(), 20,
               show=screens(one))
    seen = {0: "", 1: ""}
    presses = [threading.Thread(target=d.tmux, args=("send-keys", "-t", "dash", "b"))
               for d in (one, two)]
    for press in presses:
        press.start()
    for press in presses:
        press.join()

    def outcomes() -> bool:
        for index, dash in enumerate((one, two)):
            text = flat(dash.screen())
            if text not in seen[index]:
                seen[index] += " " + text
        # Words, not phrases: a toast wraps its text beside the rows of the panes.
        started = [i for i in seen if " started " in seen[i]]
        refused = [i for i in seen if re.search(r"\balready\b|\bbusy\b", seen[i])]
        return len(started) == 1 and len(refused) == 1 and started != refused

    try:
        both_answered = wait_until("one start and one refusal", outcomes, 120,
                                   show=screens(one, two))
    finally:
        for index, text in seen.items():
            words = text.split()
            near = [" ".join(words[max(0, i - 3):i + 8]) for i, w in enumerate(words)
                    if w in ("started", "already", "busy", "error:")]
            print(f"dashboard {index + 1} said: {sorted(set(near))[:6]}")
    assert not any("Traceback" in text for text in seen.values())
    assert len(qemu_processes(paths.pidfile)) == 1
    assert vm_state(hc_env, name) == "running"
    wait_until("both dashboards to show it running again",
               lambda: all("running" in d.screen() for d in (one, two)), 30, show=screens(one, two))
    time.sleep(3)  # a second boot, if any, would show by now
    assert len(qemu_processes(paths.pidfile)) == 1

    # 3. A RAM snapshot from the CLI while both watch their snapshot tab.
    wait_until("the agent", lambda: agent_answers(hc_env, name), 90)
    for dash in (one, two):
        dash.keys("2")
    wait_until("both snapshot lists read", lambda: all(
        f"{name}: 0 snapshots" in d.screen() for d in (one, two)), 60, show=screens(one, two))
    hc_env.run("snapshot", "create", name, "cli-snap", check=True, timeout=240)
    listed = wait_until("both lists to show the CLI's snapshot", lambda: all(
        "cli-snap" in d.screen() and f"{name}: 1 snapshot" in d.screen() for d in (one, two)),
        60, show=screens(one, two))
    rows = [detail_lines(d.screen(), "cli-snap") for d in (one, two)]
    assert rows[0] == rows[1] and len(rows[0]) == 1, rows
    assert snapshot_tags(hc_env, name) == [("cli-snap", True)]
    assert share_mounted(hc_env, name)  # unmounted for the save, mounted again

    # 4. Nothing lost: the definition is the one created.
    assert json.loads(paths.definition.read_text()) == definition
    assert vm_state(hc_env, name) == "running"
    print(f"stop (graceful) seen by the other dashboard {stop_seen:.1f}s after the key; both "
          f"start presses answered {both_answered:.1f}s after them; the CLI snapshot in both "
          f"lists {listed:.1f}s after the CLI returned")
    hc_env.run("stop-vm", name, "--force", check=True)


# -- a dashboard killed while QEMU runs its snapshot job ---------------------------------


@pytest.mark.parametrize("how", ["kill-9", "tmux-kill-server"])
def test_dashboard_killed_during_a_ram_snapshot(hc_env: HcEnv, test_guest: GuestImage,
                                                dashboards: Callable[[], Tmux],
                                                nonzero_ram: Path, how: str) -> None:
    """1 case per parameter (2): a dashboard taking a RAM snapshot is killed (SIGKILL, or
    its tmux server killed as an SSH drop does) while QEMU runs the snapshot-save job.
    The VM keeps running; a new dashboard shows it running and the job (running, then
    concluded), mounts the share the dead one left unmounted; the snapshot exists; the
    next snapshot works and the stale job disappears; definition and image intact."""
    name = "kd1"
    create_filled_vm(hc_env, test_guest, name, nonzero_ram)
    paths = hc_env.ctx.vm_paths(name)
    definition = json.loads(paths.definition.read_text())
    (qemu,) = qemu_processes(paths.pidfile)
    disk = paths.default_disk
    first = dashboards()
    first.start_dashboard(hc_env.environ)
    wait_until("the VM listed as running", lambda: "▶ running" in first.screen(), 30,
               show=screens(first))
    victim = dashboard_pid(first)

    # Take a RAM snapshot from the dashboard's snapshot tab.
    before = disk.stat().st_size
    first.keys("2")
    wait_until("the snapshot list", lambda: f"{name}: 0 snapshots" in first.screen(), 60,
               show=screens(first))
    first.keys("t")
    wait_until("the tag form", lambda: "e.g. before-upgrade" in first.screen(), 10,
               show=screens(first))
    first.keys("killed", "Enter")
    to_write = wait_for_save_to_write(disk, before, lambda: process_alive(victim))
    record = json.loads(paths.job_record.read_text())
    assert record["command"] == "snapshot-save" and not record["finished"], record

    # Kill the dashboard while QEMU saves.
    killed = time.monotonic()
    if how == "kill-9":
        os.kill(victim, signal.SIGKILL)
    else:
        first.kill()  # tmux kill-server: the pane's process gets SIGHUP
    wait_until("the dashboard process to die", lambda: not process_alive(victim), 20)
    written_at_kill = disk.stat().st_size - before
    assert process_alive(qemu), "the VM died with its dashboard"
    assert not json.loads(paths.job_record.read_text())["finished"]

    # A new dashboard re-attaches and shows the truth.
    second = dashboards()
    second.start_dashboard(hc_env.environ)
    wait_until("the VM listed again", lambda: name in second.screen() and
               "running" in second.screen(), 30, show=screens(second))
    shown = wait_until("the job", lambda: "job snapshot-save" in second.screen(), 120,
                       show=screens(second))
    running_seen = "job snapshot-save running" in pane(second.screen())
    concluded = wait_until("the job concluded", lambda: "job snapshot-save concluded: ok"
                           in pane(second.screen()), 300, show=screens(second))
    job_seconds = time.monotonic() - killed
    assert process_alive(qemu)
    assert vm_state(hc_env, name) == "running"
    assert "▶ running" in second.screen()
    assert ("killed", True) in snapshot_tags(hc_env, name)
    # The share the dead dashboard unmounted for the save is mounted again.
    remounted = wait_until("the share mounted again", lambda: share_mounted(hc_env, name), 90)
    second.keys("3")
    wait_until("the event log line", lambda: "SHARE shared folder mounted again" in
               pane(second.screen()), 30, show=screens(second))
    second.keys("1")

    # The next snapshot works (the stale concluded job is dismissed) and the job goes away.
    after = hc_env.run("snapshot", "create", name, "after", check=True, timeout=300)
    assert b"created snapshot after" in after.stdout, after.stdout
    wait_until("the stale job gone", lambda: "job snapshot-save" not in second.screen(), 30,
               show=screens(second))
    assert snapshot_tags(hc_env, name) == [("killed", True), ("after", True)]
    assert share_mounted(hc_env, name)
    assert qemu_processes(paths.pidfile) == [qemu]

    # Nothing lost.
    assert json.loads(paths.definition.read_text()) == definition
    hc_env.run("stop-vm", name, "--force", check=True)
    check = subprocess.run(["qemu-img", "check", str(disk)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    print(f"{how}: save writing {to_write:.1f}s after Enter, dashboard killed with "
          f"{written_at_kill / MiB:.0f} MiB of RAM written; new dashboard showed the job "
          f"{shown:.1f}s after it started ({'running' if running_seen else 'concluded'}), "
          f"concluded {concluded:.1f}s after that ({job_seconds:.1f}s after the kill); share "
          f"mounted again within {remounted:.1f}s more; next snapshot: "
          f"{after.stdout.decode().strip()}")


# -- the CLI killed mid-save: the next snapshot, or a dashboard, mounts the share -------


def kill_cli_snapshot_mid_save(env: HcEnv, name: str, tag: str) -> None:
    """`snapshot create` killed (SIGKILL) while QEMU saves the RAM; returns once the
    save is over (QEMU answers again)."""
    disk = env.ctx.vm_paths(name).default_disk
    before = disk.stat().st_size
    snap = subprocess.Popen([*HYPERCORE, "snapshot", "create", name, tag], env=env.environ,
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    wait_for_save_to_write(disk, before, lambda: snap.poll() is None)
    snap.kill()
    snap.wait()
    # QEMU answers again once the save is over: listing waits for that.
    wait_until("the save to end", lambda: env.run("snapshot", "list", name, timeout=120)
               .returncode == 0, 300)
    assert (tag, True) in snapshot_tags(env, name)
    wait_until("the agent after the save", lambda: agent_answers(env, name), 90)


def test_share_left_unmounted_by_a_killed_save_is_mounted_again(
        hc_env: HcEnv, test_guest: GuestImage, dashboards: Callable[[], Tmux],
        nonzero_ram: Path) -> None:
    """2 cases, each after `snapshot create` was killed (SIGKILL) during the RAM save with
    no dashboard running (the share stays unmounted: nobody is there): (1) the next
    `snapshot create` dismisses the stale job and mounts the share again; (2) a dashboard
    started later tries to mount it, shows "shared folder not mounted" while the guest
    refuses (a file where /shared should be), and mounts it once the guest allows."""
    name = "kd2"
    create_filled_vm(hc_env, test_guest, name, nonzero_ram)

    # 1. The next snapshot operation.
    kill_cli_snapshot_mid_save(hc_env, name, "s1")
    assert not share_mounted(hc_env, name)  # nobody mounted it again yet
    hc_env.run("snapshot", "create", name, "s2", check=True, timeout=300)
    assert share_mounted(hc_env, name)
    assert snapshot_tags(hc_env, name) == [("s1", True), ("s2", True)]

    # 2. A dashboard, which says why it cannot, until it can.
    kill_cli_snapshot_mid_save(hc_env, name, "s3")
    assert not share_mounted(hc_env, name)
    hc_env.run("exec", name, "--", "/bin/sh", "-c", "rmdir /shared && echo x > /shared",
               check=True)
    dash = dashboards()
    dash.start_dashboard(hc_env.environ)
    refused = wait_until("the share shown not mounted", lambda: "shared folder not mounted "
                         "(an interrupted snapshot left it unmounted)" in pane(dash.screen()),
                         60, show=screens(dash))
    assert "Not a directory" in pane(dash.screen()), dash.screen()
    assert not share_mounted(hc_env, name)
    hc_env.run("exec", name, "--", "/bin/rm", "/shared", check=True)
    mounted = wait_until("the dashboard to mount it", lambda: share_mounted(hc_env, name), 90)
    wait_until("the note gone", lambda: "shared folder not mounted" not in
               pane(dash.screen()), 20, show=screens(dash))
    dash.keys("3")
    wait_until("the event log lines", lambda: "SHARE shared folder mounted again" in
               pane(dash.screen()), 20, show=screens(dash))
    assert snapshot_tags(hc_env, name) == [("s1", True), ("s2", True), ("s3", True)]
    assert vm_state(hc_env, name) == "running"
    print(f"share: refusal shown {refused:.1f}s after the dashboard started; mounted "
          f"{mounted:.1f}s after the guest allowed it (retry every 10, 20, 40... s)")
    hc_env.run("stop-vm", name, "--force", check=True)


def test_both_dashboards_show_a_cli_snapshot_job_while_it_runs(
        hc_env: HcEnv, test_guest: GuestImage, dashboards: Callable[[], Tmux],
        nonzero_ram: Path) -> None:
    """1 case: while `snapshot create` saves a big guest's RAM, both dashboards show the
    job running (the one holding the monitor socket from QEMU's events, the other, which
    gets no events, from the job record), then neither shows it and both snapshot lists
    show the new snapshot without a key pressed."""
    name = "kd3"
    create_filled_vm(hc_env, test_guest, name, nonzero_ram)
    disk = hc_env.ctx.vm_paths(name).default_disk
    one, two = dashboards(), dashboards()
    one.start_dashboard(hc_env.environ)
    wait_until("dashboard one attached", lambda: "▶ running" in one.screen(), 30, show=screens(one))
    two.start_dashboard(hc_env.environ)
    wait_until("dashboard two attached", lambda: "▶ running" in two.screen(), 30, show=screens(two))
    before = disk.stat().st_size
    snap = subprocess.Popen([*HYPERCORE, "snapshot", "create", name, "big"], env=hc_env.environ,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        wait_for_save_to_write(disk, before, lambda: snap.poll() is None)
        seen = {0: 0.0, 1: 0.0}
        started = time.monotonic()

        def running_in_both() -> bool:
            for index, dash in enumerate((one, two)):
                if not seen[index] and "job snapshot-save running" in pane(dash.screen()):
                    seen[index] = time.monotonic() - started
            return all(seen.values())

        wait_until("both dashboards to show the job running", running_in_both, 60,
                   show=screens(one, two))
        assert snap.poll() is None, "the save ended before both dashboards showed it"
        out, err = snap.communicate(timeout=300)
    finally:
        if snap.poll() is None:
            snap.kill()
            snap.wait()
    assert snap.returncode == 0, err
    for dash in (one, two):
        dash.keys("2")
    gone = wait_until("the job gone and the snapshot listed in both", lambda: all(
        "job snapshot-save" not in d.screen() and "big" in d.screen() for d in (one, two)),
        60, show=screens(one, two))
    assert snapshot_tags(hc_env, name) == [("big", True)]
    assert share_mounted(hc_env, name)
    print(f"job shown running {seen[0]:.1f}s / {seen[1]:.1f}s after the save started "
          f"writing (events / job record); {out.decode().strip()}; both lists {gone:.1f}s "
          "after the CLI returned")
    hc_env.run("stop-vm", name, "--force", check=True)
