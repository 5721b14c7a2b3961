"""Where a VM stands: its QEMU process, QEMU's runstate (and why QEMU paused it), whether
its guest agent answers; and the two openings every operation shares: "it must be
running" (:func:`require_running`) and "hold its lock, read its definition"
(:func:`locked_definition`).

The process checks read the pidfile only and never block; the QMP and agent checks
have short timeouts.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from hypercore_tui.adapters import process
from hypercore_tui.adapters.fs import locked_async
from hypercore_tui.adapters.qga import agent_session
from hypercore_tui.adapters.qmp import QmpSession, qmp_session
from hypercore_tui.core.argv import AGENT_CHARDEV
from hypercore_tui.core.errors import Busy, HypercoreError, InvalidState
from hypercore_tui.core.layout import VmPaths
from hypercore_tui.core.models import VmSpec, VmState
from hypercore_tui.services import registry
from hypercore_tui.services.context import Context

#: How long an operation waits for another one on the same VM to finish.
LOCK_WAIT = 60.0
#: The state check before an agent command (a paused guest cannot answer).
GUEST_CHECK_TIMEOUT = 1.0
#: How long ``list`` waits, all VMs at once, for the agent of a guest that opened the
#: agent's port (connect, sync and ping together): an agent that answers at all answers
#: well within it, even under TCG on a loaded host.
AGENT_PROBE_TIMEOUT = 0.3


class AgentState(enum.StrEnum):
    """What ``list`` knows about a VM's guest agent, found without waiting on it."""

    ANSWERING = "answering"  #: it answered a ping within the bound
    SILENT = "silent"  #: its port is open (or QEMU did not say) but no answer in time
    NOT_RUNNING = "not running"  #: the guest has not opened the agent's port, or no VM runs
    BUSY = "busy"  #: another hypercore process is talking to it (its port is open)
    UNKNOWN = "unknown"  #: not asked: the VM is paused, or its monitor did not answer

RUNSTATE_TO_STATE = {
    "running": VmState.RUNNING,
    "paused": VmState.PAUSED,
    "suspended": VmState.PAUSED,
    "io-error": VmState.PAUSED,
    "watchdog": VmState.PAUSED,
    "guest-panicked": VmState.PAUSED,
    "internal-error": VmState.PAUSED,
    "debug": VmState.PAUSED,
    "save-vm": VmState.RUNNING,
    "restore-vm": VmState.STARTING,
    "finish-migrate": VmState.PAUSED,
    "postmigrate": VmState.PAUSED,
    "inmigrate": VmState.STARTING,
    "prelaunch": VmState.STARTING,
    "shutdown": VmState.SHUTTING_DOWN,
    "colo": VmState.RUNNING,
}


# -- the process ------------------------------------------------------------------------


def process_state(paths: VmPaths) -> tuple[VmState, int | None]:
    """State from the pidfile and the process alone (no QMP): cheap and never blocks.

    QEMU removes its pidfile when it exits cleanly; a pidfile whose process is
    gone means QEMU died without a clean stop: crashed.
    """
    pid = process.read_pidfile(paths.pidfile)
    if pid is None and not paths.run_dir.exists():
        # The run dir may have been removed under a running QEMU: the pid recorded in
        # the VM's own directory at boot finds it (checked against its -pidfile argument,
        # so a stale record or a reused pid reads as stopped).
        pid = process.read_pidfile(paths.pid_record)
        if pid is not None and process.process_alive(pid, pidfile=paths.pidfile):
            return VmState.RUNNING, pid
        return VmState.STOPPED, None
    if pid is None:
        return VmState.STOPPED, None
    if process.process_alive(pid, pidfile=paths.pidfile):
        return VmState.RUNNING, pid
    return VmState.CRASHED, pid


def running_or_stopped(paths: VmPaths) -> VmState:
    """RUNNING (a QEMU process exists) or STOPPED; a crashed VM is refused."""
    state, _ = process_state(paths)
    if state is VmState.CRASHED:
        raise InvalidState(f"{paths.name}'s QEMU died without a clean stop; run "
                           f"`hypercore stop-vm {paths.name}` to clean up first")
    return state


@dataclass(frozen=True)
class RunningVm:
    """A VM whose QEMU process ran when it was checked (it may stop at any time after)."""

    spec: VmSpec
    paths: VmPaths


def require_running(ctx: Context, name: str) -> RunningVm:
    """The VM's definition and paths, or :class:`InvalidState` when its QEMU does not run."""
    spec = registry.load(ctx, name)
    paths = ctx.vm_paths(name)
    state, _ = process_state(paths)
    if state is not VmState.RUNNING:
        raise InvalidState(f"{name} is not running ({state.value})")
    return RunningVm(spec, paths)


@contextlib.asynccontextmanager
async def locked_definition(ctx: Context, name: str, what: str, *, timeout: float = LOCK_WAIT,
                            held: bool = False) -> AsyncIterator[VmSpec]:
    """Hold the VM's lock (described as ``NAME: what``) and yield its definition, read
    under the lock: what another process changed before is seen, nothing changes it
    meanwhile. ``held``: the caller holds the lock already (it is not taken again).

    A VM that is not defined is :class:`NotFound` before any lock file is made (the lock
    lives in the VM's directory).
    """
    if held:
        yield registry.load(ctx, name)
        return
    registry.check_defined(ctx, name)
    async with locked_async(ctx.vm_paths(name).lock, what=f"{name}: {what}", timeout=timeout):
        yield registry.load(ctx, name)


# -- QEMU's runstate ----------------------------------------------------------------------


async def query_runstate(paths: VmPaths, *, timeout: float = 3.0) -> VmState:
    return (await query_status(paths, timeout=timeout))[0]


async def read_status(qmp: QmpSession, *, timeout: float) -> tuple[VmState, list[Any] | None]:
    """The VM's state on an open QMP session, and ``query-block``'s devices when QEMU paused
    it by itself after a disk error (run state ``io-error``), else None."""
    status = await qmp.execute("query-status", timeout=timeout)
    runstate = str(status.get("status"))
    blocks = None
    if runstate == "io-error":
        reply = await qmp.execute("query-block", timeout=timeout)
        blocks = reply if isinstance(reply, list) else []
    return RUNSTATE_TO_STATE.get(runstate, VmState.RUNNING), blocks


async def query_status_and_agent_port(paths: VmPaths, *, timeout: float = 3.0
                                      ) -> tuple[VmState, str | None, bool | None]:
    """:func:`query_status` and, for a running VM, :func:`agent_port_open`, on one QMP
    session (``list``: one lock, one connection per VM)."""
    async with qmp_session(paths.qmp_socket, vm_name=paths.name, timeout=timeout,
                           lock_timeout=timeout) as qmp:
        state, blocks = await read_status(qmp, timeout=timeout)
        port = None
        if state is VmState.RUNNING:
            try:
                port = agent_port(await qmp.execute("query-chardev", timeout=timeout))
            except HypercoreError:
                port = None
    return state, None if blocks is None else io_error_reason(paths.name, blocks), port


async def query_status(paths: VmPaths, *, timeout: float = 3.0) -> tuple[VmState, str | None]:
    """The VM's state from QEMU, and why QEMU paused it when it did so by itself: a disk
    write it could not do (``io-error``, e.g. the host's disk is full)."""
    async with qmp_session(paths.qmp_socket, vm_name=paths.name, timeout=timeout,
                           lock_timeout=timeout) as qmp:
        state, blocks = await read_status(qmp, timeout=timeout)
    return state, None if blocks is None else io_error_reason(paths.name, blocks)


def io_error_reason(name: str, blocks: list[Any]) -> str:
    """One line for a VM that QEMU paused after a disk error (``query-block`` io-status)."""
    for block in blocks:
        if isinstance(block, dict) and block.get("io-status") == "nospace":
            inserted = block.get("inserted")
            where = inserted.get("file") if isinstance(inserted, dict) else None
            disk = f"its disk {where}" if isinstance(where, str) and where else "its disk"
            return (f"{name} is paused: no space left on the host's device for {disk}; "
                    f"free some space, then `hypercore resume-vm {name}`")
    return (f"{name} is paused: QEMU stopped it after a disk I/O error; fix the disk, "
            f"then `hypercore resume-vm {name}`")


def io_error_nospace(blocks: object) -> bool:
    """Whether ``query-block`` says a disk stopped for lack of space (the host's disk)."""
    return isinstance(blocks, list) and any(
        isinstance(b, dict) and b.get("io-status") == "nospace" for b in blocks)


def paused_again_reason(name: str, blocks: list[Any]) -> str:
    """One line for a VM that QEMU paused again right after ``cont`` (the disk error is
    still there: usually the host's disk is still full)."""
    why = io_error_reason(name, blocks).removeprefix(f"{name} is paused: ")
    if io_error_nospace(blocks):
        return f"{name} paused again at once, the host's disk is still full: {why}"
    return f"{name} paused again at once: {why}"


# -- the guest ----------------------------------------------------------------------------


async def require_guest_running(paths: VmPaths) -> None:
    """Before an agent command: a paused guest cannot answer, so say so at once instead of
    after the agent's timeout. A monitor that is busy or slow proves nothing: then the
    agent is tried anyway."""
    try:
        state, reason = await query_status(paths, timeout=GUEST_CHECK_TIMEOUT)
    except HypercoreError:
        return
    if state is VmState.PAUSED:
        raise InvalidState(reason or f"{paths.name} is paused: its guest agent cannot answer; "
                           f"`hypercore resume-vm {paths.name}` resumes it")


async def agent_answers(paths: VmPaths, *, timeout: float = 1.5) -> bool:
    if not paths.qga_socket.exists():
        return False
    try:
        async with agent_session(paths.qga_socket, vm_name=paths.name, timeout=timeout,
                                 lock_timeout=timeout) as agent:
            await agent.ping(timeout=timeout)
    except HypercoreError:
        return False
    return True


async def agent_port_open(paths: VmPaths, *, timeout: float = 1.0) -> bool | None:
    """Whether the guest has opened the agent's virtio-serial port (``query-chardev``'s
    ``frontend-open``): qemu-ga runs in the guest. A cheap look that never takes the agent's
    socket, for loops that wait for an agent (its socket serves one client at a time).
    None when QEMU did not say (its monitor busy or gone)."""
    try:
        async with qmp_session(paths.qmp_socket, vm_name=paths.name, timeout=timeout,
                               lock_timeout=timeout) as qmp:
            chardevs = await qmp.execute("query-chardev", timeout=timeout)
    except HypercoreError:
        return None
    return agent_port(chardevs)


def agent_port(chardevs: object) -> bool | None:
    """``frontend-open`` of the agent's chardev in a ``query-chardev`` reply, else None."""
    for chardev in chardevs if isinstance(chardevs, list) else []:
        if isinstance(chardev, dict) and chardev.get("label") == AGENT_CHARDEV:
            return bool(chardev.get("frontend-open"))
    return None


async def probe_agent(paths: VmPaths, *, port_open: bool | None,
                      timeout: float = AGENT_PROBE_TIMEOUT) -> AgentState:
    """Whether a running VM's agent answers, never waiting on it for long: a guest that
    has not opened the agent's port (``port_open`` False) has no agent to ask; otherwise
    one ping within ``timeout`` in all. An agent socket held by another hypercore process
    (the dashboard's poll, an ``exec``, the clipboard sync) is not waited for: it is in
    use, so qemu-ga runs (BUSY)."""
    if port_open is False or not paths.qga_socket.exists():
        return AgentState.NOT_RUNNING
    try:
        async with asyncio.timeout(timeout):
            async with agent_session(paths.qga_socket, vm_name=paths.name, timeout=timeout,
                                     lock_timeout=0.0) as agent:
                await agent.ping(timeout=timeout)
    except Busy:
        return AgentState.BUSY
    except (HypercoreError, TimeoutError):
        return AgentState.SILENT
    return AgentState.ANSWERING
