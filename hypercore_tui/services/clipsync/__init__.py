"""One clipboard kept in sync by itself across the host hub and every guest.

* :mod:`.vmsync` — one VM: waits for it to run and its agent to answer, gives it the
  current entry (catch-up), learns of copies made in it (the guest watcher's signal on
  the VM's clipboard port, else bounded polling), reads them through the agent.
* :mod:`.engine` — the hub: the history (``core.clip``), one :class:`VmSync` per VM,
  the VM set kept up to date, events for the CLI and the dashboard; one engine per
  ``HYPERCORE_HOME`` (a lock in the runtime directory).
* :mod:`.control` — the running engine's unix socket (``clipsync.sock`` in the private
  runtime directory): ``clip status``, a dashboard started later, offers and re-pushes.
"""
