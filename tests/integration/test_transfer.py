"""`hypercore cp` against real TCG test guests: host→guest, guest→host and guest→guest
through the agent and through the shared folder, sha256 checked, atomic placement, and
the failures (missing source or directory, full or read-only guest disk, agent dying, the
file staged in the shared folder damaged or cut short while it is copied)."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from hypercore_tui.core.errors import HypercoreError, InvalidInput, NoSpace, NotFound
from hypercore_tui.services import transfer
from hypercore_tui.services.transfer import directions, guest_side, spot
from hypercore_tui.services.transfer.errors import TransferError

from ..conftest import GuestImage, HcEnv
from .storage_env import guest_sh, guests_env, serial_command

pytestmark = pytest.mark.qemu

SIZE = 20 * 1024 * 1024
ODD = "we ird 'n' $(id) é.bin"


@pytest.fixture(scope="module")
def guests(test_guest: GuestImage) -> Iterator[HcEnv]:
    with guests_env(test_guest, ["tra", "trb"]) as env:
        yield env


@pytest.fixture(scope="module")
def payload(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    path = tmp_path_factory.mktemp("payload") / "random.bin"
    data = os.urandom(SIZE)
    path.write_bytes(data)
    path.chmod(0o750)
    return path, hashlib.sha256(data).hexdigest()


@pytest.fixture(autouse=True)
def clean_guests(guests: HcEnv) -> Iterator[None]:
    for name in ("tra", "trb"):
        guest_sh(guests, name, "rm -rf /tmp/t; mkdir -p /tmp/t")
    yield


def guest_sha(env: HcEnv, name: str, path: str) -> str:
    return guest_sh(env, name, 'sha256sum -- "$1"', path).stdout.split()[0].decode()


def guest_ls(env: HcEnv, name: str, directory: str) -> list[str]:
    out = guest_sh(env, name, 'find "$1" -mindepth 1 -maxdepth 1 -print0', directory).stdout
    return sorted(entry.decode().rsplit("/", 1)[-1] for entry in out.split(b"\0") if entry)


def copy(env: HcEnv, src: str, dst: str, **kw: object) -> transfer.TransferResult:
    progress: list[tuple[int, int]] = []
    result = asyncio.run(transfer.copy(env.ctx, src, dst, progress=lambda _s, d, t:
                                       progress.append((d, t)), **kw))  # type: ignore[arg-type]
    assert progress, "progress must be reported"
    assert progress[-1][0] == progress[-1][1]
    assert all(a[0] <= b[0] for a, b in zip(progress, progress[1:], strict=False))
    return result


def test_host_to_guest_and_back_through_the_agent(guests: HcEnv, payload: tuple[Path, str],
                                                  tmp_path: Path) -> None:
    src, digest = payload
    up = copy(guests, str(src), f"tra:/tmp/t/{ODD}", channel="agent")
    assert (up.channel, up.bytes, up.sha256) == ("agent", SIZE, digest)
    assert up.destination == f"tra:/tmp/t/{ODD}"
    assert guest_sha(guests, "tra", f"/tmp/t/{ODD}") == digest
    mode = guest_sh(guests, "tra", 'stat -c %a -- "$1"', f"/tmp/t/{ODD}").stdout.strip()
    assert mode == b"750"
    assert guest_ls(guests, "tra", "/tmp/t") == [ODD]  # no temporary file left

    down = copy(guests, f"tra:/tmp/t/{ODD}", str(tmp_path) + "/", channel="agent")
    assert (down.channel, down.sha256) == ("agent", digest)
    back = tmp_path / ODD
    assert hashlib.sha256(back.read_bytes()).hexdigest() == digest
    assert back.stat().st_mode & 0o777 == 0o750
    assert sorted(p.name for p in tmp_path.iterdir()) == [ODD]
    print(f"agent: up {up.mib_per_second:.1f} MiB/s, down {down.mib_per_second:.1f} MiB/s")


def test_cli_picks_the_shared_folder_when_mounted(guests: HcEnv, payload: tuple[Path, str],
                                                  tmp_path: Path) -> None:
    src, digest = payload
    up = guests.run("cp", str(src), "tra:/tmp/t/")
    assert up.returncode == 0, up.stderr
    assert b"via shared folder in" in up.stdout and digest[:16].encode() in up.stdout
    assert b"\r" not in up.stderr, "no progress bar when stderr is not a terminal"
    assert guest_sha(guests, "tra", "/tmp/t/random.bin") == digest
    assert guest_ls(guests, "tra", "/tmp/t") == ["random.bin"]
    staging = guests.home / "shared_folder" / ".hypercore-transfer"
    assert list(staging.iterdir()) == []

    down = guests.run("cp", "tra:/tmp/t/random.bin", str(tmp_path / "back.bin"))
    assert down.returncode == 0, down.stderr
    assert b"via shared folder in" in down.stdout
    assert hashlib.sha256((tmp_path / "back.bin").read_bytes()).hexdigest() == digest
    assert list(staging.iterdir()) == []


def test_direct_placement_inside_the_share(guests: HcEnv, payload: tuple[Path, str],
                                           tmp_path: Path) -> None:
    src, digest = payload
    result = copy(guests, str(src), "tra:/shared/direct.bin")
    assert result.channel == "shared folder (direct)"
    assert hashlib.sha256((guests.home / "shared_folder" / "direct.bin").read_bytes()
                          ).hexdigest() == digest
    assert guest_sha(guests, "trb", "/shared/direct.bin") == digest  # every guest sees it
    back = copy(guests, "trb:/shared/direct.bin", str(tmp_path / "d.bin"))
    assert back.channel == "shared folder (direct)" and back.sha256 == digest
    (guests.home / "shared_folder" / "direct.bin").unlink()


def test_guest_to_guest(guests: HcEnv, payload: tuple[Path, str]) -> None:
    src, digest = payload
    copy(guests, str(src), "tra:/tmp/t/a.bin")
    via_share = copy(guests, "tra:/tmp/t/a.bin", "trb:/tmp/t/")
    assert via_share.channel == "shared folder" and via_share.sha256 == digest
    assert guest_sha(guests, "trb", "/tmp/t/a.bin") == digest
    via_agent = copy(guests, "tra:/tmp/t/a.bin", "trb:/tmp/t/b.bin", channel="agent")
    assert via_agent.channel == "agent" and via_agent.sha256 == digest
    assert guest_sha(guests, "trb", "/tmp/t/b.bin") == digest
    inside = copy(guests, "trb:/tmp/t/b.bin", "trb:/tmp/t/c.bin")
    assert inside.channel == "inside the guest"
    assert guest_sha(guests, "trb", "/tmp/t/c.bin") == digest
    assert sorted(guest_ls(guests, "trb", "/tmp/t")) == ["a.bin", "b.bin", "c.bin"]
    assert list((guests.home / "shared_folder" / ".hypercore-transfer").iterdir()) == []


def test_missing_sources_and_directories(guests: HcEnv, payload: tuple[Path, str],
                                         tmp_path: Path) -> None:
    src, _ = payload
    cases = [
        (["cp", str(tmp_path / "nope"), "tra:/tmp/t/"], 2, b"no such file"),
        (["cp", "tra:/tmp/t/nope", str(tmp_path)], 2, b"no such file in the guest"),
        (["cp", str(src), "tra:/tmp/t/missing/dir/x"], 2,
         b"no such directory in the guest: /tmp/t/missing/dir"),
        (["cp", str(src), "tra:/tmp/t/missing/"], 2, b"no such directory in the guest"),
        (["cp", "tra:/etc/hostname", str(tmp_path / "no" / "x")], 2, b"no such directory"),
        (["cp", str(tmp_path), "tra:/tmp/t/"], 2, b"is a directory"),
        (["cp", "tra:/etc", str(tmp_path)], 2, b"is a directory"),
        (["cp", str(src), str(tmp_path / "x")], 2, b"both paths are on the host"),
        (["cp", str(src), "ghost:/tmp/"], 2, b"no VM named"),
    ]
    for argv, code, message in cases:
        proc = guests.run(*argv)
        assert proc.returncode == code, (argv, proc.stderr)
        assert message in proc.stderr, (argv, proc.stderr)
        assert proc.stderr.count(b"\n") == 1 and b"Traceback" not in proc.stderr
    assert guest_ls(guests, "tra", "/tmp/t") == []


SMALL_DISKS = r"""
mkdir -p /mnt/small /mnt/ro
mount -t tmpfs -o size=1m tmpfs /mnt/small
mount -t tmpfs -o ro,size=1m tmpfs /mnt/ro
"""


@pytest.fixture
def small_disks(guests: HcEnv) -> Iterator[None]:
    guest_sh(guests, "tra", SMALL_DISKS)
    yield
    guest_sh(guests, "tra", "umount /mnt/small /mnt/ro", check=False)


def test_full_and_read_only_guest_disks(guests: HcEnv, small_disks: None, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    big = tmp_path / "two-mib.bin"
    big.write_bytes(os.urandom(2 * 1024 * 1024))
    full = guests.run("cp", str(big), "tra:/mnt/small/")
    assert full.returncode == 1 and b"no space left in the guest" in full.stderr
    ro = guests.run("cp", str(big), "tra:/mnt/ro/x")
    assert ro.returncode == 1 and b"Read-only file system" in ro.stderr

    # Past the free-space check, the disk fills up during the copy (both channels).
    monkeypatch.setattr(directions, "check_free", lambda *a: None)
    for channel in ("agent", "share"):
        with pytest.raises(NoSpace, match="no space left in the guest"):
            asyncio.run(transfer.copy(guests.ctx, str(big), "tra:/mnt/small/x.bin",
                                      channel=channel))
        assert guest_ls(guests, "tra", "/mnt/small") == []
    assert list((guests.home / "shared_folder" / ".hypercore-transfer").iterdir()) == []


def test_agent_dying_mid_transfer_leaves_nothing(guests: HcEnv, payload: tuple[Path, str],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    src, _ = payload
    monkeypatch.setattr(directions, "CHUNK_TIMEOUT", 5.0)
    seen: list[float | None] = []

    async def run() -> None:
        def progress(stage: str, done: float | None, total: float) -> None:
            seen.append(done)
            if len(seen) == 2:
                serial_command(guests, "tra", "killall qemu-ga")
        await transfer.copy(guests.ctx, str(src), "tra:/tmp/t/dead.bin", progress=progress,
                            channel="agent")

    with pytest.raises(HypercoreError) as info:
        asyncio.run(run())
    message = str(info.value)
    assert "during the transfer" in message and "\n" not in message
    assert 2 <= len(seen) < SIZE // directions.WRITE_CHUNK
    # The agent came back (the guest respawns it) and the temporary file was removed.
    assert guest_ls(guests, "tra", "/tmp/t") == []


def test_service_errors_and_auto_mount(guests: HcEnv, tmp_path: Path) -> None:
    ctx = guests.ctx
    with pytest.raises(NotFound):
        asyncio.run(transfer.copy(ctx, "tra:/no/such", str(tmp_path)))
    with pytest.raises(InvalidInput, match="unknown channel"):
        asyncio.run(transfer.copy(ctx, "tra:/etc/hostname", "trb:/tmp/t/", channel="carrier"))
    # The share is attached but not mounted: cp mounts it and uses it.
    guest_sh(guests, "trb", "umount /shared")
    result = asyncio.run(transfer.copy(ctx, "/etc/hostname", "trb:/tmp/t/"))
    assert result.channel == "shared folder"
    assert b" /shared 9p " in guest_sh(guests, "trb", "cat /proc/mounts").stdout
    assert guest_sh(guests, "trb", "cat /tmp/t/hostname").stdout == Path(
        "/etc/hostname").read_bytes()


def test_progress_bar_on_a_terminal(guests: HcEnv, payload: tuple[Path, str]) -> None:
    import pty
    import subprocess

    from ..conftest import HYPERCORE

    src, digest = payload
    master, slave = pty.openpty()
    try:
        proc = subprocess.Popen([*HYPERCORE, "cp", "--via", "agent", str(src), "tra:/tmp/t/"],
                                env=guests.environ, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=slave)
        os.close(slave)
        drawn = b""
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the child closed its side
                break
            if not chunk:
                break
            drawn += chunk
        out, _ = proc.communicate(timeout=300)
    finally:
        os.close(master)
    assert proc.returncode == 0
    assert b"via agent" in out
    assert b"\rrandom.bin [" in drawn and b"100% 20.0 MiB / 20.0 MiB" in drawn
    assert drawn.endswith(b"\r\x1b[K")
    assert guest_sha(guests, "tra", "/tmp/t/random.bin") == digest


def _damage(path: Path, offset: int, truncate: bool = False) -> None:
    """Change a file in the shared folder as another writer would (made writable first)."""
    os.chmod(path, 0o600)
    with open(path, "r+b") as fh:
        if truncate:
            fh.truncate(offset)
        else:
            fh.seek(offset)
            byte = fh.read(1)
            fh.seek(offset)
            fh.write(bytes([byte[0] ^ 0xFF]))


@pytest.mark.parametrize("how", ["middle", "cut short"])
def test_staged_file_damaged_while_the_guest_copies_it(guests: HcEnv, payload: tuple[Path, str],
                                                       monkeypatch: pytest.MonkeyPatch,
                                                       how: str) -> None:
    """Host to guest: the guest checks only the size and the first and last 64 KiB here;
    the staged file is damaged in the middle (or cut short) while the guest copies it.
    The copy fails, nothing is placed, no temporary or staged file stays."""
    src, _ = payload
    monkeypatch.setattr(directions, "choose_blocks", lambda size: spot.choose_blocks(size, 2))
    real = directions.checked
    hits: list[Path] = []

    async def damaging(agent: object, script: str, *args: str,
                       what: str | None = None) -> object:
        if script != guest_side.FROM_SHARE:
            return await real(agent, script, *args, what=what)  # type: ignore[arg-type]
        staged = guests.home / "shared_folder" / ".hypercore-transfer" / args[0].rsplit("/")[-1]
        work = asyncio.ensure_future(real(agent, script, *args, what=what))  # type: ignore
        await asyncio.sleep(0.05)  # (the guest is copying, or has just copied)
        _damage(staged, SIZE // 2 if how == "middle" else SIZE // 3, truncate=how != "middle")
        hits.append(staged)
        return await work

    monkeypatch.setattr(directions, "checked", damaging)
    with pytest.raises(TransferError) as info:
        asyncio.run(transfer.copy(guests.ctx, str(src), "tra:/tmp/t/hit.bin"))
    message = str(info.value)
    assert hits and "\n" not in message
    assert "nothing was placed at tra:/tmp/t/hit.bin" in message or (
        how == "cut short" and "bytes, the shared folder's file" in message), message
    assert guest_ls(guests, "tra", "/tmp/t") == []
    assert list((guests.home / "shared_folder" / ".hypercore-transfer").iterdir()) == []


@pytest.mark.parametrize("how", ["first block", "cut short"])
def test_staged_copy_from_the_guest_damaged(guests: HcEnv, payload: tuple[Path, str],
                                            monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                            how: str) -> None:
    """Guest to host: the file the guest wrote into the shared folder is damaged in a
    block it hashed, or cut short, before the host reads it: the copy fails and leaves
    nothing."""
    src, _ = payload
    copy(guests, str(src), "tra:/tmp/t/out.bin")
    real = directions.run_script

    async def damaging(agent: object, script: str, *args: str, **kw: object) -> object:
        result = await real(agent, script, *args, **kw)  # type: ignore[arg-type]
        if script == guest_side.TO_SHARE:
            staged = guests.home / "shared_folder" / ".hypercore-transfer" / \
                args[1].rsplit("/")[-1]
            _damage(staged, 0 if how == "first block" else SIZE // 2,
                    truncate=how == "cut short")
        return result

    monkeypatch.setattr(directions, "run_script", damaging)
    expected = ("has the sampled blocks' sha256" if how == "first block"
                else "changed while it was copied")
    with pytest.raises(TransferError, match=expected):
        asyncio.run(transfer.copy(guests.ctx, "tra:/tmp/t/out.bin", str(tmp_path) + "/"))
    assert list(tmp_path.iterdir()) == []
    assert list((guests.home / "shared_folder" / ".hypercore-transfer").iterdir()) == []
