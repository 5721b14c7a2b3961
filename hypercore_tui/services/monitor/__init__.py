"""Live monitoring of every VM: one self-rescheduling poller per VM, QMP events,
crash detection, guest-agent facts and the host summary. No Textual in here:
whoever runs a :class:`Monitor` receives plain notices through a callback.

* :mod:`.view`: what is shown about a VM (:class:`VmView`, :class:`GuestInfo`...);
* :mod:`.notices`: what the monitor tells its sink (:class:`VmSampled`...);
* :mod:`.readings`: QMP and guest-agent queries and replies, parsed;
* :mod:`.watcher`: one VM (:class:`VmWatcher`: QMP session, polls, events), with
  :mod:`.agent` (its guest agent), :mod:`.leftovers` (what a killed hypercore left) and
  :mod:`.liveness` (a guest that never showed any sign of life);
* :mod:`.fleet`: every VM (:class:`Monitor`, :class:`MonitorSettings`);
* :mod:`.stats`: one-shot sampling for ``hypercore stats`` (:func:`sample_once`).
"""

from hypercore_tui.services.monitor.fleet import Monitor, MonitorSettings
from hypercore_tui.services.monitor.notices import (
    GuestInfoChanged,
    HostSampled,
    MonitorNotice,
    Sink,
    VmDefinitionChanged,
    VmEventSeen,
    VmJobsChanged,
    VmSampled,
    VmsChanged,
    VmStateChanged,
)
from hypercore_tui.services.monitor.readings import AgentFacts, read_agent_facts
from hypercore_tui.services.monitor.stats import StatsResult, sample_once
from hypercore_tui.services.monitor.view import (
    AgentStatus,
    GuestInfo,
    NoSignOfLife,
    PauseReason,
    VmView,
)
from hypercore_tui.services.monitor.watcher import VmWatcher

__all__ = [
    "AgentFacts",
    "AgentStatus",
    "GuestInfo",
    "GuestInfoChanged",
    "HostSampled",
    "Monitor",
    "MonitorNotice",
    "MonitorSettings",
    "NoSignOfLife",
    "PauseReason",
    "Sink",
    "StatsResult",
    "VmDefinitionChanged",
    "VmEventSeen",
    "VmJobsChanged",
    "VmSampled",
    "VmStateChanged",
    "VmView",
    "VmWatcher",
    "VmsChanged",
    "read_agent_facts",
    "sample_once",
]
