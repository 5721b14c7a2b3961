"""The guest side of a copy: the ``hypercore_tui/guest/cp-*.sh`` scripts (argv is their
only input), the agent session (with the shared folder mounted when it can be), the
guest's free space and sha256, and removing a temporary file from the guest."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

from hypercore_tui.adapters import guest_files
from hypercore_tui.adapters.qga import (
    AgentClient,
    AgentCommandError,
    AgentState,
    ExecResult,
    agent_session,
)
from hypercore_tui.core.errors import AgentCommandUnsupported, HypercoreError
from hypercore_tui.core.models import VmSpec
from hypercore_tui.core.text import printable
from hypercore_tui.services import guest_exec, shared, vmstate
from hypercore_tui.services.context import Context
from hypercore_tui.services.transfer.errors import TransferError, guest_failure, space_error

log = logging.getLogger("hypercore.transfer")
log.addHandler(logging.NullHandler())

EXEC_TIMEOUT = 3600.0

# -- the scripts (argv is their only input) -------------------------------------------------

#: argv: DST NAME TOKEN SHARE_MOUNTPOINT DIRECT_OK (final path, free space, temporary file)
PREPARE_DST = "cp-prepare-destination.sh"
#: argv: SRC SHARE_MOUNTPOINT (size, mode, path in the share)
PREPARE_SRC = "cp-prepare-source.sh"
#: argv: TMP FINAL SHA256 MODE STAGED [SIZE] (fill, check, chmod/chown, rename)
FINALIZE = "cp-finalize.sh"
#: argv: STAGED TMP SIZE BLOCKS SUM (fill from the share, check the size and spot blocks)
FROM_SHARE = "cp-from-share.sh"
#: argv: SRC STAGED SIZE VERIFY BLOCKS (into the shared folder; prints the blocks' sha256)
TO_SHARE = "cp-to-share.sh"
SHA256 = "cp-sha256.sh"
REMOVE = "cp-remove.sh"
SIZE = "cp-size.sh"


async def run_script(agent: AgentClient, script: str, *args: str,
                     timeout: float = EXEC_TIMEOUT) -> ExecResult:
    try:
        return await guest_exec.run_script(agent, script, *args, argv0="hypercore-cp",
                                           timeout=timeout)
    except AgentCommandUnsupported:
        raise TransferError(guest_exec.exec_blocked(
            agent.vm_name, "file transfer needs (to check, verify and rename files)")) from None
    except AgentCommandError as exc:
        if exc.command == "guest-exec":
            raise TransferError(f"{agent.vm_name}: cannot run /bin/sh in the guest "
                                f"({printable(exc.desc)}); "
                                "file transfer supports Linux guests") from None
        raise


async def checked(agent: AgentClient, script: str, *args: str,
                  what: str | None = None) -> ExecResult:
    """Run a script; a failure raises :func:`guest_failure`'s error."""
    result = await run_script(agent, script, *args)
    if result.shell_status != 0:
        raise guest_failure(agent.vm_name, result, what)
    return result


# -- the agent session -----------------------------------------------------------------------


@dataclass
class Guest:
    name: str
    spec: VmSpec
    agent: AgentClient
    mountpoint: str | None  # where the share is mounted in the guest, if it is


@contextlib.asynccontextmanager
async def guest_session(ctx: Context, name: str, channel: str) -> AsyncIterator[Guest]:
    vm = vmstate.require_running(ctx, name)
    spec, paths = vm.spec, vm.paths
    await vmstate.require_guest_running(paths)  # paused: say so now, not after the agent's timeout
    async with agent_session(paths.qga_socket, vm_name=name) as agent:
        mountpoint = None
        if channel != "agent" and spec.shared:
            try:
                state = await shared.mount_share_via_agent(agent, spec.shared_mode)
            except HypercoreError as exc:
                log.info("%s: shared folder unavailable (%s)", name, exc)
            else:
                if state.mounted:
                    mountpoint = state.mountpoint
                else:
                    log.info("%s: shared folder %s", name, state.describe())
        if channel == "share" and mountpoint is None:
            raise TransferError(f"{name}: the shared folder is not mounted in the guest; "
                                "use the agent channel")
        yield Guest(name, spec, agent, mountpoint)


async def guest_sha256(agent: AgentClient, path: str) -> str:
    result = await checked(agent, SHA256, path)
    return result.stdout.decode(errors="replace").split(" ", 1)[0].strip()


async def remove_guest_file(ctx: Context, guest: Guest, path: str) -> None:
    """Best effort: through the open session, else a new one (the agent may be back)."""
    agent = guest.agent
    if agent.state is not AgentState.CLOSED:
        with contextlib.suppress(HypercoreError, TimeoutError):
            if agent.state is not AgentState.READY:
                await agent.sync(timeout=guest_files.CLEANUP_SYNC)
            await asyncio.wait_for(run_script(agent, REMOVE, path, timeout=20.0), 25.0)
            return
        if agent.state in (AgentState.CONNECTED, AgentState.READY):
            # Still connected but not answering (hung): a second session would only wait
            # for this one's lock.
            log.warning("%s: the agent does not answer; the temporary file %s stays in the "
                        "guest", guest.name, path)
            return
    paths = ctx.vm_paths(guest.name)
    try:
        async with agent_session(paths.qga_socket, vm_name=guest.name, timeout=3.0,
                                 lock_timeout=3.0) as agent:
            await run_script(agent, REMOVE, path, timeout=20.0)
    except (HypercoreError, TimeoutError):
        log.warning("%s: could not remove the temporary file %s", guest.name, path)


def check_free(guest: Guest, values: dict[str, str], size: int, what: str) -> None:
    try:
        avail, bsize = (int(x) for x in values.get("free", "").split())
    except ValueError:
        return
    if avail * bsize < size:
        raise space_error(guest.name, what, size)
