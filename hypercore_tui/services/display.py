"""A VM's screen in a graphical viewer: ``hypercore display NAME`` and the dashboard's v.

Both display servers (VNC, SPICE) listen on a unix socket in the VM's private runtime
directory, never on a TCP port. With a graphical session reachable here (X11 or Wayland,
``ssh -X`` included) ``remote-viewer`` (virt-viewer) is started detached on that socket.
Elsewhere the user gets the one line to run on their own machine: an ssh forward of the
socket to a local port, then ``remote-viewer`` on that port. :func:`laptop_command` is
the one place that line is built (the dashboard's detail pane shows it too).

remote-viewer (virt-viewer 11) opens ``spice+unix://`` but not a VNC unix socket (gtk-vnc
wants a host and a port): a VNC display is shown here by TigerVNC's ``vncviewer``, which
takes the socket's path. On the user's machine the forward is a TCP port: remote-viewer
opens ``vnc://localhost:PORT`` there.

The display a VM runs with is what its QEMU was started with (``-spice``/``-vnc`` in
its command line): a ``set NAME display=...`` made while it runs applies from the next
boot, and meanwhile the viewer still reaches the running one.
"""

from __future__ import annotations

import contextlib
import getpass
import hashlib
import os
import platform
import shlex
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from hypercore_tui.adapters import graphical, process
from hypercore_tui.adapters.terminal import (  # (for the Screen tab: ui/launch.py)
    tmux_terminal_features as tmux_terminal_features,
)
from hypercore_tui.core.errors import InvalidState, OperationFailed
from hypercore_tui.core.layout import VmPaths
from hypercore_tui.core.models import DisplayKind, VmSpec
from hypercore_tui.services import vmstate
from hypercore_tui.services.context import Context

VIEWER = "remote-viewer"
VIEWER_PACKAGE = "virt-viewer"
#: What shows a VNC unix socket here (remote-viewer cannot).
VNC_VIEWER = "vncviewer"
VNC_VIEWER_PACKAGE = "tigervnc-viewer"
#: The local end of the ssh forward: one port per VM, stable (the dashboard shows the
#: line all the time), away from 5900-5999 where a laptop's own VNC server listens.
PORT_BASE = 45900
PORT_SPREAD = 100
#: ``ssh -f ... sleep N``: the forward waits N seconds for the viewer's connections, then
#: lives exactly as long as they do (closing the viewer closes the tunnel).
TUNNEL_WAIT = 10
#: A viewer that exits within this long after its start failed (its log says why).
VIEWER_SETTLE = 0.8


def preferred_port(name: str) -> int:
    """The local port the tunnel line uses for ``name`` (the same every time)."""
    digest = hashlib.sha256(name.encode()).digest()
    return PORT_BASE + int.from_bytes(digest[:4], "big") % PORT_SPREAD


def free_port(name: str) -> int:
    """:func:`preferred_port`, or the next one up that nothing on this host listens on
    (the user's own machine cannot be asked; this one at least is known)."""
    first = preferred_port(name)
    for port in range(first, first + PORT_SPREAD):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe, \
                contextlib.suppress(OSError):
            probe.bind(("127.0.0.1", port))
            return port
    return first


def scheme(kind: DisplayKind) -> str:
    return "spice" if kind is DisplayKind.SPICE else "vnc"


def viewer_uri(kind: DisplayKind, sock: Path | str) -> str:
    """``spice+unix:///run/.../spice.sock``: what remote-viewer opens on this host."""
    return f"{scheme(kind)}+unix://{sock}"


def laptop_command(kind: DisplayKind, sock: Path | str, name: str,
                   environ: Mapping[str, str], *, port: int | None = None) -> str:
    """The one line to run on the user's own machine: forward a local port to the
    socket over SSH, then open remote-viewer on it."""
    return " && ".join(laptop_steps(kind, sock, name, environ, port=port))


def laptop_steps(kind: DisplayKind, sock: Path | str, name: str,
                 environ: Mapping[str, str], *, port: int | None = None) -> tuple[str, str]:
    """:func:`laptop_command`'s two steps: the ssh forward (the host is the address the
    user's SSH session reached, ``SSH_CONNECTION``, else this machine's name) and the
    viewer on its local port."""
    port = preferred_port(name) if port is None else port
    forward = f"{port}:{sock}"
    return (f"ssh -fL {shlex.quote(forward)} {shlex.quote(ssh_destination(environ))} "
            f"sleep {TUNNEL_WAIT}", f"{VIEWER} {scheme(kind)}://localhost:{port}")


def ssh_destination(environ: Mapping[str, str]) -> str:
    """``user@host`` as the user reaches this machine."""
    parts = environ.get("SSH_CONNECTION", "").split()
    host = parts[2] if len(parts) == 4 and parts[2] else (platform.node() or "this-host")
    try:
        user = environ.get("USER") or getpass.getuser()
    except (KeyError, OSError):  # no passwd entry for the uid
        user = "user"
    return f"{user}@{host}"


def running_display(spec: VmSpec, paths: VmPaths) -> DisplayKind:
    """The display the VM's QEMU was started with (its definition's when unreadable)."""
    pid = process.read_pidfile(paths.pidfile)
    argv = process.process_argv(pid) if pid is not None else None
    if not argv:
        return spec.display
    if "-spice" in argv:
        return DisplayKind.SPICE
    if "-vnc" in argv:
        return DisplayKind.VNC
    return DisplayKind.NONE


@dataclass(frozen=True)
class DisplayAccess:
    """How to see one running VM's screen."""

    name: str
    kind: DisplayKind  # what its QEMU runs with
    socket: Path
    port: int  # the local port of the tunnel line
    laptop_command: str  # the line to run on the user's own machine
    session: str | None  # the graphical session here (``DISPLAY=:0``), None without one
    viewer: str | None  # the local viewer's path here (see :meth:`viewer_program`), or None
    #: The definition names another display from the next boot (set while it runs)
    next_boot: DisplayKind | None = None

    @property
    def uri(self) -> str:
        return viewer_uri(self.kind, self.socket)

    @property
    def viewer_program(self) -> tuple[str, str]:
        """The viewer that shows this display's socket here, and its Debian package."""
        if self.kind is DisplayKind.VNC:
            return VNC_VIEWER, VNC_VIEWER_PACKAGE
        return VIEWER, VIEWER_PACKAGE

    @property
    def local_viewer(self) -> tuple[str, ...] | None:
        """The argv that shows the screen here, when a session and the viewer are."""
        if self.session is None or self.viewer is None:
            return None
        if self.kind is DisplayKind.VNC:
            return (self.viewer, str(self.socket))  # (TigerVNC takes a socket's path)
        return (self.viewer, "--title", f"{self.name} (hypercore)", self.uri)

    @property
    def pending_note(self) -> str:
        if self.next_boot is None:
            return ""
        return f"display={self.next_boot.value} from the next boot"


def display_access(ctx: Context, name: str, *, environ: Mapping[str, str] | None = None
                   ) -> DisplayAccess:
    """The running VM's display, or one line saying why there is none to see."""
    env = ctx.environ if environ is None else environ
    vm = vmstate.require_running(ctx, name)
    kind = running_display(vm.spec, vm.paths)
    sock = vm.paths.display_socket(kind)
    if sock is None:
        later = (f" (display={vm.spec.display.value} from the next boot)"
                 if vm.spec.display is not DisplayKind.NONE else
                 f": `hypercore set {name} display=spice` (or vnc) adds one from the next boot;"
                 f" its serial console: hypercore console {name}")
        raise InvalidState(f"{name} has no display device (display=none){later}")
    port = free_port(name)
    program = VNC_VIEWER if kind is DisplayKind.VNC else VIEWER
    return DisplayAccess(
        name=name, kind=kind, socket=sock, port=port,
        laptop_command=laptop_command(kind, sock, name, env, port=port),
        session=graphical.graphical_session(env),
        viewer=graphical.find_program(program, env),
        next_boot=vm.spec.display if vm.spec.display is not kind else None,
    )


@dataclass(frozen=True)
class DisplayOutcome:
    """What ``display`` did: started a viewer here, or has the line for elsewhere."""

    access: DisplayAccess
    started: bool
    message: str


def open_display(ctx: Context, name: str) -> DisplayOutcome:
    """Start remote-viewer here when a graphical session is reachable; otherwise the
    line to run on the user's own machine (``started`` False)."""
    access = display_access(ctx, name)
    if access.session is None:
        return DisplayOutcome(access, False, f"{name}: no graphical session here "
                              "(DISPLAY/WAYLAND_DISPLAY unset or not reachable): run on "
                              f"your own machine (it needs {VIEWER_PACKAGE}):")
    return DisplayOutcome(access, True, start_viewer(ctx, access))


def start_viewer(ctx: Context, access: DisplayAccess) -> str:
    argv = access.local_viewer
    program, package = access.viewer_program
    if argv is None:
        why = (" (remote-viewer cannot open a VNC unix socket; or `hypercore set "
               f"{access.name} display=spice` from its next boot)"
               if access.kind is DisplayKind.VNC else "")
        raise OperationFailed(f"{program} is not installed here: apt-get install "
                              f"{package}{why}")
    paths = ctx.vm_paths(access.name)
    env = dict(ctx.environ)
    pid = process.spawn_detached(argv, log_path=paths.viewer_log, what=program, env=env)
    deadline = time.monotonic() + VIEWER_SETTLE
    while time.monotonic() < deadline:
        if not _alive(pid):
            raise OperationFailed(f"{program} exited at once: {_last_line(paths.viewer_log)}")
        time.sleep(0.05)
    note = f" ({access.pending_note})" if access.next_boot else ""
    shown = access.socket if access.kind is DisplayKind.VNC else access.uri
    return f"{access.name}: {program} started on {shown} (pid {pid}){note}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _last_line(log: Path) -> str:
    try:
        lines = log.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "no message"
    return lines[-1][:300] if lines and not lines[-1].startswith("---") else "no message"
