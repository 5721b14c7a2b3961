"""What the cluster answers: image statistics, snapshots and the cluster's status."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class RbdSnapshot:
    name: str
    id: int
    size: int
    timestamp: dt.datetime | None  # aware, UTC
    protected: bool


@dataclass(frozen=True)
class ImageStat:
    pool: str
    name: str
    size: int
    used: int | None  # allocated bytes (object granularity, like `rbd du`); None: unknown
    snapshots: tuple[RbdSnapshot, ...]  # user snapshots (not clone-v2 trash)
    parent: str | None  # POOL/IMAGE@SNAP of a clone
    children: tuple[str, ...]  # POOL/IMAGE of clones made from any snapshot
    watchers: int  # clients that have the image open (a running QEMU is one)

    @property
    def spec(self) -> str:
        return f"{self.pool}/{self.name}"


@dataclass(frozen=True)
class ClusterStatus:
    fsid: str
    health: str  # HEALTH_OK / HEALTH_WARN / HEALTH_ERR
    checks: tuple[str, ...]  # one line per health check
    mons: int
    quorum: int
    osds: int
    osds_up: int
    osds_in: int
    mgr: bool  # a manager is active (else capacity is unknown)
    bytes_total: int | None
    bytes_used: int | None


def parse_cluster_status(data: Any) -> ClusterStatus:
    """The monitor's ``status`` JSON as a :class:`ClusterStatus` (missing fields: 0/unknown)."""
    def section(name: str) -> dict[str, Any]:
        value = data.get(name) if isinstance(data, dict) else None
        return value if isinstance(value, dict) else {}

    def number(sec: dict[str, Any], key: str) -> int:
        value = sec.get(key, 0)
        return value if isinstance(value, int) and not isinstance(value, bool) else 0

    health = section("health")
    checks = []
    raw_checks = health.get("checks")
    for name, check in (raw_checks.items() if isinstance(raw_checks, dict) else []):
        summary = check.get("summary", {}) if isinstance(check, dict) else {}
        message = summary.get("message") if isinstance(summary, dict) else None
        checks.append(f"{name}: {message or check}")
    monmap, osdmap, pgmap, mgrmap = (section(n) for n in ("monmap", "osdmap", "pgmap",
                                                          "mgrmap"))
    nested = osdmap.get("osdmap")  # releases before Pacific nest the counts one level down
    if isinstance(nested, dict):
        osdmap = nested
    quorum = data.get("quorum_names") if isinstance(data, dict) else None
    mgr = bool(mgrmap.get("available"))
    total = number(pgmap, "bytes_total")
    return ClusterStatus(
        fsid=str(data.get("fsid", "")) if isinstance(data, dict) else "",
        health=str(health.get("status", "unknown")),
        checks=tuple(checks),
        mons=number(monmap, "num_mons"),
        quorum=len(quorum) if isinstance(quorum, list) else 0,
        osds=number(osdmap, "num_osds"),
        osds_up=number(osdmap, "num_up_osds"),
        osds_in=number(osdmap, "num_in_osds"),
        mgr=mgr,
        bytes_total=total if mgr and total else None,
        bytes_used=number(pgmap, "bytes_used") if mgr and total else None,
    )
