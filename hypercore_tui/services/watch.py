"""``hypercore watch --json``: what the dashboard's monitor sees of this host, as a
newline-delimited JSON stream (``core/watchwire.py`` says what each line holds) for a
dashboard on another host reading it through SSH.

The :class:`~hypercore_tui.services.monitor.Monitor` runs as in the dashboard (the same
polls, events, and upkeep of the guests); its notices become lines. Lines are written by a
thread of their own through a bounded queue: a reader that stops reading never stalls the
monitor (lines beyond the queue are left out and counted), and a reader that goes away
(``EPIPE``) ends the stream quietly, as do SIGINT, SIGHUP and SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import platform
import queue
import signal
import threading
import time
from collections.abc import Callable

from hypercore_tui import __version__
from hypercore_tui.core import watchwire
from hypercore_tui.services.context import Context
from hypercore_tui.services.monitor import (
    AgentStatus,
    GuestInfoChanged,
    HostSampled,
    Monitor,
    MonitorNotice,
    MonitorSettings,
    VmDefinitionChanged,
    VmEventSeen,
    VmJobsChanged,
    VmSampled,
    VmsChanged,
    VmStateChanged,
    VmView,
)

log = logging.getLogger("hypercore.watch")
log.addHandler(logging.NullHandler())

#: Lines waiting for a slow reader before more are left out.
QUEUE_LINES = 2000


def vm_row(view: VmView) -> dict[str, object]:
    """One VM as the stream shows it: ``list --json``'s fields and the dashboard's."""
    guest = view.guest
    return {
        "name": view.name,
        "state": view.state.value,
        "pid": view.pid if view.state.is_active else None,
        "ram_mb": view.ram_mb,
        "cpus": view.cpus,
        "disk": view.disk,
        "display": view.display,
        "clipboard": view.clipboard.value,
        "agent": view.agent is AgentStatus.ANSWERING,
        "agent_status": view.agent.value,
        "error": view.error,
        "guest": None if guest is None else {
            "hostname": guest.hostname, "os": guest.os_name, "kernel": guest.kernel,
            "addresses": list(guest.addresses), "users": list(guest.users)},
        "jobs": [job.describe() for job in view.jobs],
        "share_note": view.share_note,
        "paused_by_qemu": None if view.pause_reason is None else view.pause_reason.describe(),
        "no_sign_of_life": view.no_sign_of_life is not None,
    }


class LineWriter:
    """Writes lines to a file descriptor from a thread of its own."""

    def __init__(self, fd: int, on_closed: Callable[[], None]) -> None:
        self._fd = fd
        self._on_closed = on_closed
        self._queue: queue.Queue[bytes] = queue.Queue(QUEUE_LINES)
        self._dropped = 0
        self.last_put = 0.0
        self.closed = False
        self._thread = threading.Thread(target=self._run, name="watch writer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def put(self, line: bytes) -> None:
        if self.closed:
            return
        if self._dropped:
            note = watchwire.encode("dropped", lines=self._dropped)
            try:
                self._queue.put_nowait(note)
            except queue.Full:
                self._dropped += 1
                return
            self._dropped = 0
        try:
            self._queue.put_nowait(line)
        except queue.Full:
            self._dropped += 1
            return
        self.last_put = time.monotonic()

    def _run(self) -> None:
        while True:
            view = memoryview(self._queue.get())
            try:
                while view:
                    view = view[os.write(self._fd, view):]
            except OSError as exc:  # EPIPE: the reader went away (EBADF, EIO: as good as)
                log.info("watch stream closed: %s", exc)
                self.closed = True
                self._on_closed()
                return


class WatchStream:
    """This host's monitor, written as stream lines to ``fd`` until stopped."""

    def __init__(self, ctx: Context, fd: int, *, settings: MonitorSettings | None = None,
                 heartbeat: float = watchwire.HEARTBEAT_SECONDS,
                 snapshot_every: float = watchwire.SNAPSHOT_SECONDS) -> None:
        self.ctx = ctx
        self.heartbeat = heartbeat
        self.snapshot_every = snapshot_every
        self.monitor = Monitor(ctx, self._notice, settings)
        self._stop = asyncio.Event()
        self._vms_sent = False
        loop = asyncio.get_running_loop()

        def reader_gone() -> None:
            loop.call_soon_threadsafe(self._stop.set)

        self._writer = LineWriter(fd, reader_gone)

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        """Write until stopped, the reader gone or a signal (SIGINT, SIGHUP, SIGTERM)."""
        loop = asyncio.get_running_loop()
        signals = (signal.SIGINT, signal.SIGHUP, signal.SIGTERM)
        for signum in signals:
            loop.add_signal_handler(signum, self._stop.set)
        self._writer.start()
        self._put("hello", protocol=watchwire.PROTOCOL, version=__version__,
                  host=platform.node(), heartbeat=self.heartbeat, time=time.time())
        monitor = asyncio.create_task(self.monitor.run(), name="watch monitor")
        ticker = asyncio.create_task(self._tick(), name="watch ticker")
        # A monitor that fails ends the stream (its error raised below), never heartbeats
        # over a host nobody watches any more.
        monitor.add_done_callback(lambda _task: self._stop.set())
        try:
            await self._stop.wait()
        finally:
            for signum in signals:
                loop.remove_signal_handler(signum)
            for task in (ticker, monitor):
                task.cancel()
            for task in (ticker, monitor):
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def _tick(self) -> None:
        """Heartbeats while nothing else is written; every VM now and then (and at the
        start, when the monitor's first look found none)."""
        last_snapshot = time.monotonic()
        while True:
            await asyncio.sleep(self.heartbeat / 3)
            now = time.monotonic()
            if now - last_snapshot >= self.snapshot_every or not self._vms_sent:
                last_snapshot = now
                self._put_vms()
            elif now - self._writer.last_put >= self.heartbeat:
                self._put("heartbeat", time=time.time())

    def _put(self, kind: str, **fields: object) -> None:
        self._writer.put(watchwire.encode(kind, **fields))

    def _put_vms(self) -> None:
        self._vms_sent = True
        views = self.monitor.views
        self._put("vms", vms=[vm_row(views[name]) for name in sorted(views)])

    def _notice(self, notice: MonitorNotice) -> None:
        match notice:
            case VmSampled(name=name):
                view = self.monitor.view(name)
                if view is not None and view.sample is not None:
                    self._put("sample", vm=name, time=time.time(), **view.sample.as_json())
            case VmStateChanged(name=name, old=old, new=new, reason=reason):
                self._put("state", vm=name, old=old.value, new=new.value, reason=reason)
            case VmEventSeen(name=name, event=event, detail=detail, timestamp=stamp):
                self._put("event", vm=name, event=event, detail=detail, time=stamp)
            case (GuestInfoChanged(name=name) | VmDefinitionChanged(name=name)
                  | VmJobsChanged(name=name)):
                view = self.monitor.view(name)
                if view is not None:
                    self._put("vm", vm=name, row=vm_row(view))
            case VmsChanged():
                self._put_vms()
            case HostSampled(summary=summary):
                fields = dataclasses.asdict(summary)
                fields["load"] = list(summary.load)
                self._put("host", **fields)
