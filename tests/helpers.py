"""What several test modules share: waiting for a condition, a private tmux server, fake
``qemu-img`` commands on PATH (one that records its calls, one that must never run), a
socket that never answers, and reading the real CLI's output."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from .conftest import HcEnv


# -- waiting ----------------------------------------------------------------------------


def _timed_out(what: str, timeout: float, show: Callable[[], str] | None) -> str:
    message = f"timed out after {timeout}s waiting for {what}"
    return f"{message}; shown:\n{show()}" if show is not None else message


def wait_until(what: str, check: Callable[[], bool], timeout: float,
               show: Callable[[], str] | None = None, *, step: float = 0.1) -> float:
    """Seconds until ``check()`` held, asked every ``step`` seconds. After ``timeout``
    seconds the test fails, naming ``what`` and showing ``show()`` (a screen, a pane)."""
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > timeout:
            pytest.fail(_timed_out(what, timeout, show))
        time.sleep(step)
    return time.monotonic() - started


async def wait_until_async(what: str, check: Callable[[], bool], timeout: float,
                           show: Callable[[], str] | None = None, *, step: float = 0.05,
                           pause: Callable[[float], Awaitable[None]] = asyncio.sleep,
                           max_stall: float | None = None) -> float:
    """:func:`wait_until` for a test on the event loop (a Textual pilot, a monitor): the
    loop runs during ``pause(step)`` between the checks (``pilot.pause`` also lets the
    screen settle). With ``max_stall``, each gap between two checks must stay under that
    many seconds (the UI loop never stalled while it waited)."""
    started = last = time.monotonic()
    worst = 0.0
    while not check():
        if time.monotonic() - started > timeout:
            pytest.fail(_timed_out(what, timeout, show))
        await pause(step)
        now = time.monotonic()
        worst = max(worst, now - last)
        last = now
    if max_stall is not None:
        assert worst < max_stall, f"the UI loop stalled for {worst:.2f}s"
    return time.monotonic() - started


# -- tmux ---------------------------------------------------------------------------------


class Tmux:
    """One private tmux server (its own socket); the dashboard runs in its session ``dash``."""

    def __init__(self) -> None:
        self.socket = f"hc-test-{uuid.uuid4().hex[:8]}"

    def tmux(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["tmux", "-L", self.socket, "-f", "/dev/null", *args],
                              capture_output=True, text=True, timeout=10, check=False)

    def ok(self, *args: str) -> str:
        """Run a tmux command that must succeed; its output."""
        proc = self.tmux(*args)
        assert proc.returncode == 0, (args, proc.stderr)
        return proc.stdout

    def start_dashboard(self, environ: Mapping[str, str], *, width: int = 120,
                        height: int = 36, unset: tuple[str, ...] = ()) -> None:
        """``hypercore`` in a new session ``dash`` of ``width`` x ``height``, with the
        Hypercore variables of ``environ`` (and PATH, HOME, LANG, USER); ``unset`` names
        more variables the dashboard must not see (``TMUX``: no tmux clipboard)."""
        variables = {k: v for k, v in environ.items()
                     if k.startswith("HYPERCORE_") or k in ("PATH", "HOME", "LANG", "USER")}
        # COLUMNS/LINES (pytest may export them) would override the pane's real size.
        hidden = ("COLUMNS", "LINES", *unset)
        command = ["env", *(arg for name in hidden for arg in ("-u", name)),
                   *(f"{k}={v}" for k, v in variables.items()),
                   sys.executable, "-m", "hypercore_tui"]
        self.ok("new-session", "-d", "-s", "dash", "-x", str(width), "-y", str(height),
                *command)

    def screen(self, target: str = "dash") -> str:
        proc = self.tmux("capture-pane", "-p", "-t", target)
        return proc.stdout if proc.returncode == 0 else ""

    def keys(self, *keys: str) -> None:
        for key in keys:
            assert self.tmux("send-keys", "-t", "dash", key).returncode == 0
            time.sleep(0.2)

    def session_alive(self, target: str = "dash") -> bool:
        return self.tmux("has-session", "-t", target).returncode == 0

    def buffers(self) -> dict[str, str]:
        """The paste buffers by name (tmux makes one of every OSC 52 it receives)."""
        names = self.ok("list-buffers", "-F", "#{buffer_name}").split()
        return {name: self.ok("show-buffer", "-b", name) for name in names}

    def kill(self) -> None:
        self.tmux("kill-server")


def screens(*sessions: Tmux) -> Callable[[], str]:
    """For ``wait_until(show=...)``: the screens of several dashboards, numbered."""
    return lambda: "\n".join(f"--- screen {i}:\n{t.screen()}" for i, t in enumerate(sessions))


# -- fake qemu-img commands ---------------------------------------------------------------


class _FakeCommand:
    def __init__(self, directory: Path) -> None:
        self.bin_dir = directory

    def path_for(self, environ: Mapping[str, str]) -> str:
        """``environ``'s PATH with this command's directory first."""
        return f"{self.bin_dir}:{environ.get('PATH', '/usr/bin:/bin')}"


class QemuImgRecorder(_FakeCommand):
    """A ``qemu-img`` (in ``directory/wrap``, put first on PATH) that records each call's
    exact argv, then runs the real one (``real``)."""

    def __init__(self, directory: Path, real: str) -> None:
        super().__init__(directory / "wrap")
        self.bin_dir.mkdir()
        self.log = directory / "qemu-img.argv"
        script = self.bin_dir / "qemu-img"
        script.write_text("#!/bin/sh\n"
                          f"{{ printf '%s\\0' \"$#\"; for a in \"$@\"; do printf '%s\\0' "
                          f"\"$a\"; done; }} >> '{self.log}'\n"
                          f"exec '{real}' \"$@\"\n")
        script.chmod(0o755)

    def calls(self) -> list[list[str]]:
        """The argv of every call so far."""
        if not self.log.exists():
            return []
        fields = self.log.read_bytes().split(b"\0")
        out: list[list[str]] = []
        i = 0
        while i < len(fields) - 1:
            count = int(fields[i])
            out.append([f.decode() for f in fields[i + 1:i + 1 + count]])
            i += 1 + count
        return out

    def take(self) -> list[list[str]]:
        """The argv of every call since the last ``take()``."""
        calls = self.calls()
        self.log.unlink(missing_ok=True)
        return calls


class QemuImgTripwire(_FakeCommand):
    """A ``qemu-img`` (in ``directory``, put first on PATH) that fails any call and notes
    it: no qemu-img command may ever touch an RBD-backed VM's disk (no image lock
    protects RBD)."""

    def __init__(self, directory: Path) -> None:
        super().__init__(directory)
        directory.mkdir()
        self.calls = directory / "calls.log"
        script = directory / "qemu-img"
        script.write_text(f'#!/bin/sh\necho "qemu-img $*" >> {self.calls}\nexit 99\n')
        script.chmod(0o755)

    def assert_never_ran(self) -> None:
        assert not self.calls.exists(), f"qemu-img ran on an RBD VM: {self.calls.read_text()}"


# -- sockets ------------------------------------------------------------------------------


@contextlib.contextmanager
def mute_socket(path: Path) -> Iterator[Path]:
    """A listening AF_UNIX socket whose owner never reads, accepts or answers."""
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(1)
    try:
        yield path
    finally:
        server.close()
        path.unlink(missing_ok=True)


# -- the real CLI -------------------------------------------------------------------------


def one_error_line(proc: subprocess.CompletedProcess[bytes]) -> str:
    """The one ``hypercore: error:`` line a failed command printed (no traceback)."""
    err = proc.stderr.decode()
    assert err.startswith("hypercore: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    return err


def vm_row(env: HcEnv, name: str) -> dict[str, object]:
    """The VM's row of ``hypercore list --json``."""
    rows = json.loads(env.run("list", "--json", check=True).stdout)
    return {r["name"]: r for r in rows}[name]  # type: ignore[no-any-return]


def vm_state(env: HcEnv, name: str) -> str:
    return str(vm_row(env, name)["state"])


def guest_output(env: HcEnv, name: str, script: str) -> str:
    """What a fixed shell script run in the guest printed (it must exit 0)."""
    proc = env.run("exec", name, "--", "/bin/sh", "-c", script)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.decode()


# -- the Screen tab ---------------------------------------------------------------------


def halfblock_image(lines: list[list[tuple[str, tuple[int, int, int] | None,
                                         tuple[int, int, int] | None]]]) -> object:
    """The picture half-block cells draw: each cell ``▀`` is two pixels, its foreground
    colour above its background colour. ``lines``: rows of (text, fg rgb, bg rgb) per
    cell. Returns a PIL image (width: cells, height: twice the rows)."""
    from PIL import Image

    width = max((len(row) for row in lines), default=0)
    image = Image.new("RGB", (width, 2 * len(lines)))
    for y, row in enumerate(lines):
        for x, (char, fg, bg) in enumerate(row):
            assert char == "▀", f"not a half-block at {x},{y}: {char!r}"
            assert fg is not None and bg is not None, (x, y, fg, bg)
            image.putpixel((x, 2 * y), fg)
            image.putpixel((x, 2 * y + 1), bg)
    return image


def strip_cells(strips: list[object]) -> list[list[tuple[str, tuple[int, int, int] | None,
                                                         tuple[int, int, int] | None]]]:
    """Textual strips (``Widget.render_lines``) as rows of (character, fg, bg) cells."""
    rows = []
    for strip in strips:
        row = []
        for segment in strip:  # type: ignore[attr-defined]
            style = segment.style
            fg = style.color.get_truecolor() if style and style.color else None
            bg = style.bgcolor.get_truecolor() if style and style.bgcolor else None
            for char in segment.text:
                row.append((char, tuple(fg) if fg else None, tuple(bg) if bg else None))
        rows.append(row)
    return rows  # type: ignore[return-value]
