"""One-shot sampling of a running VM (``hypercore stats``): two readings over a short
QMP session on ``qmp.sock``, and the guest agent's facts when it answers."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, replace

from hypercore_tui.adapters.procstats import ProcessGone, ProcessReader
from hypercore_tui.adapters.qga import agent_session
from hypercore_tui.adapters.qmp import qmp_session
from hypercore_tui.core.errors import HypercoreError, InvalidState
from hypercore_tui.core.layout import VmPaths
from hypercore_tui.core.models import VmState
from hypercore_tui.core.series import RawCounters, VmSample, build_sample
from hypercore_tui.services import registry, vmstate
from hypercore_tui.services.context import Context
from hypercore_tui.services.monitor.readings import (
    AgentFacts,
    disk_counters,
    read_agent_facts,
    read_guest_memory,
    read_runstate,
    vcpu_threads,
)
from hypercore_tui.services.monitor.view import GuestInfo


@dataclass(frozen=True)
class StatsResult:
    name: str
    state: VmState
    pid: int
    sample: VmSample
    guest: GuestInfo | None
    agent: bool

    def as_json(self) -> dict[str, object]:
        data: dict[str, object] = {"name": self.name, "state": self.state.value,
                                   "pid": self.pid, "agent": self.agent}
        data.update(self.sample.as_json())
        guest = self.guest
        data["guest"] = None if guest is None else {
            "hostname": guest.hostname, "os": guest.os_name, "kernel": guest.kernel,
            "addresses": list(guest.addresses), "users": list(guest.users),
        }
        return data


async def sample_once(ctx: Context, name: str, *, gap: float = 0.5,
                      agent_timeout: float = 1.0) -> StatsResult:
    """Two readings ``gap`` seconds apart over a short session on ``qmp.sock``."""
    registry.load(ctx, name)
    paths = ctx.vm_paths(name)
    state, pid = vmstate.process_state(paths)
    if state is not VmState.RUNNING or pid is None:
        raise InvalidState(f"{name} is not running ({state.value})")
    agent_task = asyncio.create_task(_agent_facts_once(paths, agent_timeout))
    try:
        reader = ProcessReader(pid)
        async with qmp_session(paths.qmp_socket, vm_name=name, timeout=3.0) as qmp:
            state = await read_runstate(qmp)
            vcpus = await vcpu_threads(qmp)
            readings: list[RawCounters] = []
            for index in range(2):
                if index:
                    await asyncio.sleep(gap)
                reading = await asyncio.to_thread(reader.read, threads=vcpus)
                disk = disk_counters(await qmp.execute("query-blockstats"))
                readings.append(RawCounters(
                    timestamp=reading.timestamp, cpu_seconds=reading.cpu_seconds,
                    thread_cpu_seconds=tuple(reading.thread_cpu_seconds.get(t) for t in vcpus),
                    rss_bytes=reading.rss_bytes, disk_rd_bytes=disk[0], disk_wr_bytes=disk[1],
                    guest_memory=await read_guest_memory(qmp),
                    uptime_seconds=reading.uptime_seconds,
                ))
    except ProcessGone:
        raise InvalidState(f"{name} stopped while being sampled") from None
    finally:
        facts = await agent_task
    first, second = readings
    if facts is not None:
        second = _with_net(second, facts)
    sample = build_sample(first, second)
    return StatsResult(name=name, state=state, pid=pid, sample=sample,
                       guest=facts.guest if facts else None, agent=facts is not None)


def _with_net(counters: RawCounters, facts: AgentFacts) -> RawCounters:
    return replace(counters, net_rx_bytes=facts.net_rx_bytes, net_tx_bytes=facts.net_tx_bytes)


async def _agent_facts_once(paths: VmPaths, timeout: float) -> AgentFacts | None:
    if not paths.qga_socket.exists():
        return None
    try:
        async with agent_session(paths.qga_socket, vm_name=paths.name, timeout=timeout,
                                 lock_timeout=timeout) as agent:
            return await read_agent_facts(agent)
    except HypercoreError:
        return None
