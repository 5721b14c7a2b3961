"""What this host offers the person at the terminal: a summary line (CPU, memory,
load, free disk), a VM's serial console and display, and the demo VM.

Everything here is synchronous and may block briefly (procfs, a subprocess):
the dashboard calls it from worker threads.
"""

from __future__ import annotations

import getpass
import logging
import platform
import shlex
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path

from hypercore_tui.adapters import process
from hypercore_tui.adapters.procstats import HostProbe, HostReading
from hypercore_tui.core.errors import InvalidState, OperationFailed, Timeout
from hypercore_tui.core.models import VmSpec
from hypercore_tui.services import create, registry, vmstate
from hypercore_tui.services.context import Context

log = logging.getLogger("hypercore.host")
log.addHandler(logging.NullHandler())


@dataclass(frozen=True)
class HostSummary(HostReading):
    """Host CPU %, memory, load and the free space of HYPERCORE_HOME's filesystem."""

    #: Why VMs boot under TCG although /dev/kvm opens (this host boot's KVM probe failed).
    accel_note: str | None = None


class HostWatch:
    """Reads the host summary; CPU % is the use since the previous read."""

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx
        self._probe = HostProbe(ctx.layout.home)

    def read(self) -> HostSummary:
        reading = self._probe.read()
        # The cached verdict only (a small file): the probe itself runs at the first boot.
        note = process.known_accel_note(self._ctx.environ,
                                        cache_dir=self._ctx.layout.runtime_base)
        return HostSummary(**{f.name: getattr(reading, f.name) for f in fields(reading)},
                           accel_note=note)


# -- serial console -------------------------------------------------------------------

#: Ctrl-] leaves the console (the guest gets every other key, Ctrl-C included).
CONSOLE_ESCAPE = "0x1d"


@dataclass(frozen=True)
class ConsoleAccess:
    argv: tuple[str, ...]  # attaches a terminal to the VM's serial console
    opened: bool  # True when a tmux window was opened for it
    message: str

    @property
    def command_line(self) -> str:
        return shlex.join(self.argv)


def tmux_terminal_features(environ: Mapping[str, str]) -> tuple[str, ...] | None:
    """What tmux knows the attached terminal can do (``#{client_termfeatures}``, e.g.
    ``sixel`` for a tmux built with it); None outside tmux or when tmux cannot say."""
    if not environ.get("TMUX") or not shutil.which("tmux", path=environ.get("PATH")):
        return None
    try:
        proc = subprocess.run(["tmux", "display-message", "-p", "#{client_termfeatures}"],
                              env=dict(environ), capture_output=True, timeout=1.0,
                              stdin=subprocess.DEVNULL, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if proc.returncode != 0:
        return None
    return tuple(f for f in proc.stdout.decode(errors="replace").strip().split(",") if f)


def console_argv(ctx: Context, name: str) -> tuple[str, ...]:
    sock = ctx.vm_paths(name).serial_socket
    return ("socat", f"-,raw,echo=0,escape={CONSOLE_ESCAPE}", f"UNIX-CONNECT:{sock}")


def open_console(ctx: Context, name: str) -> ConsoleAccess:
    """Open the serial console in a new tmux window when inside tmux, else say how."""
    vmstate.require_running(ctx, name)
    argv = console_argv(ctx, name)
    if not ctx.environ.get("TMUX") or not shutil.which("tmux"):
        return ConsoleAccess(argv, False, f"run in another terminal: {shlex.join(argv)} "
                                          "(Ctrl-] leaves)")
    if not shutil.which("socat"):
        raise OperationFailed("the serial console needs socat: apt-get install socat")
    tmux = ["tmux", "new-window", "-n", f"{name}:console", *argv]
    try:
        proc = subprocess.run(tmux, env=dict(ctx.environ), capture_output=True, timeout=5,
                              stdin=subprocess.DEVNULL, check=False)
    except subprocess.TimeoutExpired:
        raise Timeout("tmux did not open a window within 5s") from None
    except OSError as exc:
        raise OperationFailed(f"cannot run tmux: {exc.strerror}") from None
    if proc.returncode != 0:
        lines = proc.stderr.decode(errors="replace").strip().splitlines()
        reason = lines[-1] if lines else f"exit status {proc.returncode}"
        raise OperationFailed(f"tmux new-window failed: {reason}")
    return ConsoleAccess(argv, True, f"{name}: serial console opened in tmux window "
                                     f"'{name}:console' (Ctrl-] leaves)")


# -- display --------------------------------------------------------------------------

VIEWERS = ("remote-viewer", "vncviewer")


@dataclass(frozen=True)
class DisplayAccess:
    name: str
    socket: Path | None  # the VNC unix socket, None when the VM has no display
    tunnel_command: str  # run on the laptop
    viewer_command: str  # then this, on the laptop
    local_viewer: tuple[str, ...] | None  # argv that shows it here (a display is present)


def display_access(ctx: Context, name: str, *, environ: Mapping[str, str] | None = None
                   ) -> DisplayAccess:
    spec = registry.load(ctx, name)
    env = ctx.environ if environ is None else environ
    if spec.display == "none":
        return DisplayAccess(name, None, "", "", None)
    sock = ctx.vm_paths(name).vnc_socket
    return DisplayAccess(name, sock, tunnel_command(sock, env), VIEWER_COMMAND,
                         _local_viewer(sock, env))


VIEWER_COMMAND = "vncviewer localhost:5900"


def tunnel_command(sock: Path | str, environ: Mapping[str, str]) -> str:
    """The ssh command that brings a VM's VNC socket to port 5900 of the user's laptop.

    The host is the address the user's own SSH session reached (SSH_CONNECTION),
    else this machine's name.
    """
    return f"ssh -L 5900:{shlex.quote(str(sock))} {_user(environ)}@{ssh_host(environ)}"


def ssh_host(environ: Mapping[str, str]) -> str:
    parts = environ.get("SSH_CONNECTION", "").split()
    if len(parts) == 4 and parts[2]:
        address = parts[2]
        return f"[{address}]" if ":" in address else address
    return platform.node() or "this-host"


def _user(env: Mapping[str, str]) -> str:
    try:
        return env.get("USER") or getpass.getuser()
    except (KeyError, OSError):  # no passwd entry for the uid
        return "user"


def _local_viewer(sock: Path, env: Mapping[str, str]) -> tuple[str, ...] | None:
    if not (env.get("DISPLAY") or env.get("WAYLAND_DISPLAY")):
        return None
    path = env.get("PATH")
    if shutil.which("remote-viewer", path=path):
        return ("remote-viewer", f"vnc+unix://{sock}")
    if shutil.which("vncviewer", path=path):
        return ("vncviewer", str(sock))  # TigerVNC >= 1.11 takes a unix socket path
    return None


def launch_viewer(ctx: Context, name: str) -> str:
    """Start a local VNC viewer, detached; fails with the reason when none can run."""
    vmstate.require_running(ctx, name)
    access = display_access(ctx, name)
    if access.socket is None:
        raise InvalidState(f"{name} has no display (created with display none)")
    if access.local_viewer is None:
        raise OperationFailed("no local display or viewer here: use the ssh tunnel shown")
    try:
        subprocess.Popen(list(access.local_viewer), env=dict(ctx.environ),
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, start_new_session=True)
    except OSError as exc:
        raise OperationFailed(f"cannot start {access.local_viewer[0]}: {exc.strerror}") from None
    return f"{name}: started {access.local_viewer[0]}"


# -- the demo VM ----------------------------------------------------------------------

DEMO_NAME = "demo"
DEMO_RAM_MB = 128
GUEST_BUILDER_ENV = "HYPERCORE_GUEST_BUILDER"


def find_guest_builder(environ: Mapping[str, str]) -> Path | None:
    """scripts/build-test-guest.sh: $HYPERCORE_GUEST_BUILDER, else beside the package."""
    override = environ.get(GUEST_BUILDER_ENV)
    if override:
        return Path(override) if Path(override).is_file() else None
    candidate = Path(__file__).resolve().parents[2] / "scripts" / "build-test-guest.sh"
    return candidate if candidate.is_file() else None


@dataclass(frozen=True)
class GuestFiles:
    kernel: Path
    initrd: Path
    append: str


def build_demo_guest(ctx: Context, *, timeout: float = 900.0) -> GuestFiles:
    """Build (or take from its cache) the small test guest: kernel, initrd, cmdline."""
    script = find_guest_builder(ctx.environ)
    if script is None:
        raise OperationFailed("the demo needs scripts/build-test-guest.sh (a source checkout) "
                              f"or {GUEST_BUILDER_ENV}=/path/to/build-test-guest.sh")
    try:
        proc = subprocess.run(["bash", str(script)], env=dict(ctx.environ), capture_output=True,
                              timeout=timeout, stdin=subprocess.DEVNULL, check=False)
    except subprocess.TimeoutExpired:
        raise Timeout(f"building the demo guest took over {timeout:g}s") from None
    except OSError as exc:
        raise OperationFailed(f"cannot run {script}: {exc.strerror}") from None
    if proc.returncode != 0:
        lines = proc.stderr.decode(errors="replace").strip().splitlines()
        raise OperationFailed(f"building the demo guest failed: {lines[-1] if lines else '?'}")
    out = proc.stdout.decode(errors="replace").strip().splitlines()
    directory = Path(out[-1]) if out else Path()
    files = GuestFiles(directory / "vmlinuz", directory / "initrd.img",
                       _read_text(directory / "cmdline"))
    if not files.kernel.is_file() or not files.initrd.is_file():
        raise OperationFailed(f"the demo guest build left no kernel/initrd in {directory}")
    return files


def _read_text(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def free_demo_name(ctx: Context) -> str:
    taken = set(registry.vm_names(ctx))
    if DEMO_NAME not in taken:
        return DEMO_NAME
    index = 2
    while f"{DEMO_NAME}-{index}" in taken:
        index += 1
    return f"{DEMO_NAME}-{index}"


def create_demo_vm(ctx: Context, name: str | None = None) -> VmSpec:
    """Define a small VM that boots the test guest (no ISO, 64 MiB disk)."""
    guest = build_demo_guest(ctx)
    request = create.CreateRequest(
        name=name or free_demo_name(ctx), ram_mb=DEMO_RAM_MB, cpus=1, disk_size="64M",
        kernel=str(guest.kernel), initrd=str(guest.initrd), append=guest.append or None,
    )
    return create.create_vm(ctx, request)
