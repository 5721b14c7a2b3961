"""``hypercore clip sync`` between two real Debian guests (Xvfb :0, hcuser's session,
xclip): a copy in one guest's X session is pasted from the other's, through the guest
watchers' signals; no echo, races converge, rapid copies end on the last one, a killed
watcher and a killed sync come back. One boot of both guests (in parallel) for the module.
"""

from __future__ import annotations

import hashlib
import os
import signal
import threading
import time
from collections.abc import Iterator

import pytest

from ..conftest import HcEnv
from ..helpers import wait_until
from .clipsync_env import PAIR_NAMES, Sync
from .storage_env import guest_sh, png

pytestmark = [pytest.mark.qemu, pytest.mark.timeout(900)]

VMS = ("rsa", "rsb")
#: hcuser copies $1 in its X session (xclip forks a holder: its output must not be the
#: agent's pipes).
COPY = ("exec setpriv --reuid=1000 --regid=1000 --init-groups env DISPLAY=:0 "
        "HOME=/home/hcuser sh -c 'printf %s \"$0\" | xclip -selection clipboard -i "
        ">/dev/null 2>&1' \"$1\"")
PASTE = ("exec setpriv --reuid=1000 --regid=1000 --init-groups env DISPLAY=:0 "
         "HOME=/home/hcuser xclip -selection clipboard -o")
RAPID = ("exec setpriv --reuid=1000 --regid=1000 --init-groups env DISPLAY=:0 "
         "HOME=/home/hcuser sh -c 'i=1; while [ $i -le 100 ]; do printf \"rapid %s\" $i | "
         "xclip -selection clipboard -i >/dev/null 2>&1; i=$((i+1)); done'")


@pytest.fixture(scope="module")
def pair(desktop_pair: HcEnv) -> HcEnv:
    """The desktop pair shared with the other real-guest clipboard module."""
    assert VMS == PAIR_NAMES
    return desktop_pair


def copy(env: HcEnv, name: str, text: str) -> None:
    guest_sh(env, name, COPY, text)


def paste(env: HcEnv, name: str) -> str:
    proc = guest_sh(env, name, PASTE, check=False)
    return proc.stdout.decode(errors="replace") if proc.returncode == 0 else ""


def watching(sync: Sync) -> bool:
    return sync.vm_states() == {name: "watching" for name in VMS}


@pytest.fixture
def sync(pair: HcEnv) -> Iterator[Sync]:
    running = Sync(pair)
    try:
        wait_until("both guests watched", lambda: watching(running), 90,
                   show=lambda: str(running.status()))
        yield running
    finally:
        killed = running.proc.poll() is not None  # (a test killed it on purpose)
        code, _, err = running.stop()
        assert killed or code == 0, err
        assert "Traceback" not in err, err


def entries(sync: Sync) -> int:
    value = sync.status()["entries"]
    assert isinstance(value, int)
    return value


def test_a_copy_in_one_guest_pastes_in_the_other(pair: HcEnv, sync: Sync) -> None:
    text = "from rsa: $(id) `uname` 'q' \"dq\"\ttab\nline two\n"
    started = time.monotonic()
    copy(pair, "rsa", text)
    seconds = wait_until("rsb pastes rsa's copy", lambda: paste(pair, "rsb") == text, 20)
    print(f"rsa -> rsb: pasteable {seconds:.2f} s after the copy returned "
          f"({time.monotonic() - started:.2f} s after it started)")
    current = sync.status()["current"]
    assert isinstance(current, dict) and current["source"] == "vm:rsa"
    copy(pair, "rsb", "and back from rsb")
    wait_until("rsa pastes rsb's copy", lambda: paste(pair, "rsa") == "and back from rsb", 20)
    # No echo: what the sync wrote is not taken as a new copy, however long we wait.
    count = entries(sync)
    time.sleep(5)
    assert entries(sync) == count == 2
    assert paste(pair, "rsa") == paste(pair, "rsb") == "and back from rsb"


def test_copies_at_the_same_moment_converge(pair: HcEnv, sync: Sync) -> None:
    barrier = threading.Barrier(2)

    def at_once(name: str) -> None:
        barrier.wait()
        copy(pair, name, f"race from {name}")

    threads = [threading.Thread(target=at_once, args=(n,)) for n in VMS]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wait_until("both guests hold the same copy",
               lambda: paste(pair, "rsa") == paste(pair, "rsb") != "", 20)
    final = paste(pair, "rsa")
    assert final in ("race from rsa", "race from rsb")
    count = entries(sync)
    time.sleep(5)  # no ping-pong: nothing changes any more
    assert entries(sync) == count
    assert paste(pair, "rsa") == paste(pair, "rsb") == final
    current = sync.status()["current"]
    assert isinstance(current, dict) and current["preview"] == final


def test_rapid_copies_end_on_the_last_one(pair: HcEnv, sync: Sync) -> None:
    before = entries(sync)
    started = time.monotonic()
    guest_sh(pair, "rsa", RAPID)
    copied = time.monotonic() - started
    took = wait_until("rsb has the last copy", lambda: paste(pair, "rsb") == "rapid 100", 30,
               show=lambda: f"rsa {paste(pair, 'rsa')!r}, rsb {paste(pair, 'rsb')!r}, "
                            f"sync {sync.status()}")
    print(f"\n  100 copies in rsa: {copied:.1f}s; rsb had the last {took:.1f}s later")
    time.sleep(3)
    after = entries(sync)
    assert 1 <= after - before <= 100
    assert paste(pair, "rsa") == "rapid 100"


def test_a_killed_watcher_and_a_killed_sync_come_back(pair: HcEnv, sync: Sync) -> None:
    # The watcher ends (as a guest reboot or an agent restart would end it).
    guest_sh(pair, "rsa", "kill \"$(cat /run/hypercore-clipwatch.lock)\"")
    copy(pair, "rsa", "after the watcher died")
    wait_until("the copy still arrives (watcher started again)",
               lambda: paste(pair, "rsb") == "after the watcher died", 40)
    # The sync process killed outright: a new one takes over (lock released by the kernel).
    os.kill(sync.proc.pid, signal.SIGKILL)
    sync.proc.wait(timeout=10)
    again = Sync(pair)
    try:
        wait_until("both watched again", lambda: watching(again), 60,
                   show=lambda: str(again.status()))
        copy(pair, "rsb", "after the sync was killed")
        wait_until("arrives", lambda: paste(pair, "rsa") == "after the sync was killed", 20)
    finally:
        code, _, err = again.stop()
    assert code == 0, err


COPY_PNG = ("cat > /tmp/copied.png && exec setpriv --reuid=1000 --regid=1000 --init-groups "
            "env DISPLAY=:0 HOME=/home/hcuser xclip -selection clipboard -t image/png "
            "-i /tmp/copied.png >/dev/null 2>&1")
PASTE_PNG = ("exec setpriv --reuid=1000 --regid=1000 --init-groups env DISPLAY=:0 "
             "HOME=/home/hcuser sh -c 'xclip -selection clipboard -o -t image/png | sha256sum'")
TARGETS = ("exec setpriv --reuid=1000 --regid=1000 --init-groups env DISPLAY=:0 "
           "HOME=/home/hcuser xclip -selection clipboard -o -t TARGETS")


def test_an_image_copied_in_one_guest_pastes_in_the_other(pair: HcEnv, sync: Sync) -> None:
    image = png(400, 300)  # ~360 KB: X transfers it in INCR steps
    digest = hashlib.sha256(image).hexdigest()
    guest_sh(pair, "rsa", COPY_PNG, stdin=image)

    def pasted() -> str:
        proc = guest_sh(pair, "rsb", PASTE_PNG, check=False)
        return proc.stdout.decode().split(" ")[0] if proc.returncode == 0 else ""

    wait_until("rsb pastes rsa's image", lambda: pasted() == digest, 40)
    targets = guest_sh(pair, "rsb", TARGETS).stdout.decode().split()
    assert "image/png" in targets
    current = sync.status()["current"]
    assert isinstance(current, dict)
    assert current["kind"] == "image/png" and current["size"] == len(image)
    assert current["source"] == "vm:rsa"
    # Text again afterwards: the sync goes on with text.
    copy(pair, "rsb", "text after the image")
    wait_until("text again", lambda: paste(pair, "rsa") == "text after the image", 20)
