"""A defined VM's lifecycle after its boot: status and list, stop, pause/resume/reset,
delete, exec; and the clean-up after a QEMU that ended (boot uses it too). Creating a VM
is ``services.create``, booting it ``services.boot``.

Every operation that changes a VM holds the VM's lock file, so two hypercore
processes (two dashboards, a dashboard and the CLI) act on one VM one at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from hypercore_tui.adapters import process
from hypercore_tui.adapters.fs import locked, locked_async
from hypercore_tui.adapters.qga import ExecPending, ExecResult, agent_session
from hypercore_tui.adapters.qmp import QmpSession, qmp_session
from hypercore_tui.core.errors import (
    HypercoreError,
    InvalidInput,
    InvalidState,
    NotFound,
    OperationFailed,
    Timeout,
)
from hypercore_tui.core.layout import VmPaths
from hypercore_tui.core.models import VmSpec, VmState
from hypercore_tui.services import (
    bases,
    guest_clock,
    rbd_disks,
    records,
    registry,
    shared,
    vmstate,
)
from hypercore_tui.services.context import Context
from hypercore_tui.services.guest_clock import ClockCorrection
from hypercore_tui.services.vmstate import AgentState

log = logging.getLogger("hypercore.vm")
log.addHandler(logging.NullHandler())

#: After resuming a VM that QEMU paused on a disk error: how long to watch for a new pause.
RESUME_SETTLE = 0.5


# -- status (the probe itself is services.vmstate) ------------------------------------


@dataclass(frozen=True)
class VmStatus:
    name: str
    state: VmState
    pid: int | None
    spec: VmSpec | None
    agent: bool = False
    #: What is known about the agent (``agent`` is True when it answers or is in use).
    agent_state: AgentState = AgentState.UNKNOWN
    error: str | None = None
    #: What the user should be told about a boot (a disk repaired after a crash).
    notes: tuple[str, ...] = ()
    #: Why the boot used TCG although /dev/kvm opens (about the host, not the VM).
    accel_note: str | None = None


#: Agent states ``list`` reports as ``agent: true``: it answered, or another hypercore
#: process holds its socket (in use, so qemu-ga runs: not waited for).
AGENT_THERE = frozenset({AgentState.ANSWERING, AgentState.BUSY})


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
    agent_state = AgentState.UNKNOWN if state.is_active else AgentState.NOT_RUNNING
    if state is VmState.RUNNING and not paths.run_dir.exists():
        error = error or (f"{name}: QEMU runs but its runtime dir was removed; "
                          f"`hypercore stop-vm {name} --force` stops it")
    elif state is VmState.RUNNING:
        port_open: bool | None = None
        try:
            state, reason, port_open = await vmstate.query_status_and_agent_port(paths)
            error = error or reason
        except HypercoreError as exc:
            # Alive but the monitor is busy or slow: still running, say why it is unknown.
            error = error or str(exc)
        if check_agent and state in (VmState.RUNNING,):
            agent_state = await vmstate.probe_agent(paths, port_open=port_open)
    return VmStatus(name=name, state=state, pid=pid, spec=spec,
                    agent=agent_state in AGENT_THERE, agent_state=agent_state, error=error)


async def list_vms(ctx: Context, *, check_agent: bool = True) -> list[VmStatus]:
    names = registry.vm_names(ctx)
    return list(await asyncio.gather(*(vm_status(ctx, n, check_agent=check_agent)
                                       for n in names)))


# -- after a QEMU ended (boot, stop and delete clean up) -----------------------------


def clean_runtime(paths: VmPaths) -> None:
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
            clean_runtime(paths)
            return "it had crashed; its runtime files were cleaned up"
        if force:
            return await _force_stop(paths, pid)
        deadline = time.monotonic() + timeout
        how = await _request_shutdown(paths)
        while True:
            remaining = deadline - time.monotonic()
            if await process.wait_exit(pid, max(0.0, min(remaining, 3.0)),
                                       pidfile=paths.pidfile):
                clean_runtime(paths)
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
    clean_runtime(paths)
    return how


# -- pause / resume / reset -----------------------------------------------------------


async def pause_vm(ctx: Context, name: str) -> None:
    paths = vmstate.require_running(ctx, name).paths
    async with qmp_session(paths.qmp_socket, vm_name=name) as qmp:
        await qmp.execute("stop")


async def resume_vm(ctx: Context, name: str) -> ClockCorrection | None:
    """``cont``. A VM that QEMU paused after a disk error retries the failed writes at
    once: when it pauses again within ``RESUME_SETTLE`` seconds (the host's disk is still
    full), that is the error. The guest's clock stood still while it was paused: it is
    set to the host's again (best effort); returns that correction, if one was made."""
    paths = vmstate.require_running(ctx, name).paths
    async with qmp_session(paths.qmp_socket, vm_name=name) as qmp:
        status = await qmp.execute("query-status")
        await qmp.execute("cont")
        if status.get("status") == "io-error":
            await _check_not_paused_again(qmp, name)
    return await guest_clock.correct_guest_clock(paths)


async def _check_not_paused_again(qmp: QmpSession, name: str) -> None:
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
        clean_runtime(paths)
        with contextlib.suppress(OSError):
            paths.run_dir.rmdir()
        # The definition goes first: a half-deleted VM is never listed as a broken one.
        paths.definition.unlink()
        shutil.rmtree(paths.vm_dir, ignore_errors=True)
    log.info("deleted VM %s", name)


# -- exec -----------------------------------------------------------------------------


async def exec_in_vm(ctx: Context, name: str, argv: Sequence[str], *,
                     stdin: bytes | None = None, timeout: float | None = 300.0,
                     on_slow: Callable[[ExecPending], None] | None = None) -> ExecResult:
    """Run ``argv`` in the guest; ``on_slow``: see :meth:`AgentClient.exec` (a process the
    command started holding its output open keeps it waiting until ``timeout``)."""
    paths = vmstate.require_running(ctx, name).paths
    await vmstate.require_guest_running(paths)
    async with agent_session(paths.qga_socket, vm_name=name, timeout=5.0) as agent:
        return await agent.exec(argv, stdin=stdin, timeout=timeout, on_slow=on_slow)
