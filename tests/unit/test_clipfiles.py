"""Files through the clipboard, without a VM: the file entry's JSON and the file list the
host builds, the guest program's URI parsing (run here with the host's python3), and the
host's checks of an entry directory in the share against hostile contents (links, FIFOs,
names that are not one component, names that differ from what the guest said)."""

from __future__ import annotations

import importlib.util
import os
import types
from pathlib import Path

import pytest

from hypercore_tui.core.clip import (
    KIND_FILES,
    BadFilesEntry,
    ClipItem,
    FilesEntry,
    gnome_copied_files,
)
from hypercore_tui.services import clipfiles, clipwatch, guest_exec
from hypercore_tui.services.context import Context

ENTRY = "0123456789abcdef"
HOSTILE = (b"new\nline", b"-rf", b"bad\xff\xfeutf8", b"a name with space", b"%41 percent",
           b"\x1b[31mred")


def guest_program() -> types.ModuleType:
    """clipwatch.py as a module (it never runs its main when imported)."""
    path = Path(guest_exec.__file__).parent.parent / "guest" / clipwatch.WATCHER_PROGRAM
    spec = importlib.util.spec_from_file_location("hc_guest_clipwatch", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def guest() -> types.ModuleType:
    return guest_program()


@pytest.fixture
def ctx(tmp_path: Path) -> Context:
    return Context.from_environ({"HYPERCORE_HOME": str(tmp_path / "home"),
                                 "HYPERCORE_RUNTIME_DIR": str(tmp_path / "run")})


# -- the entry and the list -----------------------------------------------------------------


def test_an_entry_keeps_hostile_names_exact_and_shows_them_escaped() -> None:
    files = FilesEntry(entry=ENTRY, names=HOSTILE, cut=True, size=20 << 20, folders=2)
    data = files.to_json()
    assert data.isascii() and FilesEntry.from_json(data) == files
    assert files.to_json() == FilesEntry.from_json(data).to_json()  # (echoes are by digest)
    item = ClipItem(id=1, kind=KIND_FILES, data=data, source="vm:a", at=1.0)
    assert item.size == 20 << 20 and item.files == files
    preview = item.preview()
    assert preview.startswith("4 files and 2 folders, 20.0 MiB: new\\x0aline, -rf, ")
    assert "\n" not in preview and "\x1b" not in preview


@pytest.mark.parametrize("names", [[], ["Li4="], ["YS9i"], ["Lg=="], ["YQBi"], ["YQ==", "YQ=="],
                                   ["not base64!"]])
def test_a_bad_entry_is_refused(names: list[str]) -> None:
    import json

    doc = {"entry": ENTRY, "names": names, "cut": False, "size": 0, "folders": 0}
    with pytest.raises(BadFilesEntry):
        FilesEntry.from_json(json.dumps(doc).encode())
    doc.update(names=["YQ=="], entry="../../etc")
    with pytest.raises(BadFilesEntry):
        FilesEntry.from_json(json.dumps(doc).encode())


def test_the_list_offered_is_percent_encoded_without_a_trailing_newline(
        guest: types.ModuleType) -> None:
    files = FilesEntry(entry=ENTRY, names=HOSTILE)
    paths = files.guest_paths("/shared")
    text = gnome_copied_files(paths, cut=False)
    assert text.isascii() and not text.endswith(b"\n")
    lines = text.split(b"\n")
    assert lines[0] == b"copy" and len(lines) == len(HOSTILE) + 1
    assert lines[1] == b"file:///shared/.hypercore-clip/0123456789abcdef/new%0Aline"
    assert lines[4] == b"file:///shared/.hypercore-clip/0123456789abcdef/a%20name%20with%20space"
    # The guest reads back exactly the bytes the host meant.
    assert guest.parse_gnome(text) == (False, paths)
    assert guest.parse_gnome(gnome_copied_files(paths, cut=True))[0] is True
    assert len(clipfiles.offer_text(files)) == len(text)


# -- the guest's parsing ----------------------------------------------------------------------


def test_the_guest_takes_only_local_file_uris(guest: types.ModuleType) -> None:
    assert guest.uri_path(b"file:///home/u/a%20b%0A%FF") == b"/home/u/a b\n\xff"
    assert guest.uri_path(b"file://localhost/etc/x") == b"/etc/x"
    assert guest.uri_path(b"FILE:/tmp/kde-style") == b"/tmp/kde-style"
    for bad in (b"file://evil.example/etc/passwd", b"http://x/y", b"file:relative",
                b"file:///a%00b", b"smb://host/share"):
        with pytest.raises(guest.Failure) as info:
            guest.uri_path(bad)
        assert info.value.code == guest.EXIT_REFUSED


def test_the_guest_reads_uri_lists_and_gnome_lists(guest: types.ModuleType) -> None:
    uri_list = b"# a comment\r\nfile:///a/b\r\nfile:///c%20d/\r\n"
    assert guest.parse_uri_list(uri_list) == [b"/a/b", b"/c d/"]
    assert guest.top_names([b"/a/b", b"/c d/"]) == [b"b", b"c d"]
    with pytest.raises(guest.NotFiles):  # a browser's links: text, not files
        guest.parse_uri_list(b"https://example.org/\r\n")
    with pytest.raises(guest.Failure):  # a mix: refused
        guest.parse_uri_list(b"file:///a\r\nhttps://example.org/\r\n")
    assert guest.parse_gnome(b"cut\nfile:///x/y") == (True, [b"/x/y"])
    with pytest.raises(guest.Failure):
        guest.parse_gnome(b"move\nfile:///x")
    with pytest.raises(guest.NotFiles):
        guest.parse_gnome(b"copy\n")
    for bad in ([b"/a/x", b"/b/x"], [b"/"], [b"/a/.."]):
        with pytest.raises(guest.Failure):
            guest.top_names(bad)


def test_the_guest_measures_without_following_links(guest: types.ModuleType,
                                                    tmp_path: Path) -> None:
    (tmp_path / "d" / "sub").mkdir(parents=True)
    (tmp_path / "d" / "sub" / "f").write_bytes(b"x" * 1000)
    (tmp_path / "g").write_bytes(b"y" * 24)
    top = [os.fsencode(tmp_path / "d"), os.fsencode(tmp_path / "g")]
    assert guest.measure(top, 10_000) == (1024, [True, False])
    with pytest.raises(guest.Failure, match="larger than the cap"):
        guest.measure(top, 1000)
    (tmp_path / "d" / "sub" / "link").symlink_to("/etc")
    with pytest.raises(guest.Failure, match="symbolic link"):
        guest.measure(top, 10_000)
    (tmp_path / "d" / "sub" / "link").unlink()
    os.mkfifo(tmp_path / "d" / "fifo")
    with pytest.raises(guest.Failure, match="FIFO"):
        guest.measure(top, 10_000)


# -- the host's checks ------------------------------------------------------------------------


def make_entry(ctx: Context, names: tuple[bytes, ...] = HOSTILE, entry: str = ENTRY) -> Path:
    folder = clipfiles.share_files_dir(ctx) / entry
    folder.mkdir(parents=True)
    for n, name in enumerate(names):
        (Path(os.fsdecode(os.fsencode(folder) + b"/" + name))).write_bytes(b"z" * (n + 1))
    return folder


def test_the_host_checks_an_entry_and_keeps_hostile_names_exact(ctx: Context) -> None:
    folder = make_entry(ctx)
    sub = folder / "sub"
    (sub / "deeper").mkdir(parents=True)
    (sub / "deeper" / "f").write_bytes(b"q" * 100)
    names = (*HOSTILE, b"sub")
    files = clipfiles.check_entry(ctx, ENTRY, names, cut=False, cap=1 << 20)
    assert files.names == names and files.size == sum(range(1, 7)) + 100
    assert files.folders == 1
    with pytest.raises(clipfiles.FilesRefused, match="larger than the cap"):
        clipfiles.check_entry(ctx, ENTRY, names, cut=False, cap=100)
    # What the guest said must be what is there (whole), or a part of it (an entry offered).
    with pytest.raises(clipfiles.FilesRefused, match="does not hold"):
        clipfiles.check_entry(ctx, ENTRY, HOSTILE, cut=False, cap=1 << 20)
    assert clipfiles.check_entry(ctx, ENTRY, HOSTILE[:2], cut=False, cap=1 << 20,
                                 whole=False).size == 3
    for bad in ([b"../x"], [b"a/b"], [b".."], [b"/etc"], [b"-rf", b"-rf"], []):
        with pytest.raises(clipfiles.FilesRefused):
            clipfiles.check_entry(ctx, ENTRY, bad, cut=False, cap=1 << 20, whole=False)
    with pytest.raises(clipfiles.FilesRefused):
        clipfiles.check_entry(ctx, "../../etc", [b"passwd"], cut=False, cap=1 << 20)


@pytest.mark.parametrize("plant", ["link", "fifo", "top-link"])
def test_the_host_refuses_links_and_special_files(ctx: Context, tmp_path: Path,
                                                  plant: str) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_bytes(b"s" * 5000)
    folder = make_entry(ctx, (b"a",))
    (folder / "d").mkdir()
    if plant == "link":
        (folder / "d" / "l").symlink_to(outside)
    elif plant == "fifo":
        os.mkfifo(folder / "d" / "p")
    else:
        (folder / "top").symlink_to(outside / "secret")
    names = (b"a", b"d", b"top") if plant == "top-link" else (b"a", b"d")
    with pytest.raises(clipfiles.FilesRefused, match="symbolic link|FIFO"):
        clipfiles.check_entry(ctx, ENTRY, names, cut=False, cap=1 << 30)


def test_the_host_never_goes_through_a_linked_entry_or_entries_dir(ctx: Context,
                                                                   tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    (outside / ENTRY).mkdir(parents=True)
    (outside / ENTRY / "f").write_bytes(b"x")
    share = clipfiles.share_files_dir(ctx)
    share.mkdir(parents=True)
    (share / ENTRY).symlink_to(outside / ENTRY)
    with pytest.raises(clipfiles.FilesRefused):
        clipfiles.check_entry(ctx, ENTRY, [b"f"], cut=False, cap=1 << 20)
    assert clipfiles.remove_entry(ctx, ENTRY)  # the link, not what it points to
    assert (outside / ENTRY / "f").exists() and not (share / ENTRY).is_symlink()
    share.rmdir()
    share.symlink_to(outside)  # the entries' directory itself a link
    with pytest.raises(clipfiles.FilesRefused):
        clipfiles.check_entry(ctx, ENTRY, [b"f"], cut=False, cap=1 << 20)
    with pytest.raises(OSError):
        clipfiles.remove_entry(ctx, ENTRY)
    assert (outside / ENTRY / "f").exists()


def test_cleanup_removes_only_entries_and_leftover_parts(ctx: Context) -> None:
    make_entry(ctx, (b"a",))
    make_entry(ctx, (b"b",), entry=f"{'f' * 16}.part")
    share = clipfiles.share_files_dir(ctx)
    (share / "user-file.part").write_bytes(b"keep")
    (share.parent / "other").write_bytes(b"keep")
    assert clipfiles.call_off_leftover_parts(ctx) == []  # nothing left to sweep
    assert sorted(os.listdir(share)) == [ENTRY, "user-file.part"]  # (its marker gone too)
    with pytest.raises(ValueError):
        clipfiles.remove_entry(ctx, "user-file.part")
    clipfiles.forget(ctx, ENTRY)
    assert os.listdir(share) == ["user-file.part"]
    assert (share.parent / "other").exists()


def test_the_cap_comes_from_the_environment(tmp_path: Path) -> None:
    def cap(value: str | None) -> int:
        env = {"HYPERCORE_HOME": str(tmp_path)}
        if value is not None:
            env[clipfiles.CAP_ENV] = value
        return clipfiles.files_cap(Context.from_environ(env))

    assert cap(None) == cap("junk") == cap("-5") == 1 << 30
    assert cap("100000") == 100000


def test_the_host_reads_what_pull_files_said() -> None:
    status = {"hc-kind": "files", "hc-entry": ENTRY, "hc-cut": "1"}
    got = clipfiles.parse_pulled(status, b"a\0new\nline\0", entry=ENTRY, held=None)
    assert got is not None and got.names == (b"a", b"new\nline") and got.cut and not got.held
    assert clipfiles.parse_pulled({"hc-empty": ""}, b"", entry=ENTRY, held=None) is None
    with pytest.raises(clipfiles.FilesRefused):  # an entry the host did not name
        clipfiles.parse_pulled({**status, "hc-entry": "f" * 16}, b"a\0", entry=ENTRY, held=None)
    with pytest.raises(clipfiles.FilesRefused):
        clipfiles.parse_pulled({"hc-kind": "files", "hc-held": "f" * 16}, b"a\0", entry=ENTRY,
                               held=None)
    held = clipfiles.parse_pulled({"hc-kind": "files", "hc-held": "f" * 16}, b"a\0",
                                  entry=ENTRY, held="f" * 16)
    assert held is not None and held.held and held.entry == "f" * 16
    with pytest.raises(clipfiles.FilesRefused):
        clipfiles.parse_pulled(status, b"a", entry=ENTRY, held=None)


def test_the_sync_keeps_the_entries_of_its_history_and_removes_the_rest(ctx: Context) -> None:
    from hypercore_tui.core.clip import HISTORY_SIZE, KIND_TEXT
    from hypercore_tui.services.clipsync.engine import SyncEngine

    engine = SyncEngine(ctx, ["a"])
    share = clipfiles.share_files_dir(ctx)
    kept, refused = "1" * 16, "2" * 16
    for entry in (kept, refused):
        make_entry(ctx, (b"f",), entry=entry)
        engine.entry_started(entry)
    engine.entry_settled(refused)  # (a copy not carried: no history entry names it)
    assert sorted(os.listdir(share)) == [kept]
    files = clipfiles.check_entry(ctx, kept, [b"f"], cut=False, cap=1 << 20)
    assert engine.offer(KIND_FILES, files.to_json(), "vm:a") is not None
    engine.entry_settled(kept)
    for n in range(HISTORY_SIZE - 1):
        engine.offer(KIND_TEXT, f"text {n}".encode(), "vm:a")
    assert os.listdir(share) == [kept]  # still in the history (the oldest of 50)
    engine.offer(KIND_TEXT, b"one more", "vm:a")
    assert os.listdir(share) == []  # it left the history: its directory goes


def test_the_host_check_keeps_only_the_current_path_open(ctx: Context) -> None:
    """A tree of many folders needs no more descriptors than its depth (all of them open
    at once ran out of descriptors past ~1000 folders under the usual limit of 1024)."""
    import resource

    folder = make_entry(ctx, (b"top",))
    (folder / "top").unlink()
    for n in range(300):
        (folder / "top" / f"d{n}" / "sub").mkdir(parents=True)
        (folder / "top" / f"d{n}" / "sub" / "f").write_bytes(b"ab")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    low = len(os.listdir("/proc/self/fd")) + 40
    resource.setrlimit(resource.RLIMIT_NOFILE, (low, hard))
    try:
        files = clipfiles.check_entry(ctx, ENTRY, [b"top"], cut=False, cap=1 << 20)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert files.size == 600 and files.folders == 1


def test_a_copy_called_off_stops_and_leaves_nothing(guest: types.ModuleType, tmp_path: Path,
                                                     ctx: Context,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The guest's pull-files looks for ENTRY.cancel (cancel_pull's marker) before each
    file and each MiB: it stops, removes its ENTRY.part and says EXIT_CANCELLED; the host
    takes that as FilesCancelled. Its part removed under it (a sync starting again) stops
    it the same way."""
    share = clipfiles.share_files_dir(ctx)
    share.mkdir(parents=True)
    src = tmp_path / "src"
    src.mkdir()
    for i in range(3):
        (src / f"f{i}").write_bytes(os.urandom(3 * guest.COPY_CHUNK))
    monkeypatch.setattr(guest, "entry_dir", lambda: os.fsencode(share))
    monkeypatch.setattr(guest, "read_file_list",
                        lambda tool: (False, [os.fsencode(src / f"f{i}") for i in range(3)]))
    real_copy = guest.copy_item
    copied: list[bytes] = []

    def copy_then_call_off(s: bytes, d: bytes, part: bytes | None) -> None:
        copied.append(s)
        if len(copied) == 2:  # the host calls it off during the second file
            assert clipfiles.cancel_pull(ctx, ENTRY)
        real_copy(s, d, part)

    monkeypatch.setattr(guest, "copy_item", copy_then_call_off)
    with pytest.raises(guest.Failure) as info:
        guest.pull_files("x11", ENTRY, str(1 << 30), "-")
    assert info.value.code == guest.EXIT_CANCELLED == clipfiles.EXIT_CANCELLED
    assert len(copied) == 2
    assert sorted(os.listdir(share)) == [f"{ENTRY}.cancel"]  # (no part, no entry)
    assert clipfiles.call_off_leftover_parts(ctx) == []  # a stale marker: removed
    assert os.listdir(share) == []

    # The part removed under it: the same.
    def copy_then_remove_part(s: bytes, d: bytes, part: bytes | None) -> None:
        copied.append(s)
        if len(copied) == 4:
            clipfiles.forget(ctx, ENTRY)
        real_copy(s, d, part)

    monkeypatch.setattr(guest, "copy_item", copy_then_remove_part)
    with pytest.raises(guest.Failure) as info:
        guest.pull_files("x11", ENTRY, str(1 << 30), "-")
    assert info.value.code == guest.EXIT_CANCELLED
    assert os.listdir(share) == []

    # Not called off: the whole entry, and no marker.
    monkeypatch.setattr(guest, "copy_item", real_copy)
    assert guest.pull_files("x11", ENTRY, str(1 << 30), "-") == 0
    assert os.listdir(share) == [ENTRY]
    assert sorted(os.listdir(share / ENTRY)) == ["f0", "f1", "f2"]
    assert clipfiles.cancel_pull(ctx, ENTRY)
    clipfiles.forget(ctx, ENTRY)
    assert os.listdir(share) == []
    with pytest.raises(ValueError):
        clipfiles.cancel_pull(ctx, "../x")


def test_a_part_a_guest_still_fills_is_called_off_then_swept(
        ctx: Context, monkeypatch: pytest.MonkeyPatch) -> None:
    """An interrupted sync's part that cannot be removed yet (a guest still creating
    files in it): its marker is made and stays until the part is gone, then both go."""
    part = f"{ENTRY}.part"
    make_entry(ctx, (b"a",), entry=part)
    share = clipfiles.share_files_dir(ctx)
    real_remove = clipfiles.remove_entry

    def busy(c: Context, name: str) -> bool:
        if name == part:
            raise OSError(39, "Directory not empty")
        return real_remove(c, name)

    monkeypatch.setattr(clipfiles, "remove_entry", busy)
    assert clipfiles.call_off_leftover_parts(ctx) == [ENTRY]
    assert sorted(os.listdir(share)) == [f"{ENTRY}.cancel", part]  # the guest stops on it
    assert clipfiles.sweep_leftover_parts(ctx, [ENTRY]) == [ENTRY]  # still busy
    monkeypatch.setattr(clipfiles, "remove_entry", real_remove)
    assert clipfiles.sweep_leftover_parts(ctx, [ENTRY]) == []
    assert os.listdir(share) == []
