"""What the monitor tells whoever runs it (the dashboard): small frozen records passed
to a :data:`Sink` on the monitor's event loop. They name what changed; the figures
themselves are read from the monitor's views."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from hypercore_tui.core.models import VmState
from hypercore_tui.services.host import HostSummary


@dataclass(frozen=True)
class VmSampled:
    name: str


@dataclass(frozen=True)
class VmStateChanged:
    name: str
    old: VmState
    new: VmState
    reason: str


@dataclass(frozen=True)
class VmEventSeen:
    """A QMP event (or a monitor observation) worth a line in the event log."""

    name: str
    event: str
    detail: str
    timestamp: float  # epoch seconds


@dataclass(frozen=True)
class GuestInfoChanged:
    name: str


@dataclass(frozen=True)
class VmDefinitionChanged:
    """The VM's definition (``vm.json``) was written again since it was read (``hypercore
    set``, the dashboard's clipboard mode...): the view shows what it says now."""

    name: str


@dataclass(frozen=True)
class VmJobsChanged:
    """The VM's jobs (or its share note) changed; ``finished``: a job ended, so its
    snapshot list may have changed too."""

    name: str
    finished: bool = False


@dataclass(frozen=True)
class VmsChanged:
    names: tuple[str, ...]


@dataclass(frozen=True)
class HostSampled:
    summary: HostSummary


MonitorNotice = (VmSampled | VmStateChanged | VmEventSeen | GuestInfoChanged | VmsChanged
                 | HostSampled | VmJobsChanged | VmDefinitionChanged)
Sink = Callable[[MonitorNotice], None]
