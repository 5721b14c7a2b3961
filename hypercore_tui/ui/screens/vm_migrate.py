"""The selected VM moved live to another host (``M``, issue 15): checked first (a VM that
cannot migrate live is refused in one line, with the service's reason), the target host
picked among the other configured ones, a confirmation naming both hosts, then the
migration as a job (a worker thread, one job per VM) whose progress the dashboard shows
and which Esc cancels until the switch-over. :class:`VmMigrateScreen` sits between
:class:`~hypercore_tui.ui.screens.vm_keys.VmKeysScreen` and the dashboard.

The result comes back like every job's: a notification and an Events line; after a
success the monitor's rescan drops the VM from this host's rows, and the other host's
stream lists it there.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from rich.text import Text

from hypercore_tui.core.models import VmState
from hypercore_tui.core.sizes import format_bytes
from hypercore_tui.ui.backend import (
    Backend,
    MigrationPlan,
    MigrationProgress,
    MigrationResult,
    MonitorLike,
    RemoteOps,
    migrated_summary,
)
from hypercore_tui.ui.messages import ActionSucceeded, MigrationEnded, MigrationProgressed
from hypercore_tui.ui.screens.confirm import Confirmation, ConfirmScreen
from hypercore_tui.ui.screens.pick_host import PickHostScreen
from hypercore_tui.ui.screens.vm_actions import JobRunner
from hypercore_tui.ui.screens.vm_keys import VmKeysScreen
from hypercore_tui.ui.text import safe

NO_OTHER_HOST = ("No other host to migrate to: add one with `hypercore hosts add NAME "
                 "SSH_DESTINATION` and start the dashboard again")


def _amount(done: int, total: int) -> str:
    """``120/256 MiB`` (one unit for both, the total's)."""
    unit, scale = ("GiB", 2**30) if total >= 10 * 2**30 else ("MiB", 2**20)
    return f"{done / scale:.0f}/{total / scale:.0f} {unit}"


def migration_line(host: str, progress: MigrationProgress | None) -> str:
    """``migrating to b: 45% 120/256 MiB, dirty 3 MiB/s, expected downtime 40 ms``: RAM
    copied of all (a page dirtied again counts as not copied)."""
    head = f"migrating to {host}: "
    if progress is None:
        return head + "starting the target"
    if progress.status != "active" or not progress.total:
        return head + progress.status
    done = max(0, progress.total - progress.remaining)
    line = (f"{head}{100 * done // progress.total}% {_amount(done, progress.total)}, "
            f"dirty {format_bytes(progress.dirty_rate, precision=0)}/s")
    if progress.expected_downtime_ms is not None:
        line += f", expected downtime {progress.expected_downtime_ms} ms"
    return line


@dataclass
class Migration:
    """A migration this dashboard runs: where to, the latest progress, the cancel flag
    the worker's service call asks."""

    host: str
    cancel: threading.Event
    progress: MigrationProgress | None = None

    def describe(self) -> Text:
        """Its line for the detail pane (the host name is untrusted text)."""
        text = safe(migration_line(self.host, self.progress), "cyan", limit=200)
        text.append(" (cancelling…)" if self.cancel.is_set() else " · Esc cancels",
                    style="dim")
        return text


class VmMigrateScreen(VmKeysScreen):
    def __init__(self, backend: Backend, monitor: MonitorLike, jobs: JobRunner) -> None:
        super().__init__(backend, monitor, jobs)
        #: this dashboard's migrations under way, by VM name
        self.migrations: dict[str, Migration] = {}

    def migration_changed(self, name: str) -> None:
        """A migration of ``name`` started, moved on or ended: the dashboard shows it."""

    def selected_migration(self) -> Migration | None:
        """The migration of the selected VM (this host's), if one runs."""
        return self.migrations.get(self.selected) if self.selected else None

    # -- M: check, pick, confirm, run ---------------------------------------------------

    def action_migrate_vm(self) -> None:
        if (remote := self._remote_selected()) is not None:
            host, rview, rops = remote
            if rview.state is not VmState.RUNNING:
                self.notify(f"{host}/{rview.name} is {rview.state.value}: only a running VM "
                            "migrates live", severity="warning", markup=False)
                return
            vm = rview.name
            self._run(f"{host}/{vm}", "migrate", lambda: rops.migration_targets(host),
                      lambda targets: self._pick_host_there(rops, host, vm, targets))
            return
        ops = self.backend.migration
        if ops is None or (view := self._need_vm("migrate")) is None:
            return
        name = view.name
        if (running := self.migrations.get(name)) is not None:
            self.notify(f"{name}: migrating to {running.host} already (Esc cancels)",
                        markup=False)
            return
        if view.state is not VmState.RUNNING:
            self.notify(f"{name} is {view.state.value}: only a running VM migrates live",
                        severity="warning", markup=False)
            return
        self._run(name, "migrate", lambda: ops.plan(name), self._pick_host)

    def _pick_host_there(self, ops: RemoteOps, host: str, vm: str,
                         targets: list[str]) -> None:
        """Another host's VM: the target among the hosts *that* host reaches (its own
        ``hosts list``: the migration runs there), confirmed naming both hosts."""
        key = f"{host}/{vm}"
        if not targets:
            self.notify(f"{key}: {host} has no other host to migrate to (`hypercore --host "
                        f"{host} hosts add NAME SSH_DESTINATION`)", severity="warning",
                        timeout=8, markup=False)
            return

        def picked(target: str | None) -> None:
            if target is None:
                return
            title = Text("Migrate ")
            title.append_text(safe(vm, "bold"))
            title.append(" from ")
            title.append_text(safe(host, "bold"))
            title.append(" to ")
            title.append_text(safe(target, "bold"))
            title.append(f" (as {host} names it)?" if target != "local" else "?")
            body = Text("The migration runs on ")
            body.append_text(safe(host))
            body.append(": its disks stay on the Ceph cluster both hosts reach, its RAM goes "
                        "over while the guest runs; the guest pauses for a moment at the "
                        "switch-over. Any failure before it leaves the VM running where it "
                        "is. It cannot be cancelled from here.")

            def answered(answer: Confirmation | None) -> None:
                if answer is not None:
                    self.notify(f"{key}: migrating to {target}…", markup=False)
                    self._run(key, "migrate", lambda: ops.migrate(host, vm, target))

            self.app.push_screen(ConfirmScreen(title, body, "Migrate", mild=True), answered)

        self.app.push_screen(PickHostScreen(key, targets), picked)

    def _pick_host(self, plan: MigrationPlan) -> None:
        remote = self.backend.remote
        hosts = list(remote.host_names) if remote is not None else []
        if not hosts:
            self.notify(NO_OTHER_HOST, severity="warning", timeout=8, markup=False)
            return

        def picked(host: str | None) -> None:
            if host is not None:
                self._confirm_migration(plan, host)

        self.app.push_screen(PickHostScreen(plan.name, hosts), picked)

    def _confirm_migration(self, plan: MigrationPlan, host: str) -> None:
        title = Text("Migrate ")
        title.append_text(safe(plan.name, "bold"))
        title.append(" from this host (local) to ")
        title.append_text(safe(host, "bold"))
        title.append("?")
        body = Text("Its disk ")
        body.append_text(safe(plan.disk, "bold", limit=80))
        body.append(" stays on the Ceph cluster both hosts reach; its RAM "
                    f"({plan.ram_mb} MB) goes to ")
        body.append_text(safe(host))
        body.append(" while the guest runs; the guest pauses for a moment at the "
                    "switch-over.")
        if plan.share:
            body.append(" The shared folder is unmounted in the guest and mounted again "
                        "there.")
        body.append(" Esc cancels it until the switch-over.")

        def answered(answer: Confirmation | None) -> None:
            if answer is not None:
                self._start_migration(plan.name, host)

        self.app.push_screen(ConfirmScreen(title, body, "Migrate", mild=True), answered)

    def _start_migration(self, name: str, host: str) -> None:
        ops = self.backend.migration
        assert ops is not None
        migration = Migration(host, threading.Event())

        def progress(progress: MigrationProgress) -> None:  # (the worker's thread)
            self.post_message(MigrationProgressed(name, progress))

        def call() -> MigrationResult:
            try:
                return ops.migrate(name, host, progress=progress,
                                   cancelled=migration.cancel.is_set)
            finally:
                self.post_message(MigrationEnded(name))

        def done(result: MigrationResult) -> None:
            self.app.post_message(ActionSucceeded(name, "migrate", migrated_summary(result)))

        if self.jobs.run_job(name, "migrate", call, done):
            self.migrations[name] = migration
            self.migration_changed(name)

    def on_migration_progressed(self, message: MigrationProgressed) -> None:
        migration = self.migrations.get(message.name)
        if migration is not None:
            migration.progress = message.progress
            self.migration_changed(message.name)

    def on_migration_ended(self, message: MigrationEnded) -> None:
        if self.migrations.pop(message.name, None) is not None:
            self.migration_changed(message.name)

    # -- Esc: cancel ----------------------------------------------------------------------

    def action_cancel_migration(self) -> None:
        """Cancel the selected VM's migration (it stays here, running, unless the
        switch-over has begun: then it completes)."""
        name, migration = self.selected, self.selected_migration()
        if name is None or migration is None or migration.cancel.is_set():
            return
        migration.cancel.set()
        self.notify(f"{name}: cancelling the migration to {migration.host}", markup=False)
        self.migration_changed(name)
