"""How a boot learns that the last QEMU did not stop cleanly (services.records): from
its runtime files (a pidfile whose process is gone, an unfinished job record) or from the
record a clean-up left in the VM's directory. The files are untrusted: odd job names are
never repeated to the user."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from hypercore_tui.adapters import images
from hypercore_tui.core.layout import Layout, VmPaths
from hypercore_tui.services.records import (
    UncleanStop,
    remember_unclean_stop,
    unclean_stop,
)


@pytest.fixture
def paths(tmp_path: Path) -> VmPaths:
    vm = Layout(home=tmp_path / "home", runtime_base=tmp_path / "run").vm("u1")
    vm.vm_dir.mkdir(parents=True)
    vm.run_dir.mkdir(parents=True)
    return vm


def dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def job_record(paths: VmPaths, command: str, *, finished: bool) -> None:
    paths.job_record.write_text(json.dumps({"job_id": "hc-snap-save-1", "command": command,
                                            "pid": 1, "started": 0, "finished": finished}))


def test_runtime_files(paths: VmPaths) -> None:
    """6 cases: nothing, a finished job, a dead QEMU's pidfile, an unfinished job (a
    normal and a hostile command name), a live process's pidfile."""
    assert unclean_stop(paths) is None
    job_record(paths, "snapshot-save", finished=True)
    assert unclean_stop(paths) is None
    paths.pidfile.write_text(f"{dead_pid()}\n")
    assert unclean_stop(paths) == UncleanStop(None)
    assert unclean_stop(paths).cause == "QEMU did not stop cleanly"  # type: ignore[union-attr]
    job_record(paths, "snapshot-save", finished=False)
    assert unclean_stop(paths) == UncleanStop("snapshot-save")
    job_record(paths, "snapshot-save\x1b[2J\nrm -rf", finished=False)
    assert unclean_stop(paths) == UncleanStop("a QEMU job")
    paths.job_record.unlink()
    # A live process that was not started with this pidfile: a reused pid, still crashed.
    paths.pidfile.write_text("1\n")
    assert unclean_stop(paths) == UncleanStop(None)


def test_record_in_the_vm_dir(paths: VmPaths) -> None:
    """5 cases: a clean-up remembers a dead QEMU (and its job); a later job-less clean-up
    keeps the job; the record alone is enough; an unreadable record still counts; a
    hostile job name in it is dropped. A clean stop writes nothing."""
    remember_unclean_stop(paths)
    assert not paths.unclean_stop.exists()
    paths.pidfile.write_text(f"{dead_pid()}\n")
    job_record(paths, "snapshot-save", finished=False)
    remember_unclean_stop(paths)
    paths.job_record.unlink()
    remember_unclean_stop(paths)  # (job-less now: the earlier record stays)
    paths.pidfile.unlink()
    assert unclean_stop(paths) == UncleanStop("snapshot-save")
    paths.unclean_stop.write_text("{not json")
    assert unclean_stop(paths) == UncleanStop(None)
    paths.unclean_stop.write_text(json.dumps({"job": "x; reboot"}))
    assert unclean_stop(paths) == UncleanStop(None)
    paths.unclean_stop.write_text(json.dumps(["snapshot-save"]))
    assert unclean_stop(paths) == UncleanStop(None)


def test_check_qcow2_repair_modes(tmp_path: Path) -> None:
    """2 cases: an unknown repair mode is refused before qemu-img runs; a relative path
    is refused (no file name can pass for an option)."""
    with pytest.raises(ValueError):
        images.check_qcow2("/nonexistent.qcow2", repair="everything")
    with pytest.raises(images.InvalidInput):
        images.check_qcow2("-r all.qcow2")
