"""Keys and text typed into a real TCG test guest with QMP ``input-send-event``: through the
service (services.keys) and through ``hypercore type``. On the guest's VGA console (tty1)
a root shell runs ``cat > FILE``; what the keys made is read back through the agent and
must equal what was sent, byte for byte: letters, shifted symbols, digits, Tab, Enter, on
the us layout and on de (loaded into the guest's console with busybox loadkmap), dead
keys included. One boot for the module: the tests change only the console's layout and
set the one they need first.
"""

from __future__ import annotations

import asyncio
import os
import select
import shutil
import subprocess
import time
from collections.abc import Iterator

import pytest

from hypercore_tui.services import keys
from hypercore_tui.services.clipsync import control

from ..conftest import HYPERCORE, GuestImage, HcEnv, create_guest_vm
from ..helpers import Tmux, one_error_line, wait_until
from .clipsync_env import Sync
from .storage_env import guest_sh, guests_env

pytestmark = [pytest.mark.qemu, pytest.mark.timeout(300)]

VM = "kb1"
TARGET = "/tmp/typed"

US_TEXT = ("The quick brown fox\tjumps over 13 lazy dogs.\n"
           "~!@#$%^&*()_+{}|:\"<>? `-=[]\\;',./\n"
           "0123456789 ABCDEFGHIJKLMNOPQRSTUVWXYZ abcdefghijklmnopqrstuvwxyz\n")
DE_TEXT = ("Grüße aus Köln: ÄÖÜ äöü ß € zyZY\n"
           "@ { [ ] } \\ | ~ ^ ` ² ³ µ ° §\t$%&/()=?*+#'<>;:_-,.\n"
           "Café crème, Ôle, àè, îa\n")


@pytest.fixture(scope="module")
def env(test_guest: GuestImage) -> Iterator[HcEnv]:
    with guests_env(test_guest, [VM]) as booted:
        wait_until("a shell reads tty1", lambda: guest_sh(
            booted, VM, 'for p in /proc/[0-9]*; do [ "$(readlink "$p/fd/0")" = /dev/tty1 ] '
            "&& exit 0; done; exit 1", check=False).returncode == 0, 30)
        yield booted


def error(proc: subprocess.CompletedProcess[bytes], code: int) -> str:
    """The message of the one error line a command that exited with ``code`` printed."""
    assert proc.returncode == code, (proc.returncode, proc.stderr)
    return one_error_line(proc).removeprefix("hypercore: error: ").rstrip("\n")


def send_keys(env: HcEnv, *names: str, keymap: str) -> None:
    asyncio.run(keys.send_keys(env.ctx, VM, list(names), keymap=keymap))


def console_layout(env: HcEnv, keymap: str) -> None:
    """The guest's console takes keys as a ``keymap`` keyboard."""
    guest_sh(env, VM, '/usr/libexec/hypercore/keymap "$1"', keymap)


def cat_running(env: HcEnv) -> bool:
    return guest_sh(env, VM, "pidof cat", check=False).returncode == 0


def start_cat(env: HcEnv, keymap: str) -> None:
    """A fresh prompt on tty1, then ``cat > TARGET`` reading the console."""
    guest_sh(env, VM, 'rm -f "$1"', TARGET)
    send_keys(env, "ctrl+c", keymap=keymap)
    asyncio.run(keys.type_text(env.ctx, VM, f"cat > {TARGET}\n", keymap=keymap))
    wait_until("cat reads tty1", lambda: cat_running(env), 20)


def end_cat(env: HcEnv, keymap: str) -> bytes:
    """Ctrl+D ends cat's input (twice after a partial line); what it wrote."""
    send_keys(env, "ctrl+d", "ctrl+d", keymap=keymap)
    wait_until("cat has written its file", lambda: not cat_running(env), 20)
    return guest_sh(env, VM, 'cat "$1"', TARGET).stdout


@pytest.mark.parametrize(("keymap", "text"), [("us", US_TEXT), ("de", DE_TEXT)])
def test_the_service_types_text_exactly(env: HcEnv, keymap: str, text: str) -> None:
    console_layout(env, keymap)
    start_cat(env, keymap)
    typed = asyncio.run(keys.type_text(env.ctx, VM, text, keymap=keymap))
    assert typed.characters == len(text) and typed.keymap == keymap
    assert end_cat(env, keymap) == text.encode()


@pytest.mark.parametrize(("keymap", "text"), [
    ("us", "CLI: #1 is 'ok'?\tyes & <no> | {x}\r\nlast line without newline"),
    ("de", "Über 100 € für Öl & Spaß?\t[ja] {nein} ~/x ^2\r\nletzte Zeile"),
])
def test_hypercore_type_types_text_exactly(env: HcEnv, keymap: str, text: str) -> None:
    console_layout(env, keymap)
    start_cat(env, keymap)
    proc = env.run("type", VM, "--keymap", keymap, "--text", text)
    assert proc.returncode == 0, proc.stderr
    count = len(text.replace("\r\n", "\n"))
    assert proc.stdout.decode().startswith(
        f"{VM}: typed {count} characters ({keymap} keymap, "), proc.stdout
    assert end_cat(env, keymap) == text.replace("\r\n", "\n").encode()


def test_named_keys_reach_the_line_editor(env: HcEnv) -> None:
    """Backspace, the arrows and End in the shell's line editor: ``echo abX``, erase X,
    left, insert Y, back to the end."""
    console_layout(env, "us")
    guest_sh(env, VM, "rm -f /tmp/edited")
    send_keys(env, "ctrl+c", *"echo abX", "backspace", "left", "Y", "end",
              *" > /tmp/edited", "enter", keymap="us")
    wait_until("the line ran", lambda: guest_sh(env, VM, "cat /tmp/edited",
                                                check=False).stdout == b"aYb\n", 20)


def test_long_text_needs_yes_and_arrives_exactly(env: HcEnv) -> None:
    console_layout(env, "us")
    lines = [f"{n:04d} " + "".join(chr(33 + (n * 7 + i) % 94) for i in range(60))
             for n in range(40)]
    text = "\n".join(lines) + "\n"  # 2,640 characters, every printable ASCII one
    assert len(text) > keys.CONFIRM_ABOVE
    start_cat(env, "us")
    refused = env.run("type", VM, stdin=text.encode())
    assert error(refused, 2) == (
        f"{len(text)} characters to type (above {keys.CONFIRM_ABOVE}): pass --yes to type them")
    started = time.monotonic()
    proc = env.run("type", VM, "--yes", stdin=text.encode())
    seconds = time.monotonic() - started
    assert proc.returncode == 0, proc.stderr
    assert end_cat(env, "us") == text.encode()  # nothing from the refused run either
    print(f"\n{len(text)} characters typed in {seconds:.1f} s with the CLI "
          f"({len(text) / seconds:.0f} characters/s): {proc.stdout.decode().strip()}")


def test_a_long_text_is_confirmed_on_a_terminal(env: HcEnv) -> None:
    """On a terminal ``type`` asks before a long text; "n" types nothing."""
    console_layout(env, "us")
    start_cat(env, "us")
    master, slave = os.openpty()
    proc = subprocess.Popen([*HYPERCORE, "type", VM, "--text", "y" * 2001], env=env.environ,
                            stdin=slave, stdout=subprocess.PIPE, stderr=slave)
    os.close(slave)
    seen = b""
    try:
        deadline = time.monotonic() + 30
        while b"[y/N] " not in seen and time.monotonic() < deadline:
            if select.select([master], [], [], 0.5)[0]:
                seen += os.read(master, 4096)
        assert seen.decode().startswith(
            f"Type 2001 characters from --text into {VM} (about 5 s)? [y/N] "), seen
        os.write(master, b"n\n")
        assert proc.wait(30) == 1
        while select.select([master], [], [], 0.5)[0]:
            try:
                seen += os.read(master, 4096)
            except OSError:  # the terminal's other side is closed
                break
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
    assert b"hypercore: nothing typed" in seen
    assert proc.stdout is not None and proc.stdout.read() == b""
    assert end_cat(env, "us") == b""


def test_untypeable_text_is_refused_before_any_key(env: HcEnv) -> None:
    console_layout(env, "us")
    start_cat(env, "us")
    proc = env.run("type", VM, "--text", "naïve café\x07 ok")
    assert error(proc, 2) == (
        "the us keymap cannot type 3 characters of this text: ï é \\x07")
    proc = env.run("type", VM, "--text", "Grüße", "--keymap", "us")
    assert error(proc, 2).endswith(": ü ß (--keymap de can)")
    assert end_cat(env, "us") == b""


def test_without_text_the_clipboard_hubs_entry_is_typed(env: HcEnv) -> None:
    console_layout(env, "us")
    sync = Sync(env, VM)
    try:
        text = "from the hub:\tuser@example.org\n"
        offered = asyncio.run(control.request(env.ctx, "offer", text=text, source="test"))
        assert offered is not None and offered["item"] is not None
        start_cat(env, "us")
        proc = env.run("type", VM, stdin=b"")  # an empty pipe: no text there
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.decode().startswith(f"{VM}: typed {len(text)} characters (us ")
        assert end_cat(env, "us") == text.encode()
    finally:
        code, _, err = sync.stop()
    assert code == 0, err


def test_keyboard_mode_of_the_real_dashboard_in_tmux(env: HcEnv) -> None:
    """k in the dashboard, then keys typed in tmux reach the guest's shell: shifted
    symbols, Enter, and Ctrl+C (the guest's, not the dashboard's); Ctrl+] leaves."""
    assert shutil.which("tmux"), "tmux is required (scripts/setup.sh installs it)"
    console_layout(env, "us")
    guest_sh(env, VM, "rm -f /tmp/fromtmux /tmp/after")
    send_keys(env, "ctrl+c", keymap="us")
    tmux = Tmux()
    try:
        tmux.start_dashboard(env.environ)
        wait_until("kb1 listed as running", lambda: "▶ running" in tmux.screen(), 30,
                   show=tmux.screen)
        tmux.keys("k")
        wait_until("the keyboard bar", lambda: "Keyboard → kb1 (us)" in tmux.screen(), 10,
                   show=tmux.screen)
        tmux.ok("send-keys", "-t", "dash", "-l", "echo 'Hi, there!' | tr a-z A-Z > /tmp/fromtmux")
        tmux.keys("Enter")
        wait_until("the line ran in the guest", lambda: guest_sh(
            env, VM, "cat /tmp/fromtmux", check=False).stdout == b"HI, THERE!\n", 20,
            show=tmux.screen)
        tmux.ok("send-keys", "-t", "dash", "-l", "sleep 60")
        tmux.keys("Enter", "C-c")  # Ctrl+C ends the guest's sleep (the dashboard stays)
        tmux.ok("send-keys", "-t", "dash", "-l", "touch /tmp/after")
        tmux.keys("Enter")
        wait_until("Ctrl+C reached the guest", lambda: guest_sh(
            env, VM, "test -e /tmp/after", check=False).returncode == 0, 20, show=tmux.screen)
        tmux.keys("C-]")
        wait_until("the keyboard mode left", lambda: "Keyboard →" not in tmux.screen(), 10,
                   show=tmux.screen)
        assert tmux.session_alive()
    finally:
        tmux.kill()


def test_paused_and_stopped_vms_get_one_line(env: HcEnv, test_guest: GuestImage) -> None:
    env.run("pause-vm", VM, check=True)
    try:
        proc = env.run("type", VM, "--text", "x")
        assert error(proc, 1) == (
            f"{VM} is paused: keys sent now would be lost (resume it first)")
    finally:
        env.run("resume-vm", VM, check=True)
    create_guest_vm(env, test_guest, "kb0")
    proc = env.run("type", "kb0", "--text", "x")
    assert error(proc, 1) == "kb0 is not running (stopped)"
