"""Live migration without QEMU or a network: the target's argv, the progress read from
``query-migrate``, what is refused before anything starts (on the command line and by the
target end), and the ssh options of a forwarding. The real thing is
tests/integration/test_migrate.py."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from hypercore_tui.adapters.fs import locked
from hypercore_tui.adapters.ssh import SshTarget
from hypercore_tui.cli import main
from hypercore_tui.core.argv import LaunchPlan, build_qemu_argv
from hypercore_tui.core.errors import AlreadyExists, Busy, InvalidInput, OperationFailed
from hypercore_tui.core.layout import Layout
from hypercore_tui.core.models import DiskKind, DiskSpec, SharedMode, VmSpec
from hypercore_tui.services import migrate, migrate_incoming
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
    with pytest.raises(InvalidInput, match="local file.*Ceph.*--offline.*not implemented"):
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
    (["migrate", "web1", "b", "--offline"], "--offline"),
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
