"""HYPERCORE_HOME full (a small tmpfs) during snapshots, clones, copies, the clipboard,
definition rewrites and boot, against real QEMU (TCG) and the real test guest.

Each failing case: exit 1 with exactly one ``hypercore: error: ...`` line that names the
missing space (no traceback, no logging noise: the log file is padded to a page boundary
so that it cannot grow either); every ``vm.json`` and other small file byte-identical;
``qemu-img snapshot -l`` of every image unchanged; no new, half-named or partial file
(the whole tree is compared); ``qemu-img check`` clean (exit 0) once the VMs are stopped.
Then the filler is deleted and the same operation succeeds.

Space is left exactly (``posix_fallocate`` of a filler file on the tmpfs): 0 B, one page,
or a few MiB so that a write fails half-way. Timings of each failure and of the recovery
are printed (``-s``) and bounded generously.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ..conftest import GuestImage, HcEnv, create_guest_vm
from ..helpers import guest_output, vm_row
from .disk_full_env import (
    FILLER,
    LOG,
    PAGE,
    assert_running,
    avail,
    check_images,
    fill,
    free,
    images,
    mount_tmpfs,
    pad,
    small_home,
    stop_cleanly,
    unmount,
)

pytestmark = pytest.mark.qemu

#: Generous bounds (2 cores shared with other TCG guests): a failure must come quickly.
FAIL_WITHIN = 120.0
#: Files whose content may change while an operation fails: disk images (QEMU and
#: qemu-img rewrite them; their snapshot lists and `qemu-img check` are compared),
#: QEMU's logs and the VM lock file (the holder's description).
VOLATILE = (".qcow2", "qemu.log", "serial.log", ".lock")


# -- what must not change -----------------------------------------------------------------


def tree(*roots: Path) -> dict[str, str]:
    """Every file and directory under ``roots``: a sha256 for files that must not change,
    a marker for the volatile ones (images, QEMU logs, lock files)."""
    found: dict[str, str] = {}
    for root in roots:
        for directory, dirs, files in os.walk(root):
            for name in dirs:
                found[os.path.join(directory, name)] = "dir"
            for name in files:
                path = os.path.join(directory, name)
                if Path(directory) == root and name in (FILLER, LOG):
                    continue
                if name.endswith(VOLATILE):
                    found[path] = "volatile"
                else:
                    found[path] = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    return found


def snapshot_lists(*roots: Path) -> dict[str, str]:
    """``qemu-img snapshot -l`` of every image (-U: a running QEMU may hold it)."""
    lists = {}
    for image in images(*roots):
        proc = subprocess.run(["qemu-img", "snapshot", "-U", "-l", str(image)],
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        lists[str(image)] = proc.stdout
    return lists


class Guard:
    """The state that a failing operation must leave exactly as it was."""

    def __init__(self, *roots: Path) -> None:
        self.roots = roots
        self.files = tree(*roots)
        self.snaps = snapshot_lists(*roots)

    def assert_unchanged(self, label: str) -> None:
        after = tree(*self.roots)
        added = sorted(set(after) - set(self.files))
        removed = sorted(set(self.files) - set(after))
        changed = sorted(p for p in after if p in self.files and after[p] != self.files[p])
        assert not (added or removed or changed), (
            f"{label}: added {added}, removed {removed}, changed {changed}")
        assert snapshot_lists(*self.roots) == self.snaps, f"{label}: snapshot list changed"


# -- running the CLI ----------------------------------------------------------------------


TIMINGS: list[tuple[str, float, float | None]] = []
LAST_ERROR = [""]


def timed(env: HcEnv, *args: str, timeout: float = 300
          ) -> tuple[subprocess.CompletedProcess[bytes], float]:
    started = time.monotonic()
    proc = env.run(*args, timeout=timeout)
    return proc, time.monotonic() - started


def assert_no_space(proc: subprocess.CompletedProcess[bytes], label: str,
                    code: int = 1) -> str:
    err = proc.stderr.decode(errors="replace")
    assert proc.returncode == code, f"{label}: exit {proc.returncode}: {err!r}"
    assert err.startswith("hypercore: error: ") and err.count("\n") == 1, f"{label}: {err!r}"
    assert "Traceback" not in err and "internal error" not in err, f"{label}: {err!r}"
    assert "no space" in err.lower(), f"{label}: {err!r}"
    return err.strip()


def fails_cleanly(env: HcEnv, guard: Guard, label: str, leave: int, *args: str,
                  space: Path | None = None) -> float:
    """Run ``args`` with ``leave`` bytes free: one no-space line, nothing changed."""
    where = space or env.home
    fill(where, leave)
    proc, took = timed(env, *args)
    line = assert_no_space(proc, label)
    LAST_ERROR[0] = line
    guard.assert_unchanged(label)
    assert took < FAIL_WITHIN, f"{label}: took {took:.1f}s"
    print(f"{label} [{leave} B free]: failed in {took:.2f}s: {line}")
    return took


CLOCK_NOTE = re.compile(rb"hypercore: note: \S+: guest clock set (forward|back) [0-9.]+ s\n")


def works(env: HcEnv, label: str, *args: str) -> float:
    proc, took = timed(env, *args)
    assert proc.returncode == 0, f"{label}: {proc.stderr.decode(errors='replace')}"
    # Nothing on stderr but the note of a guest clock set again (a VM that stood paused).
    rest = CLOCK_NOTE.sub(b"", proc.stderr)
    assert rest == b"", f"{label}: {proc.stderr!r}"
    return took


def record(label: str, failed: float, recovered: float | None) -> None:
    TIMINGS.append((label, failed, recovered))


@pytest.fixture(autouse=True, scope="module")
def report_timings() -> Iterator[None]:
    yield
    print("\ndisk-full timings (failure / same operation after freeing):")
    for label, failed, recovered in TIMINGS:
        after = f"{recovered:.2f}s" if recovered is not None else "-"
        print(f"  {label:<44} {failed:6.2f}s / {after}")


# -- stopped VMs: offline snapshots, definitions, boot --------------------------------------


@pytest.fixture
def home32(hc_env: HcEnv) -> Iterator[HcEnv]:
    with small_home(hc_env, 32) as env:
        yield env


def test_offline_snapshots_on_a_full_disk(home32: HcEnv) -> None:
    """5 full-disk cases on a stopped qcow2 VM (qemu-img snapshot): create with 0 B and
    with one page free (fails; a half-done create leaks no cluster), restore with 0 B free
    (allocates nothing: works), delete with 0 B free (qcow2 writes the shortened snapshot
    table elsewhere first: fails, saying to free a little space) and with one page free
    (works). Create and delete work again after freeing."""
    env = home32
    env.run("create-vm", "off", "64", "1", "--disk-size", "64M", check=True)
    env.run("snapshot", "create", "off", "keep", check=True)
    env.run("snapshot", "list", "off", check=True)
    guard = Guard(env.home)

    t0 = fails_cleanly(env, guard, "offline snapshot create", 0, "snapshot", "create", "off",
                       "s1")
    t1 = fails_cleanly(env, guard, "offline snapshot create (half-way)", PAGE, "snapshot",
                       "create", "off", "s1")
    free(env.home)
    ok = works(env, "offline snapshot create after freeing", "snapshot", "create", "off", "s1")
    record("offline snapshot create, 0 B / 1 page", max(t0, t1), ok)
    tags = [s["tag"] for s in json.loads(env.run("snapshot", "list", "off", "--json",
                                                 check=True).stdout)]
    assert tags == ["keep", "s1"]

    # Restoring allocates nothing: it works on a full disk.
    fill(env.home, 0)
    restored = works(env, "offline restore, 0 B free", "snapshot", "restore", "off", "keep")
    record("offline snapshot restore, 0 B free (works)", restored, None)
    guard = Guard(env.home)
    t = fails_cleanly(env, guard, "offline snapshot delete", 0, "snapshot", "delete", "off",
                      "s1")
    fill(env.home, PAGE)
    deleted = works(env, "offline delete, one page free", "snapshot", "delete", "off", "s1")
    record("offline snapshot delete, 0 B / 1 page (works)", t, deleted)
    free(env.home)
    tags = [s["tag"] for s in json.loads(env.run("snapshot", "list", "off", "--json",
                                                 check=True).stdout)]
    assert tags == ["keep"]
    assert check_images(env.home) == 1
    print("offline snapshots: 5 cases")


def test_definitions_and_boot_on_a_full_disk(home32: HcEnv, test_guest: GuestImage) -> None:
    """5 full-disk cases: mark-installed (installation_state.json rewritten) with 0 B free;
    a linked clone's bookkeeping in its base's vm.json with 0 B free; boot-vm with 0 B
    free (QEMU's log cannot be written: not started) and with 2 pages free (QEMU started,
    its pid record cannot be written: QEMU is stopped again; none left running); deleting that
    linked clone with 0 B free works (it frees space first) and rewrites the base's
    vm.json. Each works after freeing."""
    env = home32
    iso = env.home.parent / "installer.iso"
    iso.write_bytes(b"\0" * 65536)
    env.run("create-vm", "inst", "64", "1", "auto", str(iso), "--disk-size", "16M",
            check=True)
    create_guest_vm(env, test_guest, "bt", "--no-shared")
    # Booted once: its logs and pid record exist (a failed boot may append to the logs).
    env.run("boot-vm", "bt", check=True, timeout=180)
    stop_cleanly(env, "bt")
    env.run("snapshot", "list", "inst", check=True)  # its lock file exists from now on
    guard = Guard(env.home)

    t = fails_cleanly(env, guard, "mark-installed", 0, "mark-installed", "inst")
    free(env.home)
    ok = works(env, "mark-installed after freeing", "mark-installed", "inst")
    state = json.loads((env.home / "vms" / "inst" / "installation_state.json").read_text())
    assert state["isInstalled"] is True
    record("mark-installed, 0 B free", t, ok)

    guard = Guard(env.home)
    t = fails_cleanly(env, guard, "linked clone (base's vm.json)", 0, "clone-vm", "bt",
                      "btl", "--linked")
    record("linked clone, base vm.json rewrite, 0 B", t, None)

    guard = Guard(env.home)
    pids_before = qemu_pids(env)
    # QEMU's log padded to a page boundary: with 0 B free its start-up lines cannot be
    # written (QEMU is not started); with 2 pages free the hypercore.log record and those
    # lines take them, QEMU starts, and recording its pid fails: it must not run on.
    qemu_log = env.home / "vms" / "bt" / "qemu.log"
    pad(qemu_log)
    t0 = fails_cleanly(env, guard, "boot-vm", 0, "boot-vm", "bt")
    assert "qemu.log" in LAST_ERROR[0]
    pad(qemu_log)
    t1 = fails_cleanly(env, guard, "boot-vm (QEMU started)", 2 * PAGE, "boot-vm", "bt")
    assert "qemu.pid" in LAST_ERROR[0]
    assert qemu_pids(env) == pids_before, "a failed boot left a QEMU running"
    assert vm_row(env, "bt")["state"] == "stopped"
    free(env.home)
    ok = works(env, "boot-vm after freeing", "boot-vm", "bt", "--wait-agent", "90")
    record("boot-vm, 0 B / 2 pages free", max(t0, t1), ok)
    stop_cleanly(env, "bt")

    works(env, "linked clone after freeing", "clone-vm", "bt", "btl", "--linked")
    base = json.loads((env.home / "vms" / "bt" / "vm.json").read_text())
    assert base["base_of"] == ["btl"]
    fill(env.home, 0)
    took = works(env, "delete-vm of a linked clone, 0 B free", "delete-vm", "btl", "--yes")
    record("delete-vm linked clone, 0 B free (works)", took, None)
    base = json.loads((env.home / "vms" / "bt" / "vm.json").read_text())
    assert base["base_of"] == []
    assert not (env.home / "vms" / "btl").exists()
    free(env.home)
    assert check_images(env.home) == 2
    print("definitions and boot: 5 cases")


def qemu_pids(env: HcEnv) -> set[int]:
    """QEMUs started for this home (their -pidfile lies in its runtime dir)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and argv[0].endswith(b"qemu-system-x86_64") and any(
                a.startswith(str(env.runtime).encode()) for a in argv):
            found.add(int(entry.name))
    return found


# -- clones ----------------------------------------------------------------------------------


@pytest.fixture
def source_image(home32: HcEnv) -> Path:
    """A qcow2 image with 4 MiB of random data, outside the small home."""
    directory = home32.home.parent / "source"
    directory.mkdir()
    raw = directory / "data.raw"
    with open(raw, "wb") as fh:
        fh.write(os.urandom(4 << 20))
        fh.truncate(64 << 20)
    image = directory / "source.qcow2"
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(image)],
                   check=True)
    raw.unlink()
    return image


def test_clones_on_a_full_disk(home32: HcEnv, source_image: Path) -> None:
    """Full clone with 0 B, 64 KiB and 2 MiB free (the copy needs 4 MiB: fails at the
    header, the refcount table and half-way through the data), and a linked clone at
    every free space from 0 B up in 4 KiB steps until it succeeds (it fails at the base's
    vm.json, the overlay's header, refcount table, L1 table and the clone's vm.json):
    3 + (steps) cases. No half clone, the source's image and definition untouched;
    each kind works after freeing."""
    env = home32
    env.run("create-vm", "src", "64", "1", str(source_image), check=True)
    env.run("snapshot", "list", "src", check=True)
    source_sum = hashlib.sha256(source_image.read_bytes()).hexdigest()
    guard = Guard(env.home, source_image.parent)

    worst = 0.0
    for leave in (0, 64 << 10, 2 << 20):
        worst = max(worst, fails_cleanly(env, guard, "full clone", leave, "clone-vm", "src",
                                         "full"))
    free(env.home)
    ok = works(env, "full clone after freeing", "clone-vm", "src", "full")
    record("full clone, 0 B / 64 KiB / 2 MiB free", worst, ok)
    assert hashlib.sha256(source_image.read_bytes()).hexdigest() == source_sum
    compare = subprocess.run(["qemu-img", "compare", "-f", "qcow2", "-F", "qcow2",
                              str(source_image), str(env.home / "vms" / "full" / "disk.qcow2")],
                             capture_output=True, text=True)
    assert compare.returncode == 0, compare.stdout + compare.stderr
    env.run("delete-vm", "full", "--yes", check=True)

    steps, worst, messages = 0, 0.0, set[str]()
    leave = 0
    while True:
        fill(env.home, leave)
        proc, took = timed(env, "clone-vm", "src", "lnk", "--linked")
        if proc.returncode == 0:
            break
        label = f"linked clone [{leave} B free]"
        line = assert_no_space(proc, label)
        guard.assert_unchanged(label)
        messages.add(line.replace(str(env.home), "$HOME"))
        steps += 1
        worst = max(worst, took)
        leave += PAGE
        assert leave < (4 << 20), "a linked clone should fit in 4 MiB"
    free(env.home)
    record(f"linked clone, 0..{leave - PAGE} B free ({steps} steps)", worst, took)
    print(f"linked clone: {steps} failing steps, first success with {leave} B free; "
          f"{len(messages)} distinct messages:")
    for message in sorted(messages):
        print(f"  {message}")
    assert steps >= 5
    base = json.loads((env.home / "vms" / "src" / "vm.json").read_text())
    assert base["base_of"] == ["lnk"]
    assert hashlib.sha256(source_image.read_bytes()).hexdigest() == source_sum
    assert check_images(env.home, source_image.parent) == 2
    print(f"clones: {3 + steps} cases")


# -- a running VM: live snapshots, guest writes ------------------------------------------------


@pytest.fixture
def home320(hc_env: HcEnv) -> Iterator[HcEnv]:
    # A RAM snapshot of a 256 MiB test guest holds 80-100 MiB of vmstate; two are taken.
    with small_home(hc_env, 320) as env:
        yield env


def test_live_snapshots_on_a_full_disk(home320: HcEnv, test_guest: GuestImage) -> None:
    """9 full-disk cases on a running VM: a disk-only snapshot with 0 B and 512 KiB free and
    a RAM snapshot with 0 B free (refused before QEMU starts: below 1 MiB QEMU would fail
    part-way and leak a cluster), a RAM snapshot with 2 MiB free (QEMU's vmstate write
    fails half-way): each fails in one line naming the space, the guest keeps running
    (agent answers) and the snapshot list is unchanged. The guest writing its disk while
    the host disk is full: QEMU pauses it (werror=enospc), `hypercore list` (JSON and
    text) says paused and why,
    and after freeing, `resume-vm` lets the write finish. After freeing: a RAM and a
    disk-only snapshot work. A RAM restore with 0 B free works; with one page free the
    deletes of a RAM snapshot (frees its space), of the disk-only one and of the restored
    one work. `qemu-img check` is clean after stop-vm."""
    env = home320
    create_guest_vm(env, test_guest, "lv", "--no-shared")
    env.run("boot-vm", "lv", "--wait-agent", "90", check=True, timeout=180)
    env.run("snapshot", "list", "lv", check=True)
    guard = Guard(env.home)

    worst = 0.0
    for leave in (0, 512 << 10):
        worst = max(worst, fails_cleanly(env, guard, "live disk-only snapshot", leave,
                                         "snapshot", "create", "lv", "d0", "--disk-only"))
        assert_running(env, "lv", "after the disk-only failure")
    record("live disk-only snapshot, 0 B / 512 KiB free", worst, None)
    worst = 0.0
    for leave in (0, 2 << 20):
        label = "live RAM snapshot" + (" (half-way)" if leave else "")
        worst = max(worst, fails_cleanly(env, guard, label, leave, "snapshot", "create",
                                         "lv", "r0"))
        assert_running(env, "lv", label)
    record("live RAM snapshot, 0 B / 2 MiB free", worst, None)

    # The guest writes 16 MiB to its disk while the host disk is full: QEMU pauses it.
    fill(env.home, 0)
    guest_output(env, "lv", "(dd if=/dev/urandom of=/dev/vda bs=1M count=16 conv=fsync; "
                     "echo $? > /tmp/dd.rc) >/tmp/dd.out 2>&1 &")
    started = time.monotonic()
    while vm_row(env, "lv")["state"] != "paused":
        assert time.monotonic() - started < 120, "QEMU did not pause on ENOSPC"
        time.sleep(0.2)
    paused_after = time.monotonic() - started
    row = vm_row(env, "lv")
    reason = str(row["error"])
    assert "no space" in reason.lower() and "resume-vm lv" in reason, row
    text = env.run("list", check=True).stdout.decode()
    assert reason in text, text
    print(f"guest write on a full host disk: paused after {paused_after:.2f}s; "
          f"list says: {reason}")
    free(env.home)
    resumed = works(env, "resume-vm after freeing", "resume-vm", "lv")
    deadline = time.monotonic() + 120
    while True:
        rc = env.run("exec", "lv", "--", "/bin/cat", "/tmp/dd.rc")
        if rc.returncode == 0 and rc.stdout.strip():
            break
        assert time.monotonic() < deadline, "the guest's write never finished"
        time.sleep(0.5)
    assert rc.stdout.strip() == b"0", guest_output(env, "lv", "cat /tmp/dd.out")
    assert_running(env, "lv", "after resume")
    record("guest disk write, 0 B free (pause, resume)", paused_after, resumed)

    ram = works(env, "RAM snapshot after freeing", "snapshot", "create", "lv", "r0")
    disk = works(env, "disk-only snapshot after freeing", "snapshot", "create", "lv", "d0",
                 "--disk-only")
    record("live snapshots after freeing: RAM / disk-only", ram, disk)
    guest_output(env, "lv", "echo after > /tmp/marker")
    works(env, "second RAM snapshot", "snapshot", "create", "lv", "r1")

    fill(env.home, 0)
    took = works(env, "live RAM restore, 0 B free", "snapshot", "restore", "lv", "r0")
    assert_running(env, "lv", "after the restore")
    assert "after" not in guest_output(env, "lv", "cat /tmp/marker 2>/dev/null; true")
    record("live RAM restore, 0 B free (works)", took, None)
    # Deleting needs the few KiB of a rewritten snapshot table, then frees the snapshot.
    fill(env.home, PAGE)
    took = works(env, "live delete (RAM), one page free", "snapshot", "delete", "lv", "r1")
    freed = avail(env.home)
    assert freed > (32 << 20), f"deleting the RAM snapshot freed only {freed} B"
    took2 = works(env, "live delete (disk-only)", "snapshot", "delete", "lv", "d0")
    # r0 was restored: QEMU's active layer still maps its RAM state (snapshot-load copies
    # the snapshot's whole L1 table), so deleting r0 gives back little; the next RAM
    # snapshot reuses that space.
    before = avail(env.home)
    took3 = works(env, "live delete (restored RAM)", "snapshot", "delete", "lv", "r0")
    print(f"deleting a RAM snapshot on a full disk freed {freed / 2**20:.1f} MiB; deleting "
          f"the restored one {(avail(env.home) - before) / 2**20:.1f} MiB")
    record("live deletes, 1 page free (works; frees space)", took, max(took2, took3))
    assert_running(env, "lv", "after the deletes")
    free(env.home)
    assert json.loads(env.run("snapshot", "list", "lv", "--json", check=True).stdout) == []
    stop_cleanly(env, "lv")
    assert check_images(env.home) == 1
    print("live snapshots: 9 cases")


# -- a running VM with the share: cp and the clipboard ------------------------------------------


@pytest.fixture
def home64(hc_env: HcEnv) -> Iterator[HcEnv]:
    """A 64 MiB home, and an 8 MiB tmpfs beside it for copies to another filesystem."""
    with small_home(hc_env, 64) as env:
        dest = hc_env.home.parent / "dest"
        mount_tmpfs(dest, 8)
        try:
            yield env
        finally:
            unmount(dest)


def test_cp_and_clipboard_on_a_full_disk(home64: HcEnv, test_guest: GuestImage) -> None:
    """8 full-disk cp cases with 1 MiB free (a 4 MiB file): host→guest staged through
    the shared folder, host→guest placed directly in the share over an older version,
    guest→host into the full home via the share and via the agent, guest→host from the
    share directly, guest→host to another full filesystem via the share and via the
    agent, and guest→host to a filesystem with room while the share is full (unverified:
    the guest's short write must still fail the copy) — an older version at every
    destination. No partial or temporary file anywhere
    (host tree, staging dir, guest dirs), every older version intact; each works after
    freeing, sha256 checked. Plus 2 clipboard cases: push and pull with 0 B free work
    and write nothing under HYPERCORE_HOME (no error line, not even from the log)."""
    env = home64
    dest = env.home.parent / "dest"
    create_guest_vm(env, test_guest, "cp1")
    env.run("boot-vm", "cp1", "--wait-agent", "90", check=True, timeout=180)
    payload = env.home.parent / "payload.bin"
    data = os.urandom(4 << 20)
    payload.write_bytes(data)
    digest = hashlib.sha256(data).hexdigest()
    # Warm up: the staging dir exists, the share is mounted, the lock file exists.
    works(env, "warm-up", "cp", str(payload), "cp1:/tmp/")
    guest_output(env, "cp1", "mkdir -p /tmp/t && echo old > /tmp/t/payload.bin && "
                             "cp /tmp/payload.bin /tmp/t/src.bin")
    share = env.home / "shared_folder"
    (share / "payload.bin").write_text("old\n")
    (share / "inshare.bin").write_bytes(data)
    out = env.home / "out"
    out.mkdir()
    (out / "src.bin").write_text("old\n")
    (out / "inshare.bin").write_text("old\n")
    (dest / "src.bin").write_text("old\n")
    guard = Guard(env.home, dest)
    guest_before = guest_output(env, "cp1", "find /tmp/t /shared -type f | sort | xargs sha256sum")

    cases: list[tuple[str, Path, tuple[str, ...]]] = [
        ("cp host->guest (staged in the share)", env.home,
         ("cp", str(payload), "cp1:/tmp/t/")),
        ("cp host->guest (directly into the share)", env.home,
         ("cp", str(payload), "cp1:/shared/")),
        ("cp guest->host via the share", env.home,
         ("cp", "cp1:/tmp/t/src.bin", str(out) + "/")),
        ("cp guest->host via the agent", env.home,
         ("cp", "--via", "agent", "cp1:/tmp/t/src.bin", str(out) + "/")),
        ("cp guest->host from the share", env.home,
         ("cp", "cp1:/shared/inshare.bin", str(out) + "/")),
        ("cp guest->host to another full fs, share", dest,
         ("cp", "cp1:/tmp/t/src.bin", str(dest) + "/")),
        ("cp guest->host to another full fs, agent", dest,
         ("cp", "--via", "agent", "cp1:/tmp/t/src.bin", str(dest) + "/")),
        ("cp guest->host, staging in the full share", env.home,
         ("cp", "--no-verify", "cp1:/tmp/t/src.bin", str(dest) + "/")),
    ]
    for label, space, args in cases:
        took = fails_cleanly(env, guard, label, 1 << 20, *args, space=space)
        assert guest_output(env, "cp1", "find /tmp/t /shared -type f | sort | xargs sha256sum") \
            == guest_before, f"{label}: the guest's files changed"
        free(space)
        ok = works(env, f"{label} after freeing", *args)
        record(label, took, ok)
        guard = Guard(env.home, dest)  # the copy is there now: the next case starts here
        guest_before = guest_output(env, "cp1",
                                    "find /tmp/t /shared -type f | sort | xargs sha256sum")
    sums = guest_output(env, "cp1", "sha256sum /tmp/t/payload.bin /shared/payload.bin")
    assert sums.count(digest) == 2, sums
    for copied in (out / "src.bin", out / "inshare.bin", dest / "src.bin"):
        assert hashlib.sha256(copied.read_bytes()).hexdigest() == digest, copied
    assert list((share / ".hypercore-transfer").iterdir()) == []

    # The clipboard writes nothing under HYPERCORE_HOME: it works on a full disk.
    fill(env.home, 0)
    guard = Guard(env.home)
    push = works(env, "clip push, 0 B free", "clip", "push", "cp1", "--text", "full disk é")
    proc, pull = timed(env, "clip", "pull", "cp1")
    assert proc.returncode == 0 and proc.stderr == b"", proc.stderr
    assert proc.stdout.decode() == "full disk é"
    guard.assert_unchanged("clipboard")
    record("clip push / pull, 0 B free (works)", push, pull)
    free(env.home)
    stop_cleanly(env, "cp1")
    assert check_images(env.home) == 1
    print("cp and clipboard: 10 cases")
