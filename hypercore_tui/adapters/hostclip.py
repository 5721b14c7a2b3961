"""The host's own clipboard: a local X11/Wayland display or tmux's paste buffer.

Over SSH the user's real clipboard is on their laptop and only reachable from the
terminal (bracketed paste in, OSC 52 out): that is the UI's business. This module
covers what the host itself holds:

* a local display (``DISPLAY`` / ``WAYLAND_DISPLAY`` set): wl-clipboard, xclip or xsel;
* inside tmux (``TMUX`` set): the top paste buffer, ``tmux show-buffer`` /
  ``tmux load-buffer -``, argv only, the text on stdin.

All calls block (they run a helper program): services call them in a thread.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from typing import Protocol

from hypercore_tui.core.errors import OperationFailed
from hypercore_tui.core.text import printable

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
    """The clipboard of a local display: wl-clipboard under Wayland, else xclip or xsel
    on X11, run with ``environ`` (the display named there, not this process's).

    A writer forks a holder that owns the selection for as long as it is the clipboard:
    it gets no pipe of ours (so the write returns) and never the terminal, whose screen
    may be the dashboard's (its error output goes to a file read after the write; it
    runs in a session of its own, out of the terminal's signals)."""

    name = "display"

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._env = _child_env(environ)
        path = self._env.get("PATH")
        if self._env.get("WAYLAND_DISPLAY") and shutil.which("wl-copy", path=path) \
                and shutil.which("wl-paste", path=path):
            self.kind = "wayland"
            # ("text": any text type the owner offers; an image alone is no text)
            self._read = ["wl-paste", "--no-newline", "--type", "text"]
            self._write = ["wl-copy", "--type", "text/plain;charset=utf-8"]
        elif self._env.get("DISPLAY") and shutil.which("xclip", path=path):
            self.kind = "x11"
            self._read = ["xclip", "-selection", "clipboard", "-o"]
            self._write = ["xclip", "-selection", "clipboard", "-i"]
        elif self._env.get("DISPLAY") and shutil.which("xsel", path=path):
            self.kind = "x11"
            self._read = ["xsel", "--clipboard", "--output"]
            self._write = ["xsel", "--clipboard", "--input"]
        else:
            raise OperationFailed("a display is set but neither xclip, xsel nor wl-clipboard "
                                  "is installed")

    def read(self) -> str | None:
        try:
            proc = subprocess.run(self._read, capture_output=True, env=self._env,
                                  stdin=subprocess.DEVNULL, timeout=HELPER_TIMEOUT,
                                  check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise OperationFailed(f"cannot read the display clipboard: {exc}") from None
        if proc.returncode != 0:
            return None  # nothing copied, or nothing offered as text
        return proc.stdout.decode("utf-8", errors="replace") or None

    def write(self, text: str) -> None:
        with tempfile.TemporaryFile() as errors:
            try:
                proc = subprocess.run(self._write, input=text.encode("utf-8"), env=self._env,
                                      stdout=subprocess.DEVNULL, stderr=errors,
                                      timeout=HELPER_TIMEOUT, check=False,
                                      start_new_session=True)
            except (OSError, subprocess.TimeoutExpired) as exc:
                raise OperationFailed(f"cannot write the display clipboard: {exc}") from None
            if proc.returncode != 0:
                errors.seek(0)
                said = errors.read(2000).decode(errors="replace").strip().splitlines()
                why = printable(said[-1], limit=200) if said else f"exit {proc.returncode}"
                raise OperationFailed(f"cannot write the display clipboard: {self._write[0]}: "
                                      f"{why}")


def has_local_display(environ: Mapping[str, str]) -> bool:
    return bool(environ.get("DISPLAY") or environ.get("WAYLAND_DISPLAY"))


def host_clipboards(environ: Mapping[str, str] | None = None) -> list[HostClipboard]:
    """What this host offers, best first: a local display, then tmux's buffer."""
    env = os.environ if environ is None else environ
    found: list[HostClipboard] = []
    if has_local_display(env):
        try:
            found.append(DisplayClipboard(env))
        except OperationFailed:
            pass
    if env.get("TMUX") and shutil.which("tmux", path=env.get("PATH")):
        found.append(TmuxBuffer(env))
    return found


def host_clipboard(environ: Mapping[str, str] | None = None) -> HostClipboard | None:
    found = host_clipboards(environ)
    return found[0] if found else None
