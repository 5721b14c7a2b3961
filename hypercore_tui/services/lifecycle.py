"""VM lifecycle: create, boot, stop, pause/resume/reset, delete, status, exec.

Every operation that changes a VM holds the VM's lock file, so two hypercore
processes (two dashboards, a dashboard and the CLI) act on one VM one at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import logging
import os
import secrets
import shutil
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from hypercore_tui.adapters import images, process
from hypercore_tui.adapters.fs import (
    atomic_write_bytes,
    atomic_write_json,
    check_regular_file,
    locked,
    locked_async,
    read_json,
)
from hypercore_tui.adapters.qga import ExecResult, agent_session
from hypercore_tui.adapters.qmp import qmp_session
from hypercore_tui.core.argv import BALLOON_ID, LaunchPlan, build_qemu_argv
from hypercore_tui.core.errors import (
    HypercoreError,
    InvalidInput,
    InvalidState,
    NotFound,
    OperationFailed,
    Timeout,
)
from hypercore_tui.core.layout import VmPaths
from hypercore_tui.core.models import (
    DiskKind,
    DiskSpec,
    NetSpec,
    SharedMode,
    VmSpec,
    VmState,
    mac_from_bytes,
    parse_rbd_disk,
    validate_resources,
)
from hypercore_tui.core.names import validate_vm_name
from hypercore_tui.core.sizes import parse_size
from hypercore_tui.services import bases, rbd_disks, records, registry, shared, vmstate
from hypercore_tui.services.context import Context

log = logging.getLogger("hypercore.vm")
log.addHandler(logging.NullHandler())

QMP_READY_TIMEOUT = 30.0
#: After resuming a VM that QEMU paused on a disk error: how long to watch for a new pause.
RESUME_SETTLE = 0.5


# -- create ---------------------------------------------------------------------------


@dataclass(frozen=True)
class CreateRequest:
    name: str
    ram_mb: int
    cpus: int
    disk: str | None = None  # None / "auto" / path / rbd:POOL/IMAGE[:conf=PATH]
    iso: str | None = None
    disk_size: str = "20G"
    kernel: str | None = None
    initrd: str | None = None
    append: str | None = None
    net: str = "user"
    shared: bool = True
    shared_mode: str = "9p"
    extra_args: tuple[str, ...] = ()


def host_memory_mb() -> int | None:
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) // 1024
    except OSError:
        return None
    return None


def create_vm(ctx: Context, req: CreateRequest) -> VmSpec:
    """Define a VM (and make its disk). A failure leaves nothing behind."""
    name = validate_vm_name(req.name)
    validate_resources(req.ram_mb, req.cpus)
    total = host_memory_mb()
    if total is not None and req.ram_mb > total:
        raise InvalidInput(f"RAM {req.ram_mb} MB is more than this host has ({total} MB)")
    net = NetSpec.parse(req.net)
    try:
        shared_mode = SharedMode(req.shared_mode)
    except ValueError:
        raise InvalidInput(f"invalid shared mode {req.shared_mode!r}: use 9p or virtiofs") from None
    iso = str(check_regular_file(req.iso, "ISO")) if req.iso else None
    kernel = str(check_regular_file(req.kernel, "kernel")) if req.kernel else None
    initrd = str(check_regular_file(req.initrd, "initrd")) if req.initrd else None
    if (req.initrd or req.append) and not req.kernel:
        raise InvalidInput("--initrd and --append need --kernel")
    size = parse_size(req.disk_size)
    disk_arg = req.disk or "auto"
    rbd_disk = parse_rbd_disk(disk_arg) if disk_arg.startswith("rbd:") else None
    if rbd_disk is not None:
        rbd_disks.conf_for(ctx, rbd_disk)  # no cluster configured: fail before anything

    paths = registry.claim_vm_dir(ctx, name)
    disk: DiskSpec | None = None
    try:
        if rbd_disk is not None:
            disk = rbd_disks.prepare_disk(ctx, rbd_disk, size)
        elif disk_arg == "auto":
            images.create_image(paths.default_disk, size, fmt="qcow2")
            disk = DiskSpec(kind=DiskKind.QCOW2, path=str(paths.default_disk), owned=True)
        else:
            image = check_regular_file(disk_arg, "disk image")
            info = images.image_info(image)
            if info.format not in ("qcow2", "raw"):
                raise InvalidInput(f"disk image {disk_arg!r} is {info.format}; use qcow2 or raw")
            disk = DiskSpec(kind=DiskKind(info.format), path=str(image), owned=False)
        spec = VmSpec(
            name=name, ram_mb=req.ram_mb, cpus=req.cpus, disk=disk,
            mac=mac_from_bytes(secrets.token_bytes(3)), iso=iso, kernel=kernel, initrd=initrd,
            append=req.append, net=net, shared=req.shared, shared_mode=shared_mode,
            extra_args=tuple(req.extra_args),
            created=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        )
        if iso:
            write_installation_state(paths, installed=False)
        registry.save(ctx, spec)
    except BaseException:
        shutil.rmtree(paths.vm_dir, ignore_errors=True)
        if disk is not None and disk.is_rbd:
            rbd_disks.discard_disk(ctx, disk)  # only an image made in this attempt (owned)
        raise
    log.info("created VM %s", name)
    return spec


def write_installation_state(paths: VmPaths, *, installed: bool) -> None:
    """The original Hypercore's installation_state.json."""
    now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    atomic_write_json(paths.installation_state, {"isInstalled": installed, "lastModified": now})


def is_installed(paths: VmPaths) -> bool:
    try:
        data = read_json(paths.installation_state)
    except FileNotFoundError:
        return True
    except OperationFailed:
        return False
    return bool(isinstance(data, dict) and data.get("isInstalled"))


def mark_installed(ctx: Context, name: str, installed: bool = True) -> None:
    spec = registry.load(ctx, name)
    if not spec.iso:
        raise InvalidInput(f"{name} has no ISO; there is nothing to mark")
    write_installation_state(ctx.vm_paths(name), installed=installed)


# -- status (the probe itself is services.vmstate) ------------------------------------


@dataclass(frozen=True)
class VmStatus:
    name: str
    state: VmState
    pid: int | None
    spec: VmSpec | None
    agent: bool = False
    error: str | None = None
    #: What the user should be told about a boot (a disk repaired after a crash).
    notes: tuple[str, ...] = ()
    #: Why the boot used TCG although /dev/kvm opens (about the host, not the VM).
    accel_note: str | None = None


async def vm_status(ctx: Context, name: str, *, check_agent: bool = True) -> VmStatus:
    paths = ctx.vm_paths(name)
    spec: VmSpec | None
    error = None
    try:
        spec = registry.load(ctx, name)
    except NotFound:
        raise
    except HypercoreError as exc:
        spec, error = None, str(exc)
    state, pid = vmstate.process_state(paths)
    agent = False
    if state is VmState.RUNNING and not paths.run_dir.exists():
        error = error or (f"{name}: QEMU runs but its runtime dir was removed; "
                          f"`hypercore stop-vm {name} --force` stops it")
    elif state is VmState.RUNNING:
        try:
            state, reason = await vmstate.query_status(paths)
            error = error or reason
        except HypercoreError as exc:
            # Alive but the monitor is busy or slow: still running, say why it is unknown.
            error = error or str(exc)
        if check_agent and state in (VmState.RUNNING,):
            agent = await vmstate.agent_answers(paths)
    return VmStatus(name=name, state=state, pid=pid, spec=spec, agent=agent, error=error)


async def list_vms(ctx: Context, *, check_agent: bool = True) -> list[VmStatus]:
    names = registry.vm_names(ctx)
    return list(await asyncio.gather(*(vm_status(ctx, n, check_agent=check_agent)
                                       for n in names)))


def _clean_runtime(paths: VmPaths) -> None:
    """Remove what a dead QEMU left in its runtime directory (first remembering, in the
    VM's directory, a QEMU that died without a clean stop: the next boot checks the disk)."""
    records.remember_unclean_stop(paths)
    shared.stop_virtiofsd(paths)
    if paths.run_dir.is_dir():
        for entry in paths.run_dir.iterdir():
            if entry.name.endswith(".lock"):
                continue
            with contextlib.suppress(OSError):
                entry.unlink()


# -- boot -----------------------------------------------------------------------------


async def boot_vm(ctx: Context, name: str, *, wait_agent: float | None = None,
                  loadvm: str | None = None, lock_held: bool = False,
                  repair: bool = False) -> VmStatus:
    """Start the VM detached; return once QMP answers (and the agent, if asked).

    ``loadvm``: start from that internal snapshot (RAM + disks) instead of a cold boot.
    ``lock_held``: the caller already holds the VM's lock (snapshot restore does).
    ``repair``: ``qemu-img check -r all`` the local qcow2 disk first (boots only if it is
    clean then). Without it, a disk whose QEMU died without a clean stop is checked:
    leaked clusters are given back (said in ``notes``), errors refuse the boot.
    """
    paths = ctx.vm_paths(name)
    async with vmstate.locked_definition(ctx, name, "boot", held=lock_held) as spec:
        if repair and not _local_qcow2(spec):
            raise InvalidInput(f"{name}'s disk is {spec.disk.describe()}: --repair applies "
                               "to local qcow2 images only")
        state, pid = vmstate.process_state(paths)
        if state is VmState.RUNNING:
            raise InvalidState(f"{name} is already running (pid {pid})")
        spec = bases.check_not_base(ctx, spec, "booting it would change the disk they are "
                                    "built on; boot a clone, or delete the clones first")
        # Before the runtime files that tell how QEMU stopped go: a refused boot keeps them.
        notes = await _check_disk(spec, records.unclean_stop(paths), repair=repair)
        if state is VmState.CRASHED:
            log.warning("%s: cleaning up after a crashed QEMU (pid %s)", name, pid)
        _clean_runtime(paths)
        records.clear_unclean_stop(paths)  # checked (or nothing to check)
        accel = await asyncio.to_thread(process.choose_accel, ctx.environ,
                                        cache_dir=ctx.layout.runtime_base)  # may probe KVM
        plan = _launch_plan(ctx, spec, paths, accel.accel)
        if loadvm:
            plan = dataclasses.replace(plan, loadvm=loadvm)
        _check_boot_files(spec, plan)
        if spec.disk.is_rbd:
            await rbd_disks.check_bootable(ctx, spec)
        ctx.ensure_home()
        ctx.ensure_runtime(paths)
        argv = build_qemu_argv(spec, paths, plan)
        if spec.shared and spec.shared_mode is SharedMode.VIRTIOFS:
            await asyncio.to_thread(shared.start_virtiofsd, ctx, paths)
        log.info("%s: starting QEMU (%s%s)", name, plan.accel,
                 f": {accel.note}" if accel.note else "")
        try:
            await asyncio.to_thread(process.launch_daemonized, argv, log_path=paths.qemu_log)
        except HypercoreError:
            _clean_runtime(paths)  # and the virtiofsd started for it
            raise
        pid = process.read_pidfile(paths.pidfile)
        try:
            if pid is not None:  # fails on a full disk: then no QEMU is left running
                atomic_write_bytes(paths.pid_record, f"{pid}\n".encode(), mode=0o600)
            await _wait_qmp_ready(paths, QMP_READY_TIMEOUT)
            _make_sockets_private(paths)
        except HypercoreError:
            if pid is not None:
                process.send_signal(pid, signal.SIGKILL)
            _clean_runtime(paths)
            raise
    if wait_agent:
        await wait_for_agent(paths, wait_agent)
        if spec.shared:
            await shared.mount_after_boot(ctx, name)
    return VmStatus(name=name, state=VmState.RUNNING, pid=pid, spec=spec, agent=bool(wait_agent),
                    notes=notes, accel_note=accel.note)


# -- the disk after an unclean stop (records.unclean_stop) ----------------------------


def _local_qcow2(spec: VmSpec) -> bool:
    return spec.disk.kind is DiskKind.QCOW2 and not spec.disk.is_rbd and bool(spec.disk.path)


async def _check_disk(spec: VmSpec, unclean: records.UncleanStop | None, *,
                      repair: bool) -> tuple[str, ...]:
    """The checks before a boot: none after a clean stop (nor for RBD and raw disks)."""
    if not _local_qcow2(spec) or (unclean is None and not repair):
        return ()
    if not Path(str(spec.disk.path)).exists():
        return ()  # the boot says it is missing
    note = await asyncio.to_thread(_check_and_repair, spec.name, Path(str(spec.disk.path)),
                                   unclean, repair)
    if note:
        log.warning("%s: %s", spec.name, note)
    return (note,) if note else ()


def _plural(count: int, what: str) -> str:
    return f"{count} {what}{'' if count == 1 else 's'}"


def _given_back(disk: Path, leaks: int) -> str:
    try:
        size = leaks * images.qcow2_cluster_size(disk)
    except HypercoreError:
        return ""
    return f" ({size / (1 << 20):.1f} MiB given back)"


def _check_and_repair(name: str, disk: Path, unclean: records.UncleanStop | None,
                      repair: bool) -> str | None:
    """``qemu-img check`` (blocking): leaks are repaired, errors refuse the boot unless
    ``repair`` (``-r all``, then a check that must be clean). The note for the user."""
    cause = f"{unclean.cause}; " if unclean else ""
    found = _first_check(disk)
    if found.clean:
        return f"{cause}qemu-img check found nothing to repair" if repair else None
    if not repair and found.status != images.CHECK_LEAKS:
        raise OperationFailed(_refusal(name, disk, unclean, found))
    fixed = images.check_qcow2(disk, repair="all" if repair else "leaks")
    after = images.check_qcow2(disk) if repair else fixed  # (-r reports what is left)
    if not after.clean:
        if not repair:
            raise OperationFailed(_refusal(name, disk, unclean, after))
        raise OperationFailed(
            f"{name}: qemu-img check -r all could not repair its disk image {disk} "
            f"({_findings(after)}); not booting it: restore the image from a backup")
    done = [_plural(found.corruptions, "error")] if found.corruptions else []
    if found.leaks:
        done.append(_plural(found.leaks, "leaked cluster") + _given_back(disk, found.leaks))
    return f"{cause}repaired {' and '.join(done) or 'the image'}"


#: A killed QEMU's leader is reaped before its last threads exit, and its image lock goes
#: with the last of them: a boot right after the kill may find the image still locked.
DEAD_QEMU_LOCK_WAIT = 3.0


def _first_check(disk: Path) -> images.CheckResult:
    deadline = time.monotonic() + DEAD_QEMU_LOCK_WAIT
    while True:
        try:
            return images.check_qcow2(disk)
        except InvalidState:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.1)


def _refusal(name: str, disk: Path, unclean: records.UncleanStop | None,
             found: images.CheckResult) -> str:
    what = unclean.cause if unclean else "QEMU"
    return (f"{name}: {what} and left its disk image {disk} with {_findings(found)}; not "
            f"booting it: `hypercore boot-vm {name} --repair` repairs it (qemu-img check "
            "-r all; copy the image first to keep the damaged original)")


def _findings(result: images.CheckResult) -> str:
    text = _plural(result.corruptions, "error") if result.corruptions else "errors"
    if result.leaks:
        text += f" and {_plural(result.leaks, 'leaked cluster')}"
    return f"{text}: {result.detail}" if result.detail else text


def _make_sockets_private(paths: VmPaths) -> None:
    """QEMU daemonizes with umask 027; the sockets are for this user only (0600)."""
    for sock in (paths.qmp_socket, paths.qmp_monitor_socket, paths.qga_socket,
                 paths.serial_socket, paths.vnc_socket):
        with contextlib.suppress(OSError):
            os.chmod(sock, 0o600)


def _launch_plan(ctx: Context, spec: VmSpec, paths: VmPaths, accel: str) -> LaunchPlan:
    return LaunchPlan(
        qemu_binary=process.find_qemu(ctx.environ),
        accel=accel,
        shared_dir=str(ctx.layout.shared_folder),
        boot_from_cdrom=bool(spec.iso) and not is_installed(paths),
        rbd_conf=ctx.ceph_conf if spec.disk.is_rbd else None,
    )


def _check_boot_files(spec: VmSpec, plan: LaunchPlan) -> None:
    if spec.disk.path and not Path(spec.disk.path).exists():
        raise NotFound(f"{spec.name}: disk image {spec.disk.path} is missing")
    if plan.boot_from_cdrom and spec.iso and not Path(spec.iso).exists():
        raise NotFound(f"{spec.name}: ISO {spec.iso} is missing")
    for what, path in (("kernel", spec.kernel), ("initrd", spec.initrd)):
        if path and not Path(path).exists():
            raise NotFound(f"{spec.name}: {what} {path} is missing")


async def _wait_qmp_ready(paths: VmPaths, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    last: HypercoreError | None = None
    while time.monotonic() < deadline:
        try:
            async with qmp_session(paths.qmp_socket, vm_name=paths.name, timeout=2.0) as qmp:
                await qmp.execute("query-status")
                # Ask the balloon to collect guest memory stats every 2 s (for monitoring).
                with contextlib.suppress(HypercoreError):
                    await qmp.execute("qom-set", {
                        "path": f"/machine/peripheral/{BALLOON_ID}",
                        "property": "guest-stats-polling-interval", "value": 2,
                    })
                return
        except HypercoreError as exc:
            last = exc
            state, _ = vmstate.process_state(paths)
            if state is VmState.CRASHED:
                raise OperationFailed(f"{paths.name}: QEMU exited during start-up; see "
                                      f"{paths.qemu_log}") from None
            await asyncio.sleep(0.05)
    raise Timeout(f"{paths.name}: QEMU monitor did not answer within {timeout:g}s ({last})")


async def wait_for_agent(paths: VmPaths, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        if await vmstate.agent_answers(paths, timeout=min(1.0, max(remaining, 0.1))):
            return
        state, _ = vmstate.process_state(paths)
        if state is not VmState.RUNNING:
            raise OperationFailed(f"{paths.name}: QEMU stopped while waiting for the agent")
        await asyncio.sleep(0.05)
    raise Timeout(f"{paths.name}: booted, but the guest agent did not answer within "
                  f"{timeout:g}s")


# -- stop -----------------------------------------------------------------------------


async def stop_vm(ctx: Context, name: str, *, force: bool = False,
                  timeout: float = 60.0) -> str:
    """Stop the VM; returns a short description of how it stopped."""
    registry.load(ctx, name)
    paths = ctx.vm_paths(name)
    async with locked_async(paths.lock, what=f"{name}: stop", timeout=vmstate.LOCK_WAIT):
        state, pid = vmstate.process_state(paths)
        if state is VmState.STOPPED:
            raise InvalidState(f"{name} is not running")
        if state is VmState.CRASHED or pid is None:
            _clean_runtime(paths)
            return "it had crashed; its runtime files were cleaned up"
        if force:
            return await _force_stop(paths, pid)
        deadline = time.monotonic() + timeout
        how = await _request_shutdown(paths)
        while True:
            remaining = deadline - time.monotonic()
            if await process.wait_exit(pid, max(0.0, min(remaining, 3.0)),
                                       pidfile=paths.pidfile):
                _clean_runtime(paths)
                return how
            if remaining <= 3.0:
                break
            if how != AGENT_SHUTDOWN and await _agent_shutdown(paths):
                # The guest ignored ACPI (or was still booting): its agent answers now.
                how = AGENT_SHUTDOWN
    raise Timeout(f"{name} did not stop within {timeout:g}s after {how}; "
                  f"use `hypercore stop-vm {name} --force`")


async def _request_shutdown(paths: VmPaths) -> str:
    """Ask the guest to power off: through the agent when it answers, else ACPI."""
    runstate = None
    with contextlib.suppress(HypercoreError):
        runstate = await vmstate.query_runstate(paths)
    if runstate is VmState.PAUSED:
        async with qmp_session(paths.qmp_socket, vm_name=paths.name) as qmp:
            await qmp.execute("cont")
    if await _agent_shutdown(paths):
        return AGENT_SHUTDOWN
    log.info("%s: no agent shutdown possible; sending the ACPI power button", paths.name)
    try:
        async with qmp_session(paths.qmp_socket, vm_name=paths.name) as qmp:
            await qmp.execute("system_powerdown")
    except HypercoreError:
        if vmstate.process_state(paths)[0] is VmState.RUNNING:
            raise
    return "ACPI power button"


AGENT_SHUTDOWN = "guest agent shutdown"


async def _agent_shutdown(paths: VmPaths) -> bool:
    try:
        async with agent_session(paths.qga_socket, vm_name=paths.name, timeout=2.0,
                                 lock_timeout=5.0) as agent:
            await agent.execute_no_reply("guest-shutdown", {"mode": "powerdown"})
    except HypercoreError as exc:
        log.info("%s: agent shutdown not possible: %s", paths.name, exc)
        return False
    return True


async def _force_stop(paths: VmPaths, pid: int) -> str:
    how = "QMP quit"
    # No monitor socket (runtime dir removed): nothing can be asked, kill at once. Looked
    # at before `quit`: QEMU removes its sockets as it quits, and a SIGKILL then would
    # cut short its last writes to the disk image (qcow2 metadata).
    grace = 5.0 if paths.qmp_socket.exists() else 0.0
    try:
        async with qmp_session(paths.qmp_socket, vm_name=paths.name, timeout=3.0,
                               lock_timeout=3.0) as qmp:
            await qmp.execute("quit", timeout=3.0)
    except HypercoreError as exc:
        log.info("%s: quit failed (%s); killing", paths.name, exc)
    if not await process.wait_exit(pid, grace, pidfile=paths.pidfile):
        process.send_signal(pid, signal.SIGKILL)
        how = "SIGKILL"
        if not await process.wait_exit(pid, 10.0, pidfile=paths.pidfile):
            raise OperationFailed(f"{paths.name}: QEMU (pid {pid}) survived SIGKILL")
    _clean_runtime(paths)
    return how


# -- pause / resume / reset -----------------------------------------------------------


async def pause_vm(ctx: Context, name: str) -> None:
    paths = vmstate.require_running(ctx, name).paths
    async with qmp_session(paths.qmp_socket, vm_name=name) as qmp:
        await qmp.execute("stop")


async def resume_vm(ctx: Context, name: str) -> None:
    """``cont``. A VM that QEMU paused after a disk error retries the failed writes at
    once: when it pauses again within ``RESUME_SETTLE`` seconds (the host's disk is still
    full), that is the error."""
    paths = vmstate.require_running(ctx, name).paths
    async with qmp_session(paths.qmp_socket, vm_name=name) as qmp:
        status = await qmp.execute("query-status")
        await qmp.execute("cont")
        if status.get("status") != "io-error":
            return
        deadline = time.monotonic() + RESUME_SETTLE
        while time.monotonic() < deadline:
            await asyncio.sleep(RESUME_SETTLE / 10)
            status = await qmp.execute("query-status")
            if status.get("status") == "io-error":
                blocks = await qmp.execute("query-block")
                raise OperationFailed(vmstate.paused_again_reason(
                    name, blocks if isinstance(blocks, list) else []))


async def reset_vm(ctx: Context, name: str) -> None:
    paths = vmstate.require_running(ctx, name).paths
    async with qmp_session(paths.qmp_socket, vm_name=name) as qmp:
        await qmp.execute("system_reset")


# -- delete ---------------------------------------------------------------------------


def delete_vm(ctx: Context, name: str, *, remove_image: bool | None = None) -> None:
    """Remove the VM's definition and the disk Hypercore created for it.

    ``remove_image`` (RBD disks only): also remove the Ceph image (True) or keep it
    (False); None removes an image Hypercore created (owned) and keeps an adopted one.
    A removal that is refused (snapshots, clones, open clients) leaves the VM intact.
    """
    spec = registry.load(ctx, name)
    if remove_image is not None and not spec.disk.is_rbd:
        raise InvalidInput(f"{name}'s disk is a local image: --remove-image/--keep-image "
                           "apply to RBD disks only")
    paths = ctx.vm_paths(name)
    with locked(paths.lock, what=f"{name}: delete", timeout=5.0), \
            bases.unlinking_from_base(ctx, spec):
        state, pid = vmstate.process_state(paths)
        if state is VmState.RUNNING:
            raise InvalidState(f"{name} is running (pid {pid}); stop it first")
        bases.check_not_base(ctx, registry.load(ctx, name), "delete them first")
        if spec.disk.is_rbd and (spec.disk.owned if remove_image is None else remove_image):
            rbd_disks.remove_vm_image(ctx, spec)  # refused or failed: the VM stays
        _clean_runtime(paths)
        with contextlib.suppress(OSError):
            paths.run_dir.rmdir()
        # The definition goes first: a half-deleted VM is never listed as a broken one.
        paths.definition.unlink()
        shutil.rmtree(paths.vm_dir, ignore_errors=True)
    log.info("deleted VM %s", name)


# -- exec -----------------------------------------------------------------------------


async def exec_in_vm(ctx: Context, name: str, argv: Sequence[str], *,
                     stdin: bytes | None = None, timeout: float | None = 300.0) -> ExecResult:
    paths = vmstate.require_running(ctx, name).paths
    await vmstate.require_guest_running(paths)
    async with agent_session(paths.qga_socket, vm_name=name, timeout=5.0) as agent:
        return await agent.exec(argv, stdin=stdin, timeout=timeout)
