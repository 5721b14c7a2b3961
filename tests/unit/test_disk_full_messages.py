"""The one-line messages for a full disk (their real paths: tests/integration/test_disk_full)."""

from __future__ import annotations

from hypercore_tui.core.snapshots import (
    MIN_SNAPSHOT_FREE,
    explain_save_failure,
    snapshot_space_error,
)
from hypercore_tui.services.vmstate import io_error_reason

IO = "Error while writing VM state: Input/output error"


def test_save_failure_names_the_full_disk_only_when_space_is_short() -> None:
    """4 cases: short of space (I/O error, ENOSPC), enough space, unknown space."""
    msg = explain_save_failure("web", IO, free_bytes=0, ram_bytes=256 << 20)
    assert msg.startswith("web: snapshot failed: no space left on device for the RAM state")
    assert IO in msg and "256.0 MiB" in msg and "\n" not in msg
    enospc = explain_save_failure("web", "No space left on device", free_bytes=1 << 20,
                                  ram_bytes=256 << 20)
    assert "no space left on device for the RAM state" in enospc
    plenty = explain_save_failure("web", IO, free_bytes=1 << 30, ram_bytes=256 << 20)
    assert plenty == f"web: snapshot failed: {IO}"
    assert explain_save_failure("web", IO) == f"web: snapshot failed: {IO}"


def test_live_snapshot_refused_below_the_minimum() -> None:
    """4 cases: unknown (RBD), enough, short for a disk-only and for a RAM snapshot."""
    assert snapshot_space_error("web", None) is None
    assert snapshot_space_error("web", MIN_SNAPSHOT_FREE) is None
    disk = snapshot_space_error("web", 4096)
    assert disk is not None and disk.startswith("web: no space left on device")
    assert "4.0 KiB free" in disk and "RAM" not in disk
    ram = snapshot_space_error("web", 0, ram_bytes=512 << 20)
    assert ram is not None and "512.0 MiB for the RAM state" in ram


def test_io_error_reason() -> None:
    """3 cases: no space (with the image path), another I/O error, garbage from QEMU."""
    blocks = [{"io-status": "ok", "device": "cd"},
              {"io-status": "nospace", "inserted": {"file": "/h/vms/web/disk.qcow2"}}]
    reason = io_error_reason("web", blocks)
    assert reason == ("web is paused: no space left on the host's device for its disk "
                      "/h/vms/web/disk.qcow2; free some space, then `hypercore resume-vm web`")
    failed = io_error_reason("web", [{"io-status": "failed"}])
    assert "disk I/O error" in failed and "resume-vm web" in failed
    assert "disk I/O error" in io_error_reason("web", ["junk", None, {"inserted": 3}])
