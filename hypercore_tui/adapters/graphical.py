"""The host's graphical session, if any: can a window be opened here (X11 or Wayland,
a session forwarded over SSH included)? And the viewer that opens one.

A variable alone proves nothing (a stale ``DISPLAY`` in a tmux server started from a
desktop that has since gone, an ``ssh -X`` session that ended): the display's socket
must accept a connection.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import stat
from collections.abc import Mapping
from pathlib import Path

#: How long a display's socket may take to accept a connection (a forwarded X11
#: display answers through the SSH connection).
CONNECT_TIMEOUT = 1.0
X11_SOCKET_DIR = Path("/tmp/.X11-unix")
X11_TCP_BASE = 6000
_X11_DISPLAY = re.compile(r"(?P<host>[^:]*):(?P<number>\d+)(?:\.\d+)?")


def graphical_session(environ: Mapping[str, str]) -> str | None:
    """``WAYLAND_DISPLAY=wayland-0`` or ``DISPLAY=:0`` (the variable a window would be
    opened with) when that display accepts a connection now; None otherwise."""
    wayland = environ.get("WAYLAND_DISPLAY", "")
    if wayland:
        runtime = environ.get("XDG_RUNTIME_DIR", "")
        path = Path(wayland) if wayland.startswith("/") else (
            Path(runtime) / wayland if runtime else None)
        if path is not None and _unix_accepts(str(path)):
            return f"WAYLAND_DISPLAY={wayland}"
    display = environ.get("DISPLAY", "")
    if display and _x11_accepts(display):
        return f"DISPLAY={display}"
    return None


def _x11_accepts(display: str) -> bool:
    match = _X11_DISPLAY.fullmatch(display)
    if match is None:
        return False
    host, number = match["host"], int(match["number"])
    if host in ("", "unix"):
        path = str(X11_SOCKET_DIR / f"X{number}")
        # Xorg and Xvfb listen on the abstract name too; the path may be hidden in a
        # private /tmp while the abstract one is reachable.
        return _unix_accepts(path) or _unix_accepts("\0" + path)
    if host.startswith("/"):  # macOS-style launchd socket paths: not this host's case
        return _unix_accepts(display.rsplit(":", 1)[0])
    try:
        with socket.create_connection((host, X11_TCP_BASE + number), CONNECT_TIMEOUT):
            return True
    except OSError:
        return False


def _unix_accepts(path: str) -> bool:
    if not path.startswith("\0"):
        try:
            if not stat.S_ISSOCK(os.stat(path).st_mode):
                return False
        except OSError:
            return False
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(CONNECT_TIMEOUT)
        with contextlib.suppress(OSError):
            sock.connect(path)
            return True
    return False


def find_program(name: str, environ: Mapping[str, str]) -> str | None:
    """``name`` on the caller's PATH."""
    return shutil.which(name, path=environ.get("PATH") or os.defpath)
