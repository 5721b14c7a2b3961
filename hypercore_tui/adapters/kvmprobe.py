"""Does a guest really run under KVM? A tiny guest must finish its work within seconds.

``/dev/kvm`` opening proves little: under some nested setups (a cloud VM whose hypervisor
offers a software KVM) the device opens and QEMU starts, but guest code crawls through an
instruction emulator: a tiny real-mode program finishes, a Linux kernel never prints a line.
So the probe boots a 512-byte boot sector that does what every real guest does first
(protected mode, paging, long mode), then counts down a loop of 10**8 iterations and
writes a known value to QEMU's ``isa-debug-exit`` port, which ends QEMU with status
``(value << 1) | 1``. TCG needs about 0.4 s (QEMU's start included), KVM on real
hardware runs it natively; the emulating "KVM" of the development machines needs over
20 s. Past the deadline the probe QEMU is SIGKILLed (its own process group; the kernel
kills it should the caller die first) and the verdict is that guests do not run.

The verdict is cached per host boot in the per-user runtime directory, keyed on
``/proc/sys/kernel/random/boot_id`` and the QEMU binary (path and mtime).

Test hook: ``HYPERCORE_KVM_PROBE_GUEST=hang`` makes the KVM probe boot a guest that loops
forever, so the fallback to TCG can be tested on a host where KVM works. It is part of the
cache key: it never leaves a verdict behind for real use.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import struct
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hypercore_tui.adapters.fs import atomic_write_bytes, ensure_private_dir, locked
from hypercore_tui.core.errors import HypercoreError

log = logging.getLogger("hypercore.kvmprobe")
log.addHandler(logging.NullHandler())

KVM_DEVICE = "/dev/kvm"
#: How long the probe guest may take, QEMU's start included (real KVM and TCG: ~0.3 s).
PROBE_DEADLINE = 3.0
#: Countdown iterations of the probe guest: ~0.05 s on KVM, ~0.2 s under TCG.
PROBE_LOOPS = 100_000_000
#: Written to the isa-debug-exit port: QEMU exits with (0x2a << 1) | 1 = 85.
PROBE_EXIT_VALUE = 0x2A
PROBE_EXIT_STATUS = (PROBE_EXIT_VALUE << 1) | 1
#: Bump when the probe guest or its verdicts change: older cached verdicts are ignored.
PROBE_VERSION = 1
CACHE_NAME = "kvm-probe.json"
GUEST_ENV = "HYPERCORE_KVM_PROBE_GUEST"
BOOT_ID = Path("/proc/sys/kernel/random/boot_id")

NOT_RUNNING = "KVM opens but guests do not run (nested virtualisation?)"
RUNS = "a test guest ran under KVM"


@dataclass(frozen=True)
class ProbeResult:
    accel: str
    runs: bool  # the guest finished its work in time
    verdict: str  # one line for the user
    seconds: float  # the probe's wall time (as measured when it ran)
    #: A verdict worth caching for this host boot (a QEMU start-up error is not).
    definitive: bool = True
    cached: bool = False


# -- the probe guest --------------------------------------------------------------------
#
# Loaded by the BIOS at 0000:7c00 in real mode. Hand-assembled (the listing is GNU as
# syntax); every absolute address is computed below from the parts' lengths.

_BASE = 0x7C00


def _real_mode(gdt_desc: int, pm32: int) -> bytes:
    return b"".join((
        b"\xfa",                                       # cli
        b"\x31\xc0",                                   # xor   %ax, %ax
        b"\x8e\xd8",                                   # mov   %ax, %ds
        b"\x8e\xd0",                                   # mov   %ax, %ss
        b"\xbc\x00\x7c",                               # mov   $0x7c00, %sp
        b"\x66\x0f\x01\x16" + struct.pack("<H", gdt_desc),  # lgdtl (gdt_desc)
        b"\x0f\x20\xc0",                               # mov   %cr0, %eax
        b"\x0c\x01",                                   # or    $1, %al        (PE)
        b"\x0f\x22\xc0",                               # mov   %eax, %cr0
        b"\x66\xea" + struct.pack("<IH", pm32, 0x08),  # ljmpl $0x08, $pm32
    ))


def _protected_mode(lm64: int) -> bytes:
    return b"".join((
        b"\x66\xb8\x10\x00",                           # mov   $0x10, %ax
        b"\x8e\xd8",                                   # mov   %ax, %ds
        b"\x8e\xc0",                                   # mov   %ax, %es
        b"\x8e\xd0",                                   # mov   %ax, %ss
        b"\xbf\x00\x10\x00\x00",                       # mov   $0x1000, %edi  (PML4)
        b"\x0f\x22\xdf",                               # mov   %edi, %cr3
        b"\x31\xc0",                                   # xor   %eax, %eax
        b"\xb9\x00\x0c\x00\x00",                       # mov   $0xc00, %ecx
        b"\xf3\xab",                                   # rep stosl           (3 zero pages)
        b"\xc7\x05\x00\x10\x00\x00\x03\x20\x00\x00",   # movl  $0x2003, 0x1000 (PML4 -> PDPT)
        b"\xc7\x05\x00\x20\x00\x00\x03\x30\x00\x00",   # movl  $0x3003, 0x2000 (PDPT -> PD)
        b"\xc7\x05\x00\x30\x00\x00\x83\x00\x00\x00",   # movl  $0x83, 0x3000   (2 MiB at 0)
        b"\x0f\x20\xe0",                               # mov   %cr4, %eax
        b"\x0c\x20",                                   # or    $0x20, %al     (PAE)
        b"\x0f\x22\xe0",                               # mov   %eax, %cr4
        b"\xb9\x80\x00\x00\xc0",                       # mov   $0xc0000080, %ecx (EFER)
        b"\x0f\x32",                                   # rdmsr
        b"\x80\xcc\x01",                               # or    $1, %ah        (LME)
        b"\x0f\x30",                                   # wrmsr
        b"\x0f\x20\xc0",                               # mov   %cr0, %eax
        b"\x0d\x00\x00\x00\x80",                       # or    $0x80000000, %eax (PG)
        b"\x0f\x22\xc0",                               # mov   %eax, %cr0
        b"\xea" + struct.pack("<IH", lm64, 0x18),      # ljmpl $0x18, $lm64
    ))


def _long_mode(loops: int, hang: bool) -> bytes:
    return b"".join((
        b"\xb9" + struct.pack("<I", loops),            # mov   $loops, %ecx
        b"\xff\xc9",                                   # spin: dec %ecx
        b"\xeb\xfc" if hang else b"\x75\xfc",          # jmp spin (hang) | jnz spin
        b"\xb0" + bytes([PROBE_EXIT_VALUE]),           # mov   $0x2a, %al
        b"\xe6\xf4",                                   # out   %al, $0xf4 (isa-debug-exit)
        b"\xf4",                                       # halt: hlt
        b"\xeb\xfd",                                   # jmp   halt
    ))


_GDT = struct.pack("<4Q",
                   0,                     # null
                   0x00CF9A000000FFFF,    # 0x08: 32-bit code, flat
                   0x00CF92000000FFFF,    # 0x10: data, flat
                   0x00AF9A000000FFFF)    # 0x18: 64-bit code


def boot_sector(*, loops: int = PROBE_LOOPS, hang: bool = False) -> bytes:
    """The probe guest: 512 bytes ending in the 55 AA boot signature.

    ``hang``: the countdown never ends, the exit port is never written (a guest that
    does not run, for tests).
    """
    if not 1 <= loops < 2**32:
        raise ValueError("loops must fit in 32 bits and be at least 1")
    real_len = len(_real_mode(0, 0))
    prot_len = len(_protected_mode(0))
    long_len = len(_long_mode(loops, hang))
    pm32 = _BASE + real_len
    lm64 = pm32 + prot_len
    gdt = (lm64 + long_len + 7) & ~7
    gdt_desc = gdt + len(_GDT)
    code = _real_mode(gdt_desc, pm32) + _protected_mode(lm64) + _long_mode(loops, hang)
    code += bytes(gdt - _BASE - len(code)) + _GDT + struct.pack("<HI", len(_GDT) - 1, gdt)
    if len(code) > 510:
        raise AssertionError("probe guest does not fit in a boot sector")
    return code + bytes(510 - len(code)) + b"\x55\xaa"


# -- running it -------------------------------------------------------------------------


def device_error(path: str = KVM_DEVICE) -> str | None:
    """None when ``path`` opens read-write, else why not (``Permission denied``...)."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except OSError as exc:
        return exc.strerror or str(exc)
    os.close(fd)
    return None


def _qemu_opt(value: str) -> str:
    return value.replace(",", ",,")


def probe_argv(qemu: str, accel: str, image: Path) -> list[str]:
    return [
        qemu, "-accel", accel, "-cpu", "host" if accel == "kvm" else "max",
        "-M", "pc", "-m", "16", "-nodefaults", "-no-user-config", "-display", "none",
        "-device", "isa-debug-exit,iobase=0xf4,iosize=0x04",
        "-drive", f"file={_qemu_opt(str(image))},format=raw,if=floppy,readonly=on",
    ]


def _boot(argv_for: Callable[[Path], list[str]], image: bytes, deadline: float
          ) -> tuple[int | None, float, str]:
    """Run the probe QEMU on ``image`` (a private temp file) for at most ``deadline``
    seconds: (exit status or None at the deadline, seconds, its stderr)."""
    with tempfile.TemporaryDirectory(prefix="hc-kvmprobe-") as tmp:  # 0700
        path = Path(tmp) / "probe.img"
        path.write_bytes(image)
        argv = argv_for(path)
        guard = shutil.which("setpriv")
        if guard:  # the kernel kills QEMU should this process die during the probe
            argv = [guard, "--pdeathsig", "KILL", "--", *argv]  # exec: QEMU is our child
        with open(Path(tmp) / "stderr", "w+b") as err:
            start = time.monotonic()
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                    stderr=err, start_new_session=True)
            try:
                status: int | None = proc.wait(timeout=max(0.0, deadline))
            except subprocess.TimeoutExpired:
                status = None
            finally:
                if proc.returncode is None:  # not reaped: its pid is still its group's id
                    _kill_group(proc)
            seconds = time.monotonic() - start
            err.seek(0)
            return status, seconds, err.read(64 * 1024).decode(errors="replace")


def run_probe(accel: str, *, qemu: str, deadline: float = PROBE_DEADLINE,
              loops: int = PROBE_LOOPS, hang: bool = False) -> ProbeResult:
    """Boot the probe guest under ``accel`` (kvm or tcg) and judge it. Blocks up to
    ``deadline`` seconds: async code runs it in a thread.

    The probe QEMU runs in its own process group and is SIGKILLed at the deadline;
    it is gone when this returns, whatever happened.
    """
    if accel not in ("kvm", "tcg"):
        raise ValueError(f"unknown accelerator {accel!r}")
    if accel == "kvm":
        reason = device_error()
        if reason:
            return ProbeResult(accel, False, f"{KVM_DEVICE} cannot be opened: {reason}",
                               0.0, definitive=False)
    try:
        status, seconds, stderr = _boot(lambda image: probe_argv(qemu, accel, image),
                                        boot_sector(loops=loops, hang=hang), deadline)
    except OSError as exc:
        return ProbeResult(accel, False, f"cannot run the {accel.upper()} probe: "
                           f"{exc.strerror or exc}", 0.0, definitive=False)
    name = accel.upper()
    if status == PROBE_EXIT_STATUS:
        return ProbeResult(accel, True, RUNS if accel == "kvm" else
                           "a test guest ran under TCG", seconds)
    if status is None:
        log.info("probe guest under %s did not finish within %.1fs", name, deadline)
        return ProbeResult(accel, False, NOT_RUNNING if accel == "kvm" else
                           "guests do not run under TCG", seconds)
    return ProbeResult(accel, False, f"{name} probe failed: {_qemu_reason(stderr, status)}",
                       seconds, definitive=False)


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)  # its own session: pgid == pid
    proc.wait()


def _qemu_reason(stderr: str, status: int) -> str:
    lines = [ln.strip() for ln in stderr.splitlines()
             if ln.strip() and "warning:" not in ln]
    if not lines:
        return f"QEMU exited with status {status}" if status >= 0 else \
            f"QEMU was killed by signal {-status}"
    return lines[-1].split(": ", 1)[-1] if lines[-1].startswith("qemu-system") else lines[-1]


# -- the verdict, once per host boot ----------------------------------------------------


def cache_path(cache_dir: Path) -> Path:
    return cache_dir / CACHE_NAME


def _cache_key(qemu: str, environ: Mapping[str, str]) -> dict[str, Any] | None:
    try:
        boot_id = BOOT_ID.read_text().strip()
        mtime = os.stat(qemu).st_mtime_ns
    except OSError:
        return None
    return {"version": PROBE_VERSION, "boot_id": boot_id, "qemu": qemu, "qemu_mtime_ns": mtime,
            "guest": "hang" if _hang_requested(environ) else "normal"}


def _hang_requested(environ: Mapping[str, str]) -> bool:
    return environ.get(GUEST_ENV, "") == "hang"


def cached_verdict(cache_dir: Path, *, qemu: str,
                   environ: Mapping[str, str] = os.environ) -> ProbeResult | None:
    """The KVM verdict of an earlier probe in this host boot (no QEMU is run), if any."""
    key = _cache_key(qemu, environ)
    if key is None:
        return None
    try:
        with open(cache_path(cache_dir), "rb") as fh:
            data = json.loads(fh.read(4096))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or any(data.get(k) != v for k, v in key.items()):
        return None
    runs, seconds = data.get("runs"), data.get("seconds")
    if not isinstance(runs, bool) or not isinstance(seconds, (int, float)):
        return None
    return ProbeResult("kvm", runs, RUNS if runs else NOT_RUNNING, float(seconds), cached=True)


def probe_kvm(cache_dir: Path, *, qemu: str, environ: Mapping[str, str] = os.environ,
              deadline: float = PROBE_DEADLINE) -> ProbeResult:
    """The KVM verdict for this host boot: from the cache, else from a probe (which is
    then cached). Blocks up to ``deadline`` seconds (more while another process probes):
    async code runs it in a thread."""
    found = cached_verdict(cache_dir, qemu=qemu, environ=environ)
    if found is not None:
        return found
    try:
        ensure_private_dir(cache_dir)
        with locked(cache_dir / (CACHE_NAME + ".lock"), what="KVM probe",
                    timeout=deadline + 10):
            found = cached_verdict(cache_dir, qemu=qemu, environ=environ)  # probed meanwhile?
            if found is not None:
                return found
            return _probe_and_cache(cache_dir, qemu=qemu, environ=environ, deadline=deadline)
    except HypercoreError as exc:  # no cache directory or lock: probe all the same
        log.warning("KVM probe without its cache: %s", exc)
        return run_probe("kvm", qemu=qemu, deadline=deadline, hang=_hang_requested(environ))


def _probe_and_cache(cache_dir: Path, *, qemu: str, environ: Mapping[str, str],
                     deadline: float) -> ProbeResult:
    result = run_probe("kvm", qemu=qemu, deadline=deadline, hang=_hang_requested(environ))
    log.info("KVM probe: %s (%.2fs)", result.verdict, result.seconds)
    key = _cache_key(qemu, environ)
    if result.definitive and key is not None:
        record = {**key, "runs": result.runs, "seconds": round(result.seconds, 3),
                  "probed_at": time.time()}
        try:
            atomic_write_bytes(cache_path(cache_dir),
                               (json.dumps(record, sort_keys=True) + "\n").encode(), mode=0o600)
        except HypercoreError as exc:  # a full disk: the next boot probes again
            log.warning("cannot cache the KVM verdict: %s", exc)
    return result
