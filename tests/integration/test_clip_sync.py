"""``hypercore clip sync`` against real TCG test guests (busybox, no X: the fallback file,
read every 1.5 s) — the engine, the CLI, the control socket and the per-VM mode.

The X11 path (a guest watcher signalling on the clipboard port) is tested against the
real Debian guest in test_real_guest_clipsync.py.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ..conftest import GuestImage, HcEnv
from ..helpers import wait_until
from .clipsync_env import Sync
from .storage_env import guest_sh, guests_env

pytestmark = pytest.mark.qemu

READ_FALLBACK = "cat /var/lib/hypercore/clipboard 2>/dev/null || true"
WRITE_FALLBACK = ("mkdir -p /var/lib/hypercore && printf %s \"$1\" > /var/lib/hypercore/.c && "
                  "mv /var/lib/hypercore/.c /var/lib/hypercore/clipboard")


@pytest.fixture(scope="module")
def three(test_guest: GuestImage) -> Iterator[HcEnv]:
    with guests_env(test_guest, ["sa", "sb", "sc"]) as env:
        yield env


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


GUEST_CAT = 'cat < "$1"'


def test_host_files_pushed_through_the_sync_become_one_entry_from_the_host(
        three: HcEnv, tmp_path: Path) -> None:
    """``clip push --files`` (what a drop on the dashboard does too): copied into the share
    as one entry the running sync offers; busybox guests have no X session, so the hub's
    status and the share (host and guest side) are checked; one line without a sync, for
    a link and above the cap (set in settings.json), nothing copied then."""
    env = three
    folder = tmp_path / "a dir"
    (folder / "sub").mkdir(parents=True)
    hostile = folder / "sub" / "new\nline \\$(id)"
    payload = os.urandom(50_000)
    hostile.write_bytes(payload)
    lead = tmp_path / "-lead"
    lead.write_bytes(b"lead bytes")
    (tmp_path / "link").symlink_to(lead)
    entries = env.ctx.layout.shared_folder / ".hypercore-clip"

    def listing() -> list[str]:
        return sorted(os.listdir(entries)) if entries.is_dir() else []

    alone = env.run("clip", "push", "--files", str(lead))
    assert alone.returncode == 1 and alone.stderr.decode().startswith(
        "hypercore: error: no clipboard sync is running"), alone.stderr
    before = listing()
    sync = Sync(env, "sa", "sb")
    try:
        wait_until("both followed", lambda: set(sync.vm_states().values()) == {"polling"}, 60,
                   show=lambda: str(sync.status()))
        pushed = env.run("clip", "push", "--files", "--", str(folder), str(lead), check=True)
        assert b"offered on every VM's clipboard" in pushed.stdout
        current = sync.status()["current"]
        assert isinstance(current, dict)
        assert current["kind"] == "files" and current["source"] == "host"
        assert current["size"] == 50_010
        assert current["preview"] == "1 file and 1 folder, 48.8 KiB: a dir, -lead"
        (entry,) = set(listing()) - set(before)
        base = entries / entry
        assert (base / "a dir" / "sub" / hostile.name).read_bytes() == payload
        assert (base / "-lead").read_bytes() == b"lead bytes"
        # the guests see the same bytes at the paths they would be offered
        shared = f"/shared/.hypercore-clip/{entry}"
        got = guest_sh(env, "sb", GUEST_CAT, f"{shared}/a dir/sub/{hostile.name}").stdout
        assert got == payload
        assert guest_sh(env, "sa", GUEST_CAT, f"{shared}/-lead").stdout == b"lead bytes"
        # a link is never followed; the cap in settings.json is named when it refuses
        link = env.run("clip", "push", "--files", str(tmp_path / "link"))
        assert link.returncode == 1 and b"is a symbolic link" in link.stderr
        env.ctx.layout.settings_file.write_text('{"clipboard": {"files_max": "10K"}}')
        capped = env.run("clip", "push", "--files", str(folder))
        assert capped.returncode == 1
        assert f"(10.0 KiB, set by clipboard.files_max in {env.ctx.layout.settings_file})" \
            in capped.stderr.decode()
        assert listing() == sorted([*before, entry]) and sync.status()["entries"] == 1
    finally:
        env.ctx.layout.settings_file.unlink(missing_ok=True)
        code, _, err = sync.stop()
    assert code == 0 and "Traceback" not in err, err
    # (no X session in these guests: each says once that files have nowhere to go)
    for name in ("sa", "sb"):
        assert sum(f"{name}: clipboard not written" in line and "no graphical session" in line
                   for line in err.splitlines()) == 1, err
