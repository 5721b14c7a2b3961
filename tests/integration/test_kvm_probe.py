"""The KVM probe with real QEMU: a tiny guest must finish its work within the deadline.

* Under TCG the probe guest runs, in well under the deadline: the probe detects a guest
  that runs.
* A probe guest that loops forever fails with the "guests do not run" verdict at the
  deadline, and its QEMU (seen running during the probe) is gone afterwards.
* A probe whose caller is SIGKILLed leaves no QEMU either (the kernel kills it:
  ``setpriv --pdeathsig KILL``).
* The real KVM probe of this host ends within the deadline whatever the verdict (on the
  development machines /dev/kvm opens but guests do not run: the probe says so).
* ``boot-vm`` without ``HYPERCORE_ACCEL`` and with a KVM probe forced to fail
  (``HYPERCORE_KVM_PROBE_GUEST=hang``: the real probe under real KVM, its guest looping
  forever) boots the test guest under TCG, says the note once, the agent answers;
  ``check-env`` prints the failing line; the second boot reads the cached verdict (no
  second probe: the cache file is not rewritten). Where QEMU itself aborts under KVM
  (one development machine), the note is QEMU's reason, said at each boot, never cached.

The cache logic itself: tests/unit/test_kvm_probe_cache.py.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from hypercore_tui.adapters import kvmprobe
from hypercore_tui.adapters.process import find_qemu

from ..conftest import ROOT, GuestImage, HcEnv, create_guest_vm

pytestmark = [pytest.mark.qemu, pytest.mark.timeout(300)]

NOTE = "KVM opens but guests do not run (nested virtualisation?); using TCG"
NOTE_LINE = f"hypercore: note: {NOTE}"


def probe_qemus() -> set[int]:
    """Live probe QEMUs on this machine (their argv carries the isa-debug-exit device)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            state = (entry / "stat").read_bytes().rsplit(b")", 1)[1].split()[0]
        except OSError:
            continue
        if b"isa-debug-exit,iobase=0xf4,iosize=0x04" in argv and b"hc-kvmprobe-" in b"".join(
                argv) and state not in (b"Z", b"X"):
            found.add(int(entry.name))
    return found


def test_tcg_probe_passes_well_under_the_deadline() -> None:
    result = kvmprobe.run_probe("tcg", qemu=find_qemu())
    print(f"tcg probe: {result.verdict} in {result.seconds:.2f}s")
    assert result.runs, result
    assert result.verdict == "a test guest ran under TCG"
    assert result.seconds < kvmprobe.PROBE_DEADLINE / 2


def test_a_guest_that_never_finishes_fails_at_the_deadline_and_leaves_no_qemu() -> None:
    before = probe_qemus()
    seen: set[int] = set()
    done = threading.Event()

    def watch() -> None:  # the probe QEMU while it runs
        while not done.is_set():
            seen.update(probe_qemus() - before)
            time.sleep(0.05)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        started = time.monotonic()
        result = kvmprobe.run_probe("tcg", qemu=find_qemu(), deadline=2.0, hang=True)
        elapsed = time.monotonic() - started
    finally:
        done.set()
        watcher.join()
    print(f"looping guest: {result.verdict} after {elapsed:.2f}s")
    assert (result.runs, result.verdict, result.definitive) == (
        False, "guests do not run under TCG", True)
    assert 2.0 <= elapsed < 3.5
    assert seen, "the probe QEMU was never seen running"
    for pid in seen:  # gone, not even a zombie
        assert not Path(f"/proc/{pid}").exists() or pid not in probe_qemus()
    assert probe_qemus() <= before


def test_a_probe_whose_caller_is_killed_leaves_no_qemu() -> None:
    """SIGKILL of the probing process (no finally runs): the kernel kills its QEMU at once
    (parent-death signal), long before the deadline."""
    before = probe_qemus()
    code = ("from hypercore_tui.adapters import kvmprobe, process; "
            "kvmprobe.run_probe('tcg', qemu=process.find_qemu(), deadline=2.0, hang=True)")
    caller = subprocess.Popen([sys.executable, "-c", code], env={**os.environ,
                              "PYTHONPATH": str(ROOT)})
    try:
        deadline = time.monotonic() + 10
        while not (probe_qemus() - before) and time.monotonic() < deadline:
            time.sleep(0.05)
        orphans = probe_qemus() - before
        assert orphans, "the probe QEMU never started"
        caller.kill()
    finally:
        caller.wait()
    gone_by = time.monotonic() + 1.5  # the probe's own deadline (2 s) plays no part
    while probe_qemus() & orphans and time.monotonic() < gone_by:
        time.sleep(0.1)
    assert not probe_qemus() & orphans, "a probe QEMU outlived its caller"


def test_the_real_kvm_probe_of_this_host_ends_within_the_deadline() -> None:
    # CI and the development machines have a /dev/kvm that opens (its guests hang):
    # never a skip.
    assert not kvmprobe.device_error(), f"/dev/kvm cannot be opened: {kvmprobe.device_error()}"
    before = probe_qemus()
    started = time.monotonic()
    result = kvmprobe.run_probe("kvm", qemu=find_qemu())
    elapsed = time.monotonic() - started
    print(f"kvm probe: {result.verdict} in {elapsed:.2f}s")
    assert elapsed < kvmprobe.PROBE_DEADLINE + 1.0
    # Each verdict is the truth of a kind of host: guests run, guests do not run (CI, the
    # development machines so far), or QEMU itself aborts under KVM (one development
    # machine: an assertion in kvm_buf_set_msrs), which is said as it is and not cached.
    if result.definitive:
        assert result.verdict in (kvmprobe.RUNS, kvmprobe.NOT_RUNNING), result
    else:
        assert not result.runs and result.verdict.startswith("KVM probe failed: "), result
        assert "\n" not in result.verdict
    assert probe_qemus() <= before


def qemu_argv(env: HcEnv, name: str) -> list[str]:
    rows = {row["name"]: row for row in json.loads(env.run("list", "--json",
                                                           check=True).stdout)}
    pid = rows[name]["pid"]
    assert pid
    return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")


def test_boot_falls_back_to_tcg_with_one_note_and_caches_the_verdict(
        hc_env: HcEnv, test_guest: GuestImage) -> None:
    # CI and the development machines have a /dev/kvm that opens (its guests hang):
    # never a skip.
    assert not kvmprobe.device_error(), f"/dev/kvm cannot be opened: {kvmprobe.device_error()}"
    create_guest_vm(hc_env, test_guest, "kp1")
    environ = {k: v for k, v in hc_env.environ.items() if k != "HYPERCORE_ACCEL"}
    environ[kvmprobe.GUEST_ENV] = "hang"  # the real KVM probe, forced to fail on any host
    env = dataclasses.replace(hc_env, environ=environ)
    cache = hc_env.runtime / kvmprobe.CACHE_NAME
    assert not cache.exists()
    # Where QEMU itself aborts under KVM, the looping guest never gets to loop: the note
    # is QEMU's reason, and it is not cached (a QEMU that fails may be a passing fault).
    aborts = kvmprobe.run_probe("kvm", qemu=find_qemu(environ), deadline=2.0, hang=True)
    note = NOTE if aborts.definitive else f"{aborts.verdict}; using TCG"

    started = time.monotonic()
    boot = env.run("boot-vm", "kp1", "--wait-agent", "120")
    first_boot = time.monotonic() - started
    assert boot.returncode == 0, boot.stderr
    assert boot.stderr.decode().splitlines() == [f"hypercore: note: {note}"]  # once
    argv = qemu_argv(env, "kp1")
    assert argv[argv.index("-accel") + 1] == "tcg"
    assert env.run("exec", "kp1", "--", "hostname", check=True).stdout == b"hc-testguest\n"
    if not aborts.definitive:
        assert not cache.exists()
        check = env.run("check-env")
        lines = check.stdout.decode().splitlines()
        assert f"warn  kvm               {note}" in lines, lines
        assert env.run("stop-vm", "kp1", "--force").returncode == 0
        again = env.run("boot-vm", "kp1")
        assert again.returncode == 0, again.stderr
        assert again.stderr.decode().splitlines() == [f"hypercore: note: {note}"]
        assert not cache.exists()
        assert kvmprobe.cached_verdict(hc_env.runtime, qemu=find_qemu(environ),
                                       environ=environ) is None
        print(f"QEMU aborts under KVM here: {aborts.verdict!r}; first boot "
              f"{first_boot:.2f}s")
        env.run("stop-vm", "kp1", "--force")
        return

    record = json.loads(cache.read_text())
    assert (record["runs"], record["guest"]) == (False, "hang")
    assert record["boot_id"] == kvmprobe.BOOT_ID.read_text().strip()
    assert kvmprobe.PROBE_DEADLINE <= record["seconds"] < kvmprobe.PROBE_DEADLINE + 1
    assert oct(os.stat(cache).st_mode & 0o777) == "0o600"
    probed = os.stat(cache).st_mtime_ns

    check = env.run("check-env")
    lines = check.stdout.decode().splitlines()
    assert f"warn  kvm               {NOTE}" in lines, lines
    assert sum(1 for line in lines if " kvm " in line) == 1

    assert env.run("stop-vm", "kp1", "--force").returncode == 0
    started = time.monotonic()
    again = env.run("boot-vm", "kp1")
    second_boot = time.monotonic() - started
    assert again.returncode == 0, again.stderr
    assert again.stderr.decode().splitlines() == [NOTE_LINE]
    argv = qemu_argv(env, "kp1")
    assert argv[argv.index("-accel") + 1] == "tcg"
    assert os.stat(cache).st_mtime_ns == probed  # the cached verdict: no second probe
    started = time.perf_counter()
    hit = kvmprobe.cached_verdict(hc_env.runtime, qemu=find_qemu(environ), environ=environ)
    lookup = time.perf_counter() - started
    assert hit is not None and hit.cached and not hit.runs
    print(f"first boot (probe + boot + agent) {first_boot:.2f}s, second boot (cache) "
          f"{second_boot:.2f}s, cache lookup {lookup * 1000:.2f} ms")
    env.run("stop-vm", "kp1", "--force")
