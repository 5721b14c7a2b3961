"""``hypercore clip sync`` against real TCG test guests (busybox, no X: the fallback file,
read every 1.5 s) — the engine, the CLI, the control socket and the per-VM mode.

The X11 path (a guest watcher signalling on the clipboard port) is tested against the
real Debian guest in test_real_guest_clipsync.py.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Iterator

import pytest

from ..conftest import HYPERCORE, GuestImage, HcEnv
from ..helpers import wait_until
from .storage_env import guest_sh, guests_env

pytestmark = pytest.mark.qemu

READ_FALLBACK = "cat /var/lib/hypercore/clipboard 2>/dev/null || true"
WRITE_FALLBACK = ("mkdir -p /var/lib/hypercore && printf %s \"$1\" > /var/lib/hypercore/.c && "
                  "mv /var/lib/hypercore/.c /var/lib/hypercore/clipboard")


@pytest.fixture(scope="module")
def three(test_guest: GuestImage) -> Iterator[HcEnv]:
    with guests_env(test_guest, ["sa", "sb", "sc"]) as env:
        yield env


class Sync:
    """A real ``hypercore clip sync`` process, its stdout and stderr kept."""

    def __init__(self, env: HcEnv, *args: str) -> None:
        self.env = env
        self.proc = subprocess.Popen([*HYPERCORE, "clip", "sync", "--no-host", *args],
                                     env=env.environ,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     stdin=subprocess.DEVNULL)
        wait_until("the sync serves its control socket",
                   lambda: self.status().get("running") is True or self.proc.poll() is not None,
                   30)
        assert self.proc.poll() is None, self.stop()

    def status(self) -> dict[str, object]:
        proc = self.env.run("clip", "status", "--json", check=True)
        data = json.loads(proc.stdout)
        assert isinstance(data, dict)
        return data

    def vm_states(self) -> dict[str, str]:
        vms = self.status().get("vms") or []
        assert isinstance(vms, list)
        return {str(v["name"]): str(v["state"]) for v in vms}

    def stop(self) -> tuple[int, str, str]:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        out, err = self.proc.communicate(timeout=30)
        return self.proc.returncode, out.decode(errors="replace"), err.decode(errors="replace")


def fallback(env: HcEnv, name: str) -> str:
    return guest_sh(env, name, READ_FALLBACK).stdout.decode()


def copy_in(env: HcEnv, name: str, text: str) -> None:
    """A copy made inside the guest (the fallback file is its clipboard)."""
    guest_sh(env, name, WRITE_FALLBACK, text)


def test_copy_in_one_guest_reaches_the_others_and_no_echo(three: HcEnv) -> None:
    env = three
    sync = Sync(env)
    try:
        wait_until("every VM followed", lambda: set(sync.vm_states().values()) == {"polling"},
                   60, show=lambda: str(sync.status()))
        copy_in(env, "sa", "from a: $HOME `id` \n'q'")
        wait_until("b and c have a's copy",
                   lambda: all(fallback(env, n) == "from a: $HOME `id` \n'q'"
                               for n in ("sb", "sc")), 30)
        status = sync.status()
        current = status["current"]
        assert isinstance(current, dict)
        assert current["source"] == "vm:sa" and current["kind"] == "text"
        first_id = current["id"]
        # No echo: the copies written into b and c are not new entries, however long.
        time.sleep(4)
        current = sync.status()["current"]
        assert isinstance(current, dict)
        assert current["id"] == first_id and sync.status()["entries"] == 1
        # The other way round, and the CLI's push into one VM goes round too.
        copy_in(env, "sc", "from c")
        wait_until("a and b have c's copy",
                   lambda: all(fallback(env, n) == "from c" for n in ("sa", "sb")), 30)
        env.run("clip", "push", "sb", "--text", "pushed into b", check=True)
        wait_until("a and c have b's", lambda: all(fallback(env, n) == "pushed into b"
                                                   for n in ("sa", "sc")), 30)
        assert sync.status()["entries"] == 3
    finally:
        code, out, err = sync.stop()
    assert code == 0, err
    assert "clipboard sync stopped" in out
    assert "Traceback" not in err


def test_one_sync_per_home_and_status_when_none(three: HcEnv) -> None:
    env = three
    idle = env.run("clip", "status")
    assert idle.returncode == 0
    assert b"no clipboard sync is running" in idle.stdout
    assert json.loads(env.run("clip", "status", "--json").stdout) == {"running": False}
    sync = Sync(env, "sa", "sb")
    try:
        second = env.run("clip", "sync", timeout=30)
        assert second.returncode == 1
        err = second.stderr.decode()
        assert err.startswith("hypercore: error: a clipboard sync already runs") and \
            str(sync.proc.pid) in err, err
        assert set(sync.vm_states()) == {"sa", "sb"}
        text = env.run("clip", "status", check=True).stdout.decode()
        assert f"pid {sync.proc.pid}" in text and "sa:" in text and "sb:" in text
    finally:
        code, _, err = sync.stop()
    assert code == 0, err
    unknown = env.run("clip", "sync", "nosuchvm", timeout=30)
    assert unknown.returncode == 2 and b"nosuchvm" in unknown.stderr


def test_a_paused_guest_catches_up_on_resume(three: HcEnv) -> None:
    env = three
    sync = Sync(env, "sa", "sb")
    try:
        wait_until("both followed", lambda: set(sync.vm_states().values()) == {"polling"}, 60)
        env.run("pause-vm", "sb", check=True)
        wait_until("b paused", lambda: sync.vm_states().get("sb") == "paused", 20)
        copy_in(env, "sa", "while b slept")
        wait_until("the hub has it", lambda: (sync.status().get("current") or {})
                   .get("preview") == "while b slept", 20)  # type: ignore[union-attr]
        env.run("resume-vm", "sb", check=True)
        wait_until("b caught up", lambda: fallback(env, "sb") == "while b slept", 30)
    finally:
        env.run("resume-vm", "sb")
        code, _, err = sync.stop()
    assert code == 0, err


def test_off_is_never_read_nor_written_and_push_only_never_read(three: HcEnv) -> None:
    env = three
    env.run("set", "sc", "clipboard=off", check=True)
    env.run("set", "sb", "clipboard=push-only", check=True)
    sync = Sync(env)
    try:
        wait_until("modes followed", lambda: sync.vm_states() == {
            "sa": "polling", "sb": "push-only", "sc": "off"}, 60, show=lambda: str(sync.status()))
        copy_in(env, "sc", "secret in c")
        copy_in(env, "sb", "not read from b")
        copy_in(env, "sa", "public from a")
        wait_until("b got a's copy", lambda: fallback(env, "sb") == "public from a", 30)
        time.sleep(4)  # several polls later
        assert fallback(env, "sc") == "secret in c"
        status = sync.status()
        assert status["entries"] == 1, status
        # Turned on while the sync runs: c is followed from then on and catches up.
        env.run("set", "sc", "clipboard=sync", check=True)
        wait_until("c caught up", lambda: fallback(env, "sc") == "public from a", 40)
    finally:
        env.run("set", "sb", "clipboard=sync")
        env.run("set", "sc", "clipboard=sync")
        code, _, err = sync.stop()
    assert code == 0, err
