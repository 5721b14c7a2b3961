"""Hypercore's clipboard watcher: runs INSIDE a Linux guest, sent through the agent.

Started by clipboard.sh (``watch``) as ``python3 - [--replace] PORT UID GID GROUPS KIND``
with this text on stdin (nothing is installed in the guest) and the graphical session's
variables (DISPLAY, XAUTHORITY, WAYLAND_DISPLAY, XDG_RUNTIME_DIR, HOME) in its
environment. Python 3.7+, standard library only; it never imports hypercore_tui.

It writes one line ``c`` to the virtio-serial port PORT (the host's
``org.hypercore.clipboard.0``) whenever the session's CLIPBOARD changes owner (X11: ``c
files`` or ``c image`` when the new owner's TARGETS offer a file list or a PNG, asked on a
window of its own for at most TARGETS_WAIT). A copy of text of at most INLINE_MAX bytes
is carried on the port itself instead, as one line ``t BASE64`` (X11: the owner's
UTF8_STRING, asked the same way; Wayland: one ``wl-paste --type text``), which saves the
host a read through the agent; any other copy, or text the owner does not hand over at
once, is read by the host through the agent, the hint ordering its pulls. One line is
one ``write()`` of at most ~22 KiB: the guest's virtio-serial driver takes it whole or
not at all (EAGAIN), so the lines never interleave. X11: XFixes selection events on the
root window (libX11 and libXfixes through ctypes); Wayland: the lines of
``wl-paste --watch echo``. It sleeps in select() while nothing changes (no polling).

The host writes small texts down the same port (PORT opened read-write, unless it is a
FIFO): ``w TOKEN ID BASE64`` (TOKEN: this watcher's, random, kept beside the lock and
said as hc-watch-write; a line with another one was meant for a watcher now gone), which
the watcher puts on the CLIPBOARD with xclip or xsel (X11) or wl-copy (Wayland), the text
on the tool's stdin, answering ``w-ok ID`` once the tool took it or ``w-fail ID WHY``;
``w-cancel TOKEN ID``: the host stopped waiting (that write is not made if still unread).
Its change signal follows as for any copy. See :class:`Port`. A change line no host took
(none connected: EAGAIN) is written again once one connects (SIGIO says so), after ``o MS
`` (the change was made MS milliseconds before): a sync takes a change made before it began
following the guest (while none ran) for no copy, one made after it (the guest learns of
its connection a little later) for a copy.

One watcher per guest: as root it takes flock on LOCK_FILE (which then holds its pid);
when another watcher holds it, it says ``hc-watch=running`` and ends (``--replace``:
stops that one first, then takes over). It opens PORT as root, then becomes the session's
user (UID, GID, GROUPS comma-separated), sets up the watch, and detaches (fork, setsid,
fork, stdio on /dev/null, so that qemu-ga sees the command end). The command started by
the agent ends only when the daemon is ready, having printed on stderr:

    hc-watch=x11|wayland|running     hc-watch-pid=PID      exit 0
                                     [hc-watch-write=TOKEN: it takes the host's writes]
    hc-watch=unsupported + one line saying why             exit 3 (no libraries, no wl-paste,
                                                           no data-control protocol)
    one line saying why                                    exit 1 (other failures)

Two more modes, run as the session's user by clipboard.sh (``pull-files`` / ``push-files``)
with this program as the first bytes of stdin:

    pull-files TOOL ENTRY CAP HELD   the clipboard's file list (gnome-copied-files or
        text/uri-list through xclip or wl-paste; local file:// URIs only) copied into
        /shared/.hypercore-clip/ENTRY.part, renamed ENTRY once complete; "hc-kind=files",
        "hc-entry=ENTRY", "hc-size", "hc-folders", "hc-cut" on stderr and the top-level
        names NUL-separated on stdout ("hc-held=HELD" and no copy when the list is the
        entry HELD the host offered there; "hc-kind=none" without a file list). A symbolic
        link, a device, FIFO or socket: exit 4 and one line, nothing copied; more than
        CAP bytes: exit 6 and one line, nothing copied. No share mounted at /shared: exit 5.
    own TOOL   the gnome-copied-files list after the program on stdin offered on the
        CLIPBOARD with text/uri-list, application/x-kde-cutselection and the paths as
        text (X11: a detached owner that ends at SelectionClear; Wayland: wl-copy).
"""


from __future__ import annotations

import base64
import ctypes
import errno
import fcntl
import os
import select
import shutil
import signal
import stat
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
#: The longest copied text carried on the port (base64: 4/3 of it, one write of < 32 KiB,
#: which the virtio-serial driver takes whole).
INLINE_MAX = 16 * 1024
#: A change line written again once a host connects says the change's age in ms (``o MS
#: LINE``), at most this (10 digits: 115 days).
OLD_MAX = 9_999_999_999

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


#: Beside the lock: the running watcher's token for the host's writes (see Port), kept
#: by the lock's holder; none when it takes no writes.
TOKEN_SUFFIX = ".token"


def write_token(path: str, token: str | None) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise Failure(EXIT_FAILED, f"cannot remove {path}: {exc.strerror}") from None
    if token is None:
        return
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o600)
    except OSError as exc:
        raise Failure(EXIT_FAILED, f"cannot create {path}: {exc.strerror}") from None
    try:
        os.write(fd, (token + "\n").encode("ascii"))
    finally:
        os.close(fd)


def read_token(path: str) -> str | None:
    import re

    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        text = os.read(fd, 64).decode("ascii", "replace").strip()
    finally:
        os.close(fd)
    return text if re.fullmatch("[0-9a-f]{16}", text) else None


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
        token = read_token(path + TOKEN_SUFFIX)
        if token is not None:
            say(f"hc-watch-write={token}")
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
    """Writes b"c\\n" (or b"c HINT\\n") to the port, at most once per COALESCE seconds (a
    change inside that time is written when it ends: see timeout())."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.last = -1.0e9
        self.due: float | None = None
        self.hint = ""
        self.text: bytes | None = None
        #: when the change was seen (monotonic): its age goes with a line written again
        self.at = 0.0
        #: the last line was not taken (no host connected): written again when one is
        self.lost = False

    def changed(self, hint: str = "", text: bytes | None = None) -> None:
        """A change; ``text``: the copied text itself (at most INLINE_MAX bytes)."""
        self.hint = hint
        self.text = text if text is not None and len(text) <= INLINE_MAX else None
        now = time.monotonic()
        self.at = now
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

    def write(self, again: bool = False) -> None:
        """The change's line; ``again``: one refused before, written now that a host
        connected, after ``o MS `` (how many milliseconds ago the change was made: a
        sync takes a change made before it began following the guest for no copy)."""
        self.due = None
        self.last = time.monotonic()
        if self.text is not None:
            line = b"t " + base64.b64encode(self.text) + b"\n"
        elif self.hint:
            line = b"c " + self.hint.encode("ascii") + b"\n"
        else:
            line = b"c\n"
        if again:
            age = min(OLD_MAX, max(0, round((self.last - self.at) * 1000)))
            line = f"o {age} ".encode("ascii") + line
        try:
            os.write(self.fd, line)
            self.lost = False
        except OSError:
            # EAGAIN: full or no host connected; EPIPE/ENXIO/ENODEV: the host side is gone.
            # Written again when a host connects (a Port sees it), or at the next change.
            self.lost = True

    def resend(self) -> None:
        """A host connected: the change it missed, if any."""
        if self.lost and self.due is None:
            self.write(again=True)


# -- the host's writes ------------------------------------------------------------------

#: The host's write of a small text into the clipboard: ``w TOKEN ID BASE64`` (TOKEN: this
#: watcher's, announced as hc-watch-write; ID: 8 hex digits), answered ``w-ok ID`` once the
#: session's tool took it, or ``w-fail ID WHY``; ``w-cancel TOKEN ID``: the host gave up
#: waiting (that write is not made if it is still unread). The longest line taken:
W_LINE_MAX = 2 + 16 + 1 + 8 + 1 + (INLINE_MAX + 2) // 3 * 4
#: How long the tool may take to take a text (the host waits 1.5 s for the answer).
WRITE_WAIT = 1.0
#: Bytes read from the port at one wakeup, at most.
READ_MAX = 4 * (W_LINE_MAX + 1)


def parse_command(line: bytes, token: str) -> tuple[str, str, bytes] | None:
    """One of the host's lines: ("w", ID, text) or ("x", ID, b"") (a cancel); None for
    anything else (another watcher's token: a line written before this one started)."""
    import re

    match = re.fullmatch(rb"w ([0-9a-f]{16}) ([0-9a-f]{8}) ([A-Za-z0-9+/=]*)", line)
    if match is not None:
        if match.group(1).decode() != token:
            return None
        try:
            text = base64.b64decode(match.group(3), validate=True)
        except ValueError:
            return None
        if len(text) > INLINE_MAX:
            return None
        return "w", match.group(2).decode(), text
    match = re.fullmatch(rb"w-cancel ([0-9a-f]{16}) ([0-9a-f]{8})", line)
    if match is not None and match.group(1).decode() == token:
        return "x", match.group(2).decode(), b""
    return None


def reply_line(ident: str, why: str | None) -> bytes:
    if why is None:
        return f"w-ok {ident}\n".encode("ascii")
    why = "".join(c if " " <= c <= "~" else "?" for c in why)[:160]
    return f"w-fail {ident} {why}\n".encode("ascii")


def put_text(argv: list[str], text: bytes) -> str | None:
    """``text`` onto the clipboard with the session's tool (``argv``, fed on stdin: the
    tool forks a holder and its first process ends): None once it took it, else why not."""
    name = os.path.basename(argv[0])
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
    except OSError as exc:
        return f"{name} did not start: {exc.strerror}"
    try:
        proc.communicate(text, timeout=WRITE_WAIT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return f"{name} did not take it within {WRITE_WAIT:.0f} s"
    if proc.returncode != 0:
        return f"{name} failed (exit {proc.returncode})"
    return None


def ignore_signal(signum: int, frame: object) -> None:
    pass


class Port:
    """The host's side of the port (PORT opened read-write): its writes of small texts.

    Lines are taken whole (an over-long one is dropped up to its end); of the writes read
    at one wakeup only the newest not cancelled is made (the others are answered
    ``w-fail ID superseded``). While no host is connected the port reads as EOF and polls
    as readable: it is not looked at then, until SIGIO (the driver's signal of a host
    connecting, or of data) wakes select() through a pipe (``signal.set_wakeup_fd``).
    """

    def __init__(self, fd: int, token: str) -> None:
        self.fd = fd
        self.token = token
        self.buf = b""
        self.skipping = False  # the rest of an over-long line is dropped
        self.listening = True
        self.wake = -1
        self.signals = False  # SIGIO set up (else every wakeup looks at the port again)
        self.back = False  # a host connected again (the watcher's lost line goes again)

    def start(self) -> None:
        """SIGIO for the port (in the daemon: its pid)."""
        r, w = os.pipe()
        for fd in (r, w):
            os.set_blocking(fd, False)
            os.set_inheritable(fd, False)
        self.wake = r
        signal.signal(signal.SIGIO, ignore_signal)
        signal.set_wakeup_fd(w)
        try:
            fcntl.fcntl(self.fd, fcntl.F_SETOWN, os.getpid())
            flags = fcntl.fcntl(self.fd, fcntl.F_GETFL)
            fcntl.fcntl(self.fd, fcntl.F_SETFL, flags | os.O_ASYNC)
            self.signals = True
        except OSError:
            pass  # (then the port is looked at again at each clipboard change)

    def fds(self) -> list[int]:
        fds = [self.wake] if self.wake >= 0 else []
        return fds + [self.fd] if self.listening else fds

    def ready(self, ready: list[int]) -> tuple[str, bytes] | None:
        """After select(): read what the host wrote; the write to make now (ID, text), to
        be answered with :meth:`answer`."""
        was = self.listening
        again = self.wake in ready or not (self.listening or self.signals)
        if self.wake in ready:
            try:
                while os.read(self.wake, 256):
                    pass
            except OSError:
                pass
        if again:
            self.listening = True
        elif not self.listening or self.fd not in ready:
            return None
        data = b""
        while len(data) < READ_MAX:
            try:
                chunk = os.read(self.fd, READ_MAX)
            except BlockingIOError:
                break
            except OSError:
                self.listening = False
                break
            if not chunk:  # no host connected (or it went away): wait for SIGIO
                self.listening = False
                break
            data += chunk
        if self.listening and not was:
            self.back = True
        return self.take(self.feed(data)) if data else None

    def feed(self, data: bytes) -> list[bytes]:
        """The whole lines in ``data`` after what came before (bounded: never more than
        W_LINE_MAX bytes kept)."""
        lines = []
        buf = self.buf + data
        while True:
            end = buf.find(b"\n")
            if end < 0:
                break
            line, buf = buf[:end], buf[end + 1:]
            if self.skipping:
                self.skipping = False
            else:
                lines.append(line)
        if len(buf) > W_LINE_MAX:
            buf, self.skipping = b"", True
        self.buf = buf
        return lines

    def take(self, lines: list[bytes]) -> tuple[str, bytes] | None:
        """The newest write in ``lines`` not cancelled there (older ones are answered
        superseded)."""
        writes = []
        cancelled = set()
        for line in lines:
            command = parse_command(line, self.token)
            if command is None:
                continue
            kind, ident, text = command
            if kind == "x":
                cancelled.add(ident)
            else:
                writes.append((ident, text))
        writes = [(i, t) for i, t in writes if i not in cancelled]
        for ident, _ in writes[:-1]:
            self.answer(ident, "superseded")
        return writes[-1] if writes else None

    def serve(self, ready: list[int], session: X11 | Wayland, notifier: Notifier) -> None:
        """The port's part of a wakeup after select(): the host's write made by the
        session's tool and answered (why not, or OK); once a host is connected again, the
        change it did not take written again."""
        write = self.ready(ready)
        if write:
            self.answer(write[0], session.put(write[1]))
        if self.back:
            self.back = False
            notifier.resend()

    def answer(self, ident: str, why: str | None) -> None:
        self.reply(reply_line(ident, why))

    def reply(self, line: bytes) -> None:
        try:
            os.write(self.fd, line)
        except OSError:
            pass  # (the host gives up waiting and writes through the agent)


# -- X11 ----------------------------------------------------------------------------------

#: Event types (X11/X.h)
SELECTION_CLEAR = 29
SELECTION_REQUEST = 30
SELECTION_NOTIFY = 31
XA_ATOM = 4
PROP_MODE_REPLACE = 0
CURRENT_TIME = 0
#: How long the watcher waits for the new owner's TARGETS (then: no hint).
TARGETS_WAIT = 2.0
#: The targets that make a copy "files" or "image" (the hint on the port).
FILE_TARGETS = ("x-special/gnome-copied-files", "text/uri-list")
IMAGE_TARGET = "image/png"


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


class XSelectionRequestEvent(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_int),
        ("serial", ctypes.c_ulong),
        ("send_event", ctypes.c_int),
        ("display", ctypes.c_void_p),
        ("owner", ctypes.c_ulong),
        ("requestor", ctypes.c_ulong),
        ("selection", ctypes.c_ulong),
        ("target", ctypes.c_ulong),
        ("property", ctypes.c_ulong),
        ("time", ctypes.c_ulong),
    ]


class XSelectionEvent(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_int),
        ("serial", ctypes.c_ulong),
        ("send_event", ctypes.c_int),
        ("display", ctypes.c_void_p),
        ("requestor", ctypes.c_ulong),
        ("selection", ctypes.c_ulong),
        ("target", ctypes.c_ulong),
        ("property", ctypes.c_ulong),
        ("time", ctypes.c_ulong),
    ]


class XSelectionClearEvent(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_int),
        ("serial", ctypes.c_ulong),
        ("send_event", ctypes.c_int),
        ("display", ctypes.c_void_p),
        ("window", ctypes.c_ulong),
        ("selection", ctypes.c_ulong),
        ("time", ctypes.c_ulong),
    ]


class XEvent(ctypes.Union):
    _fields_ = [
        ("type", ctypes.c_int),
        ("xfixes", XFixesSelectionNotifyEvent),
        ("xselectionrequest", XSelectionRequestEvent),
        ("xselection", XSelectionEvent),
        ("xselectionclear", XSelectionClearEvent),
        ("pad", ctypes.c_long * 24),
    ]


ERROR_HANDLER = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p)


def ignore_error(display: int | None, event: int | None) -> int:
    return 0


IGNORE_ERRORS = ERROR_HANDLER(ignore_error)


class Xlib:
    """The libX11 calls both the watcher and the selection owner make."""

    def __init__(self) -> None:
        self.x = load_library("libX11.so.6")
        p, ul, i, c = ctypes.c_void_p, ctypes.c_ulong, ctypes.c_int, ctypes.c_char_p
        ulp, ip = ctypes.POINTER(ctypes.c_ulong), ctypes.POINTER(ctypes.c_int)
        x = self.x
        x.XOpenDisplay.argtypes, x.XOpenDisplay.restype = [c], p
        x.XDefaultRootWindow.argtypes, x.XDefaultRootWindow.restype = [p], ul
        x.XInternAtom.argtypes, x.XInternAtom.restype = [p, c, i], ul
        x.XConnectionNumber.argtypes, x.XConnectionNumber.restype = [p], i
        x.XPending.argtypes, x.XPending.restype = [p], i
        x.XNextEvent.argtypes, x.XNextEvent.restype = [p, ctypes.POINTER(XEvent)], i
        x.XFlush.argtypes, x.XFlush.restype = [p], i
        x.XCreateSimpleWindow.argtypes = [p, ul, i, i, ctypes.c_uint, ctypes.c_uint,
                                          ctypes.c_uint, ul, ul]
        x.XCreateSimpleWindow.restype = ul
        x.XConvertSelection.argtypes, x.XConvertSelection.restype = [p, ul, ul, ul, ul, ul], i
        x.XGetWindowProperty.argtypes = [p, ul, ul, ctypes.c_long, ctypes.c_long, i, ul, ulp,
                                         ip, ulp, ulp, ctypes.POINTER(ctypes.c_void_p)]
        x.XGetWindowProperty.restype = i
        x.XFree.argtypes, x.XFree.restype = [p], i
        x.XSetSelectionOwner.argtypes, x.XSetSelectionOwner.restype = [p, ul, ul, ul], i
        x.XGetSelectionOwner.argtypes, x.XGetSelectionOwner.restype = [p, ul], ul
        x.XChangeProperty.argtypes = [p, ul, ul, ul, i, i, p, i]
        x.XChangeProperty.restype = i
        x.XSendEvent.argtypes = [p, ul, i, ctypes.c_long, ctypes.POINTER(XEvent)]
        x.XSendEvent.restype = i
        x.XSetErrorHandler.argtypes, x.XSetErrorHandler.restype = [ERROR_HANDLER], p
        self.dpy: int | None = None
        self.window = 0

    def connect(self) -> int:
        name = os.environ.get("DISPLAY", "")
        if not name:
            raise Failure(EXIT_FAILED, "no DISPLAY in the session's environment")
        dpy = self.x.XOpenDisplay(None)
        if not dpy:
            raise Failure(EXIT_FAILED, f"cannot open display {name}")
        # Xlib's default handler ends the process on any error: a requestor whose window
        # is gone before the answer (BadWindow) must not end it.
        self.x.XSetErrorHandler(IGNORE_ERRORS)
        self.dpy = int(dpy)
        root = int(self.x.XDefaultRootWindow(dpy))
        # A window of our own: the requestor of a conversion, or the selection's owner.
        self.window = int(self.x.XCreateSimpleWindow(dpy, root, 0, 0, 1, 1, 0, 0, 0))
        return self.dpy

    def atom(self, name: str) -> int:
        return int(self.x.XInternAtom(self.dpy, name.encode("ascii"), 0))

    def read_atoms(self, prop: int) -> list[int]:
        """The atoms in our window's property ``prop`` (deleted after)."""
        kind, fmt = ctypes.c_ulong(0), ctypes.c_int(0)
        count, after = ctypes.c_ulong(0), ctypes.c_ulong(0)
        data = ctypes.c_void_p(None)
        status = self.x.XGetWindowProperty(self.dpy, self.window, prop, 0, 1024, 1, 0,
                                           ctypes.byref(kind), ctypes.byref(fmt),
                                           ctypes.byref(count), ctypes.byref(after),
                                           ctypes.byref(data))
        if status != 0 or not data.value:
            return []
        try:
            if fmt.value != 32:
                return []
            array = ctypes.cast(data, ctypes.POINTER(ctypes.c_ulong))
            return [int(array[n]) for n in range(min(int(count.value), 1024))]
        finally:
            self.x.XFree(data)


def load_library(name: str) -> ctypes.CDLL:
    try:
        return ctypes.CDLL(name)
    except OSError:
        raise Failure(EXIT_UNSUPPORTED, f"no {name}") from None


def classify(targets: list[str]) -> str:
    """The hint written on the port for a copy offering ``targets``."""
    if any(t in targets for t in FILE_TARGETS):
        return "files"
    if IMAGE_TARGET in targets:
        return "image"
    return ""


#: Targets (X11) and types (Wayland) that say a copy is text.
TEXT_OFFERS = ("UTF8_STRING", "text/plain;charset=utf-8", "text/plain", "STRING", "TEXT")
#: How long the copied text may take to be read for the port (then the host reads it).
TEXT_WAIT = 2.0


#: Readers given up on (TEXT_WAIT passed): left to end by themselves, reaped later.
LEFT: list[subprocess.Popen[bytes]] = []


def read_text(argv: list[str]) -> bytes | None:
    """The copied text, read with the session's tool (``argv``), to carry on the port:
    None when it is longer than INLINE_MAX, not read within TEXT_WAIT, or the tool fails.
    Everything the tool gives is read, so that the owner finishes its transfer (X11's
    INCR) whatever the size; one still at it after TEXT_WAIT is not killed (an owner
    cut off in the middle of INCR could wait for that window for good): its pipe is
    closed, and xclip ends on it once the transfer is done (it writes only then)."""
    LEFT[:] = [p for p in LEFT if p.poll() is None]
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL)
    except OSError:
        return None
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    data = b""
    size = 0
    deadline = time.monotonic() + TEXT_WAIT
    status: int | None = None
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            ready, _, _ = select.select([fd], [], [], left)
            if not ready:
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            size += len(chunk)
            if size <= INLINE_MAX:
                data += chunk
        status = proc.wait(max(0.1, deadline - time.monotonic()))
    except (OSError, subprocess.TimeoutExpired):
        return None
    finally:
        proc.stdout.close()
        if proc.poll() is None:
            LEFT.append(proc)
    return data if status == 0 and size <= INLINE_MAX else None


class X11:
    """The watcher's X side: XFixes selection events on the root window; at each change,
    the new owner's TARGETS (asked on a window of its own, at most TARGETS_WAIT)."""

    def __init__(self) -> None:
        self.xl = Xlib()
        self.x = self.xl.x
        self.xf = load_library("libXfixes.so.3")
        p, ul, i = ctypes.c_void_p, ctypes.c_ulong, ctypes.c_int
        ip = ctypes.POINTER(ctypes.c_int)
        xf = self.xf
        xf.XFixesQueryExtension.argtypes, xf.XFixesQueryExtension.restype = [p, ip, ip], i
        xf.XFixesQueryVersion.argtypes, xf.XFixesQueryVersion.restype = [p, ip, ip], i
        xf.XFixesSelectSelectionInput.argtypes = [p, ul, ul, ul]
        xf.XFixesSelectSelectionInput.restype = None
        self.dpy: int | None = None
        self.event_base = 0
        self.atom = 0
        self.targets_atom = 0
        self.prop = 0
        self.hint_atoms: dict[int, str] = {}

    def open(self) -> None:
        dpy = self.xl.connect()
        name = os.environ.get("DISPLAY", "")
        event_base, error_base = ctypes.c_int(0), ctypes.c_int(0)
        if not self.xf.XFixesQueryExtension(dpy, ctypes.byref(event_base),
                                            ctypes.byref(error_base)):
            raise Failure(EXIT_UNSUPPORTED, f"no XFIXES extension on display {name}")
        major, minor = ctypes.c_int(5), ctypes.c_int(0)
        self.xf.XFixesQueryVersion(dpy, ctypes.byref(major), ctypes.byref(minor))
        self.atom = self.xl.atom("CLIPBOARD")
        self.targets_atom = self.xl.atom("TARGETS")
        self.prop = self.xl.atom("HYPERCORE_TARGETS")
        self.hint_atoms = {self.xl.atom(t): t
                           for t in (*FILE_TARGETS, IMAGE_TARGET, *TEXT_OFFERS)}
        self.xclip = shutil.which("xclip")
        self.xsel = shutil.which("xsel")
        root = int(self.x.XDefaultRootWindow(dpy))
        self.xf.XFixesSelectSelectionInput(dpy, root, self.atom, XFIXES_SELECTION_MASKS)
        self.x.XFlush(dpy)
        self.dpy = dpy
        self.event_base = int(event_base.value)

    def run(self, notifier: Notifier, port: Port | None = None) -> None:
        """Until the X connection breaks (Xlib's I/O error handler then ends the process)."""
        dpy = self.dpy
        xfd = int(self.x.XConnectionNumber(dpy))
        while True:
            ready, _, _ = select.select([xfd, *(port.fds() if port else [])], [], [],
                                       notifier.timeout())
            if port:
                port.serve(ready, self, notifier)
            owner = self.drain()
            while owner is not None:  # (a change while the TARGETS were asked: ask again)
                names, owner = self.ask_targets(xfd) if owner else ([], None)
                if owner is None:
                    hint = classify(names)
                    text = None
                    if not hint and self.xclip and any(t in names for t in TEXT_OFFERS):
                        text = read_text([self.xclip, "-selection", "clipboard", "-o"])
                    notifier.changed(hint, text)
            notifier.tick()

    def put(self, text: bytes) -> str | None:
        """The host's text onto the CLIPBOARD (xclip, else xsel, as clipboard.sh's push)."""
        if self.xclip:
            return put_text([self.xclip, "-selection", "clipboard", "-i"], text)
        if self.xsel:
            return put_text([self.xsel, "--clipboard", "--input"], text)
        return "no xclip or xsel"

    def drain(self) -> int | None:
        """Handle the pending events: the newest owner of CLIPBOARD when it changed (0: no
        owner), else None."""
        event = XEvent()
        owner: int | None = None
        notify = self.event_base + XFIXES_SELECTION_NOTIFY
        while self.x.XPending(self.dpy) > 0:
            self.x.XNextEvent(self.dpy, ctypes.byref(event))
            if event.type == notify and event.xfixes.selection == self.atom:
                owner = int(event.xfixes.owner)
        return owner

    def ask_targets(self, xfd: int) -> tuple[list[str], int | None]:
        """Those of the current owner's TARGETS that matter here, and the owner when it
        changed again meanwhile (None: it did not)."""
        self.x.XConvertSelection(self.dpy, self.atom, self.targets_atom, self.prop,
                                 self.xl.window, CURRENT_TIME)
        self.x.XFlush(self.dpy)
        event = XEvent()
        notify = self.event_base + XFIXES_SELECTION_NOTIFY
        again: int | None = None
        deadline = time.monotonic() + TARGETS_WAIT
        while True:
            while self.x.XPending(self.dpy) > 0:
                self.x.XNextEvent(self.dpy, ctypes.byref(event))
                if event.type == notify and event.xfixes.selection == self.atom:
                    again = int(event.xfixes.owner)
                elif (event.type == SELECTION_NOTIFY
                      and event.xselection.requestor == self.xl.window
                      and event.xselection.selection == self.atom):
                    if not event.xselection.property:
                        return [], again  # the owner refused TARGETS
                    atoms = self.xl.read_atoms(self.prop)
                    return [self.hint_atoms[a] for a in atoms if a in self.hint_atoms], again
            left = deadline - time.monotonic()
            if left <= 0:
                return [], again  # an owner that does not answer: no hint
            select.select([xfd], [], [], left)


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

    @staticmethod
    def change() -> tuple[str, bytes | None]:
        """The hint for the new copy's types (one wl-paste, at most TARGETS_WAIT), and the
        copied text for the port."""
        try:
            proc = subprocess.run(["wl-paste", "--list-types"], stdin=subprocess.DEVNULL,
                                  stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                  timeout=TARGETS_WAIT)
        except (OSError, subprocess.SubprocessError):
            return "", None
        types = proc.stdout.decode("utf-8", "replace").split()
        hint = classify(types)
        if hint or not any(t in types for t in TEXT_OFFERS):
            return hint, None
        return "", read_text(["wl-paste", "--no-newline", "--type", "text"])

    @staticmethod
    def put(text: bytes) -> str | None:
        return put_text(["wl-copy"], text)

    def run(self, notifier: Notifier, port: Port | None = None) -> None:
        proc = self.proc
        assert proc is not None and proc.stdout is not None and proc.stderr is not None
        out, err = proc.stdout.fileno(), proc.stderr.fileno()
        fds = [out, err]
        try:
            while True:
                ready, _, _ = select.select([*fds, *(port.fds() if port else [])], [], [],
                                            notifier.timeout())
                if port:
                    port.serve(ready, self, notifier)
                if err in ready and not os.read(err, 4096):
                    fds.remove(err)  # (closed)
                if out in ready:
                    data = os.read(out, 4096)
                    if not data:
                        return  # wl-paste ended: the compositor is gone
                    if b"\n" in data:
                        notifier.changed(*self.change())
                notifier.tick()
        finally:
            proc.terminate()


# -- files: pull-files and own ----------------------------------------------------------------

GNOME_TARGET = "x-special/gnome-copied-files"
URI_LIST_TARGET = "text/uri-list"
KDE_CUT_TARGET = "application/x-kde-cutselection"
TEXT_TARGETS = ("UTF8_STRING", "text/plain;charset=utf-8")
SHARE = b"/shared"
FILES_DIR = b".hypercore-clip"
#: A file list (the clipboard's, or one to offer) is small: larger is refused.
MAX_LIST = 256 * 1024
#: How long xclip / wl-paste may take to give a target.
TOOL_WAIT = 10.0
COPY_CHUNK = 1 << 20
EXIT_REFUSED = 4
EXIT_NO_SHARE = 5
#: Refused for the cap only (the host's line then names where the cap was set).
EXIT_TOO_LARGE = 6
#: The host called the copy off (a newer copy came): ENTRY.cancel beside ENTRY.part, or
#: ENTRY.part gone (a sync starting again removes what an interrupted one left).
EXIT_CANCELLED = 7
NO_SHARE = "files need the shared folder mounted in the guest"
CHECK_MOUNT = True


class NotFiles(Exception):
    """The clipboard holds no local file list (the host takes it as text)."""


def show(path: bytes) -> str:
    """A path for a message: one line, undecodable bytes and controls escaped."""
    text = path.decode("utf-8", "backslashreplace")
    return "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text)[:200]


def refuse(reason: str) -> Failure:
    return Failure(EXIT_REFUSED, reason)


def uri_path(uri: bytes) -> bytes:
    """The path of a local ``file://`` URI, percent-decoded to its exact bytes (empty or
    ``localhost`` host, or ``file:/path``); anything else is refused."""
    from urllib.parse import unquote_to_bytes

    if uri[:5].lower() != b"file:":
        raise refuse(f"not a local file: {show(uri[:80])}")
    rest = uri[5:]
    if rest.startswith(b"//"):
        host, slash, path = rest[2:].partition(b"/")
        if host.lower() not in (b"", b"localhost"):
            raise refuse(f"a file on another host: {show(uri[:80])}")
        rest = slash + path
    if not rest.startswith(b"/"):
        raise refuse(f"not an absolute file URI: {show(uri[:80])}")
    path = unquote_to_bytes(rest)
    if b"\0" in path:
        raise refuse("a file URI with a NUL byte")
    return path


def parse_gnome(data: bytes) -> tuple[bool, list[bytes]]:
    """``x-special/gnome-copied-files``: (cut, the URIs' paths)."""
    lines = [line.rstrip(b"\r") for line in data.split(b"\n")]
    if lines[0] not in (b"copy", b"cut"):
        raise refuse("a copied file list that starts with neither copy nor cut")
    uris = [line for line in lines[1:] if line.strip()]
    if not uris:
        raise NotFiles()
    return lines[0] == b"cut", [uri_path(u) for u in uris]


def parse_uri_list(data: bytes) -> list[bytes]:
    """``text/uri-list`` (RFC 2483: CRLF lines, ``#`` comments): the paths, or NotFiles
    when no line is a file URI (a browser's links: text then)."""
    uris = [line.strip(b"\r") for line in data.split(b"\n")]
    uris = [u for u in uris if u and not u.startswith(b"#")]
    if not any(u[:5].lower() == b"file:" for u in uris):
        raise NotFiles()
    return [uri_path(u) for u in uris]


def top_names(paths: list[bytes]) -> list[bytes]:
    """The top-level names of the copied paths: one component each, all different."""
    names = []
    for path in paths:
        name = path.rstrip(b"/").rpartition(b"/")[2]
        if name in (b"", b".", b".."):
            raise refuse(f"not a file or folder name: {show(path)}")
        if name in names:
            raise refuse(f"two copied items are named {show(name)}")
        names.append(name)
    return names


def measure(paths: list[bytes], cap: int) -> tuple[int, list[bool]]:
    """The total size of the regular files under ``paths`` (never following a link) and
    which paths are folders; refused: a symbolic link, a device, FIFO or socket, more than
    ``cap`` bytes, a file the user cannot read."""

    total = 0
    folders = []
    for top in paths:
        stack = [top]
        is_dir = False
        while stack:
            path = stack.pop()
            try:
                st = os.lstat(path)
                if stat.S_ISLNK(st.st_mode):
                    raise refuse(f"{show(path)} is a symbolic link: links are never followed, "
                                 "so the copy is not carried")
                if stat.S_ISREG(st.st_mode):
                    total += st.st_size
                    if not os.access(path, os.R_OK):
                        raise refuse(f"{show(path)} is not readable")
                elif stat.S_ISDIR(st.st_mode):
                    is_dir = is_dir or path == top
                    with os.scandir(path) as entries:
                        stack.extend(entry.path for entry in entries)
                else:
                    raise refuse(f"{show(path)} is a device, FIFO or socket: not carried")
            except OSError as exc:
                raise refuse(f"cannot read {show(path)}: {exc.strerror}") from None
            if total > cap:
                raise Failure(EXIT_TOO_LARGE, f"the copied files are larger than the cap "
                              f"({cap} bytes): not carried")
        folders.append(is_dir)
    return total, folders


def called_off(part: bytes) -> bool:
    """Has the host called off the copy into ``part`` (``ENTRY.part``): its marker
    ``ENTRY.cancel`` there, or the part gone?"""
    return os.path.lexists(part[:-len(b".part")] + b".cancel") or not os.path.isdir(part)


def check_going(part: bytes | None) -> None:
    if part is not None and called_off(part):
        raise Failure(EXIT_CANCELLED, "the copy was called off (a newer copy came)")


def copy_item(src: bytes, dst: bytes, part: bytes | None = None) -> None:
    """``cp -R`` of one item as the user runs it (a link met now is refused, never
    followed; modes kept less the umask). With ``part`` (the entry being filled), the
    copy stops before each file and each chunk once the host called it off."""

    stack = [(src, dst)]
    dirs = []
    while stack:
        s, d = stack.pop()
        st = os.lstat(s)
        if stat.S_ISDIR(st.st_mode):
            os.mkdir(d, 0o700)
            dirs.append((d, stat.S_IMODE(st.st_mode) | 0o700))
            with os.scandir(s) as entries:
                stack.extend((e.path, d + b"/" + e.name) for e in entries)
            continue
        if not stat.S_ISREG(st.st_mode):
            raise refuse(f"{show(s)} changed while it was copied (not a plain file any more)")
        check_going(part)
        fin = os.open(s, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            if not stat.S_ISREG(os.fstat(fin).st_mode):
                raise refuse(f"{show(s)} changed while it was copied")
            fout = os.open(d, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                           | os.O_CLOEXEC, stat.S_IMODE(st.st_mode) | 0o600)
            try:
                while True:
                    chunk = os.read(fin, COPY_CHUNK)
                    if not chunk:
                        break
                    check_going(part)
                    while chunk:
                        chunk = chunk[os.write(fout, chunk):]
            finally:
                os.close(fout)
        finally:
            os.close(fin)
    for d, mode in reversed(dirs):
        os.chmod(d, mode)


def clip_read(tool: str, target: str) -> bytes | None:
    """The clipboard's ``target`` (or TARGETS) as the session user reads it, or None."""
    if tool == "wl":
        argv = (["wl-paste", "--list-types"] if target == "TARGETS"
                else ["wl-paste", "--no-newline", "--type", target])
    else:
        argv = ["xclip", "-selection", "clipboard", "-o", "-t", target]
    try:
        proc = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, timeout=TOOL_WAIT)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout if proc.returncode == 0 else None


def read_file_list(tool: str) -> tuple[bool, list[bytes]]:
    """(cut, paths) of the file list on the clipboard, or NotFiles."""
    targets = (clip_read(tool, "TARGETS") or b"").decode("utf-8", "replace").split()
    for target in (GNOME_TARGET, URI_LIST_TARGET):
        if target not in targets:
            continue
        data = clip_read(tool, target)
        if data is None:
            continue
        if len(data) > MAX_LIST:
            raise refuse(f"the copied file list is larger than {MAX_LIST // 1024} KiB")
        if target == GNOME_TARGET:
            return parse_gnome(data)
        paths = parse_uri_list(data)
        cut = KDE_CUT_TARGET in targets and clip_read(tool, KDE_CUT_TARGET) == b"1"
        return cut, paths
    raise NotFiles()


def entry_dir() -> bytes:
    """``/shared/.hypercore-clip``, made when missing (mode 1777: every guest's users
    write there); NO_SHARE without the share."""
    if CHECK_MOUNT and not os.path.ismount(SHARE):
        raise Failure(EXIT_NO_SHARE, NO_SHARE)
    base = SHARE + b"/" + FILES_DIR
    try:
        os.mkdir(base, 0o777)
        os.chmod(base, 0o1777)
    except FileExistsError:
        pass

    if not stat.S_ISDIR(os.lstat(base).st_mode):
        raise refuse("/shared/.hypercore-clip is not a folder")
    return base


def pull_files(tool: str, entry: str, cap_text: str, held: str) -> int:
    """Copy the clipboard's files into /shared/.hypercore-clip/ENTRY (through ENTRY.part:
    nothing half-copied under the final name) and say what was copied."""
    import re
    import shutil

    if not re.fullmatch(r"[0-9a-f]{16}", entry) or not cap_text.isdigit():
        raise Failure(EXIT_USAGE, "usage: pull-files TOOL ENTRY CAP HELD")
    cap = int(cap_text)
    try:
        cut, paths = read_file_list(tool)
    except NotFiles:
        say("hc-kind=none")
        return 0
    names = top_names(paths)
    flags = [f"hc-cut={int(cut)}"]
    if re.fullmatch(r"[0-9a-f]{16}", held):
        # The list the host offered itself (its own push seen again): nothing to copy.
        base = SHARE + b"/" + FILES_DIR + b"/" + held.encode() + b"/"
        if all(p == base + n for p, n in zip(paths, names)):
            for line in ("hc-kind=files", f"hc-held={held}", *flags):
                say(line)
            os.write(1, b"".join(n + b"\0" for n in names))
            return 0
    total, folders = measure(paths, cap)
    base = entry_dir()
    part = base + b"/" + entry.encode() + b".part"
    os.umask(0o022)
    try:
        os.mkdir(part, 0o755)
    except OSError as exc:
        raise Failure(EXIT_FAILED, f"cannot create the entry in /shared: {exc.strerror}") \
            from None
    try:
        for path, name in zip(paths, names):
            copy_item(path, part + b"/" + name, part)
        check_going(part)
        os.rename(part, base + b"/" + entry.encode())
    except OSError as exc:
        off = called_off(part)  # (its part removed under it: called off, not failed)
        shutil.rmtree(part, ignore_errors=True)
        if off:
            raise Failure(EXIT_CANCELLED, "the copy was called off (a newer copy came)") \
                from None
        raise Failure(EXIT_FAILED, f"copy into /shared failed: {exc.strerror}") from None
    except Failure:
        shutil.rmtree(part, ignore_errors=True)
        raise
    for line in ("hc-kind=files", f"hc-entry={entry}", f"hc-size={total}",
                 f"hc-folders={sum(folders)}", *flags):
        say(line)
    os.write(1, b"".join(n + b"\0" for n in names))
    return 0


# The selection owner that offers a file list (own) ----------------------------------------


def offered_targets(payload: bytes) -> dict[str, bytes]:
    """What ``own`` offers for a gnome-copied-files ``payload`` (checked: a list of local
    paths that exist)."""
    cut, paths = parse_gnome(payload)
    for path in paths:
        try:
            os.lstat(path)
        except OSError:
            if CHECK_MOUNT and not os.path.ismount(SHARE):
                raise Failure(EXIT_NO_SHARE, NO_SHARE) from None
            raise refuse(f"{show(path)} is not there (the entry left the shared folder)") \
                from None
    uris = [line.rstrip(b"\r") for line in payload.split(b"\n")[1:] if line.strip()]
    text = b"\n".join(paths)
    targets = {GNOME_TARGET: payload, URI_LIST_TARGET: b"".join(u + b"\r\n" for u in uris),
               KDE_CUT_TARGET: b"1" if cut else b"0"}
    targets.update((t, text) for t in TEXT_TARGETS)
    return targets


class Owner:
    """The CLIPBOARD's owner in an X session, offering several targets at once (xclip
    offers one); ends when another client takes the clipboard."""

    def __init__(self, targets: dict[str, bytes]) -> None:
        self.xl = Xlib()
        self.x = self.xl.x
        self.targets = targets
        self.data: dict[int, bytes] = {}
        self.clipboard = 0
        self.targets_atom = 0

    def open(self) -> None:
        dpy = self.xl.connect()
        self.clipboard = self.xl.atom("CLIPBOARD")
        self.targets_atom = self.xl.atom("TARGETS")
        self.data = {self.xl.atom(name): value for name, value in self.targets.items()}
        self.x.XSetSelectionOwner(dpy, self.clipboard, self.xl.window, CURRENT_TIME)
        if int(self.x.XGetSelectionOwner(dpy, self.clipboard)) != self.xl.window:
            raise Failure(EXIT_FAILED, "could not take the clipboard")
        self.x.XFlush(dpy)

    def run(self) -> None:
        """Answer requests until SelectionClear (sleeps in select() meanwhile)."""
        dpy = self.xl.dpy
        xfd = int(self.x.XConnectionNumber(dpy))
        event = XEvent()
        while True:
            select.select([xfd], [], [])
            while self.x.XPending(dpy) > 0:
                self.x.XNextEvent(dpy, ctypes.byref(event))
                if (event.type == SELECTION_CLEAR
                        and event.xselectionclear.selection == self.clipboard):
                    return
                if event.type == SELECTION_REQUEST:
                    self.answer(event.xselectionrequest)

    def answer(self, req: XSelectionRequestEvent) -> None:
        prop = int(req.property) or int(req.target)  # (obsolete clients name none)
        target = int(req.target)
        if req.selection != self.clipboard:
            prop = 0
        elif target == self.targets_atom:
            atoms = (ctypes.c_ulong * (len(self.data) + 1))(self.targets_atom, *self.data)
            self.x.XChangeProperty(self.xl.dpy, req.requestor, prop, XA_ATOM, 32,
                                   PROP_MODE_REPLACE, ctypes.cast(atoms, ctypes.c_void_p),
                                   len(self.data) + 1)
        elif target in self.data:
            value = self.data[target]
            buf = ctypes.create_string_buffer(value, len(value) or 1)
            self.x.XChangeProperty(self.xl.dpy, req.requestor, prop, target, 8,
                                   PROP_MODE_REPLACE, ctypes.cast(buf, ctypes.c_void_p),
                                   len(value))
        else:
            prop = 0
        reply = XEvent()
        sel = reply.xselection
        sel.type, sel.display, sel.requestor = SELECTION_NOTIFY, self.xl.dpy, req.requestor
        sel.selection, sel.target, sel.property, sel.time = (req.selection, req.target, prop,
                                                              req.time)
        self.x.XSendEvent(self.xl.dpy, req.requestor, 0, 0, ctypes.byref(reply))
        self.x.XFlush(self.xl.dpy)


def own(tool: str) -> int:
    """Offer the file list on stdin (after this program) on the session's clipboard."""
    payload = sys.stdin.buffer.read(MAX_LIST + 1)
    if len(payload) > MAX_LIST:
        raise refuse(f"a file list larger than {MAX_LIST // 1024} KiB")
    try:
        targets = offered_targets(payload)
    except NotFiles:
        raise refuse("an empty file list") from None
    if tool == "wl":
        # wl-copy offers one type; it forks a holder (its output must not be the agent's).
        try:
            proc = subprocess.run(["wl-copy", "--type", GNOME_TARGET], input=payload,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                  timeout=TOOL_WAIT)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise Failure(EXIT_FAILED, f"wl-copy failed: {exc}") from None
        if proc.returncode != 0:
            raise Failure(EXIT_FAILED, f"wl-copy failed (exit {proc.returncode})")
        say("hc-method=wl")
        return 0
    owner = Owner(targets)
    r, w = os.pipe()
    child = os.fork()
    if child == 0:
        os.close(r)
        os.setsid()
        if os.fork() != 0:
            os._exit(0)
        try:
            os.chdir("/")
            null = os.open("/dev/null", os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(null, fd)
            try:
                owner.open()
            except Failure as exc:
                os.write(w, f"{exc.code} {exc.reason}\n".encode("utf-8", "replace"))
                os._exit(exc.code)
            os.write(w, f"0 {os.getpid()}\n".encode("ascii"))
            os.close(w)
            owner.run()
        finally:
            os._exit(0)
    os.close(w)
    os.waitpid(child, 0)
    data = b""
    deadline = time.monotonic() + TOOL_WAIT
    while b"\n" not in data and time.monotonic() < deadline:
        ready, _, _ = select.select([r], [], [], max(0.0, deadline - time.monotonic()))
        chunk = os.read(r, 4096) if ready else b""
        if not chunk:
            break
        data += chunk
    code, _, rest = data.decode("utf-8", "replace").partition(" ")
    if code != "0":
        raise Failure(EXIT_FAILED, rest.strip() or "the clipboard owner did not start")
    say("hc-method=xclip-owner")
    say(f"hc-owner-pid={rest.strip()}")
    return 0


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


def daemon(source: X11 | Wayland, lock_fd: int, port_fd: int, report: int,
           token: str | None) -> None:
    """The grandchild: detached, stdio on /dev/null; sets up the watch (and, with a
    ``token``, the host's writes) and says so."""
    os.chdir("/")
    null = os.open("/dev/null", os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    if null > 2:
        os.close(null)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, stop)
    port = Port(port_fd, token) if token else None
    try:
        source.open()
        if port is not None:
            port.start()
        write_pid(lock_fd)
    except Failure as exc:
        os.write(report, f"{exc.code} {exc.reason}\n".encode("utf-8", "replace"))
        os._exit(exc.code)
    except Exception as exc:  # (a message for the host rather than a silent end)
        os.write(report, f"1 {type(exc).__name__}: {exc}\n".encode("utf-8", "replace"))
        os._exit(EXIT_FAILED)
    os.write(report, f"0 {os.getpid()}\n".encode("ascii"))
    os.close(report)
    source.run(Notifier(port_fd), port)


def detach(source: X11 | Wayland, kind: str, lock_fd: int, port_fd: int,
           token: str | None) -> int:
    """Fork the daemon; the exit status for this process, once the daemon is ready."""
    r, w = os.pipe()
    child = os.fork()
    if child == 0:
        os.close(r)
        os.setsid()
        if os.fork() != 0:
            os._exit(0)
        try:
            daemon(source, lock_fd, port_fd, w, token)
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
        if token:
            say(f"hc-watch-write={token}")
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
    global SHARE, CHECK_MOUNT
    if argv and argv[-1].startswith("--share="):  # (tests: a plain directory as the share)
        SHARE, CHECK_MOUNT = os.fsencode(argv.pop()[len("--share="):]), False
    if argv and argv[0] == "pull-files":
        if len(argv) != 5:
            raise Failure(EXIT_USAGE, "usage: pull-files TOOL ENTRY CAP HELD")
        return pull_files(*argv[1:])
    if argv and argv[0] == "own":
        if len(argv) != 2:
            raise Failure(EXIT_USAGE, "usage: own TOOL")
        return own(argv[1])
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
    # The host writes small texts down the port (a virtio port, or a tty in tests); a
    # FIFO (tests) is written only: the watcher would read its own lines.
    readable = True
    try:
        readable = not stat.S_ISFIFO(os.stat(port).st_mode)
    except OSError:
        pass  # (the open says why)
    mode = os.O_RDWR if readable else os.O_WRONLY
    try:
        port_fd = os.open(port, mode | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    except FileNotFoundError:
        raise Failure(EXIT_FAILED, f"no port {port}") from None
    except OSError as exc:
        raise Failure(EXIT_FAILED, f"cannot open {port}: {exc.strerror}") from None
    token = os.urandom(8).hex() if readable else None
    write_token(lock_path + TOKEN_SUFFIX, token)
    drop_privileges(uid, gid, groups)
    source: X11 | Wayland = X11() if kind == "x11" else Wayland()
    return detach(source, kind, lock_fd, port_fd, token)


if __name__ == "__main__":
    try:
        status = main(sys.argv[1:])
    except Failure as failure:
        if failure.code == EXIT_UNSUPPORTED and sys.argv[1:2] not in (["pull-files"], ["own"]):
            say("hc-watch=unsupported")
        say(failure.reason)
        status = failure.code
    sys.exit(status)
