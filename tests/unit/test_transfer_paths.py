"""Pure parts of file transfer: NAME:/path parsing and drag-and-drop path recognition."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

from hypercore_tui.commands.transfer import ProgressBar
from hypercore_tui.core.errors import InvalidInput
from hypercore_tui.services.transfer.locations import Location, parse_location
from hypercore_tui.ui.drop import pasted_path, pasted_paths


@pytest.mark.parametrize(("text", "expected"), [
    ("vm1:/tmp/x", Location("vm1", "/tmp/x")),
    ("vm1:/tmp/dir/", Location("vm1", "/tmp/dir/")),
    ("vm1:/a/../b//c", Location("vm1", "/b/c")),
    ("vm1:/", Location("vm1", "/")),
    ("my.vm-2:/x y", Location("my.vm-2", "/x y")),
    ("/host/path:with/colon", Location(None, "/host/path:with/colon")),
    ("./vm1:/x", Location(None, "./vm1:/x")),
    ("relative/file", Location(None, "relative/file")),
    ("-vm:/x", Location(None, "-vm:/x")),  # not a valid VM name: a host path
    # another host's guest: HOST:VM:/path (names hold no ':', so no overlap with VM:/path)
    ("b:vm1:/tmp/x", Location("vm1", "/tmp/x", "b")),
    ("host.lan:vm1:/a/../b//c", Location("vm1", "/b/c", "host.lan")),
    ("b:vm1:/dir/", Location("vm1", "/dir/", "b")),
    ("b:vm1:/x:y", Location("vm1", "/x:y", "b")),
    ("local:vm1:/x", Location("vm1", "/x")),  # this host
    ("./b:vm1:/x", Location(None, "./b:vm1:/x")),
    ("/b:vm1:/x", Location(None, "/b:vm1:/x")),
])
def test_parse_location(text: str, expected: Location) -> None:
    assert parse_location(text) == expected


@pytest.mark.parametrize("text", ["vm1:tmp/x", "b:vm1:tmp/x", "b:-vm:/x", "b:vm.:/x"])
def test_guest_path_must_be_absolute(text: str) -> None:
    with pytest.raises(InvalidInput, match="absolute"):
        parse_location(text)


@pytest.mark.parametrize("text", ["vm1:/tmp/x", "b:vm1:/tmp/x", "vm1:/"])
def test_location_shown_as_typed(text: str) -> None:
    assert str(parse_location(text)) == text
    assert parse_location(text).is_remote == text.startswith("b:")


def test_existing_host_file_with_colon_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                            ) -> None:
    monkeypatch.chdir(tmp_path)
    Path("vm1:notes").write_text("x")
    assert parse_location("vm1:notes") == Location(None, "vm1:notes")


@pytest.mark.parametrize("bad", ["", "vm1:/a\x00b"])
def test_bad_paths(bad: str) -> None:
    with pytest.raises(InvalidInput):
        parse_location(bad)


@pytest.fixture
def odd_file(tmp_path: Path) -> Path:
    path = tmp_path / "My Docs" / "report (final) 100%.txt"
    path.parent.mkdir()
    path.write_text("x")
    return path


def test_pasted_plain_path(odd_file: Path) -> None:
    assert pasted_path(f"{odd_file}\n") == odd_file
    assert pasted_path(f"  {odd_file}  ") == odd_file


def test_pasted_quoted_path(odd_file: Path) -> None:
    assert pasted_path(f"'{odd_file}'") == odd_file
    assert pasted_path(f'"{odd_file}"\r\n') == odd_file


def test_pasted_file_url(odd_file: Path) -> None:
    from urllib.parse import quote

    assert pasted_path(f"file://{quote(str(odd_file))}\n") == odd_file
    assert pasted_path(f"file://localhost{quote(str(odd_file))}") == odd_file
    assert pasted_path(f"file://otherhost{quote(str(odd_file))}") is None


def test_pasted_backslash_escaped(odd_file: Path) -> None:
    escaped = str(odd_file).replace(" ", "\\ ").replace("(", "\\(").replace(")", "\\)")
    assert pasted_path(escaped + "\n") == odd_file


def test_pasted_home_relative(odd_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(odd_file.parent.parent))
    assert pasted_path(f"~/My Docs/{odd_file.name}") == odd_file


@pytest.mark.parametrize("text", ["", "hello world", "relative.txt", "/no/such/file",
                                  "two\nlines", "/etc/hostname\n/etc/passwd"])
def test_pasted_non_paths(text: str) -> None:
    assert pasted_path(text) is None


def test_pasted_directory_is_not_a_file(tmp_path: Path) -> None:
    assert pasted_path(str(tmp_path)) is None


@pytest.fixture
def dropped(tmp_path: Path) -> list[Path]:
    """A folder, a file with a space and a quote, one with a new line and a leading dash,
    and one whose name is not UTF-8 (as the host file system allows)."""
    folder = tmp_path / "a folder"
    folder.mkdir()
    (folder / "inside").write_text("x")
    paths = [folder, tmp_path / "it's here.txt", tmp_path / "-new\nline",
             Path(os.fsdecode(os.fsencode(tmp_path) + b"/bad\xff\xfe"))]
    for path in paths[1:]:
        path.write_bytes(b"y")
    return paths


def test_a_dropped_folder_is_a_path_but_not_a_file(dropped: list[Path]) -> None:
    folder = dropped[0]
    assert pasted_paths(f"'{folder}' ") == (folder,)
    assert pasted_paths(str(folder)) == (folder,)  # unquoted, spaces and all
    assert pasted_path(str(folder)) is None


def test_several_drops_quoted_as_a_shell_reads_them(dropped: list[Path]) -> None:
    import shlex

    folder, quoted, newline, bad = dropped
    vte = " ".join(shlex.quote(str(p)) for p in (folder, quoted)) + " "
    assert pasted_paths(vte) == (folder, quoted)
    escaped = " ".join(str(p).replace(" ", "\\ ").replace("'", "\\'") for p in (folder, quoted))
    assert pasted_paths(escaped + "\n") == (folder, quoted)
    # a new line inside a quoted name; a duplicate collapses
    assert pasted_paths(f"{shlex.quote(str(newline))} '{folder}' '{folder}'") == (newline,
                                                                                   folder)


def test_several_drops_one_a_line_as_urls(dropped: list[Path]) -> None:
    from urllib.parse import quote_from_bytes

    uris = "\r\n".join("file://" + quote_from_bytes(os.fsencode(p)) for p in dropped)
    got = pasted_paths(uris + "\r\n")
    assert got == tuple(dropped)
    assert [os.fsencode(p) for p in got] == [os.fsencode(p) for p in dropped]  # exact bytes
    assert pasted_paths(f"{dropped[0]}\n{dropped[1]}\n") == (dropped[0], dropped[1])


@pytest.mark.parametrize("text", ["hello world", "/etc/hostname and more", "'unclosed /etc",
                                  "/etc/hostname\n/no/such", "file://host/etc/hostname",
                                  "relative/x /etc/hostname"])
def test_text_that_is_not_only_existing_paths_stays_text(text: str) -> None:
    assert pasted_paths(text) == ()


def test_progress_bar_draws_in_place_and_clears() -> None:
    stream = io.StringIO()
    bar = ProgressBar(stream, "file.bin")
    bar("copying", 0, 4 * 1024 * 1024)
    bar("copying", 4 * 1024 * 1024, 4 * 1024 * 1024)
    text = stream.getvalue()
    assert text.startswith("\rfile.bin [")
    assert "100% 4.0 MiB / 4.0 MiB" in text
    bar.finish()
    assert stream.getvalue().endswith("\r\x1b[K")
    assert os.linesep not in text
