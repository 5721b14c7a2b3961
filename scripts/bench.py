#!/usr/bin/env python3
"""Hypercore benchmarks against real QEMU (TCG by default) and the real test guest.

    .venv/bin/python scripts/bench.py [SECTION...] [--json] [--rounds N]

Runs the named sections (all when none is named) and prints one report per section;
``--json`` prints the results as one JSON object instead. Sections:

  ceph   guest disk throughput on a Ceph RBD image vs a local qcow2 image: the same
         guest, RAM and cache settings (QEMU cache=writeback for both); in the guest
         ``dd`` of SIZE MiB from tmpfs to /dev/vda with conv=fsync (write), the guest's
         page cache dropped, then ``dd`` back with iflag=direct, 8 passes (read). Median of
         --rounds rounds, and the RBD/qcow2 ratio. Uses a throwaway memstore cluster
         (scripts/ceph-dev.sh, own dir and port) unless --ceph-conf names one.

  clipboard  clipboard push latency host→guest (p50/p95, 4 KiB and 1 MiB), TCG guest and
             qemu-ga on the host; see scripts/bench_storage.py. With --guest real: the
             real-distribution guest (Debian, an X session of hcuser, xclip) instead:
             push and pull into its X session (p50/p95, 4 KiB) when the guest scans for
             the session and when it is named the one it found (the record), on an open
             agent session, as the whole service call and as the CLI, beside a bare
             guest-exec of /bin/true; the load average before and after
  transfer   file transfer throughput host→guest and guest→host (--transfer-mib, 64),
             agent channel and shared folder beside their baselines; ditto

  dashboard  the dashboard's own CPU % and RSS with 1, 10 and 50 running VMs (--vms),
             the wall time of one full refresh of all VMs, and the time from starting
             `hypercore` to its first painted frame; see scripts/bench_dashboard.py

  list       `hypercore list --json` wall time with 10 running VMs (--list-vms), one
             the test guest with its agent, the others without any agent (SeaBIOS
             idle); see scripts/bench_list.py
  startup    `python -X importtime` of `hypercore --help` and of the dashboard's
             modules, and the time from starting `hypercore` to its first frame beside
             a bare Textual app's; see scripts/bench_startup.py
  screen     the dashboard's CPU and QEMU's with the Screen tab hidden, then shown (1
             frame/s) in half-blocks, Kitty graphics and Sixel, for one running test
             guest in tmux; frames counted with inotify (none while hidden); see
             scripts/bench_screen.py

  keys       key -> screen updated (selection, tab, dialog, filter, palette) in the real
             dashboard app over the UI tests' in-memory services with 10, 50 and 200
             VMs (--key-vms): the UI's own cost; see scripts/bench_keys.py

Adding a section: write ``def bench_NAME(args) -> dict[str, Any]`` (print its report,
return its figures) and add it to SECTIONS; add its options in ``build_parser``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
VENV_PYTHON = ROOT / ".venv" / "bin" / "python"
PYTHON = str(VENV_PYTHON) if VENV_PYTHON.exists() else sys.executable
MiB = 1024 * 1024


def log(text: str) -> None:
    sys.stderr.write(f"bench: {text}\n")
    sys.stderr.flush()


class BenchError(Exception):
    pass


# -- a private Hypercore home and the test guest ----------------------------------------


class Home:
    """A throwaway HYPERCORE_HOME; ``run`` calls the real CLI."""

    def __init__(self, base: Path, extra_env: dict[str, str]) -> None:
        self.base = base
        self.environ = dict(os.environ)
        self.environ.pop("XDG_RUNTIME_DIR", None)
        self.environ.update(HYPERCORE_HOME=str(base / "home"),
                            HYPERCORE_RUNTIME_DIR=str(base / "run"))
        self.environ.setdefault("HYPERCORE_ACCEL", "tcg")
        self.environ.update(extra_env)

    def run(self, *args: str, timeout: float = 300) -> str:
        proc = subprocess.run([PYTHON, "-m", "hypercore_tui", *args], env=self.environ,
                              capture_output=True, text=True, timeout=timeout, check=False,
                              stdin=subprocess.DEVNULL)
        if proc.returncode != 0:
            raise BenchError(f"hypercore {' '.join(args[:2])} failed: {proc.stderr.strip()}")
        return proc.stdout

    def guest_sh(self, vm: str, script: str, timeout: float = 300) -> str:
        return self.run("exec", vm, "--timeout", str(timeout), "--", "/bin/sh", "-c", script,
                        timeout=timeout + 30)


@contextmanager
def private_home(extra_env: dict[str, str] | None = None) -> Iterator[Home]:
    base = Path(tempfile.mkdtemp(prefix="hc-bench-", dir="/tmp"))
    home = Home(base, extra_env or {})
    try:
        yield home
    finally:
        for pidfile in (base / "run").glob("*/*/qemu.pid"):
            try:
                os.kill(int(pidfile.read_text().strip()), 9)
            except (OSError, ValueError):
                pass
        shutil.rmtree(base, ignore_errors=True)


def test_guest() -> Path:
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "build-test-guest.sh")],
                          capture_output=True, text=True, timeout=1800, check=False)
    if proc.returncode != 0:
        raise BenchError(f"building the test guest failed: {proc.stderr.strip()[-500:]}")
    return Path(proc.stdout.strip().splitlines()[-1])


def guest_args(guest: Path) -> list[str]:
    cmdline = (guest / "cmdline").read_text().strip()
    return ["--kernel", str(guest / "vmlinuz"), "--initrd", str(guest / "initrd.img"),
            f"--append={cmdline}"]


# -- ceph: RBD vs qcow2 -----------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def ceph_cluster(conf: str | None) -> Iterator[str]:
    """``conf``, or a throwaway memstore cluster's conf (purged afterwards)."""
    if conf:
        yield conf
        return
    directory = Path(tempfile.mkdtemp(prefix="hc-bench-ceph-", dir="/tmp"))
    script = str(ROOT / "scripts" / "ceph-dev.sh")
    try:
        started = time.monotonic()
        proc = subprocess.run(["bash", script, "up", "--memory", "--dir", str(directory)],
                              capture_output=True, text=True, timeout=300, check=False,
                              env=dict(os.environ, HYPERCORE_CEPH_PORT=str(free_port())),
                              stdin=subprocess.DEVNULL)
        if proc.returncode != 0:
            raise BenchError(f"scripts/ceph-dev.sh up failed: {proc.stderr.strip()[-500:]}")
        log(f"memstore cluster up in {time.monotonic() - started:.1f}s")
        yield proc.stdout.strip().splitlines()[-1]
    finally:
        subprocess.run(["bash", script, "purge", "--dir", str(directory)], capture_output=True,
                       timeout=120, check=False)
        shutil.rmtree(directory, ignore_errors=True)


# Guest timing from /proc/uptime (10 ms steps): no exec round trip in the figures.
_TIMED = 'read t0 _ < /proc/uptime; {cmd} 2>/dev/null; read t1 _ < /proc/uptime; echo "$t0 $t1"'


READ_PASSES = 8


def _timed(home: Home, vm: str, cmd: str) -> float:
    first, second = home.guest_sh(vm, _TIMED.format(cmd=cmd)).split()
    return max(float(second) - float(first), 0.01)


def _measure(home: Home, vm: str, size_mib: int, rounds: int) -> dict[str, Any]:
    home.guest_sh(vm, f"head -c {size_mib * MiB} /dev/urandom > /tmp/blob")
    writes, reads = [], []
    for _ in range(rounds):
        home.guest_sh(vm, "sync; echo 3 > /proc/sys/vm/drop_caches")
        writes.append(size_mib / _timed(
            home, vm, f"dd if=/tmp/blob of=/dev/vda bs=1M count={size_mib} conv=fsync"))
        home.guest_sh(vm, "sync; echo 3 > /proc/sys/vm/drop_caches")
        # Reads are fast: read the region READ_PASSES times so the 10 ms clock is precise.
        passes = " ".join(str(i) for i in range(READ_PASSES))
        reads.append(size_mib * READ_PASSES / _timed(
            home, vm, f"for i in {passes}; do dd if=/dev/vda of=/dev/null bs=1M "
                      f"count={size_mib} iflag=direct; done"))
    check = home.guest_sh(vm, f"dd if=/dev/vda bs=1M count={size_mib} 2>/dev/null | md5sum; "
                              "md5sum < /tmp/blob").split()
    if check[0] != check[2]:
        raise BenchError(f"{vm}: the disk does not hold what was written")
    return {"write_mib_s": round(statistics.median(writes), 1),
            "read_mib_s": round(statistics.median(reads), 1),
            "write_rounds": [round(w, 1) for w in writes],
            "read_rounds": [round(r, 1) for r in reads]}


def bench_ceph(args: argparse.Namespace) -> dict[str, Any]:
    size, rounds = args.size_mib, args.rounds
    guest = test_guest()
    disk_size = f"{size * 2}M"
    with ceph_cluster(args.ceph_conf) as conf, \
            private_home({"HYPERCORE_CEPH_CONF": conf}) as home:
        image = f"bench-{uuid.uuid4().hex[:8]}"
        results: dict[str, Any] = {"size_mib": size, "rounds": rounds,
                                   "accel": home.environ["HYPERCORE_ACCEL"], "conf": conf}
        for label, disk in (("qcow2", "auto"), ("rbd", f"rbd:vm-pool/{image}")):
            vm = f"bench-{label}"
            home.run("create-vm", vm, "512", "1", disk, "--disk-size", disk_size,
                     "--no-shared", "--net", "none", *guest_args(guest))
            try:
                started = time.monotonic()
                home.run("boot-vm", vm, "--wait-agent", "120")
                log(f"{vm}: agent answers {time.monotonic() - started:.1f}s after boot-vm")
                results[label] = _measure(home, vm, size, rounds)
                log(f"{vm}: {results[label]}")
            finally:
                subprocess.run([PYTHON, "-m", "hypercore_tui", "stop-vm", vm, "--force"],
                               env=home.environ, capture_output=True, timeout=60, check=False)
                subprocess.run([PYTHON, "-m", "hypercore_tui", "delete-vm", vm, "--yes"],
                               env=home.environ, capture_output=True, timeout=60, check=False)
        for what in ("write", "read"):
            results[f"{what}_ratio_rbd_vs_qcow2"] = round(
                results["rbd"][f"{what}_mib_s"] / results["qcow2"][f"{what}_mib_s"], 2)
    if not args.json:
        print(f"ceph: guest dd of {size} MiB, median of {rounds}, {results['accel']}, "
              "same guest and cache settings")
        print(f"  {'disk':<8} {'write MiB/s':>12} {'read MiB/s':>11}")
        for label in ("qcow2", "rbd"):
            r = results[label]
            print(f"  {label:<8} {r['write_mib_s']:>12} {r['read_mib_s']:>11}")
        print(f"  rbd/qcow2 {results['write_ratio_rbd_vs_qcow2']:>10}x "
              f"{results['read_ratio_rbd_vs_qcow2']:>10}x")
    return results


def bench_clipboard(args: argparse.Namespace) -> dict[str, Any]:
    if args.guest == "real":
        return bench_clipboard_real(args)
    import bench_storage  # scripts/bench_storage.py: the common storage space

    guest = test_guest()
    return bench_storage.bench_clipboard(args, private_home, guest, guest_args(guest))


# -- clipboard on the real-distribution guest ---------------------------------------------


def real_guest() -> Path:
    """The real-distribution guest's directory (built, or found in the cache)."""
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "build-real-guest.sh")],
                          capture_output=True, text=True, timeout=1800, check=False)
    if proc.returncode != 0:
        raise BenchError(f"building the real guest failed: {proc.stderr.strip()[-500:]}")
    return Path(proc.stdout.strip().splitlines()[-1])


@contextmanager
def real_guest_vm(home: Home, name: str) -> Iterator[None]:
    """One VM of the real guest (1 GiB, 1 vCPU, on an overlay of the cached image),
    booted until its agent answers; stopped afterwards."""
    guest = real_guest()
    disk = home.base / f"{name}.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(guest / "disk.qcow2"),
                    "-F", "qcow2", str(disk)], check=True, capture_output=True, timeout=60)
    home.run("create-vm", name, "1024", "1", str(disk), *guest_args(guest))
    try:
        started = time.monotonic()
        home.run("boot-vm", name, "--wait-agent", "180", timeout=300)
        log(f"{name}: agent answers {time.monotonic() - started:.1f}s after boot-vm")
        yield
    finally:
        subprocess.run([PYTHON, "-m", "hypercore_tui", "stop-vm", name, "--force"],
                       env=home.environ, capture_output=True, timeout=90, check=False)


def _load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def _pcts(times: list[float]) -> dict[str, float]:
    ordered = sorted(times)

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] * 1000, 1)

    return {"p50_ms": at(0.5), "p95_ms": at(0.95), "n": len(times)}


def bench_clipboard_real(args: argparse.Namespace) -> dict[str, Any]:
    import asyncio

    sys.path.insert(0, str(ROOT))
    from hypercore_tui.adapters.qga import agent_session
    from hypercore_tui.services import clipboard
    from hypercore_tui.services.context import Context

    rounds = max(args.rounds, 20)
    text = ("x" * 63 + "\n") * 64  # 4 KiB
    results: dict[str, Any] = {"guest": "real", "rounds": rounds}
    with private_home() as home, real_guest_vm(home, "bench-real"):
        ctx = Context.from_environ(home.environ)
        paths = ctx.vm_paths("bench-real")

        async def timed(fn: Callable[[], Any], n: int, gap: float = 0.0) -> list[float]:
            times = []
            for _ in range(n):
                if gap:
                    await asyncio.sleep(gap)
                started = time.perf_counter()
                await fn()
                times.append(time.perf_counter() - started)
            return times

        async def on_session() -> dict[str, Any]:
            async with agent_session(paths.qga_socket, vm_name="bench-real") as agent:
                # systemd and the X session come up after the agent answers.
                deadline = time.monotonic() + 180
                while True:
                    first = await clipboard.push_via_agent(agent, text)
                    if first.method == "xclip" and first.found is not None:
                        break
                    if time.monotonic() > deadline:
                        raise BenchError(f"no X session in the guest: {first}")
                    await asyncio.sleep(2)
                found = first.found
                results["load_before"] = _load()
                out: dict[str, Any] = {}
                out["exec_true"] = _pcts(await timed(
                    lambda: agent.exec(["/bin/true"], timeout=30), rounds))
                out["push_scan"] = _pcts(await timed(
                    lambda: clipboard.push_via_agent(agent, text), rounds))
                out["push_cached"] = _pcts(await timed(
                    lambda: clipboard.push_via_agent(agent, text, session=found), rounds))
                out["pull_scan"] = _pcts(await timed(
                    lambda: clipboard.pull_via_agent(agent), rounds))
                out["pull_cached"] = _pcts(await timed(
                    lambda: clipboard.pull_via_agent(agent, session=found), rounds))
                pulled = await clipboard.pull_via_agent(agent, session=found)
                if pulled.text != text or pulled.lookup != clipboard.LOOKUP_CACHED:
                    raise BenchError(f"the round trip went wrong: {pulled.lookup}")
                return out

        results.update(asyncio.run(on_session()))

        async def service_push() -> None:
            result = (await clipboard.push(ctx, ["bench-real"], text))[0]
            if not result.ok:
                raise BenchError(result.error or "push failed")

        results["service_push"] = _pcts(asyncio.run(timed(service_push, rounds, gap=0.5)))
        results["service_pull"] = _pcts(asyncio.run(timed(
            lambda: clipboard.pull_detail(ctx, "bench-real"), rounds, gap=0.5)))
        cli = []
        for _ in range(max(5, rounds // 4)):
            started = time.perf_counter()
            home.run("clip", "push", "bench-real", "--text", "from the CLI")
            cli.append(time.perf_counter() - started)
        results["cli_push"] = _pcts(cli)
        results["load_after"] = _load()
    if not args.json:
        print(f"clipboard: real-distribution guest (Debian 12, X session, xclip), "
              f"{home.environ['HYPERCORE_ACCEL']}, 4 KiB; p50 / p95 ms (n={rounds})")
        rows = [("bare guest-exec of /bin/true", "exec_true"),
                ("push, the guest scans (open agent session)", "push_scan"),
                ("push, the session named (open agent session)", "push_cached"),
                ("pull, the guest scans (open agent session)", "pull_scan"),
                ("pull, the session named (open agent session)", "pull_cached"),
                ("clipboard.push() service call (with the record)", "service_push"),
                ("clipboard.pull_detail() service call (with the record)", "service_pull"),
                ("`hypercore clip push` (CLI, wall)", "cli_push")]
        for label, key in rows:
            r = results[key]
            print(f"  {label:<56} {r['p50_ms']:>7} / {r['p95_ms']:<7}")
        print(f"  load average before / after: {results['load_before']} / "
              f"{results['load_after']}")
    return results


@contextmanager
def test_guest_vm(home: Home, name: str) -> Iterator[None]:
    """One VM of the busybox test guest (256 MiB), booted until its agent answers."""
    guest = test_guest()
    home.run("create-vm", name, "256", "1", "auto", "--disk-size", "64M", *guest_args(guest))
    try:
        home.run("boot-vm", name, "--wait-agent", "120", timeout=300)
        yield
    finally:
        subprocess.run([PYTHON, "-m", "hypercore_tui", "stop-vm", name, "--force"],
                       env=home.environ, capture_output=True, timeout=90, check=False)


def bench_clipsync(args: argparse.Namespace) -> dict[str, Any]:
    import bench_clipsync  # scripts/bench_clipsync.py

    vm_of = real_guest_vm if args.guest == "real" else test_guest_vm
    return bench_clipsync.bench_clipsync(args, private_home, vm_of, _pcts, _load)


def bench_transfer(args: argparse.Namespace) -> dict[str, Any]:
    import bench_storage

    guest = test_guest()
    return bench_storage.bench_transfer(args, private_home, guest, guest_args(guest))


def bench_dashboard(args: argparse.Namespace) -> dict[str, Any]:
    import bench_dashboard  # scripts/bench_dashboard.py: the live dashboard

    return bench_dashboard.bench_dashboard(args, private_home)


def bench_list(args: argparse.Namespace) -> dict[str, Any]:
    import bench_list  # scripts/bench_list.py: `hypercore list --json` with silent agents

    return bench_list.bench_list(args, private_home, guest_args(test_guest()), PYTHON, _load)


def bench_keys(args: argparse.Namespace) -> dict[str, Any]:
    import bench_keys  # scripts/bench_keys.py: key -> screen updated, UI only

    return bench_keys.bench_keys(args, _load)


def bench_startup(args: argparse.Namespace) -> dict[str, Any]:
    import bench_startup  # scripts/bench_startup.py: imports and the first frame

    return bench_startup.bench_startup(args, PYTHON, _load)


def bench_screen(args: argparse.Namespace) -> dict[str, Any]:
    import bench_screen  # scripts/bench_screen.py: the Screen tab's cost

    return bench_screen.bench_screen(args, private_home, test_guest_vm, PYTHON, _load)


SECTIONS: dict[str, Callable[[argparse.Namespace], dict[str, Any]]] = {
    "ceph": bench_ceph,
    "clipboard": bench_clipboard,
    "clipsync": bench_clipsync,
    "transfer": bench_transfer,
    "dashboard": bench_dashboard,
    "list": bench_list,
    "startup": bench_startup,
    "keys": bench_keys,
    "screen": bench_screen,
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Hypercore benchmarks (real QEMU, TCG).")
    parser.add_argument("sections", nargs="*", metavar="SECTION",
                        help=f"one of {', '.join(SECTIONS)} (default: all)")
    parser.add_argument("--json", action="store_true", help="print results as JSON")
    parser.add_argument("--rounds", type=int, default=3, help="repetitions per figure")
    group = parser.add_argument_group("ceph")
    group.add_argument("--size-mib", type=int, default=64, help="dd size in MiB")
    group.add_argument("--ceph-conf", metavar="PATH",
                       help="use this cluster (default: a throwaway memstore cluster)")
    group = parser.add_argument_group("clipboard, transfer (scripts/bench_storage.py)")
    group.add_argument("--guest", choices=("test", "real"), default="test",  # + clipsync
                       help="clipboard: the busybox test guest (and host qemu-ga) or the "
                            "real-distribution guest")
    group.add_argument("--transfer-mib", type=int, default=64, help="file size in MiB")
    group.add_argument("--sync-vms", type=int, default=2, metavar="N",
                       help="clipsync: how many synced guests (at least 2)")
    import bench_dashboard
    import bench_keys
    import bench_list
    import bench_screen

    bench_dashboard.add_arguments(parser)
    bench_keys.add_arguments(parser)
    bench_list.add_arguments(parser)
    bench_screen.add_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    unknown = [s for s in args.sections if s not in SECTIONS]
    if unknown:
        sys.stderr.write(f"bench: unknown section(s): {', '.join(unknown)} "
                         f"(choose from {', '.join(SECTIONS)})\n")
        return 2
    results: dict[str, Any] = {}
    try:
        for name in args.sections or list(SECTIONS):
            results[name] = SECTIONS[name](args)
    except (BenchError, subprocess.TimeoutExpired) as exc:
        sys.stderr.write(f"bench: error: {exc}\n")
        return 1
    if args.json:
        print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
