"""Live migration of a running Ceph-backed VM to another host (``hypercore migrate NAME
HOST``): its disks stay on the cluster both hosts reach, its RAM goes over the wire.

The steps (Proxmox's ``QemuMigrate.pm`` does the same over its SSH tunnel):

1. checks here: the VM runs, its disk is an RBD image, no ISO or virtiofs share; the
   host is another one, reached over SSH, running this version of Hypercore;
2. the target: ``hypercore migrate-incoming NAME`` there (``services/migrate_incoming``),
   one SSH session fed JSON lines: the definition goes over, QEMU starts there with the
   same argv plus ``-S -incoming defer`` and listens;
3. the 9p share is unmounted in the guest (a mounted export blocks migration), or the
   migration is refused with the reason (``--force-unmount``: one in use is detached
   lazily, and the migration waits up to 10 s for QEMU's blocker to go);
4. the stream: by default through the host's shared SSH connection (``ssh -O forward``
   of a local unix socket to the target QEMU's), else ``--via tcp:ADDR``;
5. ``migrate-set-capabilities`` (auto-converge), ``migrate-set-parameters``
   (downtime-limit, max-bandwidth), ``migrate``, ``query-migrate`` polled for progress;
6. on ``completed`` (the source is paused): ``commit`` to the target, which takes the
   definition and runs the guest (``cont``); then the source QEMU quits and its files
   and definition go. Exactly one host owns the VM at any moment.

Before the switch-over every failure (the target QEMU dies, SSH drops, the deadline, an
interrupt) cancels the migration, leaves the VM running here as before (share mounted
again) and has the target remove everything it made. A Ceph cluster gone silent stalls
the source QEMU itself (:class:`QemuStalled`): the target is removed at once and QEMU
runs the guest on here by itself once its disk answers again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from hypercore_tui.adapters import process, ssh
from hypercore_tui.adapters.fs import ensure_private_dir, locked_async
from hypercore_tui.adapters.qga import agent_session
from hypercore_tui.adapters.qmp import QmpSession, qmp_session
from hypercore_tui.core.argv import accel_of
from hypercore_tui.core.errors import (
    AgentUnavailable,
    Busy,
    HypercoreError,
    InvalidInput,
    InvalidState,
    OperationFailed,
    Timeout,
)
from hypercore_tui.core.hosts import LOCAL_HOST
from hypercore_tui.core.layout import VmPaths
from hypercore_tui.core.models import SharedMode, VmSpec, VmState
from hypercore_tui.core.sizes import format_bytes
from hypercore_tui.core.text import printable
from hypercore_tui.services import records, registry, share_mounter, shared, vmstate
from hypercore_tui.services.context import Context
from hypercore_tui.services.create import is_installed
from hypercore_tui.services.hosts import registry as hosts_registry
from hypercore_tui.services.hosts import remote
from hypercore_tui.services.hosts.connection import HostConnection
from hypercore_tui.services.lifecycle import clean_runtime
from hypercore_tui.services.migrate_incoming import read_message

T = TypeVar("T")

log = logging.getLogger("hypercore.migrate")
log.addHandler(logging.NullHandler())

DEFAULT_DOWNTIME_MS = 300
#: Seconds a migration may take before it is cancelled (``--timeout``).
DEFAULT_TIMEOUT = 600.0
#: Seconds the target may take to start its QEMU and listen.
READY_WAIT = 90.0
#: Seconds the target may take to answer the switch-over.
COMMIT_WAIT = 30.0
POLL = 0.5
EVENT_POLL = 0.005
#: QEMU's own limit of the stream (128 MiB/s), set again for a migration not given one
#: (an earlier one's --bandwidth-mbps stays in the QEMU otherwise).
DEFAULT_MAX_BANDWIDTH = 128 << 20
_FINAL = ("completed", "failed", "cancelled")
QMP_TIMEOUT = 10.0
#: Seconds a QEMU that stalled mid-migration is given to answer once the target is gone.
STALLED_RESUME_WAIT = 1.0
#: The recoverer after a stall (migrate-recover): how long it waits for QEMU to answer
#: again, how often it asks, and how long for the agent before mounting the share again.
RECOVER_WAIT = 900.0
RECOVER_POLL = 2.0
AGENT_AFTER_RECOVERY = 120.0
#: Seconds a share detached lazily (--force-unmount) may stay in use in the guest.
FORCED_RELEASE_WAIT = 10.0
_ACTIVE = ("setup", "active", "pre-switchover", "device", "wait-unplug")


class QemuStalled(Timeout):
    """The source QEMU stopped answering mid-migration. At the switch-over QEMU flushes
    the guest's disks holding its global lock, with no timeout: a Ceph cluster that does
    not answer keeps it from answering anything until the cluster is back. Nothing more
    can be asked of it then; once the disk answers, the stream to the target (removed
    meanwhile) fails and QEMU runs the guest on by itself."""


@dataclass(frozen=True)
class MigrationProgress:
    status: str
    elapsed: float
    transferred: int
    remaining: int
    total: int
    dirty_rate: int  # bytes/s dirtied in the guest
    expected_downtime_ms: int | None

    def describe(self) -> str:
        downtime = ("?" if self.expected_downtime_ms is None
                    else f"{self.expected_downtime_ms} ms")
        return (f"{self.elapsed:5.1f}s {self.status}: {format_bytes(self.transferred)} sent, "
                f"{format_bytes(self.remaining)} remaining, dirty rate "
                f"{format_bytes(self.dirty_rate)}/s, expected downtime {downtime}")


@dataclass(frozen=True)
class MigrationResult:
    name: str
    source: str
    target: str
    via: str
    downtime_ms: float  # measured: the source paused -> the target's guest running
    qemu_downtime_ms: int | None  # what QEMU counted (stop to the end of the stream)
    total_s: float  # to the end: the source QEMU gone, its files removed
    switchover_s: float  # to the switch-over: the guest running there, the definition moved
    transferred: int
    share: str  # what became of the shared folder there ("" when none was mounted)
    share_forced: bool = False  # it was in use: detached lazily (--force-unmount)


ProgressSink = Callable[[MigrationProgress], None]
#: Asked often until the switch-over (True: stop here, the VM runs on as before); the
#: dashboard's cancel key. Never asked once the target was told to take the VM.
CancelCheck = Callable[[], bool]
#: Seconds between two looks at a cancel check while waiting for the target.
CANCEL_POLL = 0.1


def _cancelled(name: str, host: str) -> OperationFailed:
    return OperationFailed(f"{name}: the migration to {host} was cancelled; it runs on this "
                           "host as before")


async def _unless_cancelled(waited: Awaitable[T], cancelled: CancelCheck | None, name: str,
                            host: str) -> T:
    """``waited``, or :func:`_cancelled` as soon as ``cancelled()`` says so."""
    if cancelled is None:
        return await waited
    task = asyncio.ensure_future(waited)
    try:
        while not task.done():
            if cancelled():
                raise _cancelled(name, host)
            await asyncio.wait({task}, timeout=CANCEL_POLL)
        return task.result()
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await task


def progress_from(state: Mapping[str, Any], elapsed: float) -> MigrationProgress:
    ram = state.get("ram")
    ram = ram if isinstance(ram, Mapping) else {}
    page = int(ram.get("page-size") or 4096)
    expected = state.get("expected-downtime")
    return MigrationProgress(
        status=str(state.get("status", "?")), elapsed=elapsed,
        transferred=int(ram.get("transferred") or 0),
        remaining=int(ram.get("remaining") or 0), total=int(ram.get("total") or 0),
        dirty_rate=int(ram.get("dirty-pages-rate") or 0) * page,
        expected_downtime_ms=int(expected) if isinstance(expected, int) else None)


def check_migratable(spec: VmSpec, paths: VmPaths) -> None:
    """Refuse, with the reason, a VM whose state cannot go over the wire alone."""
    if not spec.disk.is_rbd:
        raise InvalidInput(
            f"{spec.name}: its disk {spec.disk.describe()} is a local file; live migration "
            "needs every disk on a Ceph cluster both hosts reach (stop it and move it with "
            "--offline: the disk is copied)")
    if spec.iso and not is_installed(paths):
        raise InvalidInput(f"{spec.name}: boots from the local ISO {spec.iso}; mark it "
                           "installed (`hypercore mark-installed`) before migrating it")
    if spec.shared and spec.shared_mode is SharedMode.VIRTIOFS:
        raise InvalidInput(f"{spec.name}: a virtiofs share cannot migrate (QEMU 7.2); "
                           f"`hypercore set {spec.name} shared_mode=9p` and boot it again")


@dataclass(frozen=True)
class MigrationPlan:
    """What a live migration of a running VM would move (the dashboard's confirmation)."""

    name: str
    disk: str  # the RBD image, which stays on the cluster
    ram_mb: int
    share: bool  # a 9p share: unmounted in the guest, mounted again there


def plan_migration(ctx: Context, name: str) -> MigrationPlan:
    """The running VM ``name`` as a live migration would move it; ``InvalidState`` when it
    does not run, :func:`check_migratable`'s reason when it cannot migrate live."""
    running = vmstate.require_running(ctx, name)
    spec = running.spec
    check_migratable(spec, running.paths)
    return MigrationPlan(name, spec.disk.describe(), spec.ram_mb, spec.shared)


class TargetSession:
    """The ``migrate-incoming`` session there: JSON lines both ways."""

    def __init__(self, host: str, proc: asyncio.subprocess.Process) -> None:
        self.host = host
        self.proc = proc
        assert proc.stdout is not None and proc.stderr is not None
        self.stdout: asyncio.StreamReader = proc.stdout
        self.stderr_task = asyncio.create_task(_read_all(proc.stderr))

    def send(self, message: Mapping[str, Any]) -> None:
        assert self.proc.stdin is not None
        if self.ended() or self.proc.stdin.is_closing():
            return  # (writes to a closed pipe would make asyncio warn on stderr)
        with contextlib.suppress(ConnectionError, RuntimeError):
            self.proc.stdin.write(json.dumps(message).encode() + b"\n")

    async def send_bytes(self, data: bytes, what: str) -> None:
        """Raw bytes (a disk's) after the JSON lines, waited for while the pipe is full."""
        assert self.proc.stdin is not None
        if self.ended():
            raise OperationFailed(await self.why_ended(what))
        try:
            self.proc.stdin.write(data)
            await self.proc.stdin.drain()
        except (ConnectionError, RuntimeError):
            raise OperationFailed(await self.why_ended(what)) from None

    async def receive(self, timeout: float, what: str) -> dict[str, Any]:
        try:
            message = await read_message(self.stdout, timeout)
        except Timeout:
            raise Timeout(f"{self.host}: no answer {what} within {timeout:g} s") from None
        if message is None:
            raise OperationFailed(await self.why_ended(what))
        return message

    async def why_ended(self, what: str) -> str:
        """Why the session ended: the target's own error line, else ssh's exit code."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.proc.wait(), 5)
        said = b""
        with contextlib.suppress(TimeoutError):
            said = await asyncio.wait_for(asyncio.shield(self.stderr_task), 2)
        lines = [line for line in said.decode(errors="replace").splitlines() if line.strip()]
        if lines:
            return f"{self.host}: {printable(lines[-1].removeprefix('hypercore: error: '))}"
        if self.proc.returncode == ssh.SSH_FAILED:
            return f"{self.host}: the SSH connection was lost {what}"
        return f"{self.host}: the target ended {what} (exit code {self.proc.returncode})"

    def ended(self) -> bool:
        return self.proc.returncode is not None or self.stdout.at_eof()

    async def close(self, *, abort: bool) -> None:
        if abort and self.proc.returncode is None:
            self.send({"abort": True})
        if self.proc.stdin is not None:
            with contextlib.suppress(Exception):
                self.proc.stdin.close()
        try:
            await asyncio.wait_for(self.proc.wait(), 20)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            await self.proc.wait()
        self.stderr_task.cancel()


async def _read_all(stream: asyncio.StreamReader) -> bytes:
    data = b""
    while chunk := await stream.read(65536):
        data = (data + chunk)[-8192:]
    return data


async def migrate_vm(ctx: Context, name: str, host_name: str, *, via: str | None = None,
                     downtime_ms: int = DEFAULT_DOWNTIME_MS,
                     bandwidth_mbps: int | None = None, timeout: float = DEFAULT_TIMEOUT,
                     force_unmount: bool = False,
                     progress: ProgressSink | None = None,
                     cancelled: CancelCheck | None = None) -> MigrationResult:
    """Move the running VM ``name`` to ``host_name`` (see the module). ``cancelled``:
    asked until the switch-over; True ends the migration there (``OperationFailed``, the
    VM running here as before, the target cleaned)."""
    if via is not None and (not via.startswith("tcp:") or "," in via or via.count(":") < 2):
        raise InvalidInput(f"--via must be tcp:HOST:PORT (an address of the target), "
                           f"not {via!r}")
    host = hosts_registry.get_host(ctx, host_name)
    if host.is_local:
        raise InvalidInput(f"{host_name!r} is this host: name another one (`hypercore "
                           "hosts list`)")
    running = vmstate.require_running(ctx, name)
    spec, paths = running.spec, running.paths
    check_migratable(spec, paths)
    conn = HostConnection(ctx, host)
    await _unless_cancelled(asyncio.to_thread(conn.ensure_ready), cancelled, name, host.name)
    async with locked_async(paths.lock, what=f"{name}: migrate", timeout=vmstate.LOCK_WAIT):
        state, pid = vmstate.process_state(paths)
        if state is not VmState.RUNNING or pid is None:
            raise InvalidState(f"{name} is not running ({state.value})")
        accel = accel_of(process.process_argv(pid) or [])
        if accel is None:
            raise OperationFailed(f"{name}: cannot tell the accelerator of its QEMU (pid {pid})")
        return await _migrate_locked(ctx, spec, paths, conn, accel=accel, via=via,
                                     downtime_ms=downtime_ms, bandwidth_mbps=bandwidth_mbps,
                                     timeout=timeout, force_unmount=force_unmount,
                                     progress=progress, pid=pid, cancelled=cancelled)


async def _migrate_locked(ctx: Context, spec: VmSpec, paths: VmPaths, conn: HostConnection,
                          *, accel: str, via: str | None, downtime_ms: int,
                          bandwidth_mbps: int | None, timeout: float, force_unmount: bool,
                          progress: ProgressSink | None, pid: int,
                          cancelled: CancelCheck | None = None) -> MigrationResult:
    name = spec.name
    started = time.monotonic()
    proc = await remote.start(ctx, conn.host, ["migrate-incoming", name],
                              stdin=subprocess.PIPE, own_session=True)
    target = TargetSession(conn.name, proc)
    target.send({"definition": spec.to_dict(), "accel": accel, "via": via,
                 "installed": is_installed(paths) if spec.iso else None,
                 "boot_from_cdrom": False, "deadline": timeout + READY_WAIT + COMMIT_WAIT})
    forward: Path | None = None
    remote_socket = ""
    mountpoint: str | None = None
    switched = False
    stalled = False
    try:
        ready = await _unless_cancelled(target.receive(READY_WAIT, "while its QEMU started"),
                                        cancelled, name, conn.name)
        log.info("%s: the target on %s listens after %.2f s", name, conn.name,
                 time.monotonic() - started)
        if not ready.get("ready"):
            raise OperationFailed(f"{conn.name}: the target did not get ready")
        if via is None:
            remote_socket = str(ready.get("socket"))
            forward = ctx.layout.ssh_dir / f"mig-{secrets.token_hex(6)}.sock"
            ensure_private_dir(ctx.layout.ssh_dir)
            await asyncio.to_thread(ssh.forward_socket, conn.target, forward, remote_socket)
            uri = f"unix:{forward}"
        else:
            uri = via
        if cancelled is not None and cancelled():
            raise _cancelled(name, conn.name)
        unmounted = await _unmount_share(spec, paths, force=force_unmount)
        left = records.read_share_unmount(paths) if spec.shared else None
        if unmounted is None and left is not None:  # owed since an earlier operation
            unmounted = shared.GuestUnmount(left.mountpoint)
        mountpoint = unmounted.mountpoint if unmounted is not None else None
        forced = unmounted is not None and unmounted.forced
        log.info("%s: share %s; migrating from %.2f s", name,
                 f"unmounted from {mountpoint}{' by force' if forced else ''}"
                 if mountpoint else "not mounted", time.monotonic() - started)
        async with qmp_session(paths.qmp_socket, vm_name=name, timeout=5.0,
                               lock_timeout=10.0, events=True) as qmp:
            if forced:
                await _wait_share_released(qmp, name, target, str(mountpoint))
            final, stopped_at = await _run_migration(
                qmp, name, target, uri, downtime_ms=downtime_ms,
                bandwidth_mbps=bandwidth_mbps, deadline=started + timeout,
                progress=progress, started=started, cancelled=cancelled)
            # The switch-over: the target takes the definition and runs the guest.
            switch_started = time.time()
            target.send({"commit": True, "mountpoint": mountpoint})
            answer = await _switch_over_answer(target, name)
            if answer.get("committed") is False:  # the guest never ran there: resumed here
                raise OperationFailed(f"{conn.name}: the switch-over failed there: "
                                      f"{printable(str(answer.get('error')))}")
            if answer.get("committed") is not True:
                switched = True  # unknown: never run the guest twice
                raise OperationFailed(
                    f"{name}: the switch-over's answer from {conn.name} was lost "
                    f"({answer.get('lost', 'no answer')}); the VM is left paused here: check "
                    f"`hypercore --host {conn.name} list` and resume it on one host only")
            switched = True
            resumed = time.time()
            downtime = (resumed - (stopped_at or switch_started)) * 1000
            switched_after = time.monotonic() - started
            # (QEMU may answer only once it exited, which librbd can delay by its 5 s
            # notify timeout while a killed client's watch on the image lingers)
            with contextlib.suppress(HypercoreError):
                await qmp.execute("quit", timeout=1.0)
        log.info("%s: switched over after %.2f s; removing it here", name, switched_after)
        await asyncio.to_thread(_remove_here, paths, pid)
        total = time.monotonic() - started
        done: dict[str, Any] = {}
        with contextlib.suppress(HypercoreError):
            done = await target.receive(COMMIT_WAIT, "after the switch-over")
        share = str(done.get("share", "")) if mountpoint else ""
        qemu_downtime = final.get("downtime")
        ram = final.get("ram")
        if not isinstance(ram, Mapping):
            ram = {}
        result = MigrationResult(
            name=name, source=LOCAL_HOST, target=conn.name,
            via=via or f"ssh {conn.host.destination}", downtime_ms=downtime,
            qemu_downtime_ms=qemu_downtime if isinstance(qemu_downtime, int) else None,
            total_s=total, switchover_s=switched_after,
            transferred=int(ram.get("transferred") or 0), share=share, share_forced=forced)
        log.info("%s: migrated to %s over %s: downtime %.0f ms (QEMU: %s ms), running there "
                 "after %.1f s, total %.1f s, %s sent", name, conn.name, result.via, downtime,
                 result.qemu_downtime_ms, switched_after, total,
                 format_bytes(result.transferred))
        return result
    except BaseException as exc:
        if not switched:
            reason = exc if isinstance(exc, HypercoreError) else type(exc).__name__
            log.warning("%s: migration to %s failed (%s); the VM runs here as before", name,
                        conn.name, reason)
            if isinstance(exc, QemuStalled):
                stalled = True
                # Neither QEMU nor the paused guest answers now: the target goes at once
                # (below), QEMU resumes the guest by itself, and the share's unmount note
                # stays for the next operation or a dashboard to mount it again.
                log.warning("%s: QEMU stalled; the share stays unmounted until then", name)
            else:
                with contextlib.suppress(HypercoreError):
                    await _resume_here(paths, name)
                if mountpoint is not None:
                    await shared.remount_after_ram_change(spec, paths, mountpoint,
                                                          why="for a migration")
        raise
    finally:
        await target.close(abort=not switched)
        if stalled:
            # The target's QEMU is gone now: were the stall only a slow moment in which the
            # migration completed, the guest would wait paused here. (A QEMU still stuck
            # does not answer: it resumes the guest by itself once its disk answers.)
            with contextlib.suppress(HypercoreError):
                await _resume_here(paths, name, timeout=STALLED_RESUME_WAIT)
            start_stall_recovery(ctx, name)
        if not switched and target.proc.returncode not in (0, 1):
            # Its session was cut off (killed, SSH lost): ask again, in a new one.
            await abort_there(ctx, conn, name)
        if forward is not None:
            with contextlib.suppress(HypercoreError):
                await asyncio.to_thread(ssh.forward_socket, conn.target, forward,
                                        remote_socket, cancel=True)
            with contextlib.suppress(OSError):
                forward.unlink()


def start_stall_recovery(ctx: Context, name: str) -> int | None:
    """After a migration given up on a stalled source QEMU: ``hypercore migrate-recover
    NAME``, detached (output appended to ``migrate-recover.log`` in the VM's directory),
    which sees the guest running again once QEMU answers (:func:`recover_after_stall`).
    Its pid (None: not started; logged)."""
    argv = [sys.executable, "-m", "hypercore_tui", "migrate-recover", name]
    paths = ctx.vm_paths(name)
    try:
        pid = process.spawn_detached(argv, log_path=paths.migrate_recover_log,
                                     env=share_mounter.detached_env(ctx),
                                     what=f"hypercore migrate-recover {name}")
    except HypercoreError as exc:
        log.warning("%s: the recoverer was not started: %s", name, exc)
        return None
    log.info("%s: recoverer started (pid %d, log %s)", name, pid, paths.migrate_recover_log)
    return pid


async def recover_after_stall(ctx: Context, name: str, *, wait: float = RECOVER_WAIT,
                              poll: float = RECOVER_POLL) -> str:
    """Wait (at most ``wait`` s) for the source QEMU of a migration given up on a stall to
    answer again, then see the guest run: once its disk answers, QEMU's stream to the
    removed target fails and it resumes the guest itself; but the stream may have been
    taken in whole by the dying SSH forward first, and QEMU then sees a completed
    migration and leaves the guest paused (``postmigrate``) for a target that no longer
    exists: resumed here (the target never took the VM: its definition and QEMU were
    removed). Then the share the migration unmounted is mounted again. What it did, in
    one line."""
    paths = ctx.vm_paths(name)
    deadline = time.monotonic() + wait
    resumed = False
    seen = ""  # (what it saw last: each change is logged, for a recovery that takes long)
    while True:
        state, _ = vmstate.process_state(paths)
        if state is not VmState.RUNNING:
            return f"{name}: QEMU is gone; nothing to do"
        saw = ""
        try:
            async with locked_async(paths.lock, what=f"{name}: recover after a migration",
                                    timeout=vmstate.LOCK_WAIT), \
                    qmp_session(paths.qmp_socket, vm_name=name, timeout=poll,
                                lock_timeout=poll) as qmp:
                status = await qmp.execute("query-status", timeout=poll)
                run = status.get("status") if isinstance(status, Mapping) else None
                migration = await qmp.execute("query-migrate", timeout=poll)
                going = isinstance(migration, Mapping) and migration.get("status") in _ACTIVE
                saw = (f"the guest is {run}, the migration "
                       f"{migration.get('status') if isinstance(migration, Mapping) else '?'}")
                if run in ("postmigrate", "finish-migrate") and not going:
                    await qmp.execute("cont", timeout=QMP_TIMEOUT)
                    resumed = True
                    log.warning("%s: the guest was left paused (%s) by the migration given "
                                "up: resumed here", name, run)
                    break
                if run == "running":
                    break  # (it ran the guest on by itself)
                if run is not None and not going and run != "finish-migrate":
                    return f"{name}: the guest is {run}; left as it is"  # (not ours)
        except HypercoreError as exc:
            saw = f"QEMU does not answer yet ({exc})"
        if saw != seen:
            log.warning("%s: %s", name, printable(saw))
            seen = saw
        if time.monotonic() > deadline:
            return f"{name}: QEMU did not answer within {wait:g} s; left as it is"
        await asyncio.sleep(poll)
    said = f"{name}: the guest runs here again" + (" (resumed)" if resumed else "")
    spec = registry.load(ctx, name)
    left = records.read_share_unmount(paths) if spec.shared else None
    if left is not None:
        answered = await _agent_within(paths, name, AGENT_AFTER_RECOVERY)
        if answered:
            async with locked_async(paths.lock, what=f"{name}: recover after a migration",
                                    timeout=vmstate.LOCK_WAIT):
                await shared.remount_after_ram_change(spec, paths, left.mountpoint,
                                                      why="for a migration")
        mounted = records.read_share_unmount(paths) is None
        said += "; shared folder mounted again" if mounted else \
            "; the shared folder is still unmounted (a dashboard or the next operation " \
            "mounts it)"
    return said


async def _agent_within(paths: VmPaths, name: str, wait: float) -> bool:
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        with contextlib.suppress(HypercoreError):
            async with agent_session(paths.qga_socket, vm_name=name, timeout=3.0,
                                     lock_timeout=5.0) as agent:
                await agent.ping(timeout=3.0)
                return True
        await asyncio.sleep(1.0)
    return False


async def _switch_over_answer(target: TargetSession, name: str) -> dict[str, Any]:
    """The target's answer to ``commit`` (``{"lost": why}`` without one). Not cancelled by
    a Ctrl-C or a SIGTERM meanwhile: the target may be running the guest already, so the
    only safe ends are its answer or the VM left paused here (never two running copies);
    the interruption is logged and the migration finishes."""
    receiving = asyncio.ensure_future(target.receive(COMMIT_WAIT, "to the switch-over"))
    while True:
        try:
            return await asyncio.shield(receiving)
        except HypercoreError as exc:
            return {"lost": str(exc)}
        except asyncio.CancelledError:
            if receiving.done() and receiving.cancelled():
                raise
            log.warning("%s: interrupted during the switch-over: it finishes first", name)
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()


async def abort_there(ctx: Context, conn: HostConnection, name: str) -> None:
    """Best effort: ``migrate-incoming NAME --abort`` there (logged when it fails)."""
    try:
        proc = await asyncio.to_thread(remote.run_captured, ctx, conn.host,
                                       ["migrate-incoming", name, "--abort"], timeout=30)
    except HypercoreError as exc:
        log.warning("%s: could not clean up on %s: %s", name, conn.name, exc)
        return
    if proc.returncode != 0:
        log.warning("%s: cleaning up on %s failed: %s", name, conn.name,
                    proc.stderr.decode(errors="replace").strip()[-300:])


async def _run_migration(qmp: QmpSession, name: str, target: TargetSession, uri: str, *,
                         downtime_ms: int, bandwidth_mbps: int | None, deadline: float,
                         progress: ProgressSink | None, started: float,
                         cancelled: CancelCheck | None = None
                         ) -> tuple[dict[str, Any], float | None]:
    """Set up and start the migration, follow it to ``completed``; QEMU's last
    ``query-migrate`` and when the source paused (its STOP event). Any failure or an
    interrupt cancels it (the source QEMU then runs on)."""
    state = await qmp.execute("query-migrate", timeout=QMP_TIMEOUT)
    if isinstance(state, Mapping) and state.get("status") in _ACTIVE:
        raise Busy(f"{name}: a migration is under way in its QEMU already")
    await qmp.execute("migrate-set-capabilities", {"capabilities": [
        {"capability": "auto-converge", "state": True},
        {"capability": "events", "state": True}]}, timeout=QMP_TIMEOUT)
    parameters: dict[str, Any] = {
        "downtime-limit": downtime_ms,
        "max-bandwidth": (DEFAULT_MAX_BANDWIDTH if bandwidth_mbps is None
                          else bandwidth_mbps * 125_000)}  # megabits/s -> bytes/s
    await qmp.execute("migrate-set-parameters", parameters, timeout=QMP_TIMEOUT)
    qmp.pending_events()
    await qmp.execute("migrate", {"uri": uri}, timeout=QMP_TIMEOUT)
    stopped_at: float | None = None
    next_poll = 0.0
    try:
        while True:
            # QEMU's MIGRATION events say the end at once (the switch-over waits for it);
            # query-migrate every POLL seconds gives the progress.
            for event in qmp.pending_events():
                if event.name == "STOP":
                    stopped_at = event.timestamp
                elif event.name == "RESUME":
                    stopped_at = None
                elif event.name == "MIGRATION" and event.data.get("status") in _FINAL:
                    next_poll = 0.0
            if cancelled is not None and cancelled():
                raise _cancelled(name, target.host)
            if time.monotonic() < next_poll:
                await asyncio.sleep(EVENT_POLL)
                continue
            next_poll = time.monotonic() + POLL
            target.send({"ping": True})  # (the target gives up after 15 s without one)
            try:
                state = await qmp.execute("query-migrate", timeout=QMP_TIMEOUT)
            except Timeout:
                raise QemuStalled(
                    f"{name}: its QEMU stopped answering during the migration (is the "
                    "Ceph cluster reachable? QEMU waits for its disk before the "
                    "switch-over); migration given up: the guest runs on here once its "
                    "disk answers again") from None
            if not isinstance(state, dict):
                raise OperationFailed(f"{name}: QEMU answered query-migrate oddly")
            status = state.get("status")
            if status == "completed":
                for event in qmp.pending_events():
                    if event.name == "STOP":
                        stopped_at = event.timestamp
                return state, stopped_at
            if status in ("failed", "cancelled", "cancelling"):
                why = state.get("error-desc") or status
                if target.ended():
                    why = f"{why}; {await target.why_ended('during the migration')}"
                raise OperationFailed(f"{name}: the migration failed: {printable(why)}")
            if target.ended():
                raise OperationFailed(await target.why_ended("during the migration"))
            if time.monotonic() > deadline:
                raise Timeout(f"{name}: the migration did not finish in time; cancelled "
                              "(a guest dirtying memory faster than the link carries it: "
                              "raise --downtime-ms or --bandwidth-mbps)")
            if progress is not None:
                progress(progress_from(state, time.monotonic() - started))
    except BaseException as exc:
        if not isinstance(exc, QemuStalled):  # (a stalled QEMU would not answer either)
            await _cancel(qmp, name)
        raise


async def _cancel(qmp: QmpSession, name: str) -> None:
    """``migrate_cancel`` and wait until QEMU says it is over (best effort)."""
    with contextlib.suppress(HypercoreError):
        await qmp.execute("migrate_cancel", timeout=QMP_TIMEOUT)
        until = time.monotonic() + 10
        while time.monotonic() < until:
            state = await qmp.execute("query-migrate", timeout=QMP_TIMEOUT)
            if not isinstance(state, Mapping) or state.get("status") not in (
                    *_ACTIVE, "cancelling"):
                break
            await asyncio.sleep(0.1)
    log.info("%s: migration cancelled", name)


async def _resume_here(paths: VmPaths, name: str, *, timeout: float = 5.0) -> None:
    """The source QEMU runs the guest again if the failed migration left it paused."""
    async with qmp_session(paths.qmp_socket, vm_name=name, timeout=timeout,
                           lock_timeout=10.0) as qmp:
        status = await qmp.execute("query-status", timeout=QMP_TIMEOUT)
        if isinstance(status, Mapping) and status.get("status") in (
                "postmigrate", "finish-migrate", "paused"):
            await qmp.execute("cont", timeout=QMP_TIMEOUT)
            log.info("%s: resumed here after the failed migration", name)


async def _unmount_share(spec: VmSpec, paths: VmPaths, *, force: bool
                         ) -> shared.GuestUnmount | None:
    """Unmount the 9p share in the guest (a mounted export blocks migration); where it
    was, or None when it was not mounted. One that cannot be unmounted refuses (``force``:
    one in use is detached lazily instead)."""
    if not spec.shared:
        return None
    try:
        async with agent_session(paths.qga_socket, vm_name=spec.name, timeout=3.0) as agent:
            return await shared.unmount_share_in_guest(
                agent, spec, paths, purpose="to migrate", force=force, why="for a migration",
                otherwise="" if force else ", or migrate with --force-unmount")
    except (AgentUnavailable, Timeout, Busy) as exc:
        log.info("%s: cannot check the share before migrating: %s", spec.name, exc)
        return None


def share_blockers(state: Mapping[str, Any]) -> list[str]:
    """What of ``query-migrate``'s ``blocked-reasons`` is the shared folder's (QEMU blocks
    migration while a guest holds a 9p export: "... VirtFS export path ... is mounted")."""
    reasons = state.get("blocked-reasons")
    if not isinstance(reasons, list):
        return []
    return [str(reason) for reason in reasons if "VirtFS" in str(reason)]


async def _wait_share_released(qmp: QmpSession, name: str, target: TargetSession,
                               mountpoint: str) -> None:
    """After a lazy unmount: wait until the guest's last use of the share ends (QEMU then
    drops its migration blocker), at most :data:`FORCED_RELEASE_WAIT` seconds."""
    until = time.monotonic() + FORCED_RELEASE_WAIT
    while True:
        state = await qmp.execute("query-migrate", timeout=QMP_TIMEOUT)
        if not isinstance(state, Mapping) or not share_blockers(state):
            return
        if time.monotonic() > until:
            raise InvalidState(
                f"{name}: the shared folder was detached from {mountpoint} in the guest "
                f"(--force-unmount), but a program there still has files or its working "
                f"directory under it after {FORCED_RELEASE_WAIT:g} s; end it and try again")
        target.send({"ping": True})
        await asyncio.sleep(0.2)


def _remove_here(paths: VmPaths, pid: int) -> None:
    """After the switch-over: the source QEMU gone, its runtime files and definition
    removed (the disk is on Ceph: nothing else is the VM's here)."""
    deadline = time.monotonic() + 10
    while process.process_alive(pid, pidfile=None) and time.monotonic() < deadline:
        time.sleep(0.05)
    if process.process_alive(pid, pidfile=None):
        process.send_signal(pid, signal.SIGKILL)
        time.sleep(0.2)
    clean_runtime(paths)
    shutil.rmtree(paths.run_dir, ignore_errors=True)  # (with the sockets' lock files)
    shutil.rmtree(paths.vm_dir, ignore_errors=True)
