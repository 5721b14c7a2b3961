"""bench.py screen: what the dashboard's Screen tab costs.

The real ``hypercore`` dashboard in a private tmux session (120x36) watches one running
TCG test guest (its VGA console: the kernel's boot messages and a line written to
tty1). For ``--screen-seconds`` each, measured from outside: the dashboard process's CPU
and QEMU's CPU (psutil, user+system) with the Overview tab shown (the Screen tab
hidden), then with the Screen tab shown in each mode (half-blocks: what tmux gets;
Kitty graphics and Sixel: HYPERCORE_SCREEN_MODE forces them, tmux drops the escapes but
the dashboard does all the work of making them). Frames are counted exactly, with
inotify on the VM's runtime directory (each screendump is one fresh ``screen-*.png``
that QEMU creates there): while the tab is hidden there must be none.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import select
import struct
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import psutil

IN_CREATE = 0x100
SETTLE = 4.0  # seconds after a change before measuring


class CreatedFiles:
    """Files created in one directory whose names start with ``prefix`` (inotify)."""

    def __init__(self, directory: Path, prefix: str) -> None:
        self.libc = ctypes.CDLL(None, use_errno=True)
        self.fd = self.libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if self.fd < 0 or self.libc.inotify_add_watch(
                self.fd, str(directory).encode(), IN_CREATE) < 0:
            raise OSError(ctypes.get_errno(), "inotify")
        self.prefix = prefix.encode()

    def count(self) -> int:
        """The matching files created since the last call."""
        found = 0
        while select.select([self.fd], [], [], 0)[0]:
            data = os.read(self.fd, 65536)
            at = 0
            while at < len(data):
                _wd, _mask, _cookie, length = struct.unpack_from("iIII", data, at)
                name = data[at + 16:at + 16 + length].rstrip(b"\0")
                found += name.startswith(self.prefix)
                at += 16 + length
        return found

    def close(self) -> None:
        os.close(self.fd)


def cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


class Dashboard:
    """The real dashboard in a private tmux server."""

    def __init__(self, python: str, environ: dict[str, str]) -> None:
        self.socket = f"hc-bench-screen-{uuid.uuid4().hex[:8]}"
        variables = [f"{k}={v}" for k, v in environ.items()
                     if k.startswith("HYPERCORE_") or k in ("PATH", "HOME", "LANG")]
        self.tmux("new-session", "-d", "-s", "d", "-x", "120", "-y", "36", "env", "-u",
                  "COLUMNS", "-u", "LINES", *variables, python, "-m", "hypercore_tui")
        pid = int(self.tmux("list-panes", "-t", "d", "-F", "#{pane_pid}").strip())
        self.process = psutil.Process(pid)  # env exec()s python: the pane's process

    def tmux(self, *args: str) -> str:
        proc = subprocess.run(["tmux", "-L", self.socket, "-f", "/dev/null", *args],
                              capture_output=True, text=True, timeout=10, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"tmux {args[0]}: {proc.stderr.strip()}")
        return proc.stdout

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p", "-t", "d")

    def wait_for(self, text: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.screen():
            if time.monotonic() > deadline:
                raise RuntimeError(f"the dashboard never showed {text!r}:\n{self.screen()}")
            time.sleep(0.1)

    def kill(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True,
                       check=False)


def measure(dashboard: Dashboard, qemu: psutil.Process, frames: CreatedFiles,
            seconds: float) -> dict[str, float]:
    frames.count()
    d0, q0, t0 = cpu_seconds(dashboard.process), cpu_seconds(qemu), time.monotonic()
    time.sleep(seconds)
    d1, q1, t1 = cpu_seconds(dashboard.process), cpu_seconds(qemu), time.monotonic()
    wall = t1 - t0
    return {"dashboard_cpu_percent": round((d1 - d0) / wall * 100, 2),
            "qemu_cpu_percent": round((q1 - q0) / wall * 100, 2),
            "frames": frames.count(), "seconds": round(wall, 1)}


def bench_screen(args: argparse.Namespace,
                 private_home: Callable[[], AbstractContextManager[Any]],
                 test_guest_vm: Callable[[Any, str], AbstractContextManager[None]],
                 python: str, load: Callable[[], str]) -> dict[str, Any]:
    seconds = float(args.screen_seconds)
    vm = "scr1"
    results: dict[str, Any] = {"seconds_each": seconds, "machine": machine()}
    home: Any
    with private_home() as home, test_guest_vm(home, vm):
        home.run("exec", vm, "--", "/bin/sh", "-c",
                 "echo 'hypercore bench: the Screen tab' > /dev/tty1")
        paths = _paths(home, vm)
        qemu = psutil.Process(int((paths / "qemu.pid").read_text().strip()))
        frames = CreatedFiles(paths, "screen-")
        results["load_before"] = load()
        try:
            for mode in ("halfblock", "kitty", "sixel"):
                environ = dict(home.environ, HYPERCORE_SCREEN_MODE=mode)
                if mode == "halfblock":
                    environ.pop("HYPERCORE_SCREEN_MODE")  # auto: tmux gets half-blocks
                dashboard = Dashboard(python, environ)
                try:
                    dashboard.wait_for("▶ running")
                    if mode == "halfblock":
                        time.sleep(SETTLE)
                        results["hidden"] = measure(dashboard, qemu, frames, seconds)
                    dashboard.tmux("send-keys", "-t", "d", "6")
                    dashboard.wait_for("720x400")
                    time.sleep(SETTLE)
                    results[mode] = measure(dashboard, qemu, frames, seconds)
                    if mode == "halfblock":
                        dashboard.tmux("send-keys", "-t", "d", "1")  # hidden again
                        time.sleep(SETTLE)
                        results["hidden_again"] = measure(dashboard, qemu, frames, seconds)
                finally:
                    dashboard.kill()
        finally:
            frames.close()
        results["load_after"] = load()
    if not args.json:
        report(results)
    return results


def _paths(home: Any, vm: str) -> Path:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from hypercore_tui.services.context import Context

    return Context.from_environ(home.environ).vm_paths(vm).run_dir


def machine() -> str:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} CPUs, QEMU TCG"


def report(results: dict[str, Any]) -> None:
    print(f"screen tab ({results['machine']}; {results['seconds_each']:g} s each; load "
          f"{results['load_before']} before, {results['load_after']} after):")
    rows: Iterator[tuple[str, str]] = iter([
        ("hidden", "tab hidden (Overview)"), ("halfblock", "shown, half-blocks"),
        ("kitty", "shown, Kitty graphics"), ("sixel", "shown, Sixel"),
        ("hidden_again", "hidden again")])
    for key, label in rows:
        r = results.get(key)
        if r:
            print(f"  {label:24s} dashboard {r['dashboard_cpu_percent']:5.1f} % CPU, "
                  f"QEMU {r['qemu_cpu_percent']:5.1f} %, {r['frames']} frames in "
                  f"{r['seconds']:g} s")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("screen (scripts/bench_screen.py)")
    group.add_argument("--screen-seconds", type=float, default=20.0,
                       help="seconds measured per case (20)")
