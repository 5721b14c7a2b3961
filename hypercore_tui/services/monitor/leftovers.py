"""What a killed hypercore left beside a watched VM, seen at each poll (two stat
calls) and dealt with: a job record never marked finished, and the guest's shared
folder left unmounted by a RAM save. The share is mounted again (and the record marked
finished) in the background, holding the VM's lock, once QEMU said that no job runs;
until then, or if that fails, the VM's share note says why it is not mounted."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from hypercore_tui.adapters.fs import locked_async
from hypercore_tui.core.errors import Busy, HypercoreError
from hypercore_tui.core.jobs import SHARE_UNMOUNT_WHY
from hypercore_tui.core.models import VmState
from hypercore_tui.services import records, registry, shared
from hypercore_tui.services.monitor.notices import VmEventSeen, VmJobsChanged
from hypercore_tui.services.records import finish_job_record, read_job_record

if TYPE_CHECKING:
    from hypercore_tui.services.monitor.watcher import VmWatcher

#: After a failed attempt to mount a share left unmounted, wait 10, 20, 40... s (at most
#: 5 minutes: a guest that cannot mount it is not asked every few seconds forever).
RECOVER_RETRY = 10.0
RECOVER_RETRY_MAX = 300.0


class Leftovers:
    """The job record and the unmounted share of one VM."""

    def __init__(self, watcher: VmWatcher) -> None:
        self.watcher = watcher
        self._task: asyncio.Task[None] | None = None
        #: (inode, mtime) of the job record at the last poll; False: not looked yet
        self._record_stamp: tuple[int, int] | None | bool = False
        self._record_open = False  # the record names a job not marked finished
        self._retry_after = 0.0
        self._failures = 0

    def take_task(self) -> list[asyncio.Task[None]]:
        """The recovery in progress, if any, for the watcher to cancel on close."""
        task, self._task = self._task, None
        return [task] if task is not None else []

    def check(self) -> None:
        """Each poll: a job record that changed means a snapshot job ended or started
        (maybe unseen: another process may hold the monitor); a note about the share
        while it is unmounted for a RAM save; what a killed hypercore left behind (share
        unmounted, a job record never finished) is dealt with."""
        watcher = self.watcher
        try:
            info = watcher.paths.job_record.stat()
            stamp: tuple[int, int] | None = (info.st_ino, info.st_mtime_ns)
        except OSError:
            stamp = None
        if stamp != self._record_stamp:
            first = self._record_stamp is False
            self._record_stamp = stamp
            record = read_job_record(watcher.paths) if stamp is not None else None
            self._record_open = record is not None and not record.finished
            if not first and not self._record_open:
                watcher.monitor.emit(VmJobsChanged(watcher.name, finished=True))
        left = watcher.paths.share_unmount.exists()
        if not left:
            watcher.set_share_note(None)
        elif watcher.view.share_note is None:
            note = records.read_share_unmount(watcher.paths)
            watcher.set_share_note(f"unmounted in the guest "
                                   f"{note.why if note is not None else SHARE_UNMOUNT_WHY}")
        if left or self._record_open:
            self.recover_soon()

    def recover_now(self) -> None:
        """A job just ended: try at once, whatever failed before."""
        self._retry_after = 0.0
        self.recover_soon()

    def recover_soon(self) -> None:
        """Mount the share again where a RAM save left it unmounted (the process doing
        it died) and mark finished a job record whose writer died: in the background,
        holding the VM's lock (an operation holding it is left alone), once QEMU said
        that no job runs."""
        watcher = self.watcher
        if self._task is not None and not self._task.done():
            return
        if time.monotonic() < self._retry_after or watcher.view.state is not VmState.RUNNING:
            return
        if not watcher.no_job_running():
            return  # only once QEMU said that no job runs
        self._task = asyncio.create_task(self._recover(), name=f"recover {watcher.name}")

    async def _recover(self) -> None:
        watcher = self.watcher
        name, paths = watcher.name, watcher.paths
        try:
            async with locked_async(paths.lock, what=f"{name}: mount the shared folder "
                                    "again", timeout=0):
                if not watcher.no_job_running():
                    return
                record = read_job_record(paths)
                if record is not None and not record.finished:
                    # Under the VM's lock no live operation owns it, and QEMU says the job
                    # no longer runs: its writer died.
                    finish_job_record(paths, record.job_id)
                state = await shared.remount_left_unmounted(
                    registry.load(watcher.monitor.ctx, name), paths)
        except Busy:
            return  # an operation runs: it mounts the share itself (or we try later)
        except HypercoreError as exc:
            state = shared.ShareState(shared.ShareStatus.FAILED, message=str(exc))
        if state is None:
            watcher.set_share_note(None)
            return
        if state.mounted:
            self._failures = 0
            watcher.set_share_note(None)
            watcher.monitor.emit(VmEventSeen(
                name, "SHARE", f"shared folder mounted again at {state.mountpoint} (an "
                "interrupted snapshot had left it unmounted)", time.time()))
            return
        self._retry_after = time.monotonic() + min(
            RECOVER_RETRY * 2 ** self._failures, RECOVER_RETRY_MAX)
        self._failures += 1
        note = ("not mounted (an interrupted snapshot left it unmounted): "
                f"{state.message or state.describe()}")
        if note != watcher.view.share_note:
            watcher.log.warning("shared folder %s", note)
            watcher.monitor.emit(VmEventSeen(name, "SHARE", note, time.time()))
        watcher.set_share_note(note)
