"""Files and folders through ``hypercore clip sync`` between two real Debian guests (Xvfb :0,
hcuser's session, xclip, the share mounted at /shared): a file and a folder "copied" in
rsa's session (``x-special/gnome-copied-files``, as a file manager offers them) are offered
in rsb as a file list pointing into /shared/.hypercore-clip/ENTRY; copying from there gives
the same bytes. A symbolic link in the set is never followed (the copy is refused) and a
set above the cap is refused; neither leaves anything in the share. Host files pushed
through the sync (``clip push --files``) are offered in both. One boot of both guests for
the module.
"""

from __future__ import annotations

import hashlib
import os
import re
import signal
import time
from pathlib import Path
from urllib.parse import unquote_to_bytes

import pytest

from hypercore_tui.services import clipfiles

from ..conftest import HcEnv
from ..helpers import wait_until
from .clipsync_env import PAIR_NAMES, Sync
from .storage_env import guest_sh

pytestmark = [pytest.mark.qemu, pytest.mark.timeout(900)]

VMS = ("rsa", "rsb")
AS_HCUSER = "setpriv --reuid=1000 --regid=1000 --init-groups env DISPLAY=:0 HOME=/home/hcuser"
#: hcuser puts $1 (a gnome-copied-files list) on its clipboard, as a file manager would.
COPY_FILES = (f"exec {AS_HCUSER} sh -c 'printf %s \"$0\" | xclip -selection clipboard "
              "-t x-special/gnome-copied-files -i >/dev/null 2>&1' \"$1\"")
COPY_TEXT = (f"exec {AS_HCUSER} sh -c 'printf %s \"$0\" | xclip -selection clipboard -i "
             ">/dev/null 2>&1' \"$1\"")
READ = f"exec {AS_HCUSER} xclip -selection clipboard -o -t \"$1\""
#: hcuser's files to copy: a file, and a folder with a subfolder, a name with a space and
#: one with a leading dash (random contents, from stdin: 300 KB).
MAKE_SET = (f"exec {AS_HCUSER} sh -c 'set -e; rm -rf ~/x; mkdir -p ~/x/dir/sub; "
            "head -c 200000 > ~/x/file.bin; head -c 60000 > \"$HOME/x/dir/a name\"; "
            "head -c 40000 > ~/x/dir/sub/-dash; printf small > ~/x/dir/sub/s.txt'")
#: "sha256  relative-path" of every file under $1, sorted (as hcuser).
SUMS = (f"exec {AS_HCUSER} sh -c 'cd \"$0\" && find . -type f -print0 | sort -z | "
        "xargs -0 sha256sum' \"$1\"")
ENTRIES = "ls -A /shared/.hypercore-clip 2>/dev/null; true"


@pytest.fixture(scope="module")
def pair(desktop_pair: HcEnv) -> HcEnv:
    """The desktop pair shared with the other real-guest clipboard module."""
    assert VMS == PAIR_NAMES
    return desktop_pair


def watched_sync(env: HcEnv, **extra: str) -> Sync:
    sync = Sync(env, extra_env=extra)
    wait_until("both guests watched",
               lambda: sync.vm_states() == {name: "watching" for name in VMS}, 90,
               show=lambda: str(sync.status()))
    return sync


def read(env: HcEnv, name: str, target: str) -> bytes:
    proc = guest_sh(env, name, READ, target, check=False)
    return proc.stdout if proc.returncode == 0 else b""


def sums(env: HcEnv, name: str, path: str) -> list[str]:
    return guest_sh(env, name, SUMS, path).stdout.decode().splitlines()


def share_entries(env: HcEnv) -> set[str]:
    host = env.ctx.layout.shared_folder / ".hypercore-clip"
    return set(os.listdir(host)) if host.is_dir() else set()


def test_a_file_and_a_folder_copied_in_one_guest_paste_in_the_other(pair: HcEnv) -> None:
    guest_sh(pair, "rsa", MAKE_SET, stdin=os.urandom(300_000))
    originals = {"file": sums(pair, "rsa", "/home/hcuser/x")}
    sync = watched_sync(pair)
    try:
        started = time.monotonic()
        guest_sh(pair, "rsa", COPY_FILES,
                 "copy\nfile:///home/hcuser/x/file.bin\nfile:///home/hcuser/x/dir")

        def offered() -> bool:
            targets = read(pair, "rsb", "TARGETS").decode().split()
            return "x-special/gnome-copied-files" in targets and "text/uri-list" in targets

        wait_until("rsb offers the copied files", offered, 90)
        print(f"rsa -> rsb: files offered {time.monotonic() - started:.2f} s after the copy")
        listing = read(pair, "rsb", "x-special/gnome-copied-files")
        lines = listing.split(b"\n")
        assert lines[0] == b"copy" and not listing.endswith(b"\n")
        match = [re.fullmatch(rb"file:///shared/\.hypercore-clip/([0-9a-f]{16})/(.+)", uri)
                 for uri in lines[1:]]
        assert all(match), listing
        entry = {m.group(1) for m in match if m}.pop().decode()
        assert sorted(unquote_to_bytes(m.group(2)) for m in match if m) == [b"dir", b"file.bin"]
        uris = read(pair, "rsb", "text/uri-list")
        assert uris.split(b"\r\n")[:-1] == lines[1:] and uris.endswith(b"\r\n")
        assert read(pair, "rsb", "UTF8_STRING").split(b"\n") == [
            b"/shared/.hypercore-clip/" + entry.encode() + b"/" + unquote_to_bytes(m.group(2))
            for m in match if m]
        # Pasted in rsb (a file manager copies from the share, as hcuser): the same bytes.
        guest_sh(pair, "rsb", f"exec {AS_HCUSER} sh -c 'rm -rf ~/got; mkdir ~/got; "
                 "cp -R \"$0\" \"$1\" ~/got/' \"$1\" \"$2\"",
                 *(f"/shared/.hypercore-clip/{entry}/{n}" for n in ("file.bin", "dir")))
        assert sums(pair, "rsb", "/home/hcuser/got") == originals["file"]
        assert len(originals["file"]) == 4
        current = sync.status()["current"]
        assert isinstance(current, dict) and current["kind"] == "files"
        assert current["source"] == "vm:rsa" and current["size"] == 300_005
        assert current["preview"].startswith("1 file and 1 folder, 293.0 KiB: ")
        assert entry in share_entries(pair)
        # No echo: rsb's own offer, seen by its watcher, is not a new entry (nor a copy).
        count = sync.status()["entries"]
        time.sleep(4)
        assert sync.status()["entries"] == count
        assert share_entries(pair) == {entry}
        # Text afterwards replaces the list in rsa (its owner process ends).
        guest_sh(pair, "rsb", COPY_TEXT, "text after the files")
        wait_until("rsa has the text", lambda: read(pair, "rsa", "UTF8_STRING")
                   == b"text after the files", 30)

        # A big copy still going into the share when a newer copy comes: called off (the
        # guest stops and removes its part), the newer copy carried, nothing left behind.
        before = share_entries(pair)
        # (many small files: each costs the 9p round trips of its own, so the copy takes
        # a while under TCG; one big file of zeros goes through in a few seconds)
        guest_sh(pair, "rsa", f"exec {AS_HCUSER} sh -c 'rm -rf ~/many; mkdir ~/many; "
                 "cd ~/many && seq 4000 | xargs touch'")
        guest_sh(pair, "rsa", COPY_FILES, "copy\nfile:///home/hcuser/many")
        wait_until("the big copy going into the share", lambda: any(
            n.endswith(".part") for n in share_entries(pair)), 30,
            show=lambda: str(share_entries(pair)))
        guest_sh(pair, "rsa", COPY_TEXT, "newer than the big copy")
        wait_until("rsb has the newer copy", lambda: read(pair, "rsb", "UTF8_STRING")
                   == b"newer than the big copy", 30, show=lambda: str(sync.status()))
        wait_until("nothing of the big copy left", lambda: share_entries(pair) <= before, 15,
                   show=lambda: str(share_entries(pair)))
        current = sync.status()["current"]
        assert isinstance(current, dict) and current["preview"] == "newer than the big copy"
    finally:
        code, out, err = sync.stop()
        print(f"the sync said:\n{out}{err}")
        guest_sh(pair, "rsa", "rm -rf /home/hcuser/many", check=False)
    assert code == 0 and "Traceback" not in err, err
    assert "rsa: copied files not carried: a newer copy came while they were copied" in (
        out + err), out + err


def test_a_sync_killed_mid_copy_leaves_nothing_and_the_next_one_goes_on(pair: HcEnv) -> None:
    """The sync SIGKILLed while a big files copy goes from rsa into the share: nothing
    partial is ever offered in rsb; the next sync removes the part (the guest's copier
    stops when it is gone, it does not hold rsa's agent), and carries the next copy."""
    guest_sh(pair, "rsa", f"exec {AS_HCUSER} sh -c 'rm -rf ~/many; mkdir ~/many; "
             "cd ~/many && seq 4000 | xargs touch'")
    guest_sh(pair, "rsb", COPY_TEXT, "rsb before")
    before = share_entries(pair)
    sync = watched_sync(pair)
    again: Sync | None = None
    try:
        guest_sh(pair, "rsa", COPY_FILES, "copy\nfile:///home/hcuser/many")
        wait_until("the big copy going into the share", lambda: any(
            n.endswith(".part") for n in share_entries(pair)), 30,
            show=lambda: str(share_entries(pair)))
        os.kill(sync.proc.pid, signal.SIGKILL)
        killed_at = time.monotonic()
        sync.stop()
        assert read(pair, "rsb", "UTF8_STRING") == b"rsb before"  # nothing partial offered
        again = watched_sync(pair)
        # (a copy made while no sync ran is not carried when one starts: the next one is)
        guest_sh(pair, "rsa", COPY_TEXT, "after the killed sync")
        wait_until("rsb has the copy made after the kill", lambda: read(
            pair, "rsb", "UTF8_STRING") == b"after the killed sync", 60,
            show=lambda: str(again.status() if again else None))
        wait_until("nothing of the interrupted copy left", lambda: not any(
            n.endswith((".part", ".cancel")) for n in share_entries(pair) - before), 30,
            show=lambda: str(share_entries(pair)))
        wait_until("the guest's copier gone", lambda: b"pull-files" not in guest_sh(
            pair, "rsa", "ps -eo args; true").stdout, 30)
        print(f"a sync killed mid-copy: the next one carried the next copy and left nothing "
              f"{time.monotonic() - killed_at:.1f} s after the kill")
        current = again.status()["current"]
        assert isinstance(current, dict) and current["preview"] == "after the killed sync"
    finally:
        said = again.stop() if again is not None else sync.stop()
        guest_sh(pair, "rsa", "rm -rf /home/hcuser/many", check=False)
    assert said[0] == 0 and "Traceback" not in said[2], said


def test_a_link_is_never_followed_and_a_set_above_the_cap_is_refused(pair: HcEnv) -> None:
    guest_sh(pair, "rsa", f"exec {AS_HCUSER} sh -c 'rm -rf ~/y; mkdir -p ~/y/linked ~/y/big; "
             "ln -s /etc/passwd ~/y/linked/passwd; echo data > ~/y/linked/ok; "
             "head -c 300000 /dev/zero > ~/y/big/zeros'")
    before = share_entries(pair)
    sync = watched_sync(pair, **{clipfiles.CAP_ENV: "100000"})
    try:
        guest_sh(pair, "rsb", COPY_TEXT, "marker in rsb")
        wait_until("rsa has the marker",
                   lambda: read(pair, "rsa", "UTF8_STRING") == b"marker in rsb", 30)
        count = sync.status()["entries"]
        def refusals() -> int:
            return sum("copied files not carried" in line for line in list(sync.said))

        guest_sh(pair, "rsa", COPY_FILES, "copy\nfile:///home/hcuser/y/linked")
        wait_until("the link refused", lambda: refusals() == 1, 20,
                   show=lambda: "".join(sync.said))
        guest_sh(pair, "rsa", COPY_FILES, "cut\nfile:///home/hcuser/y/big")
        wait_until("the set above the cap refused", lambda: refusals() == 2, 20,
                   show=lambda: "".join(sync.said))
        time.sleep(1)
        assert sync.status()["entries"] == count  # neither became an entry
        assert read(pair, "rsb", "UTF8_STRING") == b"marker in rsb"
        assert share_entries(pair) == before  # nothing left in the share, no .part
        listing = guest_sh(pair, "rsa", ENTRIES).stdout.decode().split()
        assert not [n for n in listing if n.endswith(".part")]
    finally:
        code, _, err = sync.stop()
    assert code == 0 and "Traceback" not in err, err
    refusals = [line for line in err.splitlines() if "copied files not carried" in line]
    assert len(refusals) == 2, err
    assert "symbolic link" in refusals[0] and "/home/hcuser/y/linked/passwd" in refusals[0]
    assert "larger than the cap" in refusals[1]


def test_host_files_pushed_through_the_sync_paste_in_both_guests(pair: HcEnv,
                                                                 tmp_path: Path) -> None:
    """``clip push --files`` (a drop on the dashboard does the same): both guests' sessions
    offer the file list, and copying from it gives the host's bytes."""
    folder = tmp_path / "host dir"
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "-dash x").write_bytes(os.urandom(70_000))
    (tmp_path / "host.bin").write_bytes(os.urandom(30_000))
    sync = watched_sync(pair)
    try:
        started = time.monotonic()
        pair.run("clip", "push", "--files", str(folder), str(tmp_path / "host.bin"),
                 check=True)

        def offered(name: str) -> bool:
            return read(pair, name, "x-special/gnome-copied-files").startswith(
                b"copy\nfile:///shared/.hypercore-clip/")

        for name in VMS:
            wait_until(f"{name} offers the host's files", lambda n=name: offered(n), 60)  # type: ignore[misc]
        print(f"host -> both guests: files offered {time.monotonic() - started:.2f} s after "
              "the push")
        current = sync.status()["current"]
        assert isinstance(current, dict) and current["source"] == "host"
        for name in VMS:
            uris = read(pair, name, "x-special/gnome-copied-files").split(b"\n")[1:]
            paths = [unquote_to_bytes(u[len(b"file://"):]).decode() for u in uris]
            guest_sh(pair, name, f"exec {AS_HCUSER} sh -c 'rm -rf ~/fromhost; mkdir ~/fromhost; "
                     "cp -R \"$0\" \"$1\" ~/fromhost/' \"$1\" \"$2\"", *paths)
            got = sums(pair, name, "/home/hcuser/fromhost")
            want = sorted(f"{hashlib.sha256(p.read_bytes()).hexdigest()}  ./{rel}"
                          for p, rel in ((folder / "sub" / "-dash x", "host dir/sub/-dash x"),
                                         (tmp_path / "host.bin", "host.bin")))
            assert sorted(got) == want, (name, got)
    finally:
        code, _, err = sync.stop()
    assert code == 0 and "Traceback" not in err, err
