"""Unattended mounts of the shared folder: the mounter a boot starts (``share mount --wait``),
the mount when a watched guest's agent answers again, and the inline mount after
``boot-vm --wait-agent``. The mount itself is :mod:`services.shared`'s."""

from __future__ import annotations

import asyncio
import logging
import os
import site
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from hypercore_tui.adapters import process
from hypercore_tui.adapters.fs import locked_async
from hypercore_tui.adapters.qga import agent_session
from hypercore_tui.core.errors import (
    AgentUnavailable,
    Busy,
    HypercoreError,
    OperationFailed,
    Timeout,
)
from hypercore_tui.core.layout import VmPaths
from hypercore_tui.core.models import GUEST_MOUNTPOINT, VmSpec, VmState
from hypercore_tui.services import records, registry, shared, vmstate
from hypercore_tui.services.context import Context
from hypercore_tui.services.shared import (
    ShareState,
    ShareStatus,
    mount_share_via_agent,
    share_state,
)

log = logging.getLogger("hypercore.shared")
log.addHandler(logging.NullHandler())

#: An unattended mount that fails (the guest may still be booting) is tried once more
#: after this many seconds.
MOUNT_RETRY_DELAY = 3.0
#: How often ``share mount --wait`` looks whether the agent has come.
AGENT_POLL = 1.0
#: How long the mounter started after a boot waits for the agent.
MOUNTER_WAIT = 600.0
#: The directory holding the hypercore_tui package (the mounter imports the same code).
PACKAGE_ROOT = Path(__file__).resolve().parents[2]


#: Not mounted, and nothing Hypercore can do about it (mounting is not its job there).
_NOT_OURS = (ShareStatus.NOT_ATTACHED, ShareStatus.NOT_RUNNING, ShareStatus.UNSUPPORTED)


@dataclass(frozen=True)
class MountOutcome:
    """What an unattended mount found, and did."""

    state: ShareState
    #: The share was not mounted at the first look (so, if ``state.mounted``, it is now)
    was_unmounted: bool = False

    @property
    def mounted_now(self) -> bool:
        return self.was_unmounted and self.state.mounted

    @property
    def agent_missing(self) -> bool:
        """The agent did not answer (or was busy): try again when it does."""
        return self.state.status is ShareStatus.NO_AGENT

    @property
    def failed(self) -> bool:
        """Not mounted, for a reason that waiting for the agent will not change."""
        return (not self.state.mounted and not self.agent_missing
                and self.state.status not in _NOT_OURS)


async def mount_unattended(ctx: Context, name: str, *, lock_wait: float,
                           retry_delay: float = MOUNT_RETRY_DELAY) -> MountOutcome:
    """Mount the share in ``name`` when it is attached and not mounted, with nobody waiting
    for it: after a boot, or when a watched guest's agent answers again (the guest
    rebooted). Looking takes the agent only; mounting also holds the VM's lock (a RAM
    snapshot unmounts the share for its save, which must not find it mounted again
    behind its back): :class:`Busy` when another operation holds that lock for longer
    than ``lock_wait`` s. A failed mount is tried once more ``retry_delay`` s later: the
    agent of a real guest answers before the guest has finished booting."""
    state = await share_state(ctx, name)
    if state.status is not ShareStatus.NOT_MOUNTED and state.status is not \
            ShareStatus.MODULES_MISSING:
        return MountOutcome(state)
    spec = registry.load(ctx, name)
    paths = ctx.vm_paths(name)
    for attempt in range(2):
        if attempt:
            log.info("%s: shared folder %s; trying again in %gs", name, state.describe(),
                     retry_delay)
            await asyncio.sleep(retry_delay)
        async with locked_async(paths.lock, what=f"{name}: mount the shared folder",
                                timeout=lock_wait):
            if vmstate.process_state(paths)[0] is not VmState.RUNNING:
                return MountOutcome(ShareState(ShareStatus.NOT_RUNNING, spec.shared_mode),
                                    was_unmounted=True)
            state = await _mount_locked(spec, paths)
        if state.mounted or state.status is ShareStatus.NO_AGENT or state.status in _NOT_OURS:
            break
    return MountOutcome(state, was_unmounted=True)


async def _mount_locked(spec: VmSpec, paths: VmPaths) -> ShareState:
    """Mount it (holding the VM's lock): where a RAM save left it unmounted, if one did."""
    left = records.read_share_unmount(paths)
    mountpoint = left.mountpoint if left is not None else GUEST_MOUNTPOINT
    try:
        async with agent_session(paths.qga_socket, vm_name=spec.name, timeout=3.0) as agent:
            state = await mount_share_via_agent(agent, spec.shared_mode, mountpoint)
    except (AgentUnavailable, Timeout, Busy) as exc:
        return ShareState(ShareStatus.NO_AGENT, spec.shared_mode, message=str(exc))
    except OperationFailed as exc:
        return ShareState(ShareStatus.FAILED, spec.shared_mode, message=str(exc))
    if state.mounted and left is not None:
        records.clear_share_unmount(paths)
    return state


async def mount_when_agent_answers(ctx: Context, name: str, wait: float) -> ShareState:
    """``share mount NAME --wait SECONDS``: wait up to ``wait`` s for the guest agent, then
    mount the share (:func:`mount_unattended`). Ends when it is mounted, when mounting
    failed for a reason waiting will not change, when the VM's QEMU exits (or another boot
    replaced it), or when the time is up (NO_AGENT). While the agent's port is closed
    (qemu-ga not running yet) only QEMU is asked, so the agent's socket stays free."""
    spec, early = shared.precheck(ctx, name)
    if early is not None:
        return early
    paths = ctx.vm_paths(name)
    _, pid = vmstate.process_state(paths)
    deadline = time.monotonic() + wait
    while True:
        state, current = vmstate.process_state(paths)
        if state is not VmState.RUNNING or current != pid:
            return ShareState(ShareStatus.NOT_RUNNING, spec.shared_mode, message=(
                "QEMU exited before the share was mounted"))
        if await vmstate.agent_port_open(paths) is not False:
            try:
                outcome = await mount_unattended(ctx, name, lock_wait=2 * AGENT_POLL)
            except Busy:
                pass  # another operation on the VM: look again
            else:
                if not outcome.agent_missing:
                    return outcome.state
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return ShareState(ShareStatus.NO_AGENT, spec.shared_mode, message=(
                f"the guest agent did not answer within {wait:g}s"))
        await asyncio.sleep(min(AGENT_POLL, remaining))


def start_share_mounter(ctx: Context, name: str) -> int | None:
    """After a boot that does not wait for the agent (plain ``boot-vm``, the dashboard's
    start): ``hypercore share mount NAME --wait 600``, detached (own session, stdin
    /dev/null, output appended to ``share-mount.log`` in the VM's directory), so the share
    is mounted once the agent answers although nobody waits for it. It ends when the
    share is mounted, when mounting fails for a reason waiting will not change, when QEMU
    exits, or after 600 s without an agent. Returns its pid (None: it could not be
    started; logged, the boot stands)."""
    argv = [sys.executable, "-m", "hypercore_tui", "share", "mount", "--wait",
            f"{MOUNTER_WAIT:g}", name]
    env = detached_env(ctx)
    paths = ctx.vm_paths(name)
    try:
        pid = process.spawn_detached(argv, log_path=paths.share_mount_log, env=env,
                                     what=f"hypercore share mount --wait {MOUNTER_WAIT:g} "
                                          f"{name} (after boot-vm)")
    except HypercoreError as exc:
        log.warning("%s: shared folder mounter not started: %s", name, exc)
        return None
    log.info("%s: shared folder mounter started (pid %d, log %s)", name, pid,
             paths.share_mount_log)
    return pid


def detached_env(ctx: Context) -> dict[str, str]:
    """The environment of a detached ``hypercore`` started by this one: the same home, and
    from a source tree the same code as this process."""
    env = dict(ctx.environ)
    if not _installed(PACKAGE_ROOT):
        env["PYTHONPATH"] = os.pathsep.join(filter(None, (str(PACKAGE_ROOT),
                                                          env.get("PYTHONPATH"))))
    return env


def _installed(root: Path) -> bool:
    """Whether ``root`` is a site-packages directory (the interpreter finds the package
    there by itself; put on PYTHONPATH it would come before the standard library)."""
    sites = [*site.getsitepackages(), site.getusersitepackages()]
    return any(root == Path(p).resolve() for p in sites)


async def mount_after_boot(ctx: Context, name: str) -> ShareState:
    """Best effort right after ``boot-vm --wait-agent``: mount the share, log (never raise)
    what went wrong."""
    try:
        state = (await mount_unattended(ctx, name, lock_wait=vmstate.LOCK_WAIT)).state
    except HypercoreError as exc:
        log.info("%s: shared folder not mounted: %s", name, exc)
        return ShareState(ShareStatus.FAILED, None, message=str(exc))
    if not state.mounted and state.status is not ShareStatus.NOT_ATTACHED:
        log.info("%s: shared folder %s", name, state.describe())
    return state


