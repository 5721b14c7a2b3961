"""The display line for the user's own machine, the per-VM port, and whether a graphical
session is reachable here (real unix sockets in a temporary directory)."""

from __future__ import annotations

import contextlib
import shlex
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from hypercore_tui.adapters import graphical
from hypercore_tui.core.models import DisplayKind
from hypercore_tui.services.display import (
    PORT_BASE,
    PORT_SPREAD,
    free_port,
    laptop_command,
    laptop_steps,
    preferred_port,
    ssh_destination,
    viewer_uri,
)
from hypercore_tui.services.vmsettings import SettingChange

SSH = {"USER": "alice", "SSH_CONNECTION": "203.0.113.5 50000 198.51.100.7 22"}


def test_the_line_forwards_the_socket_then_opens_the_viewer() -> None:
    port = preferred_port("web1")
    line = laptop_command(DisplayKind.SPICE, "/run/u/hc/web1/spice.sock", "web1", SSH)
    assert line == (f"ssh -fL {port}:/run/u/hc/web1/spice.sock alice@198.51.100.7 sleep 10 "
                    f"&& remote-viewer spice://localhost:{port}")
    tunnel, viewer = laptop_steps(DisplayKind.VNC, "/s/vnc.sock", "web1", SSH, port=46001)
    assert (tunnel, viewer) == ("ssh -fL 46001:/s/vnc.sock alice@198.51.100.7 sleep 10",
                                "remote-viewer vnc://localhost:46001")


def test_the_line_quotes_what_the_shell_would_split() -> None:
    env = {"USER": "al ice", "SSH_CONNECTION": "203.0.113.5 1 2001:db8::7 22"}
    line = laptop_command(DisplayKind.VNC, "/tmp/my run/vnc.sock", "web1", env, port=46000)
    argv = shlex.split(line.split(" && ")[0])
    assert argv == ["ssh", "-fL", "46000:/tmp/my run/vnc.sock", "al ice@2001:db8::7",
                    "sleep", "10"]


def test_ssh_destination_without_an_ssh_session_is_this_machine() -> None:
    assert ssh_destination({"USER": "bob"}).startswith("bob@")
    assert ssh_destination({"USER": "bob"}) != "bob@"


def test_ports_are_stable_per_vm_and_away_from_vnc_ports() -> None:
    ports = {name: preferred_port(name) for name in ("web1", "web2", "db1", "a" * 64)}
    assert ports == {name: preferred_port(name) for name in ports}
    assert all(PORT_BASE <= p < PORT_BASE + PORT_SPREAD for p in ports.values())
    assert not any(5900 <= p < 6000 for p in ports.values())
    assert len(set(ports.values())) > 1


def test_free_port_skips_a_taken_one() -> None:
    wanted = preferred_port("web1")
    with socket.socket() as taken:
        with contextlib.suppress(OSError):  # (taken by something else already: as good)
            taken.bind(("127.0.0.1", wanted))
            taken.listen()
        assert free_port("web1") != wanted
    assert viewer_uri(DisplayKind.SPICE, "/r/spice.sock") == "spice+unix:///r/spice.sock"


@pytest.fixture
def listening(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "wayland-7"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(str(path))
        server.listen()
        yield path


def test_a_graphical_session_must_accept_a_connection(listening: Path, tmp_path: Path) -> None:
    runtime = str(listening.parent)
    assert graphical.graphical_session({"WAYLAND_DISPLAY": "wayland-7",
                                        "XDG_RUNTIME_DIR": runtime}) == "WAYLAND_DISPLAY=wayland-7"
    assert graphical.graphical_session({"WAYLAND_DISPLAY": str(listening)}) is not None
    # Stale or unreachable: no session (a viewer would fail).
    (tmp_path / "wayland-8").touch()
    assert graphical.graphical_session({"WAYLAND_DISPLAY": "wayland-8",
                                        "XDG_RUNTIME_DIR": runtime}) is None
    assert graphical.graphical_session({"WAYLAND_DISPLAY": "wayland-7"}) is None  # no runtime
    assert graphical.graphical_session({"DISPLAY": ":4242"}) is None
    assert graphical.graphical_session({"DISPLAY": "nonsense"}) is None
    assert graphical.graphical_session({}) is None


def test_a_forwarded_x11_display_is_reached_over_tcp() -> None:
    with socket.socket() as server:
        for number in range(93, 200):  # (the first display number free here)
            try:
                server.bind(("127.0.0.1", 6000 + number))
                break
            except OSError:
                continue
        else:
            raise AssertionError("no free port among 6093-6199")
        server.listen()
        display = f"127.0.0.1:{number}.0"
        assert graphical.graphical_session({"DISPLAY": display}) == f"DISPLAY={display}"
    assert graphical.graphical_session({"DISPLAY": display}) is None


def test_a_display_change_while_running_says_when_it_applies() -> None:
    pending = SettingChange("display", "vnc", "spice", running="vnc")
    assert pending.describe("web1") == ("web1: display=spice (was vnc): from the next boot, "
                                        "it runs with vnc until then")
    assert SettingChange("display", "vnc", "spice").describe("web1") == \
        "web1: display=spice (was vnc)"
    assert SettingChange("display", "none", "none").describe("web1") == \
        "web1: display is already none"
