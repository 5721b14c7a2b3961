"""Helpers shared by the common-storage tests (shared folder, clipboard, transfer):
a module-wide Hypercore home with booted test guests, an X session on Xvfb, host qemu-ga."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import time
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ..conftest import GuestImage, HcEnv, _kill_leftover_qemus, create_guest_vm

QEMU_GA = shutil.which("qemu-ga") or "/usr/sbin/qemu-ga"
NOBODY = 65534


@contextmanager
def guests_env(guest: GuestImage, names: Sequence[str], *create_args: str,
               ram: str = "256") -> Iterator[HcEnv]:
    """A private home with ``names`` booted (agent answering); all stopped afterwards."""
    base = Path(tempfile.mkdtemp(prefix="hcst-", dir="/tmp"))
    environ = dict(os.environ)
    environ.update(HYPERCORE_HOME=str(base / "home"), HYPERCORE_RUNTIME_DIR=str(base / "run"),
                   HYPERCORE_ACCEL="tcg")
    environ.pop("XDG_RUNTIME_DIR", None)
    env = HcEnv(home=base / "home", runtime=base / "run", environ=environ)
    try:
        for name in names:
            create_guest_vm(env, guest, name, *create_args, ram=ram)
        for name in names:
            env.run("boot-vm", name, "--wait-agent", "90", check=True, timeout=180)
        yield env
    finally:
        for name in names:
            env.run("stop-vm", name, "--force", timeout=60)
        _kill_leftover_qemus(env)
        shutil.rmtree(base, ignore_errors=True)


def guest_sh(env: HcEnv, name: str, script: str, *args: str, stdin: bytes | None = None,
             check: bool = True) -> subprocess.CompletedProcess[bytes]:
    """Run a fixed shell script in the guest (arguments as argv, never interpolated)."""
    extra = ["--stdin"] if stdin is not None else []
    proc = env.run("exec", name, *extra, "--", "/bin/sh", "-c", script, "sh", *args,
                   stdin=stdin)
    if check and proc.returncode != 0:
        raise AssertionError(f"guest command failed ({proc.returncode}): "
                             f"{proc.stderr.decode(errors='replace')}")
    return proc


def serial_command(env: HcEnv, name: str, line: str) -> None:
    """Type a line on the guest's serial root shell (works while the agent is busy)."""
    paths = env.ctx.vm_paths(name)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(str(paths.serial_socket))
        sock.sendall(b"\n" + line.encode() + b"\n")
        time.sleep(0.2)


# -- X sessions on Xvfb ------------------------------------------------------------------


def _becomes(read: Callable[[], bytes], expected: bytes, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while (held := read()) != expected:
        if time.monotonic() > deadline:
            raise AssertionError(f"clipboard holds {held[:200]!r}, not {expected[:200]!r} "
                                 f"(after {timeout:g}s)")
        time.sleep(0.02)


def stop_processes(procs: Sequence[subprocess.Popen[bytes]]) -> None:
    """SIGTERM, newest first; SIGKILL what is still there 5 s later."""
    for proc in reversed(procs):
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


@dataclass
class XSession:
    """An Xvfb display with cookie authentication and a "desktop session" process
    (a long-running process of the desktop user with DISPLAY/XAUTHORITY set, as any
    graphical login has) — the way a real guest desktop looks from /proc."""

    display: str
    xauthority: Path
    uid: int
    procs: list[subprocess.Popen[bytes]]
    directory: Path

    @property
    def client_env(self) -> dict[str, str]:
        return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "DISPLAY": self.display,
                "XAUTHORITY": str(self.xauthority)}

    def read_clipboard(self, selection: str = "clipboard") -> bytes:
        proc = subprocess.run(["xclip", "-o", "-selection", selection], env=self.client_env,
                              capture_output=True, timeout=10, check=False)
        if proc.returncode != 0:
            raise AssertionError(f"xclip -o failed: {proc.stderr.decode(errors='replace')}")
        return proc.stdout

    def clipboard_becomes(self, expected: bytes, *, selection: str = "clipboard",
                          timeout: float = 5.0) -> None:
        """Assert that the clipboard holds ``expected`` now or within ``timeout``: xclip
        0.13 asks for the selection, forks and returns, and its request reaches the X
        server only once the child runs (under load, after a reader asked the old owner;
        a watcher of owner changes is told only then, so it never reads the old one)."""
        _becomes(lambda: self.read_clipboard(selection), expected, timeout)

    def write_clipboard(self, data: bytes, mime: str | None = None) -> None:
        """As the session's user, the way a desktop application would (``mime``: the one
        target offered, else text)."""
        typed = ["-t", mime] if mime else []
        subprocess.run(_as_user(self.uid, ["xclip", "-selection", "clipboard", *typed, "-i"]),
                       input=data, env=self.client_env, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, timeout=10, check=True)

    def stop(self) -> None:
        stop_processes(self.procs)
        shutil.rmtree(self.directory, ignore_errors=True)


def _as_user(uid: int, argv: list[str]) -> list[str]:
    if uid == os.getuid():
        return argv
    import pwd

    gid = pwd.getpwuid(uid).pw_gid
    return ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--init-groups", "--", *argv]


def _free_display() -> int:
    for n in range(61, 200):
        if not Path(f"/tmp/.X11-unix/X{n}").exists() and not Path(f"/tmp/.X{n}-lock").exists():
            return n
    raise AssertionError("no free X display number")


def _desktop_process(uid: int, env: Mapping[str, str]) -> subprocess.Popen[bytes]:
    """The "desktop session" process: long-running, of the desktop user, its environment
    naming the display (what a scan of /proc finds)."""
    return subprocess.Popen(_as_user(uid, ["sleep", "3600"]), env=dict(env),
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def start_x_session(uid: int = NOBODY) -> XSession:
    x11 = Path("/tmp/.X11-unix")
    if not x11.exists():
        x11.mkdir()
        os.chmod(x11, 0o1777)
    directory = Path(tempfile.mkdtemp(prefix="hcx-", dir="/tmp"))
    os.chown(directory, uid, -1)
    xauth = directory / "Xauthority"
    procs: list[subprocess.Popen[bytes]] = []
    number = _free_display()
    display = f":{number}"
    session = XSession(display, xauth, uid, procs, directory)
    try:
        subprocess.run(_as_user(uid, ["xauth", "-q", "-f", str(xauth), "add", display, ".",
                                      secrets.token_hex(16)]),
                       check=True, capture_output=True, timeout=10)
        xvfb = subprocess.Popen(_as_user(uid, ["Xvfb", display, "-auth", str(xauth),
                                               "-nolisten", "tcp", "-screen", "0", "320x200x24"]),
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, env={"PATH": "/usr/bin:/bin"})
        procs.append(xvfb)
        deadline = time.monotonic() + 15
        while not Path(f"/tmp/.X11-unix/X{number}").exists():
            if xvfb.poll() is not None or time.monotonic() > deadline:
                raise AssertionError("Xvfb did not start")
            time.sleep(0.05)
        procs.append(_desktop_process(uid, {
            "PATH": "/usr/bin:/bin", "DISPLAY": display, "XAUTHORITY": str(xauth),
            "HOME": str(directory), "XDG_SESSION_TYPE": "x11"}))
    except BaseException:
        session.stop()
        raise
    return session


@dataclass
class WaylandSession:
    """A real headless Wayland compositor with the data-control protocol (sway, wlroots'
    headless backend, pixman renderer) run by ``uid``, and a "desktop session" process
    with WAYLAND_DISPLAY/XDG_RUNTIME_DIR set, as a Wayland login has."""

    runtime_dir: Path
    display: str  # WAYLAND_DISPLAY, a name in runtime_dir
    uid: int
    procs: list[subprocess.Popen[bytes]]

    @property
    def client_env(self) -> dict[str, str]:
        return {"PATH": "/usr/bin:/bin", "XDG_RUNTIME_DIR": str(self.runtime_dir),
                "WAYLAND_DISPLAY": self.display, "HOME": str(self.runtime_dir)}

    def read_clipboard(self, mime: str | None = None) -> bytes:
        """What the clipboard holds (``mime``: that type), read as the session's user."""
        typed = ["--type", mime] if mime else []
        proc = subprocess.run(_as_user(self.uid, ["wl-paste", "--no-newline", *typed]),
                              env=self.client_env, capture_output=True, timeout=10,
                              check=False)
        if proc.returncode != 0:
            raise AssertionError(f"wl-paste failed: {proc.stderr.decode(errors='replace')}")
        return proc.stdout

    def types(self) -> list[str]:
        proc = subprocess.run(_as_user(self.uid, ["wl-paste", "--list-types"]),
                              env=self.client_env, capture_output=True, text=True,
                              timeout=10, check=False)
        return proc.stdout.split() if proc.returncode == 0 else []

    def clipboard_becomes(self, expected: bytes, mime: str | None = None, *,
                          timeout: float = 5.0) -> None:
        """Assert that the clipboard holds ``expected`` now or within ``timeout`` (wl-copy,
        like xclip, returns while its forked holder takes the selection)."""
        _becomes(lambda: self.read_clipboard(mime), expected, timeout)

    def write_clipboard(self, data: bytes, mime: str | None = None) -> None:
        """As the session's user, the way a desktop application would."""
        typed = ["--type", mime] if mime else []
        subprocess.run(_as_user(self.uid, ["wl-copy", *typed]), input=data,
                       env=self.client_env, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, timeout=10, check=True)

    def stop(self) -> None:
        stop_processes(self.procs)
        # wl-copy's holders of this session end with the compositor; what is left of
        # them (and the directory) goes too.
        subprocess.run(["pkill", "-KILL", "-u", str(self.uid), "-f", "^wl-copy"],
                       capture_output=True, timeout=10, check=False)
        shutil.rmtree(self.runtime_dir, ignore_errors=True)


def png(width: int, height: int) -> bytes:
    """A real PNG of random pixels (barely compressible: about 3 bytes a pixel)."""
    raw = b"".join(b"\0" + os.urandom(width * 3) for _ in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw))
            + chunk(b"IEND", b""))


def start_wayland_session(uid: int = NOBODY) -> WaylandSession:
    runtime = Path(tempfile.mkdtemp(prefix="hcwl-", dir="/tmp"))
    os.chown(runtime, uid, -1)
    os.chmod(runtime, 0o700)
    config = runtime / "sway.conf"
    config.write_text("")  # (no bar, no keys, no outputs configured: the headless one)
    procs: list[subprocess.Popen[bytes]] = []
    session = WaylandSession(runtime, "", uid, procs)
    try:
        sway = subprocess.Popen(_as_user(uid, ["sway", "-c", str(config)]), env={
            "PATH": "/usr/bin:/bin", "XDG_RUNTIME_DIR": str(runtime), "HOME": str(runtime),
            "WLR_BACKENDS": "headless", "WLR_LIBINPUT_NO_DEVICES": "1",
            "WLR_RENDERER": "pixman"}, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, cwd="/")
        procs.append(sway)
        deadline = time.monotonic() + 15
        while not (sockets := sorted(p.name for p in runtime.glob("wayland-[0-9]*")
                                     if p.is_socket())):
            if sway.poll() is not None or time.monotonic() > deadline:
                raise AssertionError("sway did not start")
            time.sleep(0.05)
        session.display = sockets[0]
        procs.append(_desktop_process(uid, {**session.client_env,
                                            "XDG_SESSION_TYPE": "wayland"}))
    except BaseException:
        session.stop()
        raise
    return session


# -- qemu-ga on the host ---------------------------------------------------------------------


@contextmanager
def host_qemu_ga(*extra: str) -> Iterator[Path]:
    """A real qemu-ga on a unix socket; its environment has no display variables (like a
    guest's agent started by init)."""
    directory = Path(tempfile.mkdtemp(prefix="hcqga-", dir="/tmp"))
    sock = directory / "qga.sock"
    env: Mapping[str, str] = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
    proc = subprocess.Popen([QEMU_GA, "-m", "unix-listen", "-p", str(sock), "-t",
                             str(directory), "-f", str(directory / "qga.pid"), *extra],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, env=dict(env))
    try:
        deadline = time.monotonic() + 10
        while not sock.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError("qemu-ga did not start")
            time.sleep(0.02)
        yield sock
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(directory, ignore_errors=True)
