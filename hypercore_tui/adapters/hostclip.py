"""The host's own clipboard: a local X11/Wayland display (through pyperclip) or tmux's
paste buffer.

Over SSH the user's real clipboard is on their laptop and only reachable from the
terminal (bracketed paste in, OSC 52 out): that is the UI's business. This module
covers what the host itself holds:

* a local display (``DISPLAY`` / ``WAYLAND_DISPLAY`` set): pyperclip, which drives
  xclip / xsel / wl-clipboard;
* inside tmux (``TMUX`` set): the top paste buffer, ``tmux show-buffer`` /
  ``tmux load-buffer -``, argv only, the text on stdin.

All calls block (they run a helper program): services call them in a thread.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping
from typing import Any, Protocol

from hypercore_tui.core.errors import OperationFailed

HELPER_TIMEOUT = 5.0


class HostClipboard(Protocol):
    """One place on the host that holds clipboard text."""

    name: str

    def read(self) -> str | None:
        """The current text; ``None`` when it holds nothing."""

    def write(self, text: str) -> None:
        """Replace the text."""


def _child_env(environ: Mapping[str, str]) -> dict[str, str]:
    env = dict(environ)
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    return env


class TmuxBuffer:
    """tmux's top paste buffer (the server named by ``$TMUX``)."""

    name = "tmux"

    def __init__(self, environ: Mapping[str, str], *, tmux: str = "tmux",
                 outer_terminal: bool = True) -> None:
        self._env = _child_env(environ)
        self._tmux = tmux
        #: load-buffer -w: also hand the text to the outer terminal (OSC 52). The sync
        #: says False: the user's terminal clipboard is opt-in there.
        self._outer = outer_terminal

    def _run(self, args: list[str], stdin: bytes | None = None
             ) -> subprocess.CompletedProcess[bytes]:
        try:
            return subprocess.run([self._tmux, *args], input=stdin, capture_output=True,
                                  env=self._env, timeout=HELPER_TIMEOUT, check=False)
        except FileNotFoundError:
            raise OperationFailed("tmux is not installed, cannot use its paste buffer") from None
        except subprocess.TimeoutExpired:
            raise OperationFailed("tmux did not answer within "
                                  f"{HELPER_TIMEOUT:g}s") from None

    def read(self) -> str | None:
        proc = self._run(["show-buffer"])
        if proc.returncode != 0:
            err = proc.stderr.decode(errors="replace").strip()
            if "no buffer" in err:
                return None
            raise OperationFailed(f"tmux show-buffer failed: {err or proc.returncode}")
        return proc.stdout.decode("utf-8", errors="replace")

    def write(self, text: str) -> None:
        data = text.encode("utf-8")
        proc = None
        if self._outer:
            # -w also hands the text to the outer terminal's clipboard (OSC 52, tmux >= 3.2).
            proc = self._run(["load-buffer", "-w", "-"], data)
        if proc is None or proc.returncode != 0:
            proc = self._run(["load-buffer", "-"], data)
        if proc.returncode != 0:
            err = proc.stderr.decode(errors="replace").strip()
            raise OperationFailed(f"tmux load-buffer failed: {err or proc.returncode}")


class DisplayClipboard:
    """The clipboard of a local X11/Wayland display, through pyperclip."""

    name = "display"

    def __init__(self) -> None:
        import pyperclip

        self._error: type[Exception] = pyperclip.PyperclipException
        # Any: pyperclip's "no clipboard" stand-ins are falsy callables.
        self._copy: Any
        self._paste: Any
        self._copy, self._paste = pyperclip.determine_clipboard()
        if not self._copy:  # pyperclip's "ClipboardUnavailable" is falsy
            raise OperationFailed("a display is set but neither xclip, xsel nor wl-clipboard "
                                  "is installed")

    def read(self) -> str | None:
        try:
            text = self._paste()
        except self._error as exc:
            raise OperationFailed(f"cannot read the display clipboard: {exc}") from None
        return text or None

    def write(self, text: str) -> None:
        try:
            self._copy(text)
        except self._error as exc:
            raise OperationFailed(f"cannot write the display clipboard: {exc}") from None


def has_local_display(environ: Mapping[str, str]) -> bool:
    return bool(environ.get("DISPLAY") or environ.get("WAYLAND_DISPLAY"))


def host_clipboards(environ: Mapping[str, str] | None = None) -> list[HostClipboard]:
    """What this host offers, best first: a local display, then tmux's buffer."""
    env = os.environ if environ is None else environ
    found: list[HostClipboard] = []
    # pyperclip looks at the process environment: only when it is the one asked about.
    if has_local_display(env) and all(env.get(k) == os.environ.get(k)
                                      for k in ("DISPLAY", "WAYLAND_DISPLAY")):
        try:
            found.append(DisplayClipboard())
        except OperationFailed:
            pass
    if env.get("TMUX") and shutil.which("tmux", path=env.get("PATH")):
        found.append(TmuxBuffer(env))
    return found


def host_clipboard(environ: Mapping[str, str] | None = None) -> HostClipboard | None:
    found = host_clipboards(environ)
    return found[0] if found else None
