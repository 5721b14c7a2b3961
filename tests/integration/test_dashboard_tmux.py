"""The real `hypercore` dashboard in a real tmux session, watching a real TCG guest."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ..conftest import HcEnv
from ..helpers import Tmux, vm_state, wait_until

pytestmark = [pytest.mark.qemu, pytest.mark.timeout(300)]

BARS = set("▁▂▃▄▅▆▇█")


@pytest.fixture
def tmux(hc_env: HcEnv) -> Iterator[Tmux]:
    assert shutil.which("tmux"), "tmux is required (scripts/setup.sh installs it)"
    session = Tmux()
    yield session
    session.kill()


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


def test_dashboard_in_tmux_shows_live_vm_and_stops_it(hc_env: HcEnv, running_vm: str,
                                                      tmux: Tmux) -> None:
    name = running_vm
    tmux.start_dashboard(hc_env.environ)
    wait_until("the VM listed as running",
               lambda: name in tmux.screen() and "▶ running" in tmux.screen(), 20,
               show=tmux.screen)
    screen = tmux.screen()
    assert "hypercore" in screen.splitlines()[0]
    assert "Overview" in screen and "Snapshots" in screen and "Events" in screen

    # Live graphs: history grows by a column per second while the window fills.
    wait_until("the CPU graph", lambda: len(graph_row(tmux.screen(), "CPU")) >= 2, 10,
               show=tmux.screen)
    first = tmux.screen()
    time.sleep(3)
    second = tmux.screen()
    cpu_before, cpu_after = graph_row(first, "CPU"), graph_row(second, "CPU")
    assert len(cpu_after) >= len(cpu_before) + 2, (first, second)
    assert graph_row(second, "Memory") and graph_row(second, "Disk wr")
    wait_until("guest facts from the agent", lambda: "hc-testguest" in tmux.screen(), 20,
               show=tmux.screen)

    # q quits the dashboard; the VM keeps running; a new dashboard re-attaches.
    tmux.keys("q")
    wait_until("the dashboard to exit", lambda: not tmux.session_alive(), 10, show=tmux.screen)
    assert vm_state(hc_env, name) == "running"
    tmux.start_dashboard(hc_env.environ)
    wait_until("the VM listed again", lambda: "▶ running" in tmux.screen(), 20,
               show=tmux.screen)

    # A graceful stop from the keyboard: s, then y in the confirmation naming the VM.
    tmux.keys("s")
    wait_until("the confirmation", lambda: f"Stop {name}?" in tmux.screen(), 5,
               show=tmux.screen)
    tmux.keys("y")
    wait_until("the VM to stop", lambda: vm_state(hc_env, name) == "stopped", 90,
               show=tmux.screen)
    wait_until("the screen to say stopped", lambda: "■ stopped" in tmux.screen(), 5,
               show=tmux.screen)


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
    assert console.argv[-2:] == ("console", name)
    assert console.command_line.endswith(f"hypercore console {name}")
    display = backend.open_display(name)
    assert not display.started  # no graphical session: the line for the user's machine
    assert display.access.socket == paths.vnc_socket
    assert str(paths.vnc_socket) in display.access.laptop_command

    assert "paused" in backend.pause_vm(name)
    assert vm_state(hc_env, name) == "paused"
    assert "resumed" in backend.resume_vm(name)
    assert vm_state(hc_env, name) == "running"

    clipboard = backend.clipboard
    assert clipboard is not None
    assert "put on its clipboard" in clipboard.push(name, "héllo from the dashboard")
    pulled = clipboard.pull(name)
    assert pulled.text == "héllo from the dashboard"
    assert pulled.summary.startswith(f"{name}: 24 characters copied from its clipboard")
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
