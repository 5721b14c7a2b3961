"""The target side of a live migration (``hypercore migrate-incoming NAME``, internal: the
source runs it here over SSH, see ``services/migrate.py``).

One session, driven by JSON lines on stdin, answered by JSON lines on stdout:

1. the source sends ``{"definition": ..., "accel": ..., "uri": ...}``; the VM's
   definition is kept pending (``vms/NAME/incoming.json``: no command sees the VM here),
   QEMU starts with the same argv plus ``-S -incoming defer`` and ``migrate-incoming``
   listens (a unix socket in the VM's runtime dir, or ``tcp:ADDR``); answered with
   ``{"ready": true, "socket": ...}``;
2. ``{"commit": true, "mountpoint": ...}`` once the source's migration completed: the
   definition becomes ``vm.json`` (this host owns the VM), ``cont`` runs the guest here;
   answered ``{"committed": true}``, then the share is mounted again in the guest and
   ``{"done": true, "share": ...}`` ends the session;
3. ``{"abort": true}``, the end of stdin (the source died, SSH dropped), 15 s without
   a line (the source sends ``{"ping": true}`` as the stream flows: a link gone silent),
   a deadline passed, or this QEMU died: the QEMU is killed and everything made here is removed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import time
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any

from hypercore_tui.adapters import process
from hypercore_tui.adapters.fs import atomic_write_json, locked, locked_async
from hypercore_tui.adapters.qmp import QmpCommandError, qmp_session
from hypercore_tui.core.argv import LaunchPlan, build_qemu_argv
from hypercore_tui.core.errors import (
    AlreadyExists,
    HypercoreError,
    InvalidInput,
    InvalidState,
    OperationFailed,
    Timeout,
)
from hypercore_tui.core.layout import VmPaths
from hypercore_tui.core.models import DisplayKind, SharedMode, VmSpec
from hypercore_tui.core.text import printable
from hypercore_tui.services import boot, rbd_disks, registry, shared
from hypercore_tui.services.context import Context
from hypercore_tui.services.lifecycle import clean_runtime

log = logging.getLogger("hypercore.migrate")
log.addHandler(logging.NullHandler())

#: Seconds the source may take to send the definition.
PAYLOAD_WAIT = 30.0
QMP_TIMEOUT = 10.0
#: Seconds without a line from the source (it sends one every 0.5 s while the stream
#: flows) after which the migration in is given up: a link gone silent ends it here too.
SILENCE_LIMIT = 15.0
#: Seconds this QEMU may take to load the last of the state once the source sent it.
COMPLETE_WAIT = 10.0

Reply = Callable[[Mapping[str, Any]], None]


async def read_message(reader: asyncio.StreamReader, timeout: float) -> dict[str, Any] | None:
    """The next JSON line; None at the end of the stream. Raises :class:`Timeout`."""
    try:
        line = await asyncio.wait_for(reader.readline(), timeout)
    except TimeoutError:
        raise Timeout(f"no word from the other host within {timeout:g} s") from None
    if not line:
        return None
    try:
        data = json.loads(line)
    except ValueError:
        raise InvalidInput("the other host sent a line that is not JSON") from None
    if not isinstance(data, dict):
        raise InvalidInput("the other host sent a JSON line that is no object")
    return data


def _spec_from(name: str, payload: Mapping[str, Any]) -> VmSpec:
    definition = payload.get("definition")
    if not isinstance(definition, dict):
        raise InvalidInput("no VM definition was sent")
    spec = VmSpec.from_dict(definition)
    if spec.name != name:
        raise InvalidInput(f"the definition sent names {spec.name!r}, not {name!r}")
    if not spec.disk.is_rbd:
        raise InvalidInput(f"{name}: only VMs whose disks are on Ceph migrate live")
    if spec.shared and spec.shared_mode is SharedMode.VIRTIOFS:
        raise InvalidInput(f"{name}: a virtiofs share cannot migrate")
    return spec


def _uri(paths: VmPaths, payload: Mapping[str, Any]) -> str:
    via = payload.get("via")
    if via is None:
        return f"unix:{paths.migrate_socket}"
    if not isinstance(via, str) or not via.startswith("tcp:") or "," in via:
        raise InvalidInput(f"--via must be tcp:HOST:PORT, not {via!r}")
    return via


async def _listen(paths: VmPaths, uri: str, *, attempts: int = 3) -> None:
    """``migrate-incoming`` on the new QEMU. (Once, on a loaded machine, the session right
    after the start-up check failed its negotiation: tried again, QEMU alive.)"""
    for attempt in range(attempts):
        try:
            async with qmp_session(paths.qmp_socket, vm_name=paths.name, timeout=5.0) as qmp:
                await qmp.execute("migrate-set-capabilities", {"capabilities": [
                    {"capability": "events", "state": True}]}, timeout=QMP_TIMEOUT)
                await qmp.execute("migrate-incoming", {"uri": uri}, timeout=QMP_TIMEOUT)
                return
        except HypercoreError as exc:
            if attempt == attempts - 1 or isinstance(exc, QmpCommandError):
                raise
            log.info("%s: %s; trying again", paths.name, exc)
            await asyncio.sleep(0.2)


async def _switch_over(paths: VmPaths) -> None:
    """Take the VM: once this QEMU loaded the whole state, the definition becomes this
    host's and the guest runs (``cont``). A ``cont`` refused gives the definition back
    (the caller then removes this QEMU: the guest never ran here)."""
    name = paths.name
    async with qmp_session(paths.qmp_socket, vm_name=name, timeout=5.0) as qmp:
        # (the source is done sending: this QEMU may still be loading the last state)
        loading_until = time.monotonic() + COMPLETE_WAIT
        while True:
            state = await qmp.execute("query-migrate", timeout=QMP_TIMEOUT)
            status = state.get("status") if isinstance(state, dict) else None
            if status == "completed":
                break
            if status not in ("setup", "active", "device") or \
                    time.monotonic() > loading_until:
                raise OperationFailed(f"{name}: the migration in is {status}, not completed")
            await asyncio.sleep(0.02)
        # The switch-over: from here this host owns the VM.
        os.replace(paths.incoming_definition, paths.definition)
        try:
            await qmp.execute("cont", timeout=QMP_TIMEOUT)
        except QmpCommandError:
            os.replace(paths.definition, paths.incoming_definition)
            raise


def _last_line(log_file: Path) -> str:
    try:
        lines = [line for line in log_file.read_text(errors="replace").splitlines()
                 if line.strip()]
    except OSError:
        return "(no log)"
    return printable(lines[-1], limit=300) if lines else "(nothing in its log)"


def remove_pending(paths: VmPaths, *, keep_dir: bool = False) -> None:
    """Everything a migration in left here: its QEMU killed, its runtime files and its
    directory removed (never a VM this host owns: ``vm.json`` there stops it).
    ``keep_dir``: the directory stays (its lock is held), the pending definition goes."""
    pid = process.read_pidfile(paths.pidfile)
    if pid is None and paths.pid_record.exists():
        with contextlib.suppress(OSError, ValueError):
            pid = int(paths.pid_record.read_text().strip())
    if pid is not None and process.process_alive(pid, pidfile=None):
        argv = process.process_argv(pid) or []
        if "-incoming" in argv:  # (a pid reused by something else is left alone)
            process.send_signal(pid, signal.SIGKILL)
            deadline = time.monotonic() + 10
            while process.process_alive(pid, pidfile=None) and time.monotonic() < deadline:
                time.sleep(0.05)
    clean_runtime(paths)
    shutil.rmtree(paths.run_dir, ignore_errors=True)  # (with the sockets' lock files)
    if paths.definition.exists():
        return
    if keep_dir:
        with contextlib.suppress(OSError):
            paths.incoming_definition.unlink()
    else:
        shutil.rmtree(paths.vm_dir, ignore_errors=True)


def abort_pending(ctx: Context, name: str) -> None:
    """``migrate-incoming NAME --abort``: what a migration in whose session was cut off
    (its process killed, SSH lost) left here is removed; a VM this host owns is not
    touched, nor one whose migration in still runs (it cleans up after itself)."""
    paths = ctx.vm_paths(name)
    if registry.exists(ctx, name):
        raise InvalidState(f"{name} is defined on this host: nothing to abort")
    if paths.incoming_definition.exists():
        with locked(paths.lock, what=f"{name}: migrate in", timeout=0.0):
            remove_pending(paths, keep_dir=True)
        remove_pending(paths)


async def serve_incoming(ctx: Context, name: str, reader: asyncio.StreamReader,
                         reply: Reply) -> None:
    """One migration in, from the source's first line to its last (see the module)."""
    paths = ctx.vm_paths(name)
    payload = await read_message(reader, PAYLOAD_WAIT)
    if payload is None:
        raise OperationFailed(f"{name}: the source ended before sending the definition")
    spec = _spec_from(name, payload)
    uri = _uri(paths, payload)
    accel = payload.get("accel")
    if accel not in ("kvm", "tcg"):
        raise InvalidInput(f"unknown accelerator {accel!r}")
    deadline = payload.get("deadline", 3600)
    if not isinstance(deadline, int | float) or deadline <= 0:
        raise InvalidInput(f"bad deadline {deadline!r}")
    if registry.exists(ctx, name):
        raise AlreadyExists(f"a VM named {name!r} is defined on this host already")
    async with claimed_incoming(ctx, name):
        await _run(ctx, spec, paths, uri, accel, payload, reader, reply, float(deadline))


@contextlib.asynccontextmanager
async def claimed_incoming(ctx: Context, name: str) -> AsyncIterator[None]:
    """The VM's directory here, held for a move in (live or offline) under the VM's lock
    (another move in of this name is never touched): what an earlier one that was cut
    off left is removed first; on any failure before the definition is in place, all of
    it goes again."""
    paths = ctx.vm_paths(name)
    ctx.ensure_home()
    if paths.vm_dir.exists() and not paths.incoming_definition.exists():
        raise AlreadyExists(f"{paths.vm_dir} exists on this host (not a VM); remove it first")
    paths.vm_dir.mkdir(mode=0o700, exist_ok=True)
    owned = False
    try:
        async with locked_async(paths.lock, what=f"{name}: migrate in", timeout=2.0):
            owned = True
            if registry.exists(ctx, name):
                raise AlreadyExists(f"a VM named {name!r} is defined on this host already")
            if paths.incoming_definition.exists():  # an earlier move in left it
                await asyncio.to_thread(remove_pending, paths, keep_dir=True)
            yield
    except BaseException:
        if owned and not paths.definition.exists():
            await asyncio.to_thread(remove_pending, paths)
        raise


async def _run(ctx: Context, spec: VmSpec, paths: VmPaths, uri: str, accel: str,
               payload: Mapping[str, Any], reader: asyncio.StreamReader, reply: Reply,
               deadline: float) -> None:
    name = spec.name
    atomic_write_json(paths.incoming_definition, spec.to_dict())
    installed = payload.get("installed")
    if isinstance(installed, bool):
        atomic_write_json(paths.installation_state, {"isInstalled": installed})
    plan = LaunchPlan(qemu_binary=process.find_qemu(ctx.environ), accel=accel,
                      shared_dir=str(ctx.layout.shared_folder),
                      boot_from_cdrom=bool(payload.get("boot_from_cdrom")),
                      rbd_conf=ctx.ceph_conf, incoming=True)
    if spec.display is DisplayKind.SPICE:
        plan = await boot.with_spice_devices(spec, plan)
    boot.check_boot_files(spec, plan)
    await rbd_disks.check_reachable(ctx, spec, "migrating in")
    ctx.ensure_runtime(paths)
    argv = build_qemu_argv(spec, paths, plan)
    await asyncio.to_thread(process.launch_daemonized, argv, log_path=paths.qemu_log)
    pid = process.read_pidfile(paths.pidfile)
    if pid is not None:
        paths.pid_record.write_text(f"{pid}\n")
    try:
        await boot.wait_qmp_ready(paths, boot.QMP_READY_TIMEOUT)
        boot.make_sockets_private(paths)
        await _listen(paths, uri)
    except HypercoreError as exc:
        if pid is not None and not process.process_alive(pid, pidfile=None):
            raise OperationFailed(f"{name}: the target QEMU exited at start-up: "
                                  f"{_last_line(paths.qemu_log)}") from None
        raise exc from None
    with contextlib.suppress(OSError):
        os.chmod(paths.migrate_socket, 0o600)
    log.info("%s: waiting for the migration in (QEMU pid %s, %s)", name, pid, uri)
    reply({"ready": True, "socket": str(paths.migrate_socket), "pid": pid})

    until = time.monotonic() + deadline
    heard = time.monotonic()
    while True:
        try:
            message = await read_message(reader, 1.0)
        except Timeout:
            if pid is not None and not process.process_alive(pid, pidfile=None):
                raise OperationFailed(f"{name}: the target QEMU died; see its log "
                                      f"{paths.qemu_log}") from None
            if time.monotonic() > until:
                raise Timeout(f"{name}: the migration in did not finish within "
                              f"{deadline:g} s") from None
            if time.monotonic() - heard > SILENCE_LIMIT:
                raise Timeout(f"{name}: no word from the source for {SILENCE_LIMIT:g} s; "
                              "migration in given up") from None
            continue
        heard = time.monotonic()
        if message is None:
            raise OperationFailed(f"{name}: the source ended the migration (or the SSH "
                                  "connection was lost)")
        if message.get("abort"):
            raise OperationFailed(f"{name}: the source aborted the migration")
        if message.get("commit"):
            break
    mountpoint = message.get("mountpoint")
    try:
        await _switch_over(paths)
    except BaseException as exc:
        if not paths.definition.exists():  # the guest never ran here: the source resumes
            reason = str(exc) if isinstance(exc, HypercoreError) else type(exc).__name__
            reply({"committed": False, "error": reason})
        raise
    reply({"committed": True, "resumed_at": time.time()})
    log.info("%s: migrated in; runs here now (QEMU pid %s)", name, pid)
    share = ""
    if spec.shared and isinstance(mountpoint, str):
        try:
            await shared.remount_after_ram_change(spec, paths, mountpoint,
                                                  why="for a migration")
            share = f"mounted at {mountpoint}"
        except HypercoreError as exc:  # (remount logs; never fails the migration here)
            share = str(exc)
    reply({"done": True, "share": share})
