"""Live migration without QEMU or a network: the target's argv, the progress read from
``query-migrate``, what is refused before anything starts (on the command line and by the
target end), and the ssh options of a forwarding. The real thing is
tests/integration/test_migrate.py."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import cast

import pytest

from hypercore_tui.adapters.fs import locked
from hypercore_tui.adapters.qga import AgentClient, ExecResult
from hypercore_tui.adapters.qmp import QmpSession
from hypercore_tui.adapters.ssh import SshTarget
from hypercore_tui.cli import main
from hypercore_tui.core.argv import LaunchPlan, build_qemu_argv
from hypercore_tui.core.errors import (
    AlreadyExists,
    Busy,
    HypercoreError,
    InvalidInput,
    InvalidState,
    OperationFailed,
    Timeout,
)
from hypercore_tui.core.layout import Layout
from hypercore_tui.core.models import DiskKind, DiskSpec, SharedMode, VmSpec, VmState
from hypercore_tui.services import (
    migrate,
    migrate_incoming,
    migrate_offline,
    rbd_disks,
    records,
    registry,
    shared,
)
from hypercore_tui.services.context import Context

LAYOUT = Layout(home=Path("/home/u/.hypercore"), runtime_base=Path("/run/user/1000/hypercore"))
RBD = DiskSpec(kind=DiskKind.RBD, pool="vm-pool", image="img1")


def spec(**changes: object) -> VmSpec:
    base = VmSpec(name="web1", ram_mb=256, cpus=1, disk=RBD, mac="52:54:00:aa:bb:cc")
    return base.with_changes(**changes) if changes else base


def test_the_target_qemu_waits_for_the_stream_and_for_cont() -> None:
    plan = LaunchPlan(qemu_binary="/usr/bin/qemu-system-x86_64", accel="tcg",
                      shared_dir="/s", rbd_conf="/etc/ceph/ceph.conf")
    paths = LAYOUT.vm("web1")
    plain = build_qemu_argv(spec(), paths, plan)
    incoming = build_qemu_argv(spec(), paths, LaunchPlan(**{**plan.__dict__, "incoming": True}))
    assert "-incoming" not in plain and "-S" not in plain
    assert incoming == [*plain, "-S", "-incoming", "defer"]  # otherwise the same machine
    assert paths.migrate_socket.parent == paths.run_dir
    assert paths.incoming_definition != paths.definition


def test_progress_from_query_migrate() -> None:
    state = {"status": "active", "expected-downtime": 120,
             "ram": {"transferred": 3 << 20, "remaining": 200 << 20, "total": 256 << 20,
                     "dirty-pages-rate": 256, "page-size": 4096}}
    progress = migrate.progress_from(state, 1.5)
    assert (progress.transferred, progress.remaining, progress.dirty_rate) == \
        (3 << 20, 200 << 20, 1 << 20)
    text = progress.describe()
    assert "active" in text and "3.0 MiB sent" in text and "120 ms" in text
    setup = migrate.progress_from({"status": "setup"}, 0.1)
    assert setup.transferred == 0 and setup.expected_downtime_ms is None


def test_what_cannot_migrate_live_is_refused_with_the_reason() -> None:
    paths = LAYOUT.vm("web1")
    migrate.check_migratable(spec(), paths)
    local = spec(disk=DiskSpec(kind=DiskKind.QCOW2, path="/v/disk.qcow2"))
    with pytest.raises(InvalidInput, match="local file.*Ceph.*--offline: the disk is copied"):
        migrate.check_migratable(local, paths)
    with pytest.raises(InvalidInput, match="virtiofs"):
        migrate.check_migratable(spec(shared_mode=SharedMode.VIRTIOFS), paths)


def test_a_forwarding_keeps_its_own_forward() -> None:
    target = SshTarget("root@h", Path("/run/u/hc/ssh/abc.sock"))
    assert "ClearAllForwardings=yes" in target.options(log_level="ERROR")
    assert "ClearAllForwardings=yes" not in target.options(log_level="ERROR", forwarding=True)


@pytest.fixture
def ctx(tmp_path: Path) -> Context:
    return Context.from_environ({"HYPERCORE_HOME": str(tmp_path / "home"),
                                 "HYPERCORE_RUNTIME_DIR": str(tmp_path / "run")})


@pytest.mark.parametrize(("args", "said"), [
    (["migrate", "web1", "b", "--offline", "--via", "tcp:h:1"], "not with --offline"),
    (["migrate", "web1", "b", "--downtime-ms", "0"], "--downtime-ms"),
    (["migrate", "web1", "local"], "is this host"),
    (["migrate", "web1", "b", "--via", "udp:1.2.3.4:5"], "--via must be tcp:"),
])
def test_bad_usage_is_one_line_exit_2(ctx: Context, monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture[str], args: list[str],
                                      said: str) -> None:
    monkeypatch.setenv("HYPERCORE_HOME", str(ctx.layout.home))
    monkeypatch.setenv("HYPERCORE_RUNTIME_DIR", str(ctx.layout.runtime_base))
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("hypercore: error: ") and said in err


def _reader(*lines: object) -> asyncio.StreamReader:
    reader = asyncio.StreamReader()
    for line in lines:
        reader.feed_data(json.dumps(line).encode() + b"\n")
    reader.feed_eof()
    return reader


async def test_the_target_end_refuses_before_starting_anything(ctx: Context) -> None:
    replies: list[object] = []
    with pytest.raises(OperationFailed, match="before sending the definition"):
        await migrate_incoming.serve_incoming(ctx, "web1", _reader(), replies.append)
    local = spec(disk=DiskSpec(kind=DiskKind.QCOW2, path="/v/disk.qcow2"))
    with pytest.raises(InvalidInput, match="only VMs whose disks are on Ceph"):
        await migrate_incoming.serve_incoming(
            ctx, "web1", _reader({"definition": local.to_dict(), "accel": "tcg"}),
            replies.append)
    with pytest.raises(InvalidInput, match="names 'web1', not 'web2'"):
        await migrate_incoming.serve_incoming(
            ctx, "web2", _reader({"definition": spec().to_dict(), "accel": "tcg"}),
            replies.append)
    ctx.ensure_home()
    ctx.vm_paths("web1").vm_dir.mkdir()
    ctx.vm_paths("web1").definition.write_text(json.dumps(spec().to_dict()))
    with pytest.raises(AlreadyExists, match="defined on this host already"):
        await migrate_incoming.serve_incoming(
            ctx, "web1", _reader({"definition": spec().to_dict(), "accel": "tcg"}),
            replies.append)
    assert replies == []
    assert ctx.vm_paths("web1").definition.exists()  # a VM this host owns is never touched


async def test_a_migration_in_under_way_is_never_touched(ctx: Context) -> None:
    paths = ctx.vm_paths("web1")
    ctx.ensure_home()
    paths.vm_dir.mkdir()
    paths.incoming_definition.write_text(json.dumps(spec().to_dict()))
    with locked(paths.lock, what="web1: migrate in"):  # as the one under way holds it
        with pytest.raises(Busy):
            await migrate_incoming.serve_incoming(
                ctx, "web1", _reader({"definition": spec().to_dict(), "accel": "tcg"}),
                [].append)
        with pytest.raises(Busy):
            migrate_incoming.abort_pending(ctx, "web1")
        assert paths.incoming_definition.exists()
    migrate_incoming.abort_pending(ctx, "web1")  # once it is gone: its leftovers go
    assert not paths.vm_dir.exists()


@pytest.mark.parametrize(("said", "busy"), [
    ("umount: /shared: target is busy.", True),  # util-linux
    ("umount: can't unmount /shared: Device or resource busy", True),  # busybox
    ("umount: /shared: not mounted.", False),
    ("umount: /shared: must be superuser to unmount.", False),
])
def test_only_a_busy_share_is_unmounted_by_force(said: str, busy: bool) -> None:
    assert shared.unmount_busy(said) is busy


class _Guest:
    """An agent whose ``umount`` answers as scripted (the share mounted at /shared)."""

    def __init__(self, *statuses: tuple[int, str]) -> None:
        self.statuses = list(statuses)
        self.ran: list[list[str]] = []

    @property
    def agent(self) -> AgentClient:
        return cast(AgentClient, self)

    async def exec(self, argv: list[str], **_: object) -> ExecResult:
        self.ran.append(argv)
        status, said = self.statuses.pop(0)
        return ExecResult(exitcode=status, signal=None, stdout=b"", stderr=said.encode())


@pytest.fixture
def mounted(monkeypatch: pytest.MonkeyPatch) -> None:
    async def state(_agent: object, mode: SharedMode) -> shared.ShareState:
        return shared.ShareState(shared.ShareStatus.MOUNTED, mode, "/shared")
    monkeypatch.setattr(shared, "guest_share_state", state)


BUSY = (32, "umount: /shared: target is busy.")


async def test_a_share_in_use_is_refused_unless_forced(ctx: Context, mounted: None) -> None:
    paths = ctx.vm_paths("web1")
    ctx.ensure_runtime(paths)
    guest = _Guest(BUSY)
    with pytest.raises(InvalidState, match=r"target is busy.*--force-unmount"):
        await shared.unmount_share_in_guest(guest.agent, spec(), paths, purpose="to migrate",
                                            otherwise=", or migrate with --force-unmount")
    assert guest.ran == [["umount", "/shared"]]
    assert records.read_share_unmount(paths) is None  # still mounted: nothing owed

    guest = _Guest(BUSY, (0, ""))
    done = await shared.unmount_share_in_guest(guest.agent, spec(), paths, purpose="to migrate",
                                               force=True)
    assert done == shared.GuestUnmount("/shared", forced=True)
    assert guest.ran == [["umount", "/shared"], ["umount", "-l", "/shared"]]
    assert records.read_share_unmount(paths) is not None  # mounted again after (or owed)

    guest = _Guest((0, ""))  # not busy: never forced
    done = await shared.unmount_share_in_guest(guest.agent, spec(), paths, purpose="to migrate",
                                               force=True)
    assert done == shared.GuestUnmount("/shared", forced=False)


async def test_force_never_overrides_other_failures(ctx: Context, mounted: None) -> None:
    paths = ctx.vm_paths("web1")
    ctx.ensure_runtime(paths)
    guest = _Guest((1, "umount: /shared: must be superuser to unmount."))
    with pytest.raises(InvalidState, match="superuser"):
        await shared.unmount_share_in_guest(guest.agent, spec(), paths, purpose="to migrate",
                                            force=True)
    assert guest.ran == [["umount", "/shared"]]
    guest = _Guest(BUSY, (1, "umount: /shared: no lazy here"))
    with pytest.raises(InvalidState, match=r"target is busy\.; umount -l: .*no lazy here"):
        await shared.unmount_share_in_guest(guest.agent, spec(), paths, purpose="to migrate",
                                            force=True)


def test_the_share_blocks_migration_until_the_guest_lets_go() -> None:
    blocked = {"status": "none", "blocked": True, "blocked-reasons": [
        "Migration is disabled when VirtFS export path '/h/shared_folder' is mounted in the "
        "guest using mount_tag 'hypercore_share'"]}
    assert len(migrate.share_blockers(blocked)) == 1
    assert migrate.share_blockers({"status": "none", "blocked": False}) == []
    assert migrate.share_blockers({"blocked-reasons": ["a vhost device"]}) == []


# -- --offline: the target end, fed as the source feeds it -----------------------------------

LOCAL = DiskSpec(kind=DiskKind.QCOW2, path="/elsewhere/web1/disk.qcow2")
DATA = b"qcow2-ish" + bytes(3 << 20) + b"tail"  # (a run of zeros: written as a hole)


def _feed(*parts: object) -> asyncio.StreamReader:
    reader = asyncio.StreamReader()
    for part in parts:
        reader.feed_data(part if isinstance(part, bytes) else json.dumps(part).encode() + b"\n")
    reader.feed_eof()
    return reader


def _header(vm: VmSpec, size: int | None = len(DATA)) -> dict[str, object]:
    return {"definition": vm.to_dict(), "installed": None, "unclean_stop": None,
            "disk": None if size is None else {"format": "qcow2", "size": size}}


async def test_a_stopped_vm_moves_in_with_its_disk_checked(ctx: Context) -> None:
    replies: list[dict[str, object]] = []
    digest = hashlib.sha256(DATA).hexdigest()
    await migrate_offline.serve_offline(
        ctx, "web1", _feed(_header(spec(disk=LOCAL)), DATA, {"sha256": digest},
                           {"commit": True}), replies.append)
    paths = ctx.vm_paths("web1")
    disk = paths.default_disk  # this host's layout, whatever path the source used
    assert replies == [{"ready": True, "disk": str(disk)},
                       {"received": len(DATA), "sha256": digest}, {"committed": True}]
    assert disk.read_bytes() == DATA
    assert disk.stat().st_blocks * 512 < len(DATA)  # the zeros are a hole
    moved = registry.load(ctx, "web1")
    assert moved.disk == DiskSpec(kind=DiskKind.QCOW2, path=str(disk), owned=True)
    assert not paths.incoming_definition.exists()


async def test_what_a_move_in_cut_off_left_is_replaced(ctx: Context) -> None:
    paths = ctx.vm_paths("web1")
    ctx.ensure_home()
    paths.vm_dir.mkdir()
    paths.incoming_definition.write_text(json.dumps(spec(disk=LOCAL).to_dict()))
    paths.default_disk.write_bytes(b"half a disk")  # (its process was killed mid-copy)
    digest = hashlib.sha256(DATA).hexdigest()
    await migrate_offline.serve_offline(
        ctx, "web1", _feed(_header(spec(disk=LOCAL)), DATA, {"sha256": digest},
                           {"commit": True}), [].append)
    assert paths.default_disk.read_bytes() == DATA and registry.exists(ctx, "web1")


@pytest.mark.parametrize("cut", ["mid-copy", "bad checksum", "no commit"])
async def test_a_move_in_cut_off_leaves_nothing(ctx: Context, cut: str) -> None:
    digest = hashlib.sha256(DATA).hexdigest()
    parts: list[object] = [_header(spec(disk=LOCAL))]
    if cut == "mid-copy":
        parts.append(DATA[:len(DATA) // 2])
    elif cut == "bad checksum":
        parts += [DATA, {"sha256": "0" * 64}, {"commit": True}]
    else:
        parts += [DATA, {"sha256": digest}]
    replies: list[dict[str, object]] = []
    with pytest.raises(OperationFailed):
        await migrate_offline.serve_offline(ctx, "web1", _feed(*parts), replies.append)
    assert not ctx.vm_paths("web1").vm_dir.exists()
    assert {"committed": True} not in replies


async def test_a_ceph_vm_moves_its_definition_only(ctx: Context,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    reached: list[str] = []

    async def reachable(_ctx: Context, vm: VmSpec, _doing: str) -> None:
        reached.append(vm.disk.describe())
    monkeypatch.setattr(rbd_disks, "check_reachable", reachable)
    replies: list[dict[str, object]] = []
    await migrate_offline.serve_offline(ctx, "web1", _feed(_header(spec(), None),
                                                           {"commit": True}), replies.append)
    assert replies == [{"ready": True, "disk": None}, {"committed": True}]
    assert registry.load(ctx, "web1") == spec() and reached == ["rbd:vm-pool/img1"]


async def test_what_cannot_move_in_is_refused_before_anything_is_made(ctx: Context) -> None:
    refusals: list[tuple[dict[str, object], str]] = [
        (_header(spec(disk=LOCAL, kernel="/no/such/vmlinuz")), "kernel /no/such/vmlinuz"),
        (_header(spec(disk=LOCAL, linked_to="base1")), "linked clone"),
        (_header(spec(disk=LOCAL), None), "format was not sent"),
        (_header(spec(disk=LOCAL), -1), "bad disk size"),
        (_header(spec(name="web2", disk=LOCAL)), "names 'web2'"),
    ]
    for header, said in refusals:
        with pytest.raises(HypercoreError, match=said):
            await migrate_offline.serve_offline(ctx, "web1", _feed(header), [].append)
        assert not ctx.vm_paths("web1").vm_dir.exists()
    ctx.ensure_home()
    ctx.vm_paths("web1").vm_dir.mkdir()
    ctx.vm_paths("web1").definition.write_text(json.dumps(spec().to_dict()))
    with pytest.raises(AlreadyExists):
        await migrate_offline.serve_offline(ctx, "web1", _feed(_header(spec(disk=LOCAL))),
                                            [].append)
    assert registry.load(ctx, "web1") == spec()  # a VM this host owns is never touched


def test_a_moved_disk_lands_in_the_targets_layout() -> None:
    paths = LAYOUT.vm("web1")
    assert migrate_offline.target_disk(paths, DiskKind.QCOW2) == \
        Path("/home/u/.hypercore/vms/web1/disk.qcow2")
    assert migrate_offline.target_disk(paths, DiskKind.RAW) == \
        Path("/home/u/.hypercore/vms/web1/disk.raw")
    with pytest.raises(InvalidInput):
        migrate_offline.target_disk(paths, DiskKind.RBD)


class _StallingQemu:
    """A source QEMU whose monitor stops answering once the migration runs (it flushes
    an RBD disk whose cluster is gone, holding its global lock)."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    def pending_events(self) -> list[object]:
        return []

    async def execute(self, command: str, _arguments: object = None, *,
                      timeout: float) -> object:
        self.asked.append(command)
        if command == "query-migrate" and "migrate" in self.asked:
            raise Timeout(f"web1: QEMU did not answer {command} within {timeout:g}s")
        return {"status": "none"} if command == "query-migrate" else {}


class _QuietTarget:
    def send(self, _message: object) -> None:
        pass

    def ended(self) -> bool:
        return False


async def test_a_stalled_source_qemu_is_given_up_without_more_questions() -> None:
    qemu = _StallingQemu()
    with pytest.raises(migrate.QemuStalled, match="Ceph cluster reachable"):
        await migrate._run_migration(  # noqa: SLF001
            cast(QmpSession, qemu), "web1", cast(migrate.TargetSession, _QuietTarget()),
            "unix:/x", downtime_ms=300, bandwidth_mbps=None,
            deadline=time.monotonic() + 60, progress=None, started=time.monotonic())
    assert qemu.asked[-2:] == ["migrate", "query-migrate"]  # no migrate_cancel to wait on


def test_an_offline_move_is_described_in_one_line() -> None:
    copied = migrate_offline.OfflineResult(
        name="web1", target="b", disk="/h/vms/web1/disk.qcow2", copied=3 << 20,
        sha256="ab" * 32, source_disk="removed", total_s=1.25)
    text = migrate_offline.describe(copied)
    assert "\n" not in text and "moved to b (stopped) in 1.2 s" in text
    assert "3.0 MiB" in text and "abababab" in text and "removed here" in text
    kept = migrate_offline.describe(replace(copied, source_disk="kept"))
    assert "kept" in kept
    ceph = migrate_offline.describe(replace(copied, disk="rbd:p/i", copied=0, sha256=None,
                                            source_disk="ceph"))
    assert "the disk stays on Ceph: rbd:p/i" in ceph
    with pytest.raises(InvalidInput, match="linked clones"):
        migrate_offline.check_movable(spec(base_of=("c1",)))


async def test_a_cancel_check_ends_a_wait_for_the_target() -> None:
    never = asyncio.get_running_loop().create_future()
    asks: list[int] = []

    def cancelled() -> bool:
        asks.append(1)
        return len(asks) >= 3

    with pytest.raises(OperationFailed, match="^web1: the migration to b was cancelled; it "
                                              "runs on this host as before$"):
        await migrate._unless_cancelled(never, cancelled, "web1", "b")
    assert never.cancelled()  # (the wait itself ended too)
    done = asyncio.get_running_loop().create_future()
    done.set_result("ready")
    assert await migrate._unless_cancelled(done, lambda: False, "web1", "b") == "ready"


class _Qmp:
    """QEMU migrating forever once asked: ``query-migrate`` active until ``migrate_cancel``."""

    def __init__(self) -> None:
        self.commands: list[str] = []

    async def execute(self, command: str, arguments: object = None, *,
                      timeout: float = 0) -> object:
        self.commands.append(command)
        if command == "query-migrate":
            if "migrate" not in self.commands:
                return {"status": "none"}
            cancelling = "migrate_cancel" in self.commands
            return {"status": "cancelled" if cancelling else "active",
                    "ram": {"transferred": 1 << 20, "remaining": 3 << 20, "total": 4 << 20}}
        return {}

    def pending_events(self) -> list[object]:
        return []


class _TargetThere:
    host = "b"

    def __init__(self) -> None:
        self.sent: list[object] = []

    def send(self, message: object) -> None:
        self.sent.append(message)

    def ended(self) -> bool:
        return False


async def test_a_cancel_check_cancels_the_migration_in_qemu(monkeypatch: pytest.MonkeyPatch
                                                            ) -> None:
    monkeypatch.setattr(migrate, "POLL", 0.01)
    qmp, target = _Qmp(), _TargetThere()
    seen: list[migrate.MigrationProgress] = []
    with pytest.raises(OperationFailed, match="migration to b was cancelled"):
        await migrate._run_migration(
            qmp, "web1", target, "unix:/x", downtime_ms=300,  # type: ignore[arg-type]
            bandwidth_mbps=None, deadline=1e12, progress=seen.append, started=0.0,
            cancelled=lambda: len(seen) >= 2)
    assert qmp.commands[-2:] == ["migrate_cancel", "query-migrate"]
    assert "migrate" in qmp.commands and {"commit": True} not in target.sent


async def test_a_cancel_during_the_switch_over_waits_for_the_targets_answer() -> None:
    """Ctrl-C (or SIGTERM) after ``commit`` went to the target: the target may be running
    the guest already, so the answer is waited for and the migration finishes (resuming
    the guest here could leave two running copies)."""

    class Answering:
        async def receive(self, timeout: float, what: str) -> dict[str, object]:
            await asyncio.sleep(0.2)
            return {"committed": True}

    task = asyncio.ensure_future(migrate._switch_over_answer(  # noqa: SLF001
        cast(migrate.TargetSession, Answering()), "web1"))
    await asyncio.sleep(0.05)
    task.cancel()
    assert await task == {"committed": True}

    class Silent:
        async def receive(self, timeout: float, what: str) -> dict[str, object]:
            raise Timeout("b: no answer to the switch-over within 30 s")

    assert await migrate._switch_over_answer(  # noqa: SLF001
        cast(migrate.TargetSession, Silent()), "web1") == {
            "lost": "b: no answer to the switch-over within 30 s"}


class _RecoveringQemu:
    """The source QEMU after a migration given up on a stall: its monitor does not answer
    for ``stalled`` sessions, then says ``status``; ``cont`` is noted."""

    def __init__(self, stalled: int, status: str) -> None:
        self.stalled = stalled
        self.status = status
        self.asked: list[str] = []

    @contextlib.asynccontextmanager
    async def session(self, *_args: object, **_kwargs: object) -> AsyncIterator[_RecoveringQemu]:
        if self.stalled > 0:
            self.stalled -= 1
            raise Timeout("web1: QEMU monitor did not answer within 0.01s")
        yield self

    async def execute(self, command: str, _arguments: object = None, *,
                      timeout: float = 0) -> object:
        self.asked.append(command)
        if command == "query-status":
            return {"status": self.status}
        if command == "query-migrate":
            return {"status": "completed"}
        if command == "cont":
            self.status = "running"
        return {}


@pytest.mark.parametrize(("status", "resumed"), [
    ("postmigrate", True),  # the stream went whole into the dying forward: resumed here
    ("running", False),  # the stream failed: QEMU ran the guest on by itself
    ("paused", False),  # paused by someone since: left as it is
])
async def test_the_recoverer_sees_the_guest_run_again(ctx: Context,
                                                      monkeypatch: pytest.MonkeyPatch,
                                                      status: str, resumed: bool) -> None:
    ctx.ensure_home()
    ctx.vm_paths("web1").vm_dir.mkdir(parents=True)
    qemu = _RecoveringQemu(stalled=2, status=status)
    monkeypatch.setattr(migrate, "qmp_session", qemu.session)
    monkeypatch.setattr(migrate.vmstate, "process_state",
                        lambda _paths: (VmState.RUNNING, 4242))
    monkeypatch.setattr(migrate.registry, "load", lambda _ctx, _name: spec())
    said = await migrate.recover_after_stall(ctx, "web1", wait=5, poll=0.01)
    assert ("cont" in qemu.asked) is resumed
    if status == "paused":
        assert said == "web1: the guest is paused; left as it is"  # (not ours to resume)
    else:
        assert said.startswith("web1: the guest runs here again")
        assert said.endswith("(resumed)") is resumed


async def test_the_recoverer_gives_up_on_a_qemu_that_never_answers(
        ctx: Context, monkeypatch: pytest.MonkeyPatch) -> None:
    ctx.ensure_home()
    ctx.vm_paths("web1").vm_dir.mkdir(parents=True)
    qemu = _RecoveringQemu(stalled=1000, status="finish-migrate")
    monkeypatch.setattr(migrate, "qmp_session", qemu.session)
    monkeypatch.setattr(migrate.vmstate, "process_state",
                        lambda _paths: (VmState.RUNNING, 4242))
    said = await migrate.recover_after_stall(ctx, "web1", wait=0.1, poll=0.01)
    assert said == "web1: QEMU did not answer within 0.1 s; left as it is"
    assert qemu.asked == []
