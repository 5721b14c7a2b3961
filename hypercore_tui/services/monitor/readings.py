"""Reading QEMU and the guest agent: QMP queries and replies, QMP events and the agent's
facts about the guest, turned into plain values (shared by the watchers and
``hypercore stats``). Every call has a timeout; guest text is clipped."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from hypercore_tui.adapters.qga import AgentClient
from hypercore_tui.adapters.qmp import QmpSession
from hypercore_tui.core.argv import BALLOON_ID, DISK_NODE
from hypercore_tui.core.errors import AgentUnavailable, HypercoreError, OperationFailed
from hypercore_tui.core.models import VmState
from hypercore_tui.core.series import guest_memory
from hypercore_tui.services import vmstate
from hypercore_tui.services.monitor.view import GuestInfo, PauseReason

log = logging.getLogger("hypercore.monitor")
log.addHandler(logging.NullHandler())

QMP_TIMEOUT = 2.0
AGENT_TIMEOUT = 1.5
#: The balloon refreshes guest stats every 2 s (set at boot): reading faster is waste.
GUEST_STATS_EVERY = 2.0
#: Longest guest-provided string kept (hostname, OS name, user...).
MAX_GUEST_TEXT = 200
MAX_ADDRESSES = 16

#: QMP events shown to the user; the rest (RTC_CHANGE...) only go to the debug log.
QUIET_EVENTS = frozenset({"RTC_CHANGE", "NIC_RX_FILTER_CHANGED", "BALLOON_CHANGE"})

#: The state a QMP event puts the VM in.
EVENT_STATES: Mapping[str, VmState] = {
    "STOP": VmState.PAUSED,
    "RESUME": VmState.RUNNING,
    "SHUTDOWN": VmState.SHUTTING_DOWN,
    "SUSPEND": VmState.PAUSED,
    "WAKEUP": VmState.RUNNING,
    "GUEST_PANICKED": VmState.PAUSED,
}

_BALLOON = f"/machine/peripheral/{BALLOON_ID}"


# -- QMP ----------------------------------------------------------------------------


def disk_counters(blockstats: Any) -> tuple[int | None, int | None]:
    """(read, written) bytes of the VM's main disk from ``query-blockstats``."""
    if not isinstance(blockstats, list):
        return None, None
    fallback: tuple[int | None, int | None] = (None, None)
    for entry in blockstats:
        if not isinstance(entry, dict):
            continue
        stats = entry.get("stats")
        if not isinstance(stats, dict):
            continue
        pair = (_int(stats.get("rd_bytes")), _int(stats.get("wr_bytes")))
        qdev = str(entry.get("qdev", ""))
        if entry.get("node-name") == DISK_NODE or f"/{DISK_NODE}dev/" in qdev + "/":
            return pair
        if fallback == (None, None):
            fallback = pair
    return fallback


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


async def read_guest_memory(qmp: QmpSession) -> tuple[int | None, int | None, int | None]:
    reply = await qmp.execute("qom-get", {"path": _BALLOON, "property": "guest-stats"},
                              timeout=QMP_TIMEOUT)
    if not isinstance(reply, dict) or not reply.get("last-update"):
        return None, None, None  # the guest has not reported yet
    stats = reply.get("stats")
    return guest_memory(stats) if isinstance(stats, dict) else (None, None, None)


async def ensure_balloon_polling(qmp: QmpSession) -> None:
    """Guest memory stats need a polling interval (lifecycle sets 2 s at boot;
    a VM started by something else may have none)."""
    with contextlib.suppress(HypercoreError):
        current = await qmp.execute("qom-get", {
            "path": _BALLOON, "property": "guest-stats-polling-interval"},
            timeout=QMP_TIMEOUT)
        if not current:
            await qmp.execute("qom-set", {
                "path": _BALLOON, "property": "guest-stats-polling-interval",
                "value": int(GUEST_STATS_EVERY)}, timeout=QMP_TIMEOUT)


async def vcpu_threads(qmp: QmpSession) -> tuple[int, ...]:
    cpus = await qmp.execute("query-cpus-fast", timeout=QMP_TIMEOUT)
    if not isinstance(cpus, list):
        return ()
    ordered = sorted((c for c in cpus if isinstance(c, dict)),
                     key=lambda c: int(c.get("cpu-index", 0)))
    return tuple(int(c["thread-id"]) for c in ordered if isinstance(c.get("thread-id"), int))


async def read_status(qmp: QmpSession) -> tuple[VmState, PauseReason | None]:
    """The state, and why QEMU paused the VM by itself (run state ``io-error``: a disk
    request failed; ``query-block``'s io-status says whether for lack of space)."""
    state, blocks = await vmstate.read_status(qmp, timeout=QMP_TIMEOUT)
    return state, None if blocks is None else PauseReason(nospace=vmstate.io_error_nospace(blocks))


async def read_runstate(qmp: QmpSession) -> VmState:
    return (await read_status(qmp))[0]


def event_detail(name: str, data: Mapping[str, Any]) -> str:
    """A short, plain description of an event's data (no guest text beyond 200 chars)."""
    if name in ("SHUTDOWN", "RESET"):
        who = "guest" if data.get("guest") else "host"
        reason = data.get("reason")
        return f"{who}: {reason}" if reason else who
    if name == "JOB_STATUS_CHANGE":
        return f"job {data.get('id')}: {data.get('status')}"
    if name.startswith("BLOCK_JOB"):
        return f"{data.get('type')} job {data.get('device')}: {data.get('error') or 'ok'}"
    if name == "VSERPORT_CHANGE":
        return f"guest {'opened' if data.get('open') else 'closed'} a serial port"
    if name == "GUEST_PANICKED":
        return "the guest kernel panicked"
    if name == "BLOCK_IO_ERROR":
        device = data.get("node-name") or data.get("device") or "?"
        why = "no space" if data.get("nospace") is True else data.get("reason") or "error"
        return f"{data.get('operation')} on {device}: {why}; {data.get('action')}"[
            :MAX_GUEST_TEXT]
    parts = [f"{k}={v}" for k, v in list(data.items())[:4]]
    return ", ".join(parts)[:MAX_GUEST_TEXT]


# -- the guest agent ------------------------------------------------------------------


def _clip(value: object) -> str | None:
    if not isinstance(value, str) or not value:
        return None
    return value[:MAX_GUEST_TEXT]


@dataclass(frozen=True)
class AgentFacts:
    guest: GuestInfo
    net_rx_bytes: int | None
    net_tx_bytes: int | None


async def read_agent_facts(agent: AgentClient) -> AgentFacts:
    """Hostname, OS, addresses, users and interface counters; a command the agent
    refuses leaves its field empty, a lost connection raises AgentUnavailable."""

    async def ask(command: str) -> Any:
        try:
            return await agent.execute(command, timeout=AGENT_TIMEOUT,
                                       sync_timeout=AGENT_TIMEOUT)
        except AgentUnavailable:
            raise
        except OperationFailed as exc:  # refused, unsupported, timed out: skip this one
            log.debug("%s: %s: %s", agent.vm_name, command, exc)
            return None

    host = await ask("guest-get-host-name")
    osinfo = await ask("guest-get-osinfo")
    ifaces = await ask("guest-network-get-interfaces")
    users = await ask("guest-get-users")
    addresses: list[str] = []
    rx = tx = None
    if isinstance(ifaces, list):
        rx = tx = 0
        for iface in ifaces:
            if not isinstance(iface, dict) or iface.get("name") == "lo":
                continue
            for addr in iface.get("ip-addresses") or []:
                ip = _clip(addr.get("ip-address")) if isinstance(addr, dict) else None
                if ip and not ip.startswith("fe80:") and len(addresses) < MAX_ADDRESSES:
                    addresses.append(ip)
            stats = iface.get("statistics")
            if isinstance(stats, dict):
                rx += _int(stats.get("rx-bytes")) or 0
                tx += _int(stats.get("tx-bytes")) or 0
    addresses.sort(key=lambda a: (":" in a, a))  # IPv4 first
    names: list[str] = []
    if isinstance(users, list):
        for user in users:
            name = _clip(user.get("user")) if isinstance(user, dict) else None
            if name and name not in names:
                names.append(name)
    guest = GuestInfo(
        hostname=_clip(host.get("host-name")) if isinstance(host, dict) else None,
        os_name=_clip(osinfo.get("pretty-name") or osinfo.get("name"))
        if isinstance(osinfo, dict) else None,
        kernel=_clip(osinfo.get("kernel-release")) if isinstance(osinfo, dict) else None,
        addresses=tuple(addresses), users=tuple(names[:MAX_ADDRESSES]),
    )
    return AgentFacts(guest, rx, tx)
