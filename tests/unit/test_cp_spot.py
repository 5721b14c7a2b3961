"""The cheap check of a copy through the shared folder (services/transfer/spot.py): the
blocks chosen, the host's digest of them as they stream past, the guest scripts that
check them (run here under dash and busybox sh), and the copy into a "guest" that is
this host (the scripts run locally, the share a directory) with the staged file
damaged or truncated while the guest copies it. The real guests: test_transfer.py."""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from hypercore_tui.adapters.qga import ExecResult
from hypercore_tui.services import guest_exec, shared
from hypercore_tui.services.context import Context
from hypercore_tui.services.transfer import directions, guest_side, host_files, spot
from hypercore_tui.services.transfer.errors import TransferError, guest_failure
from hypercore_tui.services.transfer.spot import BLOCK, Spot, choose_blocks, file_spot

SHELLS = [sh for sh in (["dash"], ["busybox", "sh"]) if shutil.which(sh[0])]


def run(shell: list[str], script: str, *args: str) -> ExecResult:
    """A guest script as guest_exec runs it: sh -c TEXT NAME ARGS, a guest's PATH."""
    proc = subprocess.run([*shell, "-c", guest_exec.script_text(script), "hypercore-cp",
                           *args], capture_output=True, env={"PATH": "/usr/bin:/bin"},
                          check=False, timeout=60)
    return ExecResult(exitcode=proc.returncode, signal=None, stdout=proc.stdout,
                      stderr=proc.stderr)


def test_blocks_chosen() -> None:
    """Small files whole, empty ones nothing; else the first, the last and 6 others."""
    assert choose_blocks(0) == []
    assert choose_blocks(1) == [0]
    assert choose_blocks(8 * BLOCK) == list(range(8))
    for size in (8 * BLOCK + 1, 64 << 20, (1 << 40) + 5):
        blocks = choose_blocks(size)
        last = (size - 1) // BLOCK
        assert len(blocks) == 8 and blocks == sorted(set(blocks))
        assert blocks[0] == 0 and blocks[-1] == last
    assert len({tuple(choose_blocks(64 << 20)) for _ in range(20)}) > 1, "chosen at random"


@pytest.mark.parametrize("chunk", [1000, BLOCK, 3 * BLOCK + 7, 8 << 20])
def test_spot_fed_in_any_chunks_is_the_blocks_digest(tmp_path: Path, chunk: int) -> None:
    data = os.urandom(40 * BLOCK + 123)
    path = tmp_path / "f"
    path.write_bytes(data)
    blocks = choose_blocks(len(data), rand=random.Random(1))  # type: ignore[arg-type]
    fed = Spot(blocks)
    for offset in range(0, len(data), chunk):
        fed.feed(offset, data[offset:offset + chunk])
    direct = hashlib.sha256(b"".join(data[b * BLOCK:(b + 1) * BLOCK] for b in blocks))
    assert fed.hexdigest() == direct.hexdigest() == file_spot(str(path), blocks)
    assert fed.argv == " ".join(map(str, blocks))


@pytest.mark.parametrize("shell", SHELLS, ids=lambda s: s[0])
def test_from_share_script_checks_size_and_blocks(shell: list[str], tmp_path: Path) -> None:
    """5 cases: a good copy; a staged file cut short, one damaged in a checked block;
    one damaged elsewhere passes the guest's check (the host's state check is what
    catches that: test_damage_while_the_guest_copies); a small file is checked whole."""
    data = os.urandom(50 * BLOCK + 99)
    blocks = choose_blocks(len(data), rand=random.Random(2))  # type: ignore[arg-type]
    want = hashlib.sha256(b"".join(data[b * BLOCK:(b + 1) * BLOCK] for b in blocks))
    staged, tmp = tmp_path / "staged", tmp_path / "tmp"

    def fill(content: bytes, size: int = len(data), which: list[int] = blocks,
             digest: str = want.hexdigest()) -> ExecResult:
        staged.write_bytes(content)
        tmp.write_bytes(b"")
        return run(shell, "cp-from-share.sh", str(staged), str(tmp), str(size),
                   " ".join(map(str, which)), digest)

    ok = fill(data)
    assert ok.exitcode == 0, ok.stderr
    assert tmp.read_bytes() == data
    short = fill(data[:-1])
    assert short.exitcode == 9 and b"bytes, the shared folder's file" in short.stderr
    assert not tmp.exists(), "the temporary file is removed"
    middle = blocks[3] * BLOCK + 17
    damaged = fill(data[:middle] + bytes([data[middle] ^ 1]) + data[middle + 1:])
    assert damaged.exitcode == 9 and b"checksum mismatch in the guest" in damaged.stderr
    assert not tmp.exists()
    unchecked = next(b for b in range(len(data) // BLOCK) if b not in blocks) * BLOCK
    missed = fill(data[:unchecked] + bytes([data[unchecked] ^ 1]) + data[unchecked + 1:])
    assert missed.exitcode == 0
    small = os.urandom(3 * BLOCK)
    assert fill(small, len(small), [0, 1, 2], hashlib.sha256(small).hexdigest()).exitcode == 0
    assert fill(small[:-1] + b"x", len(small), [0, 1, 2],
                hashlib.sha256(small).hexdigest()).exitcode == 9


@pytest.mark.parametrize("shell", SHELLS, ids=lambda s: s[0])
def test_to_share_script_prints_the_blocks_and_sees_a_changed_source(
        shell: list[str], tmp_path: Path) -> None:
    data = os.urandom(20 * BLOCK)
    src, staged = tmp_path / "src", tmp_path / "staged"
    src.write_bytes(data)
    blocks = choose_blocks(len(data))
    res = run(shell, "cp-to-share.sh", str(src), str(staged), str(len(data)), "1",
              " ".join(map(str, blocks)))
    assert res.exitcode == 0, res.stderr
    assert res.stdout.split()[0].decode() == file_spot(str(src), blocks)
    assert staged.read_bytes() == data
    grown = run(shell, "cp-to-share.sh", str(src), str(staged), str(len(data) - 1), "1", "0")
    assert grown.exitcode == 11 and b"changed while it was copied" in grown.stderr
    assert not staged.exists()


def test_finalize_checks_the_size_before_the_rename(tmp_path: Path) -> None:
    tmp, final = tmp_path / ".part", tmp_path / "final"
    tmp.write_bytes(b"12345")
    res = run(SHELLS[0], "cp-finalize.sh", str(tmp), str(final), "", "644", "", "6")
    assert res.exitcode == 9 and b"has 5 bytes, not 6" in res.stderr
    assert not tmp.exists() and not final.exists()
    tmp.write_bytes(b"12345")
    res = run(SHELLS[0], "cp-finalize.sh", str(tmp), str(final), "", "640", "", "5")
    assert res.exitcode == 0, res.stderr
    assert final.read_bytes() == b"12345" and final.stat().st_mode & 0o777 == 0o640


def test_host_read_sees_a_source_that_changes(tmp_path: Path) -> None:
    """stream_into: written to while read (same size), and shorter than expected."""
    src = tmp_path / "src"
    src.write_bytes(os.urandom(3 * host_files.HOST_CHUNK))

    def poke(stage: str, done: float | None, total: float) -> None:
        if done == host_files.HOST_CHUNK:
            with open(src, "r+b") as fh:
                fh.write(b"x")

    out = os.open(tmp_path / "out", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        with pytest.raises(TransferError, match="changed while it was copied .written to"):
            asyncio.run(host_files.stream_into(out, src, poke, 0))
        with pytest.raises(TransferError, match=r"\(\d+ bytes now, not 5\)"):
            asyncio.run(host_files.stream_into(out, src, None, 0, size=5))
    finally:
        os.close(out)


# -- a copy into a "guest" that is this host ----------------------------------------------


class LocalGuest:
    """The guest scripts run here; the shared folder is the host's own directory."""

    def __init__(self, damage: Any = None) -> None:
        self.damage = damage
        self.scripts: list[str] = []

    async def run_script(self, agent: Any, script: str, *args: str,
                         timeout: float = 0) -> ExecResult:
        self.scripts.append(script)
        if script == guest_side.FROM_SHARE and self.damage is not None:
            self.damage(Path(args[0]))
        return run(SHELLS[0], script, *args)

    async def checked(self, agent: Any, script: str, *args: str,
                      what: str | None = None) -> ExecResult:
        result = await self.run_script(agent, script, *args)
        if result.shell_status != 0:
            raise guest_failure("vm", result, what)
        return result


@pytest.fixture
def local(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Context, Path, Path]:
    ctx = Context.from_environ({"HYPERCORE_HOME": str(tmp_path / "home"),
                                "HYPERCORE_RUNTIME_DIR": str(tmp_path / "run")})
    share = shared.host_share_dir(ctx)
    dest = tmp_path / "guest-disk"
    dest.mkdir()
    src = tmp_path / "src.bin"
    src.write_bytes(os.urandom(40 * BLOCK + 5))

    async def remove(ctx: Context, guest: Any, path: str) -> None:
        run(SHELLS[0], guest_side.REMOVE, path)

    monkeypatch.setattr(directions, "remove_guest_file", remove)
    return ctx, share, src


def to_local_guest(ctx: Context, share: Path, src: Path, dest: Path, fake: LocalGuest,
                   monkeypatch: pytest.MonkeyPatch, verify: bool = True) -> tuple[str, str]:
    monkeypatch.setattr(directions, "run_script", fake.run_script)
    monkeypatch.setattr(directions, "checked", fake.checked)
    guest = guest_side.Guest("vm", None, None, str(share))  # type: ignore[arg-type]
    final, used, digest = asyncio.run(directions.to_guest(
        ctx, src, src.stat(), guest, str(dest) + "/", src.name, "auto", verify, None))
    return final, digest


def test_copy_through_the_share_checks_spots_not_the_whole_file(
        local: tuple[Context, Path, Path], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    ctx, share, src = local
    fake = LocalGuest()
    final, digest = to_local_guest(ctx, share, src, tmp_path / "guest-disk", fake, monkeypatch)
    assert Path(final).read_bytes() == src.read_bytes()
    assert digest == hashlib.sha256(src.read_bytes()).hexdigest()
    assert fake.scripts == [guest_side.PREPARE_DST, guest_side.FROM_SHARE, guest_side.FINALIZE]
    assert list((share / shared.STAGING_DIR).iterdir()) == []
    assert sorted(p.name for p in (tmp_path / "guest-disk").iterdir()) == ["src.bin"]


def _rewrite(path: Path, offset: int, data: bytes | None = None) -> None:
    """Change the staged file as another writer would (it is 0400: made writable)."""
    os.chmod(path, 0o600)
    with open(path, "r+b") as fh:
        if data is None:
            fh.truncate(offset)
        else:
            fh.seek(offset)
            old = fh.read(len(data))
            fh.seek(offset)
            fh.write(data if data != old else bytes(b ^ 1 for b in data))
    os.chmod(path, 0o400)


@pytest.mark.parametrize("damage", ["unchecked block", "same bytes again", "cut short",
                                    "replaced"])
def test_damage_while_the_guest_copies(local: tuple[Context, Path, Path], tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch, damage: str) -> None:
    """The staged file changed after the host wrote it: in a block the guest does not
    check, written with the very bytes it had, cut short, replaced by another file.
    Each is caught; nothing is placed and no temporary or staged file stays."""
    ctx, share, src = local
    # Only the first and the last block checked by the guest.
    monkeypatch.setattr(directions, "choose_blocks", lambda size: spot.choose_blocks(size, 2))
    data = src.read_bytes()

    def hit(staged: Path) -> None:
        if damage == "unchecked block":
            _rewrite(staged, 7 * BLOCK + 3, b"\0")
        elif damage == "same bytes again":
            _rewrite(staged, 7 * BLOCK, data[7 * BLOCK:7 * BLOCK + 10])
            _rewrite(staged, 7 * BLOCK, data[7 * BLOCK:7 * BLOCK + 10])
        elif damage == "cut short":
            _rewrite(staged, 20 * BLOCK)
        else:
            staged.unlink()
            staged.write_bytes(data)

    with pytest.raises(TransferError) as info:
        to_local_guest(ctx, share, src, tmp_path / "guest-disk", LocalGuest(hit), monkeypatch)
    message = str(info.value)
    if damage == "cut short":
        assert "bytes, the shared folder's file" in message  # the guest's size check
    else:
        assert "changed while vm copied it; nothing was placed at vm:" in message
    assert list((tmp_path / "guest-disk").iterdir()) == []
    assert list((share / shared.STAGING_DIR).iterdir()) == []


def test_a_source_inside_the_share_changing_meanwhile(local: tuple[Context, Path, Path],
                                                      tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A host file already in the shared folder is read by the guest in place: written
    to while the guest copies it, the copy fails."""
    ctx, share, src = local
    inside = share / "in.bin"
    shutil.copyfile(src, inside)
    monkeypatch.setattr(directions, "choose_blocks", lambda size: spot.choose_blocks(size, 2))

    def poke(path: Path) -> None:
        with open(path, "r+b") as fh:
            fh.seek(7 * BLOCK)
            fh.write(b"!")

    fake = LocalGuest(poke)
    with pytest.raises(TransferError, match="changed while vm copied it"):
        to_local_guest(ctx, share, inside, tmp_path / "guest-disk", fake, monkeypatch)
    assert list((tmp_path / "guest-disk").iterdir()) == []


class LocalSource(LocalGuest):
    """A guest to copy from: after cp-to-share.sh, ``damage`` gets the staged file."""

    async def run_script(self, agent: Any, script: str, *args: str,
                         timeout: float = 0) -> ExecResult:
        self.scripts.append(script)
        result = run(SHELLS[0], script, *args)
        if script == guest_side.TO_SHARE and self.damage is not None:
            self.damage(Path(args[1]))
        return result


@pytest.mark.parametrize("damage", [None, "cut short", "first block", "source grew"])
def test_copy_out_through_the_share(local: tuple[Context, Path, Path], tmp_path: Path,
                                    monkeypatch: pytest.MonkeyPatch,
                                    damage: str | None) -> None:
    """Guest to host: the blocks the guest hashed match what the host received; a staged
    file cut short or damaged in a checked block, or a source that is not the size the
    guest said, fails and leaves nothing."""
    ctx, share, src = local
    data = src.read_bytes()

    def hit(staged: Path) -> None:
        if damage == "cut short":
            os.truncate(staged, 3 * BLOCK)
        elif damage == "first block":
            with open(staged, "r+b") as fh:
                fh.write(bytes([data[0] ^ 1]))
        elif damage == "source grew":  # (after cp-prepare-source.sh)
            pass

    fake = LocalSource(hit)
    monkeypatch.setattr(directions, "run_script", fake.run_script)
    monkeypatch.setattr(directions, "checked", fake.checked)
    if damage == "source grew":
        real = fake.checked

        async def grow_after_prepare(agent: Any, script: str, *args: str,
                                     what: str | None = None) -> ExecResult:
            result = await real(agent, script, *args, what=what)
            with open(src, "ab") as fh:
                fh.write(b"more")
            return result

        monkeypatch.setattr(directions, "checked", grow_after_prepare)
    guest = guest_side.Guest("vm", None, None, str(share))  # type: ignore[arg-type]
    out = tmp_path / "out"
    out.mkdir()

    def fetch() -> tuple[Path, str, str, int, int]:
        return asyncio.run(directions.from_guest(ctx, guest, str(src), str(out), "auto", True,
                                                 None))

    if damage is None:
        final, used, digest, size, _ = fetch()
        assert final.read_bytes() == data and size == len(data)
        assert (used, digest) == (directions.CHANNEL_SHARE, hashlib.sha256(data).hexdigest())
        assert fake.scripts == [guest_side.PREPARE_SRC, guest_side.TO_SHARE]
    else:
        expected = {"cut short": "changed while it was copied",
                    "first block": "checksum mismatch: vm:.* has the sampled blocks' sha256",
                    "source grew": "changed while it was copied"}[damage]
        with pytest.raises(TransferError, match=expected):
            fetch()
    assert list(out.iterdir()) == ([] if damage else [out / "src.bin"])
    assert list((share / shared.STAGING_DIR).iterdir()) == []
