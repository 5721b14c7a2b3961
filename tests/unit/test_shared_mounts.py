"""Reading /proc/mounts and modules.dep for the shared folder; the outcome of an unattended
mount; a clock correction's wording (pure)."""

from __future__ import annotations

from hypercore_tui.core.models import SharedMode
from hypercore_tui.services.guest_clock import ClockCorrection
from hypercore_tui.services.share_mounter import MountOutcome
from hypercore_tui.services.shared import (
    NOT_LOADED,
    ShareState,
    ShareStatus,
    find_share_mount,
    module_listed,
    parse_mounts,
)

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


# Lines of a real modules.dep (Debian 12's 6.1 kernel), and compressed variants.
MODULES_DEP = """\
kernel/fs/9p/9p.ko: kernel/net/9p/9pnet.ko kernel/fs/fscache/fscache.ko kernel/fs/netfs/netfs.ko
kernel/net/9p/9pnet.ko:
kernel/net/9p/9pnet_virtio.ko: kernel/net/9p/9pnet.ko kernel/drivers/virtio/virtio_ring.ko
kernel/fs/fuse/fuse.ko:
"""


def test_module_listed_in_modules_dep() -> None:
    assert module_listed(MODULES_DEP, "9p")
    assert not module_listed(MODULES_DEP, "virtiofs")
    assert not module_listed("kernel/net/9p/9pnet.ko:\n", "9p")  # not a prefix match
    assert module_listed("kernel/fs/fuse/virtiofs.ko.zst: kernel/fs/fuse/fuse.ko.zst\n",
                         "virtiofs")
    assert module_listed("kernel/fs/9p/9p.ko.xz:\n", "9p")
    # A module named only as someone's dependency is not installed by that.
    assert not module_listed("kernel/x.ko: kernel/fs/9p/9p.ko\n", "9p")
    assert not module_listed("", "9p")


def test_not_loaded_is_not_mounted_with_the_reason() -> None:
    state = ShareState(ShareStatus.NOT_MOUNTED, SharedMode.NINEP, message=NOT_LOADED)
    assert state.describe() == ("not mounted (9p): modules not loaded yet (share mount "
                                "loads them)")


def test_mount_outcome() -> None:
    mounted = ShareState(ShareStatus.MOUNTED, SharedMode.NINEP, "/shared")
    assert MountOutcome(mounted, was_unmounted=True).mounted_now
    assert not MountOutcome(mounted).mounted_now  # it was mounted already
    no_agent = MountOutcome(ShareState(ShareStatus.NO_AGENT), was_unmounted=True)
    assert no_agent.agent_missing and not no_agent.failed
    failed = MountOutcome(ShareState(ShareStatus.FAILED, message="mount failed: x"), True)
    assert failed.failed and not failed.mounted_now
    for status in (ShareStatus.NOT_ATTACHED, ShareStatus.NOT_RUNNING, ShareStatus.UNSUPPORTED):
        assert not MountOutcome(ShareState(status)).failed


def test_clock_correction_describe() -> None:
    assert ClockCorrection("vm", 8.14).describe() == "guest clock set forward 8.1 s"
    assert ClockCorrection("vm", -3.0).describe() == "guest clock set back 3.0 s"
