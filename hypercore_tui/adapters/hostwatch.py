"""Change signals of the host's own clipboard, each from a child process (the event loop
never waits on a display):

* X11 (``DISPLAY``): this file run as a program (``python3 hostwatch.py``, standard
  library and ctypes only) asks the X server for XFixes selection events on the root
  window and prints one line ``c`` whenever CLIPBOARD changes owner; it sleeps in
  select() meanwhile. The display closing ends it (Xlib's I/O error handler exits).
* Wayland (``WAYLAND_DISPLAY``): ``wl-paste --watch echo`` (wl-clipboard), one line per
  change; it ends at once where the compositor lacks the data-control protocol.

Either way a line is only "look again": the content is read with the host clipboard's
own reader (:mod:`.hostclip`). The first line of the X11 watcher is ``ready`` (the
watch is set up); a line ``error ...`` before its end says why it could not be.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import select
import shutil
import sys
from collections.abc import Mapping

from hypercore_tui.core.errors import OperationFailed

READY = "ready"
# XFixes (X11/extensions/xfixeswire.h): owner change, owner window destroyed, client closed
_XFIXES_SELECTION_NOTIFY = 0
_XFIXES_SELECTION_MASKS = (1 << 0) | (1 << 1) | (1 << 2)


def watch_argv(kind: str, environ: Mapping[str, str]) -> list[str]:
    """The command that prints a line per change of the host's ``kind`` clipboard."""
    if kind == "x11":
        return [sys.executable, "-I", os.path.abspath(__file__)]
    if kind == "wayland":
        wl_paste = shutil.which("wl-paste", path=environ.get("PATH"))
        if wl_paste is None:
            raise OperationFailed("wl-paste (wl-clipboard) is not installed")
        return [wl_paste, "--watch", "echo"]
    raise OperationFailed(f"no change watcher for a {kind[:20]!r} clipboard")


async def start_watch(kind: str, environ: Mapping[str, str]) -> asyncio.subprocess.Process:
    """The watcher child, its lines on stdout (stderr kept for the reason it ended)."""
    env = dict(environ)
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    try:
        return await asyncio.create_subprocess_exec(
            *watch_argv(kind, env), stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
            start_new_session=True)
    except OSError as exc:
        raise OperationFailed(f"cannot start the {kind} clipboard watcher: "
                              f"{exc.strerror or exc}") from None


# -- the X11 watcher program (run as a child: python3 hostwatch.py) -----------------------


class _SelectionNotify(ctypes.Structure):
    _fields_ = [  # noqa: RUF012 - ctypes' layout
        ("type", ctypes.c_int), ("serial", ctypes.c_ulong), ("send_event", ctypes.c_int),
        ("display", ctypes.c_void_p), ("window", ctypes.c_ulong), ("subtype", ctypes.c_int),
        ("owner", ctypes.c_ulong), ("selection", ctypes.c_ulong),
        ("timestamp", ctypes.c_ulong), ("selection_timestamp", ctypes.c_ulong),
    ]


class _XEvent(ctypes.Union):
    _fields_ = [  # noqa: RUF012 - ctypes' layout
        ("type", ctypes.c_int), ("xfixes", _SelectionNotify), ("pad", ctypes.c_long * 24),
    ]


def _say(line: str) -> None:
    os.write(1, (line + "\n").encode("utf-8", "replace"))


def _x11_main() -> int:
    try:
        x = ctypes.CDLL("libX11.so.6")
        xf = ctypes.CDLL("libXfixes.so.3")
    except OSError as exc:
        _say(f"error cannot load Xlib or XFixes: {exc}")
        return 3
    p, ul, i, ip = ctypes.c_void_p, ctypes.c_ulong, ctypes.c_int, ctypes.POINTER(ctypes.c_int)
    x.XOpenDisplay.argtypes, x.XOpenDisplay.restype = [ctypes.c_char_p], p
    x.XDefaultRootWindow.argtypes, x.XDefaultRootWindow.restype = [p], ul
    x.XInternAtom.argtypes, x.XInternAtom.restype = [p, ctypes.c_char_p, i], ul
    x.XConnectionNumber.argtypes, x.XConnectionNumber.restype = [p], i
    x.XPending.argtypes, x.XPending.restype = [p], i
    x.XNextEvent.argtypes, x.XNextEvent.restype = [p, ctypes.POINTER(_XEvent)], i
    x.XFlush.argtypes, x.XFlush.restype = [p], i
    xf.XFixesQueryExtension.argtypes, xf.XFixesQueryExtension.restype = [p, ip, ip], i
    xf.XFixesQueryVersion.argtypes, xf.XFixesQueryVersion.restype = [p, ip, ip], i
    xf.XFixesSelectSelectionInput.argtypes = [p, ul, ul, ul]
    xf.XFixesSelectSelectionInput.restype = None

    dpy = x.XOpenDisplay(None)
    if not dpy:
        _say(f"error cannot open display {os.environ.get('DISPLAY', '')[:64]!r}")
        return 1
    event_base, error_base = ctypes.c_int(0), ctypes.c_int(0)
    if not xf.XFixesQueryExtension(dpy, ctypes.byref(event_base), ctypes.byref(error_base)):
        _say("error the display has no XFIXES extension")
        return 3
    major, minor = ctypes.c_int(5), ctypes.c_int(0)
    xf.XFixesQueryVersion(dpy, ctypes.byref(major), ctypes.byref(minor))
    clipboard = int(x.XInternAtom(dpy, b"CLIPBOARD", 0))
    xf.XFixesSelectSelectionInput(dpy, x.XDefaultRootWindow(dpy), clipboard,
                                  _XFIXES_SELECTION_MASKS)
    x.XFlush(dpy)
    _say(READY)
    fd = x.XConnectionNumber(dpy)
    notify = event_base.value + _XFIXES_SELECTION_NOTIFY
    event = _XEvent()
    while True:
        select.select([fd], [], [])
        changed = False
        while x.XPending(dpy):  # reads the socket; at its end Xlib's handler exits
            x.XNextEvent(dpy, ctypes.byref(event))
            if event.type == notify and event.xfixes.selection == clipboard:
                changed = True
        if changed:
            _say("c")


if __name__ == "__main__":
    try:
        sys.exit(_x11_main())
    except (BrokenPipeError, KeyboardInterrupt):
        sys.exit(0)
