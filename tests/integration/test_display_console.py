"""A SPICE VM against real peers: the real test guest under TCG (booted once for the
module), a real remote-viewer under a real Xvfb whose window is compared with QEMU's
screendump, `hypercore display` with and without a graphical session, `set display=`,
and `hypercore console` in a pty and in real tmux (detach key, one client at a time)."""

from __future__ import annotations

import os
import pty
import re
import select
import shlex
import shutil
import signal
import subprocess
import tempfile
import termios
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from hypercore_tui.services.display import PORT_BASE, PORT_SPREAD

from ..conftest import HYPERCORE, GuestImage, HcEnv, _kill_leftover_qemus, create_guest_vm
from ..helpers import Tmux, wait_until
from .viewer_env import private_xvfb, qmp, viewer_window, x_windows

pytestmark = [pytest.mark.qemu, pytest.mark.timeout(300)]

VM = "spc1"


# -- the module's VM and X server ---------------------------------------------------------


@pytest.fixture(scope="module")
def spice_env(test_guest: GuestImage) -> Iterator[HcEnv]:
    """One home with VM spc1 (--display spice) booted, its agent answering."""
    base = Path(tempfile.mkdtemp(prefix="hc-", dir="/tmp"))
    environ = {k: v for k, v in os.environ.items()
               if k not in ("DISPLAY", "WAYLAND_DISPLAY", "TMUX", "XDG_RUNTIME_DIR")}
    environ.update(HYPERCORE_HOME=str(base / "home"), HYPERCORE_RUNTIME_DIR=str(base / "run"),
                   HYPERCORE_ACCEL="tcg")
    env = HcEnv(home=base / "home", runtime=base / "run", environ=environ)
    try:
        create_guest_vm(env, test_guest, VM, "--display", "spice", "--no-shared")
        env.run("boot-vm", VM, "--wait-agent", "60", check=True)
        yield env
    finally:
        _kill_leftover_qemus(env)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def xvfb() -> Iterator[str]:
    with private_xvfb() as display:
        yield display


def with_env(env: HcEnv, **changes: str | None) -> HcEnv:
    environ = dict(env.environ)
    for key, value in changes.items():
        if value is None:
            environ.pop(key, None)
        else:
            environ[key] = value
    return HcEnv(home=env.home, runtime=env.runtime, environ=environ)


def error(proc: subprocess.CompletedProcess[bytes], code: int) -> str:
    """The one ``hypercore: error:`` line of a command that failed with ``code``."""
    err = proc.stderr.decode()
    assert proc.returncode == code, (proc.returncode, err)
    assert err.startswith("hypercore: error: ") and err.count("\n") == 1, err
    return err.removeprefix("hypercore: error: ").rstrip("\n")


# -- images (PPM via netpbm: xwd's and QEMU's PNG converted) ------------------------------


class Gray:
    """A grayscale image: ``width`` x ``height`` values 0-255, row by row."""

    def __init__(self, width: int, height: int, pixels: bytes) -> None:
        self.width, self.height, self.pixels = width, height, pixels

    @classmethod
    def from_ppm(cls, data: bytes) -> Gray:
        fields: list[bytes] = []
        pos = 0
        while len(fields) < 4:  # magic, width, height, maxval (comments skipped)
            while data[pos:pos + 1].isspace():
                pos += 1
            if data[pos:pos + 1] == b"#":
                pos = data.index(b"\n", pos)
                continue
            end = pos
            while not data[end:end + 1].isspace():
                end += 1
            fields.append(data[pos:end])
            pos = end
        assert fields[0] == b"P6" and fields[3] == b"255", fields
        width, height = int(fields[1]), int(fields[2])
        rgb = data[pos + 1:pos + 1 + width * height * 3]
        gray = bytes((rgb[i] * 3 + rgb[i + 1] * 6 + rgb[i + 2]) // 10
                     for i in range(0, len(rgb), 3))
        return cls(width, height, gray)

    def row(self, y: int) -> bytes:
        return self.pixels[y * self.width:(y + 1) * self.width]

    def crop(self, x: int, y: int, width: int, height: int) -> Gray:
        rows = b"".join(self.row(y + dy)[x:x + width] for dy in range(height))
        return Gray(width, height, rows)

    def flipped(self) -> Gray:
        return Gray(self.width, self.height,
                    b"".join(self.row(y) for y in reversed(range(self.height))))


def correlation(a: list[float] | bytes, b: list[float] | bytes) -> float:
    """Pearson correlation (0 when either side is flat: a blank image shows nothing)."""
    n = len(a)
    mean_a, mean_b = sum(a) / n, sum(b) / n
    cov = sum((x - mean_a) * (y - mean_b) for x, y in zip(a, b, strict=True))
    var_a = sum((x - mean_a) ** 2 for x in a)
    var_b = sum((y - mean_b) ** 2 for y in b)
    return cov / (var_a * var_b) ** 0.5 if var_a and var_b else 0.0


def best_offset(inner: list[float], outer: list[float]) -> int:
    """Where the profile ``inner`` sits in the longer ``outer``."""
    spans = range(len(outer) - len(inner) + 1)
    return max(spans, key=lambda d: correlation(inner, outer[d:d + len(inner)]))


def similarity(guest: Gray, window: Gray) -> float:
    """How well ``window`` shows ``guest`` at 1:1 somewhere inside it: the best place is
    found from the row and column brightness profiles, then the pixels are compared."""
    if window.width < guest.width or window.height < guest.height:
        return 0.0
    rows_g = [sum(guest.row(y)) / guest.width for y in range(guest.height)]
    rows_w = [sum(window.row(y)) / window.width for y in range(window.height)]
    cols_g = [sum(guest.pixels[x::guest.width]) / guest.height for x in range(guest.width)]
    cols_w = [sum(window.pixels[x::window.width]) / window.height for x in range(window.width)]
    dy, dx = best_offset(rows_g, rows_w), best_offset(cols_g, cols_w)
    return correlation(guest.pixels, window.crop(dx, dy, guest.width, guest.height).pixels)


def netpbm(tool: str, data: bytes) -> bytes:
    return subprocess.run([tool], input=data, capture_output=True, check=True,
                          timeout=30).stdout


# -- SPICE and the viewer -----------------------------------------------------------------


def test_spice_listens_on_its_private_unix_socket_only(spice_env: HcEnv) -> None:
    paths = spice_env.ctx.vm_paths(VM)
    info = os.stat(paths.spice_socket)
    assert info.st_mode & 0o077 == 0, oct(info.st_mode)
    assert not paths.vnc_socket.exists()
    pid = int(paths.pidfile.read_text())
    listening = [c for c in psutil.Process(pid).net_connections(kind="inet")
                 if c.status == psutil.CONN_LISTEN]
    assert listening == []
    spice = qmp(spice_env, VM, "query-spice")
    assert spice["enabled"] is True and spice.get("port") is None, spice
    # The guest sees the agent's port and a USB controller for redirection.
    ports = spice_env.run("exec", VM, "--", "/bin/sh", "-c",
                          "cat /sys/class/virtio-ports/*/name", check=True).stdout.split()
    assert b"com.redhat.spice.0" in ports
    pci = qmp(spice_env, VM, "query-pci")
    qdevs = {dev.get("qdev_id") for bus in pci for dev in bus["devices"]}
    assert {"video0", "usb0"} <= qdevs, qdevs


def test_display_without_a_graphical_session_prints_the_ssh_line(spice_env: HcEnv) -> None:
    sock = spice_env.ctx.vm_paths(VM).spice_socket
    for variables in ({}, {"DISPLAY": ":1999"}, {"WAYLAND_DISPLAY": "wayland-9",
                                                 "XDG_RUNTIME_DIR": "/nonexistent"}):
        env = with_env(spice_env, USER="alice",
                       SSH_CONNECTION="203.0.113.5 50000 198.51.100.7 22", **variables)
        proc = env.run("display", VM)
        assert proc.returncode == 0, proc.stderr
        lines = proc.stdout.decode().splitlines()
        assert len(lines) == 1, lines
        match = re.fullmatch(rf"ssh -fL (\d+):{re.escape(str(sock))} alice@198\.51\.100\.7 "
                             rf"sleep 10 && remote-viewer spice://localhost:(\d+)", lines[0])
        assert match and match[1] == match[2], lines[0]
        assert PORT_BASE <= int(match[1]) < PORT_BASE + 2 * PORT_SPREAD
        note = proc.stderr.decode()
        assert note.count("\n") == 1 and "no graphical session here" in note
        assert "virt-viewer" in note


def test_display_starts_remote_viewer_whose_window_shows_the_guest(
        spice_env: HcEnv, xvfb: str, tmp_path: Path) -> None:
    env = with_env(spice_env, DISPLAY=xvfb)
    started = env.run("display", VM, check=True)
    line = started.stdout.decode().strip()
    assert re.fullmatch(rf"{VM}: remote-viewer started on spice\+unix://\S+/spice\.sock "
                        r"\(pid \d+\)", line), line
    pid = int(line.rsplit("pid ", 1)[1].rstrip(")"))
    viewer = psutil.Process(pid)
    try:
        assert viewer.cmdline()[-1] == f"spice+unix://{spice_env.ctx.vm_paths(VM).spice_socket}"
        assert os.getsid(pid) == pid  # detached: a session of its own
        # The viewer is a SPICE client of this VM: QEMU lists its channels.
        wait_until("remote-viewer's SPICE channels", lambda: len(
            qmp(spice_env, VM, "query-spice").get("channels", [])) >= 3, 20)
        wait_until("the viewer's window", lambda: viewer_window(xvfb, VM) is not None, 20,
                   show=lambda: str(x_windows(xvfb)))
        window = viewer_window(xvfb, VM)
        assert window is not None

        shot = tmp_path / "guest.png"
        env.run("screenshot", VM, str(shot), check=True)
        guest = Gray.from_ppm(netpbm("pngtopnm", shot.read_bytes()))

        def window_image() -> Gray:
            xwd = subprocess.run(["xwd", "-silent", "-id", window],
                                 env={**os.environ, "DISPLAY": xvfb}, capture_output=True,
                                 check=True, timeout=20).stdout
            return Gray.from_ppm(netpbm("xwdtopnm", xwd))

        scores: list[float] = []

        def shows_the_guest() -> bool:
            scores.append(similarity(guest, window_image()))
            return scores[-1] >= 0.9

        wait_until("the viewer's window to show the guest's screen", shows_the_guest, 30,
                   show=lambda: f"similarities {scores}")
        # What a blank or a wrong window would score, for scale.
        blank = Gray(guest.width + 10, guest.height + 50,
                     bytes((guest.width + 10) * (guest.height + 50)))
        wrong = guest.flipped()
        controls = [similarity(guest, blank), correlation(guest.pixels, wrong.pixels)]
        assert max(controls) < 0.5 and scores[-1] - max(controls) > 0.4, (scores, controls)
        print(f"viewer window vs screendump: {scores[-1]:.3f} (blank, flipped: {controls})")
    finally:
        viewer.terminate()
        viewer.wait(10)


def test_display_refusals_are_one_line(spice_env: HcEnv, test_guest: GuestImage, xvfb: str,
                                       tmp_path: Path) -> None:
    # remote-viewer missing, with a graphical session: the package is named.
    env = with_env(spice_env, DISPLAY=xvfb, PATH="/nonexistent")
    assert error(env.run("display", VM), 1) == (
        "remote-viewer is not installed here: apt-get install virt-viewer")
    # A VM without a display device: display and screenshot both refuse.
    create_guest_vm(spice_env, test_guest, "nodisp", "--display", "none", "--no-shared")
    stopped = spice_env.run("display", "nodisp")
    assert error(stopped, 1) == "nodisp is not running (stopped)"
    spice_env.run("boot-vm", "nodisp", check=True)
    try:
        refused = error(spice_env.run("display", "nodisp"), 1)
        assert refused.startswith("nodisp has no display device (display=none)"), refused
        assert "hypercore console nodisp" in refused
        shot = error(spice_env.run("screenshot", "nodisp", str(tmp_path / "x.png")), 1)
        assert shot == "nodisp has no display device (display=none)"
        # Its serial console ends when QEMU does, the terminal's mode restored.
        console = PtyConsole(spice_env, "nodisp")
        try:
            wait_until("the console to connect", lambda: termios.tcgetattr(console.slave)
                       != console.saved, 10)
            spice_env.run("stop-vm", "nodisp", "--force", check=True)
            assert console.proc.wait(10) == 0
            assert console.proc.stderr is not None
            assert "nodisp's serial console closed (QEMU stopped)" in \
                console.proc.stderr.read().decode()
            assert termios.tcgetattr(console.slave) == console.saved
        finally:
            console.close()
    finally:
        spice_env.run("stop-vm", "nodisp", "--force")
        spice_env.run("delete-vm", "nodisp", "--yes")


def test_set_display_round_trip(spice_env: HcEnv) -> None:
    changed = spice_env.run("set", VM, "display=vnc", check=True).stdout.decode()
    assert changed == (f"{VM}: display=vnc (was spice): from the next boot, it runs with spice "
                       "until then\n")
    assert spice_env.run("set", VM, "--json", "display=vnc", check=True).stdout.decode() \
        .replace(" ", "").find('"display":"vnc"') >= 0
    # The running VM keeps its SPICE display: the viewer line still reaches it.
    proc = spice_env.run("display", VM, check=True)
    assert re.search(r"remote-viewer spice://localhost:\d+$", proc.stdout.decode().strip())
    assert "display=vnc from the next boot" in proc.stderr.decode()
    back = spice_env.run("set", VM, "display=spice", check=True).stdout.decode()
    assert back == f"{VM}: display=spice (was vnc)\n"
    again = spice_env.run("set", VM, "display=spice", check=True).stdout.decode()
    assert again == f"{VM}: display is already spice\n"
    bad = spice_env.run("set", VM, "display=sdl")
    assert error(bad, 2) == "invalid display 'sdl': use vnc, spice, none"


# -- the serial console -------------------------------------------------------------------


class PtyConsole:
    """``hypercore console NAME`` on a fresh pty (its stdin and stdout)."""

    def __init__(self, env: HcEnv, name: str) -> None:
        self.master, self.slave = pty.openpty()
        self.saved = termios.tcgetattr(self.slave)
        self.proc = subprocess.Popen([*HYPERCORE, "console", name], env=env.environ,
                                     stdin=self.slave, stdout=self.slave,
                                     stderr=subprocess.PIPE, start_new_session=True)
        self.seen = b""

    def read_until(self, needle: bytes, timeout: float = 20) -> bytes:
        deadline = time.monotonic() + timeout
        while needle not in self.seen:
            left = deadline - time.monotonic()
            assert left > 0, f"{needle!r} not seen in {self.seen[-500:]!r}"
            ready, _, _ = select.select([self.master], [], [], left)
            if ready:
                self.seen += os.read(self.master, 65536)
        return self.seen

    def send(self, data: bytes) -> None:
        os.write(self.master, data)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        for fd in (self.master, self.slave):
            os.close(fd)


def test_console_in_a_pty_one_client_at_a_time_and_the_terminal_restored(
        spice_env: HcEnv) -> None:
    first = PtyConsole(spice_env, VM)
    try:
        wait_until("the console to connect", lambda: termios.tcgetattr(first.slave)
                   != first.saved, 10)
        first.send(b"\r")
        first.send(b"echo hc-$((6*7))-console\r")
        first.read_until(b"hc-42-console")
        # A second client is told who holds it, at once (QEMU would leave it hanging).
        started = time.monotonic()
        second = PtyConsole(spice_env, VM)
        try:
            assert second.proc.wait(10) == 1
            assert second.proc.stderr is not None
            message = error(subprocess.CompletedProcess(
                [], 1, b"", second.proc.stderr.read()), 1)
        finally:
            second.close()
        assert time.monotonic() - started < 8
        holder = re.fullmatch(rf"{VM}: the serial console is in use by pid (\d+) \(console on "
                              r"/dev/pts/\d+\); QEMU serves one client at a time: detach "
                              r"there with Ctrl\+\]", message)
        assert holder and int(holder[1]) == first.proc.pid, message
        # Ctrl+C goes to the guest (raw mode), not to hypercore.
        first.send(b"sleep 30\r")
        time.sleep(0.5)
        first.send(b"\x03")
        first.send(b"echo after-$((1+1))\r")
        first.read_until(b"after-2")
        assert first.proc.poll() is None
        first.send(b"\x1d")  # Ctrl+]
        assert first.proc.wait(10) == 0
        assert first.proc.stderr is not None
        said = first.proc.stderr.read().decode()
        assert "Ctrl+] detaches" in said and f"detached from {VM}'s serial console" in said
        assert termios.tcgetattr(first.slave) == first.saved  # the mode is back
    finally:
        first.close()
    # Signalled: the terminal mode is restored too, and the console is free again.
    third = PtyConsole(spice_env, VM)
    try:
        wait_until("the console to connect", lambda: termios.tcgetattr(third.slave)
                   != third.saved, 10)
        third.proc.send_signal(signal.SIGTERM)
        assert third.proc.wait(10) == 0
        assert termios.tcgetattr(third.slave) == third.saved
    finally:
        third.close()


def test_console_needs_a_terminal(spice_env: HcEnv) -> None:
    proc = spice_env.run("console", VM)  # stdin: /dev/null
    assert error(proc, 2).startswith("console needs a terminal on stdin")


def test_console_in_real_tmux_detaches_with_ctrl_bracket(spice_env: HcEnv) -> None:
    tmux = Tmux()
    try:
        command = ["env", *(f"{k}={v}" for k, v in spice_env.environ.items()
                            if k.startswith("HYPERCORE_") or k in ("PATH", "HOME", "LANG")),
                   *HYPERCORE, "console", VM]
        tmux.ok("new-session", "-d", "-s", "dash", "-x", "100", "-y", "30",
                "sh", "-c", shlex.join(command) + "; echo console-exit-$?; sleep 60")
        wait_until("the console to connect", lambda: "Ctrl+] detaches" in tmux.screen(), 15,
                   show=tmux.screen)
        tmux.keys("Enter")
        tmux.ok("send-keys", "-t", "dash", "-l", "echo in-tmux-$((20+3))")
        tmux.keys("Enter")
        wait_until("the guest's answer", lambda: "in-tmux-23" in tmux.screen(), 15,
                   show=tmux.screen)
        tmux.keys("C-]")
        wait_until("the console to detach", lambda: "console-exit-0" in tmux.screen(), 10,
                   show=tmux.screen)
        assert f"detached from {VM}'s serial console" in tmux.screen()
    finally:
        tmux.kill()




def test_dashboard_c_opens_the_console_in_a_tmux_window(spice_env: HcEnv) -> None:
    tmux = Tmux()
    try:
        tmux.start_dashboard(spice_env.environ)
        wait_until("the dashboard to list the VM", lambda: VM in tmux.screen(), 20,
                   show=tmux.screen)

        def console_window() -> str | None:
            out = tmux.ok("list-windows", "-t", "dash", "-F",
                          "#{window_index} #{window_name}")
            return next((line.split()[0] for line in out.splitlines()
                         if line.split()[1:] == [f"{VM}:console"]), None)

        tmux.keys("c")
        wait_until("the console's tmux window", lambda: console_window() is not None, 15,
                   show=tmux.screen)
        target = f"dash:{console_window()}"
        wait_until("the console to connect", lambda: "Ctrl+] detaches" in tmux.screen(target),
                   15, show=lambda: tmux.screen(target))
        # While that window holds the console, c says who does (no second window).
        tmux.ok("select-window", "-t", "dash:0")
        tmux.keys("c")
        wait_until("the dashboard to name the holder", lambda: "in use by pid" in
                   " ".join(tmux.screen().split()), 15, show=tmux.screen)
        tmux.ok("send-keys", "-t", target, "C-]")
        wait_until("the console window to close", lambda: console_window() is None, 10,
                   show=lambda: tmux.screen(target))
    finally:
        tmux.kill()


def test_boot_refuses_spice_in_one_line_where_qemu_lacks_it(spice_env: HcEnv,
                                                            tmp_path: Path) -> None:
    """A QEMU without SPICE modules (a fake that lists no qxl-vga and knows no -spice):
    the boot is refused before QEMU starts, naming the package."""
    fake = tmp_path / "qemu-no-spice"
    fake.write_text('#!/bin/sh\nif [ "$1" = -device ]; then echo \'name "VGA", bus PCI\'; '
                    "exit 0; fi\necho \"There is no option group 'spice'\" >&2\nexit 1\n")
    fake.chmod(0o755)
    spice_env.run("create-vm", "nospice", "64", "1", "--disk-size", "16M", "--display",
                  "spice", "--no-shared", check=True)
    env = with_env(spice_env, HYPERCORE_QEMU=str(fake))
    try:
        message = error(env.run("boot-vm", "nospice"), 1)
        assert message == ("nospice: this QEMU has no SPICE display (apt-get install "
                           "qemu-system-modules-spice, or qemu-system-common on Debian 12), "
                           "or `hypercore set nospice display=vnc`"), message
        assert not spice_env.ctx.vm_paths("nospice").pidfile.exists()
    finally:
        spice_env.run("delete-vm", "nospice", "--yes")


def test_display_of_a_vnc_vm_starts_vncviewer_on_its_socket(
        spice_env: HcEnv, test_guest: GuestImage, xvfb: str) -> None:
    create_guest_vm(spice_env, test_guest, "vncvm", "--no-shared")  # (vnc: the default)
    spice_env.run("boot-vm", "vncvm", check=True)
    viewer: psutil.Process | None = None
    try:
        sock = spice_env.ctx.vm_paths("vncvm").vnc_socket
        line = with_env(spice_env, DISPLAY=xvfb).run("display", "vncvm", check=True)
        # remote-viewer cannot open a VNC unix socket: TigerVNC's viewer takes its path.
        assert f"vncvm: vncviewer started on {sock} (pid ".encode() in line.stdout, line
        viewer = psutil.Process(int(line.stdout.decode().rsplit("pid ", 1)[1].rstrip(")\n")))
        assert viewer.cmdline()[-1] == str(sock)
        wait_until("a VNC client", lambda: bool(
            qmp(spice_env, "vncvm", "query-vnc").get("clients")), 20,
            show=lambda: str(qmp(spice_env, "vncvm", "query-vnc")))
        wait_until("the viewer's window", lambda: any(
            "vncvm" in title for title in x_windows(xvfb)), 20,
            show=lambda: str(x_windows(xvfb)))
        # Without TigerVNC here, one line names its package.
        missing = with_env(spice_env, DISPLAY=xvfb, PATH="/nonexistent").run("display", "vncvm")
        assert error(missing, 1).startswith(
            "vncviewer is not installed here: apt-get install tigervnc-viewer (remote-viewer "
            "cannot open a VNC unix socket")
    finally:
        if viewer is not None:
            viewer.terminate()
        spice_env.run("stop-vm", "vncvm", "--force")
        spice_env.run("delete-vm", "vncvm", "--yes")
