"""How the monitor follows a VM that QEMU pauses by itself after a failed disk write
(``BLOCK_IO_ERROR`` then ``STOP``): the events as QEMU sends them, fed to a watcher.
The real QEMU path: tests/integration/test_disk_full_dashboard.py."""

from __future__ import annotations

from pathlib import Path

from hypercore_tui.adapters.qmp import QmpEvent
from hypercore_tui.core.models import VmState
from hypercore_tui.services.context import Context
from hypercore_tui.services.monitor import (
    Monitor,
    MonitorNotice,
    PauseReason,
    VmEventSeen,
    VmStateChanged,
    VmWatcher,
)

NOSPACE = {"device": "", "node-name": "disk0", "operation": "write", "action": "stop",
           "nospace": True, "reason": "No space left on device"}


def watcher(tmp_path: Path) -> tuple[VmWatcher, list[MonitorNotice]]:
    notices: list[MonitorNotice] = []
    ctx = Context.from_environ({"HYPERCORE_HOME": str(tmp_path / "home"),
                                "HYPERCORE_RUNTIME_DIR": str(tmp_path / "run")})
    vm = VmWatcher(Monitor(ctx, notices.append), "web")
    vm.view.state = VmState.RUNNING
    return vm, notices


def io_lines(notices: list[MonitorNotice]) -> list[str]:
    return [n.detail for n in notices if isinstance(n, VmEventSeen) and n.event == "IO_ERROR"]


def test_pause_reason_from_events(tmp_path: Path) -> None:
    """6 cases: three BLOCK_IO_ERROR (one per failed request) give one reason and one
    event-log line; the STOP after them says why; RESUME clears it; a pause again after
    the resume is logged again; a crash clears it; an error QEMU only reports (action
    report) sets no reason."""
    vm, notices = watcher(tmp_path)
    for stamp in (1.0, 1.01, 1.02):
        vm.on_event(QmpEvent("BLOCK_IO_ERROR", NOSPACE, stamp))
    assert vm.view.pause_reason == PauseReason(nospace=True)
    lines = io_lines(notices)
    assert len(lines) == 1, lines
    assert lines[0] == ("QEMU paused it: no space left on the host's device for its disk; "
                        "free space, then resume it (write on disk0: no space; stop)")

    vm.on_event(QmpEvent("STOP", {}, 1.1))
    changes = [n for n in notices if isinstance(n, VmStateChanged)]
    assert [(c.new, c.reason) for c in changes] == [(VmState.PAUSED, "host disk full")]
    assert vm.view.pause_reason is not None

    vm.on_event(QmpEvent("RESUME", {}, 2.0))
    assert vm.view.state is VmState.RUNNING and vm.view.pause_reason is None

    vm.on_event(QmpEvent("BLOCK_IO_ERROR", NOSPACE, 2.01))
    vm.on_event(QmpEvent("STOP", {}, 2.02))
    assert vm.view.state is VmState.PAUSED and len(io_lines(notices)) == 2

    vm.set_state(VmState.CRASHED, "QEMU died")
    assert vm.view.pause_reason is None

    vm, notices = watcher(tmp_path)
    vm.on_event(QmpEvent("BLOCK_IO_ERROR", {**NOSPACE, "action": "report",
                                            "nospace": False, "reason": "Input/output error"},
                         3.0))
    assert vm.view.pause_reason is None and io_lines(notices) == []
    assert [n.detail for n in notices if isinstance(n, VmEventSeen)] == [
        "write on disk0: Input/output error; report"]


def test_other_io_error_reason(tmp_path: Path) -> None:
    """2 cases: an error other than ENOSPC (no ``nospace`` field) and its wording."""
    vm, notices = watcher(tmp_path)
    data = {k: v for k, v in NOSPACE.items() if k != "nospace"}
    vm.on_event(QmpEvent("BLOCK_IO_ERROR", {**data, "reason": "Input/output error"}, 1.0))
    reason = vm.view.pause_reason
    assert reason == PauseReason(nospace=False)
    assert (reason.short, reason.remedy) == ("disk I/O error", "fix the disk")
    assert io_lines(notices) == ["QEMU paused it: a disk I/O error; fix the disk, then resume "
                                 "it (write on disk0: Input/output error; stop)"]
