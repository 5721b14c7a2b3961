"""Guest-reported strings built to attack the terminal, shown by the real dashboard in a
real tmux with ``set-clipboard on``: OSC 52 (clipboard writes, BEL and ST forms), OSC 2
(pane title), CSI clear-screen, C1 CSI, Rich markup and links, bidi overrides,
zero-width characters and a 10 kB string, put into a real test guest's hostname,
/etc/os-release and utmp, and reported by its real qemu-ga.

tmux turns every OSC 52 it receives into a paste buffer, so ``list-buffers`` staying
empty proves the dashboard never sent one (the check is first shown to work by a real
OSC 52 printed in a throwaway window). The screen must show the strings literally
(escaped), cut, and leave the layout where it was.
"""

from __future__ import annotations

import base64
import json
import shutil
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hypercore_tui.core.text import printable

from ..conftest import HYPERCORE as HYPERCORE_CMD
from ..conftest import HcEnv
from ..helpers import Tmux, wait_until

pytestmark = [pytest.mark.qemu, pytest.mark.timeout(600)]

WIDTH, HEIGHT = 120, 36


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


# Each attack carries its own payload, so a buffer that appears says which one leaked.
HOSTNAME = f"h\x1b]52;c;{b64('FROM-HOSTNAME')}\x07\x1b[2J[bold red]x[/]"
USER = f"\x1b]52;c;{b64('FROM-USER')}\x07[red]u"
OS_NAME = (f"\x1b]52;c;{b64('FROM-OS')}\x1b\\ [bold red]R[/] [link=https://evil.example]L"
           "[/link] \u202eEVIL\u202c \x1b]2;PWNED-TITLE\x07 \x1b[2J\x1b[H \u200b\u200dZW "
           "\x9b31m C1 " + "P" * 10000)
LEAKED = ("FROM-HOSTNAME", "FROM-USER", "FROM-OS")


@pytest.fixture
def tmux() -> Iterator[Tmux]:
    assert shutil.which("tmux"), "tmux is required (scripts/setup.sh installs it)"
    server = Tmux()
    server.ok("new-session", "-d", "-s", "idle", "-x", str(WIDTH), "-y", str(HEIGHT),
              "sleep 3600")
    socket_path = Path(server.ok("display", "-p", "#{socket_path}").strip())
    server.ok("set", "-s", "set-clipboard", "on")
    assert server.ok("show", "-s", "set-clipboard").strip() == "set-clipboard on"
    yield server
    server.kill()
    socket_path.unlink(missing_ok=True)  # kill-server leaves the socket file behind


def utmp_record(user: str) -> bytes:
    """One glibc x86-64 ``struct utmp`` USER_PROCESS entry (384 bytes)."""
    record = struct.pack("<hxxi32s4s32s256shhiii4i20s", 7, 1, b"pts/0", b"ts/0",
                         user.encode(), b"", 0, 0, 0, int(time.time()), 0, 0, 0, 0, 0, b"")
    assert len(record) == 384
    return record


def guest_exec(env: HcEnv, name: str, *argv: str, stdin: bytes | None = None) -> None:
    extra = ["--stdin"] if stdin is not None else []
    proc = env.run("exec", name, *extra, "--", *argv, stdin=stdin)
    assert proc.returncode == 0, proc.stderr


def make_guest_hostile(env: HcEnv, name: str) -> None:
    guest_exec(env, name, "/bin/hostname", HOSTNAME)  # argv: no shell anywhere
    os_release = f'NAME="Evil"\nID=evil\nPRETTY_NAME="{OS_NAME}"\n'.encode()
    guest_exec(env, name, "/bin/sh", "-c", "cat > /etc/os-release", stdin=os_release)
    guest_exec(env, name, "/bin/sh", "-c", "cat > /run/utmp", stdin=utmp_record(USER))


def detail_text(screen: str) -> str:
    """The detail pane (right of the list's border) as one line: wrapped lines rejoined."""
    return " ".join(line.partition("│")[2].strip() for line in screen.splitlines())


def border_columns(screen: str) -> list[int]:
    """Per line, where the VM list's right border (the first '│') is."""
    return [line.find("│") for line in screen.splitlines()]


def test_osc52_check_works(tmux: Tmux) -> None:
    """The detector itself: 2 real OSC 52 writes (BEL and ST forms) become 2 buffers."""
    assert tmux.buffers() == {}
    script = (f"printf '\\033]52;c;{b64('probe-bel')}\\007'; "
              f"printf '\\033]52;c;{b64('probe-st')}\\033\\\\'; sleep 30")
    tmux.ok("new-window", "-d", "-t", "idle", "-n", "probe", script)
    wait_until("two paste buffers", lambda: len(tmux.buffers()) == 2, 10, show=tmux.screen)
    assert sorted(tmux.buffers().values()) == ["probe-bel", "probe-st"]


def test_hostile_guest_strings_in_the_dashboard_and_the_cli(
        hc_env: HcEnv, running_vm: str, tmux: Tmux) -> None:
    """1 hostname, 1 OS name (10 kB), 1 user with 9 kinds of attack between them: no
    paste buffer, no pane title change, shown escaped and cut, the layout unchanged;
    6 CLI outputs free of raw control/format characters."""
    name = running_vm
    tmux.start_dashboard(hc_env.environ, width=WIDTH, height=HEIGHT, unset=("TMUX",))
    title_before = tmux.ok("display", "-p", "-t", "dash", "#{pane_title}")
    wait_until("the guest facts", lambda: "hc-testguest" in tmux.screen(), 60, show=tmux.screen)
    baseline = tmux.screen()

    started = time.monotonic()
    make_guest_hostile(hc_env, name)
    shown_host = printable(HOSTNAME)
    shown_user = printable(USER)
    wait_until("the hostile hostname", lambda: shown_host in detail_text(tmux.screen()), 60,
               show=tmux.screen)
    wait_until("the hostile user", lambda: shown_user in detail_text(tmux.screen()), 30,
               show=tmux.screen)
    print(f"hostile facts on screen {time.monotonic() - started:.1f}s after they were set")
    time.sleep(2)  # a few more refreshes
    screen = tmux.screen()

    # Nothing reached tmux as a command: no clipboard write, no title, no clear screen.
    assert tmux.buffers() == {}, "an OSC 52 from a guest string reached the terminal"
    assert tmux.ok("display", "-p", "-t", "dash", "#{pane_title}") == title_before
    assert tmux.session_alive()

    # Shown literally: escapes visible, markup as typed, bidi as \u escapes, cut.
    lines = screen.splitlines()
    detail = detail_text(screen)
    host = detail.partition("Host ")[2].partition(" OS ")[0].strip()
    assert host == shown_host  # escaped, markup as typed
    os_text = detail.partition(" OS ")[2].partition(" IPs ")[0].strip()
    assert "\\x1b]52;c;" in os_text and "[bold red]R[/]" in os_text
    assert "[link=https://evil.example]L[/link]" in os_text and "\\u202eEVIL\\u202c" in os_text
    assert "…" in os_text and len(os_text) < 200  # 10 kB cut to a few lines
    assert "P" * 20 not in screen
    assert detail.partition(" Users ")[2].strip().startswith(shown_user)
    assert "\x1b" not in screen and "\u202e" not in screen and "\x9b" not in screen

    # The layout did not move: every border where it was, title bar and key bar intact.
    assert len(lines) == len(baseline.splitlines()) == HEIGHT
    assert border_columns(screen)[1:-1] == border_columns(baseline)[1:-1]
    assert lines[0].startswith(" hypercore │") and lines[-1] == baseline.splitlines()[-1]
    assert lines[1] == baseline.splitlines()[1]  # the list header and the tabs

    # The CLI: what it prints for these guest strings holds no raw control character.
    outputs = {
        "list": hc_env.run("list", check=True).stdout,
        "list --json": hc_env.run("list", "--json", check=True).stdout,
        "stats": hc_env.run("stats", name, check=True).stdout,
        "stats --json": hc_env.run("stats", name, "--json", check=True).stdout,
        "snapshot list": hc_env.run("snapshot", "list", name, check=True).stdout,
        "share status": hc_env.run("share", "status", check=True).stdout,
    }
    for what, data in outputs.items():
        text = data.decode("utf-8")
        for line in text.split("\n"):
            assert printable(line, limit=None) == line, (what, line)
    assert shown_host in outputs["stats"].decode()
    guest = json.loads(outputs["stats --json"])["guest"]
    assert guest["hostname"] == HOSTNAME and guest["users"] == [USER]  # exact, JSON-escaped
    assert guest["os"] == OS_NAME[:len(guest["os"])] and len(guest["os"]) < 1000
    assert tmux.buffers() == {}
    assert not any(leak in "".join(tmux.buffers().values()) for leak in LEAKED)

    tmux.ok("send-keys", "-t", "dash", "q")
    wait_until("the dashboard to exit", lambda: not tmux.session_alive(), 15, show=tmux.screen)


CLIP = f"line one\n\x1b]52;c;{b64('FROM-CLIP')}\x07\x1b]2;CLIP-TITLE\x07 \u202eRTL\u202c end"


def test_clip_pull_escapes_guest_text_on_a_terminal(
        hc_env: HcEnv, running_vm: str, tmux: Tmux, tmp_path: Path) -> None:
    """A guest clipboard holding OSC 52 + OSC 2 + bidi, pulled 3 ways: to a tmux terminal
    (escaped, note on stderr, no buffer), redirected to a file (byte-exact) and with
    ``--raw`` to the terminal (the control case: tmux then gets the OSC 52 as a buffer)."""
    name = running_vm
    hc_env.run("clip", "push", name, "--text", CLIP, check=True)
    variables = {k: v for k, v in hc_env.environ.items()
                 if k.startswith("HYPERCORE_") or k in ("PATH", "HOME", "LANG", "USER")}
    base = ["env", "-u", "TMUX", *(f"{k}={v}" for k, v in variables.items()),
            sys.executable, "-m", "hypercore_tui", "clip", "pull", name]

    def run_in_window(window: str, *extra: str) -> None:
        tmux.ok("new-window", "-d", "-t", "idle", "-n", window,
                subprocess.list2cmdline([*base, *extra]) + "; echo DONE-$?; sleep 60")
        wait_until(f"clip pull in {window}", lambda: "DONE-" in tmux.screen(f"idle:{window}"),
                   60, show=lambda: tmux.screen(f"idle:{window}"))

    title_before = tmux.ok("display", "-p", "-t", "idle", "#{pane_title}")
    run_in_window("escaped")
    screen = tmux.screen("idle:escaped")
    assert "DONE-0" in screen
    assert "line one" in screen and "\\x1b]52;c;" in screen and "\\u202eRTL\\u202c" in screen
    assert "control characters shown escaped" in screen
    assert tmux.buffers() == {}, "an OSC 52 in the guest clipboard reached the terminal"
    assert tmux.ok("display", "-p", "-t", "idle", "#{pane_title}") == title_before

    target = tmp_path / "clip.txt"
    with target.open("wb") as sink:
        proc = subprocess.run([*HYPERCORE_CMD, "clip", "pull", name], env=hc_env.environ,
                              stdout=sink, stderr=subprocess.PIPE, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    assert target.read_bytes() == CLIP.encode()  # redirected: the exact bytes
    assert b"escaped" not in proc.stderr

    run_in_window("raw", "--raw")
    wait_until("the raw OSC 52 as a buffer", lambda: bool(tmux.buffers()), 10,
               show=lambda: tmux.screen("idle:raw"))
    assert list(tmux.buffers().values()) == ["FROM-CLIP"]
