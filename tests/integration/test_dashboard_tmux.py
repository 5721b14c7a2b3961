"""The real `hypercore` dashboard in a real tmux session, watching a real TCG guest."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ..conftest import HcEnv

pytestmark = [pytest.mark.qemu, pytest.mark.timeout(300)]

BARS = set("▁▂▃▄▅▆▇█")
WIDTH, HEIGHT = 120, 36


class Tmux:
    """One private tmux server (its own socket), one session running the dashboard."""

    def __init__(self, env: HcEnv) -> None:
        self.env = env
        self.socket = f"hc-test-{uuid.uuid4().hex[:8]}"

    def tmux(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["tmux", "-L", self.socket, "-f", "/dev/null", *args],
                              capture_output=True, text=True, timeout=10, check=False)

    def start_dashboard(self) -> None:
        variables = {k: v for k, v in self.env.environ.items()
                     if k.startswith("HYPERCORE_") or k in ("PATH", "HOME", "LANG", "USER")}
        # COLUMNS/LINES (pytest may export them) would override the pane's real size.
        command = ["env", "-u", "COLUMNS", "-u", "LINES",
                   *(f"{k}={v}" for k, v in variables.items()),
                   sys.executable, "-m", "hypercore_tui"]
        proc = self.tmux("new-session", "-d", "-s", "dash", "-x", str(WIDTH), "-y",
                         str(HEIGHT), *command)
        assert proc.returncode == 0, proc.stderr

    def screen(self) -> str:
        proc = self.tmux("capture-pane", "-p", "-t", "dash")
        return proc.stdout if proc.returncode == 0 else ""

    def keys(self, *keys: str) -> None:
        for key in keys:
            assert self.tmux("send-keys", "-t", "dash", key).returncode == 0
            time.sleep(0.2)

    def session_alive(self) -> bool:
        return self.tmux("has-session", "-t", "dash").returncode == 0

    def kill(self) -> None:
        self.tmux("kill-server")


@pytest.fixture
def tmux(hc_env: HcEnv) -> Iterator[Tmux]:
    assert shutil.which("tmux"), "tmux is required (scripts/setup.sh installs it)"
    session = Tmux(hc_env)
    yield session
    session.kill()


def wait_until(what: str, check: Callable[[], bool], timeout: float, tmux: Tmux) -> float:
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > timeout:
            pytest.fail(f"timed out after {timeout}s waiting for {what}; screen:\n"
                        f"{tmux.screen()}")
        time.sleep(0.1)
    return time.monotonic() - started


def graph_row(screen: str, label: str) -> str:
    """The trend characters of a graph (``CPU ▁▂▃ 3% of 100%``; taller terminals draw it
    on several lines) in the detail pane, right of the VM list's border."""
    details = [line.partition("│")[2] for line in screen.splitlines()]
    for index, detail in enumerate(details):
        if detail.strip().startswith(label):
            rows = [detail]
            for more in details[index + 1:index + 3]:
                if more.strip()[:1].isalpha():
                    break
                rows.append(more)
            return "".join(c for row in rows for c in row if c in BARS)
    return ""


def vm_state(env: HcEnv, name: str) -> str:
    rows = json.loads(env.run("list", "--json", check=True).stdout)
    return str(next(r["state"] for r in rows if r["name"] == name))


def test_dashboard_in_tmux_shows_live_vm_and_stops_it(hc_env: HcEnv, running_vm: str,
                                                      tmux: Tmux) -> None:
    name = running_vm
    tmux.start_dashboard()
    wait_until("the VM listed as running",
               lambda: name in tmux.screen() and "▶ running" in tmux.screen(), 20, tmux)
    screen = tmux.screen()
    assert "hypercore" in screen.splitlines()[0]
    assert "Overview" in screen and "Snapshots" in screen and "Events" in screen

    # Live graphs: history grows by a column per second while the window fills.
    wait_until("the CPU graph", lambda: len(graph_row(tmux.screen(), "CPU")) >= 2, 10, tmux)
    first = tmux.screen()
    time.sleep(3)
    second = tmux.screen()
    cpu_before, cpu_after = graph_row(first, "CPU"), graph_row(second, "CPU")
    assert len(cpu_after) >= len(cpu_before) + 2, (first, second)
    assert graph_row(second, "Memory") and graph_row(second, "Disk wr")
    wait_until("guest facts from the agent", lambda: "hc-testguest" in tmux.screen(), 20, tmux)

    # q quits the dashboard; the VM keeps running; a new dashboard re-attaches.
    tmux.keys("q")
    wait_until("the dashboard to exit", lambda: not tmux.session_alive(), 10, tmux)
    assert vm_state(hc_env, name) == "running"
    tmux.start_dashboard()
    wait_until("the VM listed again", lambda: "▶ running" in tmux.screen(), 20, tmux)

    # A graceful stop from the keyboard: s, then y in the confirmation naming the VM.
    tmux.keys("s")
    wait_until("the confirmation", lambda: f"Stop {name}?" in tmux.screen(), 5, tmux)
    tmux.keys("y")
    wait_until("the VM to stop", lambda: vm_state(hc_env, name) == "stopped", 90, tmux)
    wait_until("the screen to say stopped", lambda: "■ stopped" in tmux.screen(), 5, tmux)


def test_live_backend_drives_the_real_services(hc_env: HcEnv, running_vm: str,
                                               tmp_path: Path) -> None:
    """What the dashboard calls (ui.backend.LiveBackend), against the real guest."""
    from hypercore_tui.services.context import Context
    from hypercore_tui.ui.backend import LiveBackend
    from hypercore_tui.ui.drop import pasted_path

    name = running_vm
    environ = {k: v for k, v in hc_env.environ.items() if k not in ("TMUX", "DISPLAY")}
    ctx = Context.from_environ(environ)
    backend = LiveBackend(ctx)
    paths = ctx.vm_paths(name)

    console = backend.open_console(name)
    assert not console.opened  # not inside tmux: the command to run instead
    assert console.argv[-1] == f"UNIX-CONNECT:{paths.serial_socket}"
    display = backend.display_access(name)
    assert display.socket == paths.vnc_socket and str(paths.vnc_socket) in display.tunnel_command

    assert "paused" in backend.pause_vm(name)
    assert vm_state(hc_env, name) == "paused"
    assert "resumed" in backend.resume_vm(name)
    assert vm_state(hc_env, name) == "running"

    clipboard = backend.clipboard
    assert clipboard is not None
    assert "put on its clipboard" in clipboard.push(name, "héllo from the dashboard")
    assert clipboard.pull(name) == "héllo from the dashboard"
    source = tmp_path / "notes.txt"
    source.write_text("dropped on the terminal\n")
    assert pasted_path(f"'{source}'\n") == source
    copied = clipboard.copy_in(source, name, progress=lambda stage, fraction: None)
    assert f"{name}:/tmp/notes.txt" in copied
    inside = hc_env.run("exec", name, "--", "/bin/cat", "/tmp/notes.txt", check=True)
    assert inside.stdout == b"dropped on the terminal\n"
    shared = clipboard.copy_in(source, None, progress=lambda stage, fraction: None)
    assert "shared folder" in shared
    assert (ctx.layout.shared_folder / "notes.txt").read_text() == "dropped on the terminal\n"

    snapshots = backend.snapshots
    assert snapshots is not None
    stages: list[str] = []
    taken = snapshots.create(name, "ui-test", disk_only=True,
                             progress=lambda stage, fraction: stages.append(stage))
    assert "ui-test" in taken and stages
    assert [s.tag for s in snapshots.list(name)] == ["ui-test"]
    assert "deleted" in snapshots.delete(name, "ui-test", progress=lambda s, f: None)
    assert snapshots.list(name) == []
