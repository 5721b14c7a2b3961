"""The ``clipboard`` and ``transfer`` sections of scripts/bench.py (the common storage space).

Both run against the real TCG test guest and against a real qemu-ga on the host, and
report each Hypercore figure beside a baseline measured in the same run:

clipboard  push latency host→guest (p50/p95) for 4 KiB and 1 MiB of text:
           ``clipboard.push_via_agent`` on an open agent session (what the dashboard's
           hotkey costs once connected) and the whole ``clipboard.push`` service call
           (connect + sync + push); baseline: one guest-exec of ``cat >/dev/null`` with
           the same stdin through a minimal agent client polling every 1 ms.
           Host qemu-ga: the X11 path (an Xvfb display and a desktop process of user
           nobody, found through /proc, xclip run as nobody). TCG guest: the fallback file.
transfer   throughput host→guest and guest→host for SIZE MiB (64 by default):
           baseline "agent capacity" = a minimal client doing guest-file-write/read in
           1 MiB chunks with base64 and nothing else; Hypercore's agent channel, data phase
           only (guest_files.upload_file/download_file) and the whole ``hypercore cp``
           (prepare, copy, sha256 in the guest, rename); the shared folder: a plain
           ``dd bs=1M`` in the guest from/to /shared (host side: plain file copy) beside
           ``hypercore cp`` through it, with and without the sha256 check.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import os
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
MiB = 1024 * 1024

from hypercore_tui.adapters import guest_files  # noqa: E402
from hypercore_tui.adapters.qga import agent_session  # noqa: E402
from hypercore_tui.services import clipboard, transfer  # noqa: E402
from hypercore_tui.services.context import Context  # noqa: E402


def log(text: str) -> None:
    sys.stderr.write(f"bench: {text}\n")
    sys.stderr.flush()


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


# -- peers ----------------------------------------------------------------------------------


@contextmanager
def host_agent() -> Iterator[Path]:
    """A fresh qemu-ga on the host (no display variables in its environment)."""
    directory = Path(tempfile.mkdtemp(prefix="hcb-qga-", dir="/tmp"))
    sock = directory / "qga.sock"
    qga = shutil.which("qemu-ga") or "/usr/sbin/qemu-ga"
    proc = subprocess.Popen([qga, "-m", "unix-listen", "-p", str(sock), "-t", str(directory),
                             "-f", str(directory / "pid")], env={"PATH": "/usr/bin:/bin"},
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while not sock.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("qemu-ga did not start")
            time.sleep(0.02)
        yield sock
    finally:
        proc.terminate()
        proc.wait(5)
        shutil.rmtree(directory, ignore_errors=True)


@contextmanager
def x_session() -> Iterator[dict[str, str]]:
    """Xvfb + a desktop process of user nobody (as tests/integration/storage_env.py)."""
    sys.path.insert(0, str(ROOT))
    from tests.integration.storage_env import start_x_session

    session = start_x_session()
    try:
        yield session.client_env
    finally:
        session.stop()


@contextmanager
def tcg_guest(home: Any, guest: Path, name: str, ram: str, args: list[str]) -> Iterator[Path]:
    """Boot the test guest; yields its agent socket."""
    home.run("create-vm", name, ram, "1", "--disk-size", "64M", "--net", "none", *args)
    try:
        started = time.monotonic()
        home.run("boot-vm", name, "--wait-agent", "120")
        log(f"{name}: agent answers {time.monotonic() - started:.1f}s after boot-vm")
        ctx = Context.from_environ(home.environ)
        yield ctx.vm_paths(name).qga_socket
    finally:
        subprocess.run([sys.executable, "-m", "hypercore_tui", "stop-vm", name, "--force"],
                       env=home.environ, capture_output=True, timeout=60, check=False)


# -- a minimal agent client (the baseline) -----------------------------------------------------


class RawAgent:
    """Socket + JSON + base64, nothing else: what the agent itself can take."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(str(path))
        self.file = self.sock.makefile("rb")
        sync_id = secrets.randbelow(1 << 30)
        self.sock.sendall(b"\xff" + json.dumps({"execute": "guest-sync-delimited",
                                                 "arguments": {"id": sync_id}}).encode() + b"\n")
        while True:
            line = self.file.readline().lstrip(b"\xff").strip()
            if line and json.loads(line).get("return") == sync_id:
                break

    def cmd(self, name: str, args: dict[str, Any] | None = None) -> Any:
        message: dict[str, Any] = {"execute": name}
        if args is not None:
            message["arguments"] = args
        self.sock.sendall(json.dumps(message).encode() + b"\n")
        while True:
            line = self.file.readline()
            reply = json.loads(line.lstrip(b"\xff"))
            if "error" in reply:
                raise RuntimeError(f"{name}: {reply['error']}")
            if "return" in reply:
                return reply["return"]

    def exec_cat(self, data: bytes) -> float:
        started = time.perf_counter()
        pid = self.cmd("guest-exec", {"path": "/bin/sh", "arg": ["-c", "cat >/dev/null"],
                                      "input-data": base64.b64encode(data).decode(),
                                      "capture-output": True})["pid"]
        while not self.cmd("guest-exec-status", {"pid": pid})["exited"]:
            time.sleep(0.001)
        return time.perf_counter() - started

    def write_file(self, path: str, src: Path, chunk: int = MiB) -> float:
        handle = self.cmd("guest-file-open", {"path": path, "mode": "w"})
        started = time.perf_counter()
        with open(src, "rb") as fh:
            while data := fh.read(chunk):
                self.cmd("guest-file-write", {"handle": handle,
                                              "buf-b64": base64.b64encode(data).decode()})
        self.cmd("guest-file-close", {"handle": handle})
        return time.perf_counter() - started

    def read_file(self, path: str, chunk: int = MiB) -> tuple[float, int]:
        handle = self.cmd("guest-file-open", {"path": path, "mode": "r"})
        started = time.perf_counter()
        total = 0
        while True:
            reply = self.cmd("guest-file-read", {"handle": handle, "count": chunk})
            total += len(base64.b64decode(reply.get("buf-b64", "")))
            if reply.get("eof") or not reply.get("count"):
                break
        self.cmd("guest-file-close", {"handle": handle})
        return time.perf_counter() - started, total

    def close(self) -> None:
        self.file.close()
        self.sock.close()


# -- clipboard ---------------------------------------------------------------------------------


async def _latencies(fn: Callable[[], Awaitable[object]], rounds: int,
                     gap: float = 0.0) -> list[float]:
    await fn()  # warm-up
    times = []
    for _ in range(rounds):
        if gap:
            await asyncio.sleep(gap)
        started = time.perf_counter()
        await fn()
        times.append(time.perf_counter() - started)
    return times


def _ms(times: list[float]) -> dict[str, float]:
    return {"p50_ms": round(pct(times, 0.5) * 1000, 1), "p95_ms": round(pct(times, 0.95) * 1000, 1)}


def _clip_peer(sock: Path, rounds: int, fallback: str, service: Callable[[str], Awaitable[Any]]
               | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for label, size in (("4KiB", 4096), ("1MiB", MiB)):
        text = ("x" * 63 + "\n") * (size // 64)
        n = rounds if size == 4096 else max(5, rounds // 3)
        raw = RawAgent(sock)
        base = [raw.exec_cat(text.encode()) for _ in range(n + 1)][1:]
        raw.close()

        async def on_session(text: str = text, n: int = n) -> tuple[list[float], str]:
            async with agent_session(sock, vm_name="bench") as agent:
                result = await clipboard.push_via_agent(agent, text, fallback_dir=fallback)
                times = await _latencies(lambda: clipboard.push_via_agent(
                    agent, text, fallback_dir=fallback), n)
                pulled = await clipboard.pull_via_agent(agent, fallback_dir=fallback)
            if pulled.text != text:
                raise RuntimeError("clipboard round trip changed the text")
            return times, result.method

        times, method = asyncio.run(on_session())
        row = {"method": method, "push": _ms(times), "baseline_exec": _ms(base)}
        if service is not None:
            # Pushes at an interactive pace: a new agent session right after another one
            # closed waits up to 100 ms for the guest's qemu-ga (virtio-serial hang-up).
            svc = asyncio.run(_latencies(lambda text=text: service(text), n, gap=0.5))
            row["service_push"] = _ms(svc)
        out[label] = row
    return out


def bench_clipboard(args: argparse.Namespace, home_factory: Any, guest: Path,
                    guest_args: list[str]) -> dict[str, Any]:
    rounds = max(args.rounds, 20)
    results: dict[str, Any] = {"rounds_4KiB": rounds}
    with host_agent() as sock, x_session(), tempfile.TemporaryDirectory() as fb:
        log("clipboard: host qemu-ga, X11 session on Xvfb")
        results["host_qemu_ga"] = _clip_peer(sock, rounds, fb, None)
    with home_factory() as home, tcg_guest(home, guest, "bench-clip", "256", guest_args) as sock:
        log("clipboard: TCG test guest (fallback file)")
        ctx = Context.from_environ(home.environ)

        async def service(text: str) -> None:
            result = (await clipboard.push(ctx, ["bench-clip"], text))[0]
            if not result.ok:
                raise RuntimeError(result.error)

        results["tcg_guest"] = _clip_peer(sock, rounds, clipboard.FALLBACK_DIR, service)
    if not args.json:
        print("clipboard: push latency host→guest, p50 / p95 ms (warm, open agent session)")
        print(f"  {'peer':<14} {'size':<5} {'method':<7} {'push':>15} {'service push':>15} "
              f"{'baseline exec':>15}")
        for peer in ("host_qemu_ga", "tcg_guest"):
            for size in ("4KiB", "1MiB"):
                r = results[peer][size]
                svc = r.get("service_push")
                print(f"  {peer:<14} {size:<5} {r['method']:<7} "
                      f"{r['push']['p50_ms']:>7} / {r['push']['p95_ms']:<5} "
                      f"{(str(svc['p50_ms']) + ' / ' + str(svc['p95_ms'])) if svc else '-':>15} "
                      f"{r['baseline_exec']['p50_ms']:>7} / {r['baseline_exec']['p95_ms']:<5}")
        print("  service push = the whole clipboard.push() call (lock, connect, sync, push),")
        print("  0.5 s apart; baseline = guest-exec of cat with the same stdin through a minimal")
        print("  client polling every 1 ms")
    return results


# -- transfer ---------------------------------------------------------------------------------


def _mibs(size: int, seconds: float) -> float:
    return round(size / MiB / seconds, 1) if seconds > 0 else 0.0


def _sha(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(8 * MiB):
            h.update(chunk)
    return h.hexdigest()


async def _agent_phase(sock: Path, src: Path, guest_path: str, back: Path) -> tuple[float, float]:
    async with agent_session(sock, vm_name="bench") as agent:
        started = time.perf_counter()
        await guest_files.upload_file(agent, src, guest_path)
        up = time.perf_counter() - started
        fd = os.open(back, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            started = time.perf_counter()
            await guest_files.download_file(agent, guest_path, fd)
            down = time.perf_counter() - started
        finally:
            os.close(fd)
    return up, down


def _best(values: list[float]) -> float:
    return statistics.median(values)


def bench_transfer(args: argparse.Namespace, home_factory: Any, guest: Path,
                   guest_args: list[str]) -> dict[str, Any]:
    size = args.transfer_mib * MiB
    rounds = max(1, args.rounds)
    work = Path(tempfile.mkdtemp(prefix="hcb-xfer-", dir="/tmp"))
    src = work / "payload.bin"
    src.write_bytes(os.urandom(size))
    digest = _sha(src)
    results: dict[str, Any] = {"size_mib": args.transfer_mib, "rounds": rounds}
    try:
        with host_agent() as sock:
            log("transfer: host qemu-ga")
            target = work / "agent-side"
            target.mkdir()
            raw_up, raw_down, up, down, plain = [], [], [], [], []
            for _ in range(rounds):
                raw = RawAgent(sock)
                raw_up.append(raw.write_file(str(target / "raw.bin"), src))
                raw_down.append(raw.read_file(str(target / "raw.bin"))[0])
                raw.close()
                u, d = asyncio.run(_agent_phase(sock, src, str(target / "hc.bin"),
                                                work / "back.bin"))
                up.append(u)
                down.append(d)
                if _sha(work / "back.bin") != digest or _sha(target / "hc.bin") != digest:
                    raise RuntimeError("agent transfer changed the data")
                started = time.perf_counter()
                shutil.copyfile(src, target / "plain.bin")
                plain.append(time.perf_counter() - started)
            results["host_qemu_ga"] = {
                "agent_capacity": {"up": _mibs(size, _best(raw_up)),
                                   "down": _mibs(size, _best(raw_down))},
                "agent_channel": {"up": _mibs(size, _best(up)), "down": _mibs(size, _best(down))},
                "plain_host_copy": _mibs(size, _best(plain)),
            }
        with home_factory() as home, tcg_guest(home, guest, "bench-xfer", "1024",
                                               guest_args) as sock:
            log("transfer: TCG test guest")
            results["tcg_guest"] = _tcg_transfer(home, sock, src, digest, size, rounds)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if not args.json:
        _print_transfer(results)
    return results


def _tcg_transfer(home: Any, sock: Path, src: Path, digest: str, size: int,
                  rounds: int) -> dict[str, Any]:
    ctx = Context.from_environ(home.environ)
    share = ctx.layout.shared_folder
    back = src.with_name("back.bin")
    figures: dict[str, list[float]] = {}

    def add(key: str, seconds: float) -> None:
        figures.setdefault(key, []).append(seconds)

    def guest(script: str) -> float:
        started = time.perf_counter()
        home.guest_sh("bench-xfer", script)
        return time.perf_counter() - started

    def cp(a: str, b: str, channel: str = "auto", verify: bool = True) -> float:
        """The whole ``hypercore cp`` service call (session, checks, copy, sha256, rename)."""
        started = time.perf_counter()
        result = asyncio.run(transfer.copy(ctx, a, b, channel=channel, verify=verify))
        elapsed = time.perf_counter() - started
        if result.sha256 != digest:
            raise RuntimeError(f"cp moved different data ({result.channel})")
        return elapsed

    for _ in range(rounds):
        guest("rm -f /tmp/*.bin")
        raw = RawAgent(sock)
        add("capacity_up", raw.write_file("/tmp/raw.bin", src))
        add("capacity_down", raw.read_file("/tmp/raw.bin")[0])
        raw.close()
        guest("rm -f /tmp/raw.bin")
        u, d = asyncio.run(_agent_phase(sock, src, "/tmp/hc.bin", back))
        add("agent_data_up", u)
        add("agent_data_down", d)
        guest("rm -f /tmp/hc.bin")
        add("cp_agent_up", cp(str(src), "bench-xfer:/tmp/a.bin", "agent"))
        add("cp_agent_down", cp("bench-xfer:/tmp/a.bin", str(back), "agent"))
        guest("rm -f /tmp/a.bin")
        # The shared folder, plain: host copies into the share, the guest dd's it out.
        started = time.perf_counter()
        shutil.copyfile(src, share / "plain.bin")
        guest("dd if=/shared/plain.bin of=/tmp/p.bin bs=1M 2>/dev/null")
        add("share_plain_up", time.perf_counter() - started)
        (share / "plain.bin").unlink()
        started = time.perf_counter()
        guest("dd if=/tmp/p.bin of=/shared/plain.bin bs=1M 2>/dev/null")
        shutil.copyfile(share / "plain.bin", back)
        add("share_plain_down", time.perf_counter() - started)
        (share / "plain.bin").unlink()
        guest("rm -f /tmp/p.bin")
        add("cp_share_up", cp(str(src), "bench-xfer:/tmp/s.bin"))
        add("cp_share_down", cp("bench-xfer:/tmp/s.bin", str(back)))
        guest("rm -f /tmp/s.bin")
        add("cp_share_up_noverify", cp(str(src), "bench-xfer:/tmp/n.bin", verify=False))
        add("cp_share_down_noverify", cp("bench-xfer:/tmp/n.bin", str(back), verify=False))
        guest("rm -f /tmp/n.bin")
    return {key: _mibs(size, _best(values)) for key, values in figures.items()}


def _print_transfer(results: dict[str, Any]) -> None:
    print(f"transfer: {results['size_mib']} MiB, MiB/s (median of {results['rounds']})")
    print(f"  {'peer / channel':<44} {'host→guest':>11} {'guest→host':>11}")
    h = results["host_qemu_ga"]
    rows = [
        ("host qemu-ga: agent capacity (minimal client)", h["agent_capacity"]["up"],
         h["agent_capacity"]["down"]),
        ("host qemu-ga: hypercore agent channel (data)", h["agent_channel"]["up"],
         h["agent_channel"]["down"]),
        ("host qemu-ga: plain host file copy", h["plain_host_copy"], h["plain_host_copy"]),
    ]
    t = results["tcg_guest"]
    for label, key in (("TCG: agent capacity (minimal client)", "capacity"),
                       ("TCG: hypercore agent channel (data)", "agent_data"),
                       ("TCG: hypercore cp --via agent (+sha256)", "cp_agent"),
                       ("TCG: shared folder, plain (cp + dd)", "share_plain"),
                       ("TCG: hypercore cp via share (+sha256)", "cp_share"),
                       ("TCG: hypercore cp via share --no-verify", "cp_share_%_noverify")):
        up_key = key.replace("%", "up") if "%" in key else f"{key}_up"
        down_key = key.replace("%", "down") if "%" in key else f"{key}_down"
        rows.append((label, t[up_key], t[down_key]))
    for label, up, down in rows:
        print(f"  {label:<44} {up:>11} {down:>11}")
