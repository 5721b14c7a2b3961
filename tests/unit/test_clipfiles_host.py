"""Host files and folders made a clipboard files entry (clipfiles_host.build_entry): the
entry the sync checks and offers as a guest's, names byte-exact, nothing followed through
a link, FIFOs refused, the cap counted before copying, and nothing left in the share on
any failure (a full disk injected at the write call, and a real full tmpfs as root)."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
from pathlib import Path

import pytest

from hypercore_tui.core.errors import InvalidInput, NoSpace, NotFound, OperationFailed
from hypercore_tui.services import clipfiles, clipfiles_host
from hypercore_tui.services.context import Context

HOSTILE = (b"new\nline", b"-rf", b"bad\xff\xfeutf8", b"a name with space", b"%41 percent",
           b"\x1b[31mred", b"'q\"uote$(id)`")


@pytest.fixture
def ctx(tmp_path: Path) -> Context:
    return Context.from_environ({"HYPERCORE_HOME": str(tmp_path / "home"),
                                 "HYPERCORE_RUNTIME_DIR": str(tmp_path / "run")})


def bpath(base: Path, *names: bytes) -> bytes:
    return b"/".join([os.fsencode(base), *names])


def share_listing(ctx: Context) -> list[str]:
    folder = clipfiles.share_files_dir(ctx)
    return sorted(os.listdir(folder)) if folder.is_dir() else []


def tree(root: Path) -> dict[bytes, bytes | None]:
    """Relative path -> content (None: a folder), every byte of every name."""
    out: dict[bytes, bytes | None] = {}
    base = os.fsencode(root)
    for folder, dirs, files in os.walk(base):
        rel = os.path.relpath(folder, base)
        for name in dirs:
            out[os.path.normpath(os.path.join(rel, name))] = None
        for name in files:
            with open(os.path.join(folder, name), "rb") as fh:
                out[os.path.normpath(os.path.join(rel, name))] = fh.read()
    return out


def test_files_and_a_folder_become_an_entry_the_sync_accepts(ctx: Context,
                                                             tmp_path: Path) -> None:
    src = tmp_path / "src"
    folder = bpath(src, b"folder \n-x")
    os.makedirs(bpath(src, b"folder \n-x", b"sub", b"deeper"))
    for n, name in enumerate(HOSTILE):
        with open(bpath(src, b"folder \n-x", b"sub", name), "wb") as fh:
            fh.write(os.urandom(1000 + n))
    with open(bpath(src, b"folder \n-x", b"sub", b"deeper", b"run.sh"), "wb") as fh:
        fh.write(b"#!/bin/sh\n")
    os.chmod(bpath(src, b"folder \n-x", b"sub", b"deeper", b"run.sh"), 0o700)
    single = bpath(src, b"-single\xff")
    with open(single, "wb") as fh:
        fh.write(b"\x00" * 70000)
    os.chmod(single, 0o600)
    # as argv gives them (surrogate escapes), and as bytes; a trailing slash on the folder
    files = clipfiles_host.build_entry(ctx, [os.fsdecode(single), folder + b"/"], cap=1 << 20)
    assert files.names == (b"-single\xff", b"folder \n-x")
    assert files.size == 70000 + sum(1000 + n for n in range(len(HOSTILE))) + 10
    assert files.folders == 1 and not files.cut
    assert share_listing(ctx) == [files.entry]  # renamed: no .part left
    entry = clipfiles.share_files_dir(ctx) / files.entry
    assert tree(entry) == tree(src) and len(tree(src)) == 12
    # what the sync's check makes of it is the same entry (a guest's pull-files' JSON)
    checked = clipfiles.check_entry(ctx, files.entry, files.names, cut=False, cap=1 << 20)
    assert checked == files and checked.to_json() == files.to_json()
    # readable by every guest's user; execute bits kept
    assert stat.S_IMODE(os.stat(bpath(entry, b"-single\xff")).st_mode) == 0o644
    assert stat.S_IMODE(os.stat(bpath(entry, b"folder \n-x", b"sub", b"deeper",
                                      b"run.sh")).st_mode) == 0o755
    assert stat.S_IMODE(os.stat(bpath(entry, b"folder \n-x")).st_mode) == 0o755
    assert stat.S_IMODE(os.stat(clipfiles.share_files_dir(ctx)).st_mode) == 0o1777


@pytest.mark.parametrize("plant", ["top-link", "deep-link", "fifo", "socket"])
def test_links_and_special_files_refuse_the_whole_copy(ctx: Context, tmp_path: Path,
                                                       plant: str) -> None:
    src = tmp_path / "s"
    (src / "d" / "sub").mkdir(parents=True)
    (src / "d" / "ok").write_bytes(b"fine")
    (tmp_path / "secret").write_bytes(b"s" * 100)
    paths = [src / "d"]
    if plant == "top-link":
        (src / "link").symlink_to(tmp_path / "secret")
        paths.append(src / "link")
    elif plant == "deep-link":
        (src / "d" / "sub" / "l").symlink_to(tmp_path)
    elif plant == "fifo":
        os.mkfifo(src / "d" / "sub" / "p")
    else:
        sock = socket.socket(socket.AF_UNIX)
        cwd = os.getcwd()
        os.chdir(src / "d" / "sub")  # (a short name: AF_UNIX paths are limited)
        try:
            sock.bind("s")
        finally:
            os.chdir(cwd)
            sock.close()
    with pytest.raises(clipfiles.FilesRefused) as info:
        clipfiles_host.build_entry(ctx, paths, cap=1 << 20)
    message = str(info.value)
    assert "\n" not in message
    if plant.endswith("link"):
        assert "symbolic link: links are never followed" in message
    else:
        assert "device, FIFO or socket" in message
    assert share_listing(ctx) == []


def test_the_cap_is_counted_before_anything_is_copied(ctx: Context, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "a").write_bytes(b"x" * 600)
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "c").write_bytes(b"y" * 600)
    made: list[object] = []
    real_mkdir = os.mkdir
    monkeypatch.setattr(os, "mkdir", lambda *a, **k: (made.append(a), real_mkdir(*a, **k)))
    capped = Context.from_environ({**ctx.environ, clipfiles.CAP_ENV: "1000"})
    with pytest.raises(clipfiles.FilesRefused) as info:
        clipfiles_host.build_entry(capped, [tmp_path / "a", tmp_path / "b"])
    assert str(info.value) == ("the copied files are larger than the cap (1000 B, set by "
                               "HYPERCORE_CLIP_FILES_MAX): not carried")
    assert made == [] and share_listing(ctx) == []
    assert clipfiles_host.build_entry(capped, [tmp_path / "a"]).size == 600


def test_bad_paths_are_one_line(ctx: Context, tmp_path: Path,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "f").write_bytes(b"1")
    (tmp_path / "f").write_bytes(b"2")
    with pytest.raises(InvalidInput, match="two items are named f"):
        clipfiles_host.build_entry(ctx, [tmp_path / "f", tmp_path / "x" / "f"])
    for bad in ("/", "", "/tmp/.."):
        with pytest.raises(InvalidInput):
            clipfiles_host.build_entry(ctx, [bad])
    with pytest.raises(InvalidInput, match="no files or folders"):
        clipfiles_host.build_entry(ctx, [])
    with pytest.raises(NotFound, match="no such file or folder"):
        clipfiles_host.build_entry(ctx, [tmp_path / "missing"])
    monkeypatch.chdir(tmp_path / "x")  # a relative path is the working directory's
    files = clipfiles_host.build_entry(ctx, ["f"])
    assert files.names == (b"f",) and files.size == 1
    assert share_listing(ctx) == [files.entry]


def test_a_full_disk_at_a_write_leaves_nothing(ctx: Context, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "d").mkdir()
    for n in range(3):
        (tmp_path / "d" / f"f{n}").write_bytes(b"z" * (3 << 20))
    writes: list[int] = []
    real = clipfiles_host.write_all

    def write_all(fd: int, data: bytes | memoryview) -> None:
        writes.append(len(data))
        if len(writes) == 4:
            raise NoSpace("no space left on the host: No space left on device")
        real(fd, data)

    monkeypatch.setattr(clipfiles_host, "write_all", write_all)
    with pytest.raises(NoSpace) as info:
        clipfiles_host.build_entry(ctx, [tmp_path / "d"], cap=1 << 30)
    assert str(info.value) == ("the host disk is full: the files were not copied into the "
                               "shared folder (nothing of them is left there)")
    assert len(writes) == 4 and share_listing(ctx) == []


def test_an_item_changed_after_the_count_stops_the_copy(ctx: Context, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "d" / "sub").mkdir(parents=True)
    (tmp_path / "d" / "a").write_bytes(b"a" * 5000)
    os.mkfifo(tmp_path / "d" / "sub" / "p")  # (as if it came after the count)
    monkeypatch.setattr(clipfiles_host, "measure", lambda items, cap: (0, 1))
    with pytest.raises(clipfiles.FilesRefused, match="FIFO.*changed while it was copied"):
        clipfiles_host.build_entry(ctx, [tmp_path / "d"], cap=1 << 20)
    assert share_listing(ctx) == []


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")
def test_a_really_full_share_leaves_nothing(ctx: Context, tmp_path: Path) -> None:
    share = ctx.layout.shared_folder
    share.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1M", "tmpfs", str(share)],
                   check=True, capture_output=True)
    try:
        (tmp_path / "big").write_bytes(os.urandom(3 << 20))
        with pytest.raises(NoSpace, match="the host disk is full"):
            clipfiles_host.build_entry(ctx, [tmp_path / "big"], cap=1 << 30)
        assert share_listing(ctx) == []
        (tmp_path / "small").write_bytes(b"fits")
        files = clipfiles_host.build_entry(ctx, [tmp_path / "small"], cap=1 << 30)
        assert share_listing(ctx) == [files.entry]
    finally:
        subprocess.run(["umount", str(share)], check=False, capture_output=True)


async def test_a_cancelled_copy_stops_and_leaves_nothing(ctx: Context, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """A dashboard quitting or Ctrl+C mid-copy: the thread's copy stops too, its .part
    removed before the cancellation goes on (no entry left that nobody offers)."""
    import asyncio
    import time

    (tmp_path / "big").write_bytes(b"b" * (40 << 20))
    real = clipfiles_host.write_all
    writes: list[int] = []

    def slow_write(fd: int, data: bytes | memoryview) -> None:
        writes.append(len(data))
        time.sleep(0.02)
        real(fd, data)

    monkeypatch.setattr(clipfiles_host, "write_all", slow_write)
    task = asyncio.ensure_future(clipfiles_host.build_entry_async(ctx, [tmp_path / "big"]))
    while not writes:
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert share_listing(ctx) == [] and len(writes) < 40


async def test_the_sync_takes_a_host_entry_as_a_guests_and_removes_a_refused_one(
        ctx: Context, tmp_path: Path) -> None:
    import asyncio

    from hypercore_tui.core.clip import KIND_FILES
    from hypercore_tui.services.clipsync.engine import SyncEngine

    (tmp_path / "f").write_bytes(b"data")
    engine = SyncEngine(ctx, ["a"])
    files = clipfiles_host.build_entry(ctx, [tmp_path / "f"])
    with pytest.raises(OperationFailed, match="stopped"):  # not running: not taken
        await engine.offer_files(files.entry, files.names, "host")
    await asyncio.sleep(0.1)  # (the removal runs as a task)
    assert share_listing(ctx) == []
    engine.acquire()
    try:
        files = clipfiles_host.build_entry(ctx, [tmp_path / "f"])
        item = await engine.offer_files(files.entry, files.names, "host")
        assert item.kind == KIND_FILES and item.source == "host" and item.files == files
        assert engine.history.current == item
        # an entry whose contents differ from its names (planted) is refused and removed
        bad = clipfiles_host.build_entry(ctx, [tmp_path / "f"])
        (clipfiles.share_files_dir(ctx) / bad.entry / "extra").write_bytes(b"x")
        with pytest.raises(clipfiles.FilesRefused, match="does not hold"):
            await engine.offer_files(bad.entry, bad.names, "host")
        await asyncio.sleep(0.1)
        assert share_listing(ctx) == [files.entry]
        with pytest.raises(InvalidInput):
            await engine.offer_files("../../etc", [b"passwd"], "host")
    finally:
        engine.release()
