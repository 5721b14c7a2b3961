"""Reading /proc/mounts for the shared folder (pure)."""

from __future__ import annotations

from hypercore_tui.core.models import SharedMode
from hypercore_tui.services.shared import ShareState, ShareStatus, find_share_mount, parse_mounts

MOUNTS = """\
rootfs / rootfs rw,size=98804k 0 0
proc /proc proc rw,nosuid,nodev,noexec,relatime 0 0
other_share /mnt/other 9p rw,trans=virtio 0 0
hypercore_share /mnt/my\\040share 9p rw,sync,dirsync,relatime,access=client,msize=512000 0 0
hypercore_share /shared virtiofs rw,relatime 0 0
"""


def test_parse_unescapes_octal_fields() -> None:
    entries = parse_mounts(MOUNTS)
    assert ("hypercore_share", "/mnt/my share", "9p") in entries
    assert entries[0] == ("rootfs", "/", "rootfs")


def test_first_share_mount_wins() -> None:
    assert find_share_mount(MOUNTS) == ("/mnt/my share", "9p")


def test_tag_must_match_exactly_and_be_9p_or_virtiofs() -> None:
    assert find_share_mount("hypercore_share2 /x 9p rw 0 0\nhypercore_share /y ext4 rw 0 0\n") \
        is None
    assert find_share_mount("") is None


def test_state_describe() -> None:
    state = ShareState(ShareStatus.MODULES_MISSING, SharedMode.NINEP, message="load 9p")
    assert state.describe() == "modules missing (9p): load 9p"
    assert not state.mounted
    assert ShareState(ShareStatus.MOUNTED, SharedMode.VIRTIOFS, "/shared").describe() == \
        "mounted at /shared (virtiofs)"
