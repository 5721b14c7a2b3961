"""The shared folder in real TCG test guests: one folder on the host, visible in every
guest, mounted by Hypercore when it is not; 9p and virtiofs."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator

import pytest

from hypercore_tui.adapters.process import process_alive, read_pidfile
from hypercore_tui.core.models import SharedMode
from hypercore_tui.services import shared
from hypercore_tui.services.create import CreateRequest, create_vm
from hypercore_tui.services.shared import ShareStatus

from ..conftest import GuestImage, HcEnv, create_guest_vm
from .storage_env import guest_sh, guests_env

pytestmark = pytest.mark.qemu

ODD = "odd name 'q' $(x) é.txt"
CONTENT = "line 1\r\nline \"2\"\t$(id)\n😀\n"


@pytest.fixture(scope="module")
def guests(test_guest: GuestImage) -> Iterator[HcEnv]:
    with guests_env(test_guest, ["sha", "shb"]) as env:
        yield env


def read_in_guest(env: HcEnv, name: str, path: str) -> bytes:
    return guest_sh(env, name, 'cat -- "$1"', path).stdout


def mounts(env: HcEnv, name: str) -> str:
    return read_in_guest(env, name, "/proc/mounts").decode()


def test_host_file_appears_in_every_guest(guests: HcEnv) -> None:
    (guests.home / "shared_folder" / ODD).write_text(CONTENT)
    for name in ("sha", "shb"):
        assert read_in_guest(guests, name, f"/shared/{ODD}") == CONTENT.encode()


def test_file_written_in_one_guest_appears_in_the_other_and_on_the_host(guests: HcEnv) -> None:
    guest_sh(guests, "sha", 'mkdir -p /shared/fromA && printf "%s" "$1" > "/shared/fromA/$2"',
             CONTENT, ODD)
    assert read_in_guest(guests, "shb", f"/shared/fromA/{ODD}") == CONTENT.encode()
    assert (guests.home / "shared_folder" / "fromA" / ODD).read_bytes() == CONTENT.encode()
    # and back: B overwrites, A and the host see it
    guest_sh(guests, "shb", 'printf "%s" "$1" > "/shared/fromA/$2"', "B was here", ODD)
    assert read_in_guest(guests, "sha", f"/shared/fromA/{ODD}") == b"B was here"
    assert (guests.home / "shared_folder" / "fromA" / ODD).read_bytes() == b"B was here"


def test_state_unmount_and_remount(guests: HcEnv) -> None:
    ctx = guests.ctx
    state = asyncio.run(shared.share_state(ctx, "sha"))
    assert state.status is ShareStatus.MOUNTED
    assert (state.mountpoint, state.mode) == ("/shared", SharedMode.NINEP)

    guest_sh(guests, "sha", "umount /shared")
    assert "hypercore_share" not in mounts(guests, "sha")
    assert asyncio.run(shared.share_state(ctx, "sha")).status is ShareStatus.NOT_MOUNTED
    listing = json.loads(guests.run("share", "status", "--json", check=True).stdout)
    by_name = {row["name"]: row for row in listing}
    assert by_name["sha"]["status"] == "not mounted"
    assert by_name["shb"]["status"] == "mounted" and by_name["shb"]["mountpoint"] == "/shared"

    state = asyncio.run(shared.ensure_share_mounted(ctx, "sha"))
    assert state.mounted and state.mountpoint == "/shared"
    again = guests.run("share", "mount", "sha")  # idempotent
    assert again.returncode == 0 and b"mounted at /shared (9p)" in again.stdout
    table = mounts(guests, "sha")
    assert table.count("hypercore_share") == 1
    assert "msize=512000" in table and "trans=virtio" in table
    (guests.home / "shared_folder" / "after-remount").write_text("visible")
    assert read_in_guest(guests, "sha", "/shared/after-remount") == b"visible"


HIDE_MODULES = r"""
set -e
umount /shared
rmmod 9p 9pnet_virtio 9pnet
mkdir -p /tmp/hidden
find "/lib/modules/$(uname -r)" -name '9p*.ko' > /tmp/hidden/list
while read -r m; do mv "$m" /tmp/hidden/; done < /tmp/hidden/list
"""
RESTORE_MODULES = r"""
set -e
while read -r m; do mv "/tmp/hidden/${m##*/}" "$m"; done < /tmp/hidden/list
"""


def test_missing_modules_are_explained_then_loaded(guests: HcEnv) -> None:
    ctx = guests.ctx
    guest_sh(guests, "shb", HIDE_MODULES)
    try:
        state = asyncio.run(shared.ensure_share_mounted(ctx, "shb"))
        assert state.status is ShareStatus.MODULES_MISSING
        assert "load the 9p and 9pnet_virtio modules in the guest" in state.message
        cli = guests.run("share", "mount", "shb")
        assert cli.returncode == 1
        assert b"9pnet_virtio" in cli.stderr and b"Traceback" not in cli.stderr
    finally:
        guest_sh(guests, "shb", RESTORE_MODULES)
    state = asyncio.run(shared.ensure_share_mounted(ctx, "shb"))  # modprobe, then mount
    assert state.mounted
    assert read_in_guest(guests, "shb", f"/shared/{ODD}") == CONTENT.encode()


def test_not_attached_and_not_running(guests: HcEnv) -> None:
    ctx = guests.ctx
    create_vm(ctx, CreateRequest(name="noshare", ram_mb=64, cpus=1, disk_size="1M",
                                 shared=False))
    create_vm(ctx, CreateRequest(name="stopped", ram_mb=64, cpus=1, disk_size="1M"))
    assert asyncio.run(shared.share_state(ctx, "noshare")).status is ShareStatus.NOT_ATTACHED
    assert asyncio.run(shared.share_state(ctx, "stopped")).status is ShareStatus.NOT_RUNNING
    table = guests.run("share", "status", "noshare", "stopped", check=True).stdout.decode()
    assert "not attached" in table and "not running" in table


def test_virtiofs_share(test_guest: GuestImage) -> None:
    with guests_env(test_guest, ["vfs1"], "--shared-mode", "virtiofs") as env:
        ctx = env.ctx
        paths = ctx.vm_paths("vfs1")
        pid = read_pidfile(paths.virtiofsd_pidfile)
        assert pid is not None and process_alive(pid)
        state = asyncio.run(shared.share_state(ctx, "vfs1"))
        assert state.mounted and state.mode is SharedMode.VIRTIOFS

        guest_sh(env, "vfs1", "umount /shared")
        assert asyncio.run(shared.share_state(ctx, "vfs1")).status is ShareStatus.NOT_MOUNTED
        state = asyncio.run(shared.ensure_share_mounted(ctx, "vfs1"))
        assert state.mounted and state.mountpoint == "/shared"
        assert " /shared virtiofs " in mounts(env, "vfs1")

        (env.home / "shared_folder" / ODD).write_text(CONTENT)
        assert read_in_guest(env, "vfs1", f"/shared/{ODD}") == CONTENT.encode()
        guest_sh(env, "vfs1", 'printf "%s" "$1" > /shared/from-guest', "over virtiofs")
        assert (env.home / "shared_folder" / "from-guest").read_text() == "over virtiofs"

        assert env.run("stop-vm", "vfs1", "--force").returncode == 0
        deadline = time.monotonic() + 10
        while process_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not process_alive(pid), "virtiofsd must stop with its VM"
        assert not paths.virtiofsd_pidfile.exists()


def test_no_agent(test_guest: GuestImage, hc_env: HcEnv) -> None:
    create_guest_vm(hc_env, test_guest, "mute", f"--append={test_guest.append} hc.noagent=1")
    hc_env.run("boot-vm", "mute", check=True)
    try:
        state = asyncio.run(shared.share_state(hc_env.ctx, "mute"))
        assert state.status is ShareStatus.NO_AGENT
        assert "not answering" in state.message
    finally:
        hc_env.run("stop-vm", "mute", "--force")
