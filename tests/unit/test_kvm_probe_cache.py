"""The KVM verdict: cached once per host boot (boot_id, QEMU path and mtime), which
verdicts are cached, how choose_accel, check-env's line and the header use it. No QEMU
runs here (the probe is replaced); the real probe: tests/integration/test_kvm_probe.py."""

from __future__ import annotations

import os
import stat
import struct
from pathlib import Path

import pytest

from hypercore_tui.adapters import hostcheck, kvmprobe, process
from hypercore_tui.adapters.kvmprobe import NOT_RUNNING, ProbeResult
from hypercore_tui.core.errors import InvalidInput, OperationFailed

NOTE = "KVM opens but guests do not run (nested virtualisation?); using TCG"


class FakeProbe:
    """Stands in for run_probe: counts the calls, returns ``result``."""

    def __init__(self, result: ProbeResult) -> None:
        self.result = result
        self.calls: list[tuple[str, bool]] = []

    def __call__(self, accel: str, *, qemu: str, deadline: float = 3.0,
                 loops: int = kvmprobe.PROBE_LOOPS, hang: bool = False) -> ProbeResult:
        self.calls.append((accel, hang))
        return self.result


HANGS = ProbeResult("kvm", False, NOT_RUNNING, 3.01)
RUNS = ProbeResult("kvm", True, kvmprobe.RUNS, 0.12)
QEMU_ERROR = ProbeResult("kvm", False, "KVM probe failed: failed to initialize kvm: No space",
                         0.05, definitive=False)


@pytest.fixture
def host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """A fake boot_id, a fake QEMU binary (its mtime is part of the key), /dev/kvm opens."""
    boot_id = tmp_path / "boot_id"
    boot_id.write_text("11111111-2222-3333-4444-555555555555\n")
    qemu = tmp_path / "qemu-system-x86_64"
    qemu.write_text("#!/bin/false\n")
    monkeypatch.setattr(kvmprobe, "BOOT_ID", boot_id)
    monkeypatch.setattr(kvmprobe, "device_error", lambda path="/dev/kvm": None)
    return {"boot_id": boot_id, "qemu": qemu, "cache": tmp_path / "run" / "hypercore"}


def use(monkeypatch: pytest.MonkeyPatch, result: ProbeResult) -> FakeProbe:
    fake = FakeProbe(result)
    monkeypatch.setattr(kvmprobe, "run_probe", fake)
    return fake


def test_second_call_in_the_same_boot_reads_the_cache(
        host: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    fake = use(monkeypatch, HANGS)
    first = kvmprobe.probe_kvm(host["cache"], qemu=str(host["qemu"]), environ={})
    assert (first.runs, first.cached, fake.calls) == (False, False, [("kvm", False)])
    second = kvmprobe.probe_kvm(host["cache"], qemu=str(host["qemu"]), environ={})
    assert (second.runs, second.verdict, second.cached) == (False, NOT_RUNNING, True)
    assert second.seconds == pytest.approx(3.01)
    assert len(fake.calls) == 1
    # Private: the runtime root 0700, the record 0600.
    assert stat.S_IMODE(os.stat(host["cache"]).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(kvmprobe.cache_path(host["cache"])).st_mode) == 0o600


def test_a_passing_verdict_is_cached_too(host: dict[str, Path],
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    fake = use(monkeypatch, RUNS)
    kvmprobe.probe_kvm(host["cache"], qemu=str(host["qemu"]), environ={})
    again = kvmprobe.probe_kvm(host["cache"], qemu=str(host["qemu"]), environ={})
    assert (again.runs, again.cached, len(fake.calls)) == (True, True, 1)


def test_a_new_host_boot_probes_again(host: dict[str, Path],
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    fake = use(monkeypatch, HANGS)
    kvmprobe.probe_kvm(host["cache"], qemu=str(host["qemu"]), environ={})
    host["boot_id"].write_text("99999999-2222-3333-4444-555555555555\n")
    assert not kvmprobe.probe_kvm(host["cache"], qemu=str(host["qemu"]), environ={}).cached
    assert len(fake.calls) == 2


def test_another_or_updated_qemu_probes_again(host: dict[str, Path],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    fake = use(monkeypatch, RUNS)
    qemu = host["qemu"]
    kvmprobe.probe_kvm(host["cache"], qemu=str(qemu), environ={})
    later = os.stat(qemu).st_mtime_ns + 10**9
    os.utime(qemu, ns=(later, later))  # the package was upgraded
    assert not kvmprobe.probe_kvm(host["cache"], qemu=str(qemu), environ={}).cached
    other = qemu.with_name("qemu-other")
    other.write_text("")
    assert not kvmprobe.probe_kvm(host["cache"], qemu=str(other), environ={}).cached
    assert len(fake.calls) == 3
    # ...and each answer was cached under its own key (the last one wins the file).
    assert kvmprobe.cached_verdict(host["cache"], qemu=str(other), environ={}) is not None


def test_a_qemu_start_up_error_is_not_cached(host: dict[str, Path],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    fake = use(monkeypatch, QEMU_ERROR)
    for _ in range(2):
        result = kvmprobe.probe_kvm(host["cache"], qemu=str(host["qemu"]), environ={})
        assert (result.runs, result.cached) == (False, False)
    assert len(fake.calls) == 2
    assert not kvmprobe.cache_path(host["cache"]).exists()


@pytest.mark.parametrize("content", [b"", b"{not json", b"[]", b'{"runs": "yes"}',
                                     b"\x00" * 10000])
def test_a_damaged_cache_means_a_new_probe(host: dict[str, Path],
                                           monkeypatch: pytest.MonkeyPatch,
                                           content: bytes) -> None:
    fake = use(monkeypatch, RUNS)
    host["cache"].mkdir(parents=True)
    kvmprobe.cache_path(host["cache"]).write_bytes(content)
    assert not kvmprobe.probe_kvm(host["cache"], qemu=str(host["qemu"]), environ={}).cached
    assert len(fake.calls) == 1


def test_the_test_hook_never_serves_real_use(host: dict[str, Path],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    fake = use(monkeypatch, HANGS)
    hang = {kvmprobe.GUEST_ENV: "hang"}
    kvmprobe.probe_kvm(host["cache"], qemu=str(host["qemu"]), environ=hang)
    assert fake.calls == [("kvm", True)]
    assert kvmprobe.cached_verdict(host["cache"], qemu=str(host["qemu"]), environ={}) is None
    assert kvmprobe.cached_verdict(host["cache"], qemu=str(host["qemu"]), environ=hang)


# -- choose_accel ------------------------------------------------------------------------


def test_hypercore_accel_wins_without_a_probe(host: dict[str, Path],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    fake = use(monkeypatch, HANGS)
    for forced in ("kvm", "tcg", " TCG "):
        choice = process.choose_accel({"HYPERCORE_ACCEL": forced,
                                       "HYPERCORE_QEMU": str(host["qemu"])},
                                      cache_dir=host["cache"])
        assert (choice.accel, choice.note) == (forced.strip().lower(), None)
    assert fake.calls == []
    with pytest.raises(InvalidInput):
        process.choose_accel({"HYPERCORE_ACCEL": "xen"}, cache_dir=host["cache"])
    monkeypatch.setattr(kvmprobe, "device_error", lambda path="/dev/kvm": "Permission denied")
    with pytest.raises(OperationFailed, match="cannot be opened"):
        process.choose_accel({"HYPERCORE_ACCEL": "kvm"}, cache_dir=host["cache"])


def test_no_kvm_device_means_tcg_without_a_probe(host: dict[str, Path],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    fake = use(monkeypatch, RUNS)
    monkeypatch.setattr(kvmprobe, "device_error", lambda path="/dev/kvm": "No such file")
    choice = process.choose_accel({"HYPERCORE_QEMU": str(host["qemu"])},
                                  cache_dir=host["cache"])
    assert (choice.accel, choice.note, fake.calls) == ("tcg", None, [])


def test_kvm_only_when_the_probe_guest_ran(host: dict[str, Path],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    env = {"HYPERCORE_QEMU": str(host["qemu"])}
    use(monkeypatch, RUNS)
    assert process.choose_accel(env, cache_dir=host["cache"]) == process.AccelChoice("kvm")
    assert process.known_accel_note(env, cache_dir=host["cache"]) is None


def test_tcg_with_the_reason_when_guests_do_not_run(host: dict[str, Path],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    env = {"HYPERCORE_QEMU": str(host["qemu"])}
    use(monkeypatch, HANGS)
    assert process.known_accel_note(env, cache_dir=host["cache"]) is None  # not probed yet
    assert process.choose_accel(env, cache_dir=host["cache"]) == process.AccelChoice("tcg", NOTE)
    # The header reads the cached verdict; HYPERCORE_ACCEL makes the note moot.
    assert process.known_accel_note(env, cache_dir=host["cache"]) == NOTE
    assert process.known_accel_note({**env, "HYPERCORE_ACCEL": "tcg"},
                                    cache_dir=host["cache"]) is None


def test_check_env_line(host: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    env = {"HYPERCORE_QEMU": str(host["qemu"])}
    use(monkeypatch, HANGS)
    check = hostcheck.kvm_check(host["cache"], env)
    assert (check.label, check.name, check.detail) == ("warn", "kvm", NOTE)
    forced = hostcheck.kvm_check(host["cache"], {**env, "HYPERCORE_ACCEL": "tcg"})
    assert forced.detail == f"{NOT_RUNNING}; HYPERCORE_ACCEL=tcg forces the accelerator"
    use(monkeypatch, RUNS)
    kvmprobe.cache_path(host["cache"]).unlink()
    check = hostcheck.kvm_check(host["cache"], env)
    assert (check.label, check.detail) == ("ok", "usable: a test guest ran under KVM "
                                                 "(0.12s, now)")
    assert hostcheck.kvm_check(host["cache"], env).detail.endswith("earlier this host boot)")
    monkeypatch.setattr(kvmprobe, "device_error", lambda path="/dev/kvm": "Permission denied")
    check = hostcheck.kvm_check(host["cache"], env)
    assert (check.label, check.detail) == ("warn", "/dev/kvm cannot be opened: "
                                                   "Permission denied; using TCG")


# -- the probe guest ---------------------------------------------------------------------


def test_boot_sector_layout() -> None:
    sector = kvmprobe.boot_sector()
    assert len(sector) == 512 and sector[510:] == b"\x55\xaa"
    base = 0x7C00
    # lgdtl operand -> the GDT descriptor -> a 4-entry GDT inside the sector
    desc = struct.unpack_from("<H", sector, 14)[0] - base
    limit, gdt = struct.unpack_from("<HI", sector, desc)
    assert limit == 31 and gdt - base + 32 == desc
    assert struct.unpack_from("<4Q", sector, gdt - base)[3] == 0x00AF9A000000FFFF  # 64-bit CS
    loops = struct.pack("<I", kvmprobe.PROBE_LOOPS)
    assert sector.count(loops) == 1
    assert kvmprobe.boot_sector(loops=5).count(struct.pack("<I", 5)) >= 1
    # The looping guest differs in one byte: jnz becomes jmp (and never reaches the port).
    hang = kvmprobe.boot_sector(hang=True)
    diff = [i for i in range(512) if hang[i] != sector[i]]
    assert len(diff) == 1 and (sector[diff[0]], hang[diff[0]]) == (0x75, 0xEB)
    assert b"\xb0\x2a\xe6\xf4" in sector  # mov $0x2a, %al; out %al, $0xf4
    with pytest.raises(ValueError):
        kvmprobe.boot_sector(loops=0)


def test_the_dashboard_header_reads_the_note(host: dict[str, Path], tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from hypercore_tui.services.context import Context
    from hypercore_tui.services.host import HostWatch

    ctx = Context.from_environ({"HYPERCORE_HOME": str(tmp_path / "home"),
                                "HYPERCORE_RUNTIME_DIR": str(host["cache"]),
                                "HYPERCORE_QEMU": str(host["qemu"])})
    fake = use(monkeypatch, HANGS)
    watch = HostWatch(ctx)
    assert watch.read().accel_note is None  # no boot yet: nothing known, nothing probed
    process.choose_accel(ctx.environ, cache_dir=ctx.layout.runtime_base)  # a boot
    summary = watch.read()
    assert summary.accel_note == NOTE and summary.mem_total_bytes > 0
    assert len(fake.calls) == 1
