"""The guest's clock after the VM stood still.

A paused VM's clock stops with it, and a RAM snapshot brings back the time it was saved
at: after ``resume-vm``, a live snapshot restore or a boot into a saved state the guest
runs behind the host by as long as it stood still (and nothing in a guest without NTP
catches up). :func:`correct_guest_clock` compares ``guest-get-time`` with the host's
clock and, when they differ by more than :data:`THRESHOLD`, sets the guest's clock to
the host's with ``guest-set-time`` (qemu-ga then writes the guest's hardware clock with
``hwclock -w``). Where qemu-ga refuses that (no ``/sbin/hwclock`` in the guest), ``date
-u -s @SECONDS`` through guest-exec does it.

Best effort: short timeouts, and every failure is logged and ends in None, never an
error for the operation it follows.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass

from hypercore_tui.adapters.qga import AgentClient, AgentCommandError, agent_session
from hypercore_tui.core.errors import HypercoreError
from hypercore_tui.core.layout import VmPaths
from hypercore_tui.core.models import VmState
from hypercore_tui.services import vmstate

log = logging.getLogger("hypercore.clock")
log.addHandler(logging.NullHandler())

#: A guest clock this far (seconds) from the host's is set again; less is left alone.
THRESHOLD = 2.0
AGENT_TIMEOUT = 3.0
#: guest-set-time runs hwclock in the guest: slower than a plain command under TCG.
SET_TIMEOUT = 10.0


@dataclass(frozen=True)
class ClockCorrection:
    """The guest's clock was set to the host's: ``seconds`` > 0 moved it forward."""

    name: str
    seconds: float

    def describe(self) -> str:
        way = "forward" if self.seconds >= 0 else "back"
        return f"guest clock set {way} {abs(self.seconds):.1f} s"


async def correct_guest_clock(paths: VmPaths, *, threshold: float = THRESHOLD
                              ) -> ClockCorrection | None:
    """Set the guest's clock to the host's when it is more than ``threshold`` seconds off;
    None when it was close enough, or when the agent could not be asked (logged)."""
    if await vmstate.agent_port_open(paths) is False:
        log.info("%s: clock not checked: the guest agent is not running", paths.name)
        return None
    with contextlib.suppress(HypercoreError):  # (a busy monitor proves nothing: try)
        if await vmstate.query_runstate(paths, timeout=1.0) is not VmState.RUNNING:
            log.info("%s: clock not checked: the VM is not running", paths.name)
            return None
    try:
        async with agent_session(paths.qga_socket, vm_name=paths.name, timeout=AGENT_TIMEOUT,
                                 lock_timeout=AGENT_TIMEOUT) as agent:
            correction = await correct_with_agent(agent, threshold=threshold)
    except HypercoreError as exc:
        log.info("%s: clock not checked: %s", paths.name, exc)
        return None
    if correction is not None:
        log.info("%s: %s", paths.name, correction.describe())
    return correction


async def correct_with_agent(agent: AgentClient, *, threshold: float = THRESHOLD
                             ) -> ClockCorrection | None:
    """:func:`correct_guest_clock` in an agent session the caller holds (errors raised)."""
    before = time.time_ns()
    guest_ns = int(await agent.execute("guest-get-time", timeout=AGENT_TIMEOUT))
    host_ns = (before + time.time_ns()) // 2  # the host's time when the guest read its own
    offset = (host_ns - guest_ns) / 1e9  # > 0: the guest is behind
    if abs(offset) <= threshold:
        return None
    try:
        await agent.execute("guest-set-time", {"time": time.time_ns()}, timeout=SET_TIMEOUT)
    except AgentCommandError as exc:
        # qemu-ga refuses guest-set-time outright without /sbin/hwclock in the guest.
        log.info("%s: guest-set-time refused (%s); trying date -s", agent.vm_name, exc.desc)
        seconds = round(time.time_ns() / 1e9)
        result = await agent.exec(["date", "-u", "-s", f"@{seconds}"], timeout=AGENT_TIMEOUT)
        if result.shell_status != 0:
            raise
    return ClockCorrection(agent.vm_name, offset)
