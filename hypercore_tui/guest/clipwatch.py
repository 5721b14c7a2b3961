"""Hypercore's clipboard watcher: runs INSIDE a Linux guest, sent through the agent.

Started by clipboard.sh (``watch``) as ``python3 - [--replace] PORT UID GID GROUPS KIND``
with this text on stdin (nothing is installed in the guest) and the graphical session's
variables (DISPLAY, XAUTHORITY, WAYLAND_DISPLAY, XDG_RUNTIME_DIR, HOME) in its
environment. Python 3.7+, standard library only; it never imports hypercore_tui.

It writes one line ``c`` to the virtio-serial port PORT (the host's
``org.hypercore.clipboard.0``) whenever the session's CLIPBOARD changes owner, and nothing
else: the host reads the content through the agent. X11: XFixes selection events on the
root window (libX11 and libXfixes through ctypes); Wayland: the lines of
``wl-paste --watch echo``. It sleeps in select() while nothing changes (no polling).

One watcher per guest: as root it takes flock on LOCK_FILE (which then holds its pid);
when another watcher holds it, it says ``hc-watch=running`` and ends (``--replace``:
stops that one first, then takes over). It opens PORT as root, then becomes the session's
user (UID, GID, GROUPS comma-separated), sets up the watch, and detaches (fork, setsid,
fork, stdio on /dev/null, so that qemu-ga sees the command end). The command started by
the agent ends only when the daemon is ready, having printed on stderr:

    hc-watch=x11|wayland|running     hc-watch-pid=PID      exit 0
    hc-watch=unsupported + one line saying why             exit 3 (no libraries, no wl-paste,
                                                           no data-control protocol)
    one line saying why                                    exit 1 (other failures)
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import select
import shutil
import signal
import subprocess
import sys
import time

LOCK_FILE = "/run/hypercore-clipwatch.lock"
#: Changes closer together than this make one line.
COALESCE = 0.02
#: How long --replace waits for the running watcher to end (then SIGKILL, and as long).
REPLACE_WAIT = 2.0
#: How long the started command waits for the daemon to be ready.
READY_WAIT = 60.0
#: wl-paste --watch exits at once without the data-control protocol: this long counts.
WAYLAND_SETTLE = 1.0

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_UNSUPPORTED = 3

# XFixes (X11/extensions/xfixeswire.h)
XFIXES_SELECTION_NOTIFY = 0
XFIXES_SELECTION_MASKS = (1 << 0) | (1 << 1) | (1 << 2)  # owner, window destroy, client close


class Failure(Exception):
    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


def say(line: str) -> None:
    os.write(2, (line + "\n").encode("utf-8", "replace"))


# -- the lock ---------------------------------------------------------------------------


def holder_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    if not text.isdigit():
        return None
    pid = int(text)
    return pid if 1 < pid != os.getpid() else None


def try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            return False
        raise
    return True


def write_pid(fd: int) -> None:
    data = f"{os.getpid()}\n".encode("ascii")
    os.ftruncate(fd, 0)
    os.pwrite(fd, data, 0)


def take_lock(path: str, replace: bool) -> int | None:
    """The lock's fd (held, our pid written), or None when another watcher holds it (and
    not ``replace``: it is then reported)."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    except OSError as exc:
        raise Failure(EXIT_FAILED, f"cannot open {path}: {exc.strerror}") from None
    if try_lock(fd):
        write_pid(fd)
        return fd
    if not replace:
        say("hc-watch=running")
        pid = holder_pid(fd)
        if pid is not None:
            say(f"hc-watch-pid={pid}")
        os.close(fd)
        return None
    for sig in (signal.SIGTERM, signal.SIGKILL):
        pid = holder_pid(fd)
        if pid is not None:
            try:
                os.kill(pid, sig)
            except OSError:
                pass
        deadline = time.monotonic() + REPLACE_WAIT
        while time.monotonic() < deadline:
            if try_lock(fd):
                write_pid(fd)
                return fd
            time.sleep(0.05)
    raise Failure(EXIT_FAILED, f"the running watcher (pid {holder_pid(fd)}) did not stop")


# -- the port ---------------------------------------------------------------------------


class Notifier:
    """Writes b"c\\n" to the port, at most once per COALESCE seconds (a change inside that
    time is written when it ends: see timeout())."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.last = -1.0e9
        self.due: float | None = None

    def changed(self) -> None:
        now = time.monotonic()
        if now - self.last >= COALESCE:
            self.write()
        elif self.due is None:
            self.due = self.last + COALESCE

    def timeout(self) -> float | None:
        """select()'s timeout: None (sleep until something happens) unless a write waits."""
        if self.due is None:
            return None
        return max(0.0, self.due - time.monotonic())

    def tick(self) -> None:
        if self.due is not None and time.monotonic() >= self.due:
            self.write()

    def write(self) -> None:
        self.due = None
        self.last = time.monotonic()
        try:
            os.write(self.fd, b"c\n")
        except OSError:
            # EAGAIN: full or no host connected; EPIPE/ENXIO/ENODEV: the host side is gone.
            # Either way the host catches up by itself; try again at the next change.
            pass


# -- X11 ----------------------------------------------------------------------------------


class XFixesSelectionNotifyEvent(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_int),
        ("serial", ctypes.c_ulong),
        ("send_event", ctypes.c_int),
        ("display", ctypes.c_void_p),
        ("window", ctypes.c_ulong),
        ("subtype", ctypes.c_int),
        ("owner", ctypes.c_ulong),
        ("selection", ctypes.c_ulong),
        ("timestamp", ctypes.c_ulong),
        ("selection_timestamp", ctypes.c_ulong),
    ]


class XEvent(ctypes.Union):
    _fields_ = [
        ("type", ctypes.c_int),
        ("xfixes", XFixesSelectionNotifyEvent),
        ("pad", ctypes.c_long * 24),
    ]


class X11:
    def __init__(self) -> None:
        self.x = self._load("libX11.so.6")
        self.xf = self._load("libXfixes.so.3")
        p, ul, i = ctypes.c_void_p, ctypes.c_ulong, ctypes.c_int
        x, xf = self.x, self.xf
        x.XOpenDisplay.argtypes, x.XOpenDisplay.restype = [ctypes.c_char_p], p
        x.XDefaultRootWindow.argtypes, x.XDefaultRootWindow.restype = [p], ul
        x.XInternAtom.argtypes, x.XInternAtom.restype = [p, ctypes.c_char_p, i], ul
        x.XConnectionNumber.argtypes, x.XConnectionNumber.restype = [p], i
        x.XPending.argtypes, x.XPending.restype = [p], i
        x.XNextEvent.argtypes, x.XNextEvent.restype = [p, ctypes.POINTER(XEvent)], i
        x.XFlush.argtypes, x.XFlush.restype = [p], i
        ip = ctypes.POINTER(ctypes.c_int)
        xf.XFixesQueryExtension.argtypes, xf.XFixesQueryExtension.restype = [p, ip, ip], i
        xf.XFixesQueryVersion.argtypes, xf.XFixesQueryVersion.restype = [p, ip, ip], i
        xf.XFixesSelectSelectionInput.argtypes = [p, ul, ul, ul]
        xf.XFixesSelectSelectionInput.restype = None
        self.dpy: int | None = None
        self.event_base = 0
        self.atom = 0

    @staticmethod
    def _load(name: str) -> ctypes.CDLL:
        try:
            return ctypes.CDLL(name)
        except OSError:
            raise Failure(EXIT_UNSUPPORTED, f"no {name}") from None

    def open(self) -> None:
        name = os.environ.get("DISPLAY", "")
        if not name:
            raise Failure(EXIT_FAILED, "no DISPLAY in the session's environment")
        dpy = self.x.XOpenDisplay(None)
        if not dpy:
            raise Failure(EXIT_FAILED, f"cannot open display {name}")
        event_base, error_base = ctypes.c_int(0), ctypes.c_int(0)
        if not self.xf.XFixesQueryExtension(dpy, ctypes.byref(event_base),
                                            ctypes.byref(error_base)):
            raise Failure(EXIT_UNSUPPORTED, f"no XFIXES extension on display {name}")
        major, minor = ctypes.c_int(5), ctypes.c_int(0)
        self.xf.XFixesQueryVersion(dpy, ctypes.byref(major), ctypes.byref(minor))
        self.atom = int(self.x.XInternAtom(dpy, b"CLIPBOARD", 0))
        root = int(self.x.XDefaultRootWindow(dpy))
        self.xf.XFixesSelectSelectionInput(dpy, root, self.atom, XFIXES_SELECTION_MASKS)
        self.x.XFlush(dpy)
        self.dpy = int(dpy)
        self.event_base = int(event_base.value)

    def run(self, notifier: Notifier) -> None:
        """Until the X connection breaks (Xlib's I/O error handler then ends the process)."""
        dpy = self.dpy
        xfd = int(self.x.XConnectionNumber(dpy))
        event = XEvent()
        notify = self.event_base + XFIXES_SELECTION_NOTIFY
        while True:
            select.select([xfd], [], [], notifier.timeout())
            changed = False
            while self.x.XPending(dpy) > 0:
                self.x.XNextEvent(dpy, ctypes.byref(event))
                if event.type == notify and event.xfixes.selection == self.atom:
                    changed = True
            if changed:
                notifier.changed()
            notifier.tick()


# -- Wayland --------------------------------------------------------------------------------


class Wayland:
    def __init__(self) -> None:
        if shutil.which("wl-paste") is None:
            raise Failure(EXIT_UNSUPPORTED, "no wl-paste (install wl-clipboard)")
        self.proc: subprocess.Popen[bytes] | None = None

    def open(self) -> None:
        proc = subprocess.Popen(["wl-paste", "--watch", "echo"], stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.proc = proc
        assert proc.stdout is not None and proc.stderr is not None
        out, err = proc.stdout.fileno(), proc.stderr.fileno()
        said = b""
        # The first event is the selection as it is now, not a change: read it away.
        deadline = time.monotonic() + WAYLAND_SETTLE
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            ready, _, _ = select.select([out, err], [], [], left)
            if err in ready:
                said += os.read(err, 4096)
            if out in ready and not os.read(out, 4096):
                break
        status = proc.wait()
        said += os.read(err, 4096)
        lines = said.decode("utf-8", "replace").strip().splitlines()
        why = lines[-1] if lines else f"wl-paste --watch exited at once (status {status})"
        raise Failure(EXIT_UNSUPPORTED, why)

    def run(self, notifier: Notifier) -> None:
        proc = self.proc
        assert proc is not None and proc.stdout is not None and proc.stderr is not None
        out, err = proc.stdout.fileno(), proc.stderr.fileno()
        fds = [out, err]
        try:
            while True:
                ready, _, _ = select.select(fds, [], [], notifier.timeout())
                if err in ready and not os.read(err, 4096):
                    fds.remove(err)  # (closed)
                if out in ready:
                    data = os.read(out, 4096)
                    if not data:
                        return  # wl-paste ended: the compositor is gone
                    if b"\n" in data:
                        notifier.changed()
                notifier.tick()
        finally:
            proc.terminate()


# -- starting ---------------------------------------------------------------------------------


def drop_privileges(uid: int, gid: int, groups: list[int]) -> None:
    if uid == os.geteuid():  # (root's session, or already that user)
        return
    try:
        os.setgroups(groups)
        os.setgid(gid)
        os.setuid(uid)
    except OSError as exc:
        raise Failure(EXIT_FAILED, f"cannot become uid {uid}: {exc.strerror}") from None


def stop(signum: int, frame: object) -> None:
    raise SystemExit(0)


def daemon(source: X11 | Wayland, lock_fd: int, port_fd: int, report: int) -> None:
    """The grandchild: detached, stdio on /dev/null; sets up the watch and says so."""
    os.chdir("/")
    null = os.open("/dev/null", os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    if null > 2:
        os.close(null)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, stop)
    try:
        source.open()
        write_pid(lock_fd)
    except Failure as exc:
        os.write(report, f"{exc.code} {exc.reason}\n".encode("utf-8", "replace"))
        os._exit(exc.code)
    except Exception as exc:  # (a message for the host rather than a silent end)
        os.write(report, f"1 {type(exc).__name__}: {exc}\n".encode("utf-8", "replace"))
        os._exit(EXIT_FAILED)
    os.write(report, f"0 {os.getpid()}\n".encode("ascii"))
    os.close(report)
    source.run(Notifier(port_fd))


def detach(source: X11 | Wayland, kind: str, lock_fd: int, port_fd: int) -> int:
    """Fork the daemon; the exit status for this process, once the daemon is ready."""
    r, w = os.pipe()
    child = os.fork()
    if child == 0:
        os.close(r)
        os.setsid()
        if os.fork() != 0:
            os._exit(0)
        try:
            daemon(source, lock_fd, port_fd, w)
        finally:
            os._exit(0)
    os.close(w)
    os.close(lock_fd)  # (the daemon holds the lock now)
    os.close(port_fd)
    os.waitpid(child, 0)
    data = b""
    deadline = time.monotonic() + READY_WAIT
    while b"\n" not in data:
        left = deadline - time.monotonic()
        ready, _, _ = select.select([r], [], [], max(0.0, left))
        if not ready:
            say(f"the watcher did not get ready in {READY_WAIT:.0f} s")
            return EXIT_FAILED
        chunk = os.read(r, 4096)
        if not chunk:
            break
        data += chunk
    code_text, _, rest = data.decode("utf-8", "replace").partition(" ")
    rest = rest.strip()
    if code_text == "0" and rest.isdigit():
        say(f"hc-watch={kind}")
        say(f"hc-watch-pid={rest}")
        return 0
    if not code_text.isdigit():
        say("the watcher ended before it was ready")
        return EXIT_FAILED
    code = int(code_text)
    if code == EXIT_UNSUPPORTED:
        say("hc-watch=unsupported")
    say(rest)
    return code


def parse_ids(uid: str, gid: str, groups: str) -> tuple[int, int, list[int]]:
    try:
        return int(uid), int(gid), [int(g) for g in groups.split(",") if g]
    except ValueError:
        raise Failure(EXIT_USAGE, f"bad ids: {uid} {gid} {groups}") from None


def main(argv: list[str]) -> int:
    replace = False
    lock_path = LOCK_FILE
    while argv and argv[0].startswith("--"):
        opt = argv.pop(0)
        if opt == "--replace":
            replace = True
        elif opt.startswith("--lock="):
            lock_path = opt[len("--lock="):]
        else:
            raise Failure(EXIT_USAGE, f"unknown option {opt}")
    if len(argv) != 5:
        raise Failure(EXIT_USAGE, "usage: clipwatch [--replace] PORT UID GID GROUPS KIND")
    port, uid_text, gid_text, groups_text, kind = argv
    uid, gid, groups = parse_ids(uid_text, gid_text, groups_text)
    if kind not in ("x11", "wayland"):
        raise Failure(EXIT_USAGE, f"unknown session kind {kind}")
    for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(sig, signal.SIG_DFL)  # (not as qemu-ga left them)
    lock_fd = take_lock(lock_path, replace)
    if lock_fd is None:
        return 0
    try:
        port_fd = os.open(port, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    except FileNotFoundError:
        raise Failure(EXIT_FAILED, f"no port {port}") from None
    except OSError as exc:
        raise Failure(EXIT_FAILED, f"cannot open {port}: {exc.strerror}") from None
    drop_privileges(uid, gid, groups)
    source: X11 | Wayland = X11() if kind == "x11" else Wayland()
    return detach(source, kind, lock_fd, port_fd)


if __name__ == "__main__":
    try:
        status = main(sys.argv[1:])
    except Failure as failure:
        if failure.code == EXIT_UNSUPPORTED:
            say("hc-watch=unsupported")
        say(failure.reason)
        status = failure.code
    sys.exit(status)
