"""Pure parts of file transfer: NAME:/path parsing and drag-and-drop path recognition."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

from hypercore_tui.commands.transfer import ProgressBar
from hypercore_tui.core.errors import InvalidInput
from hypercore_tui.services.transfer.locations import Location, parse_location
from hypercore_tui.ui.drop import pasted_path


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
])
def test_parse_location(text: str, expected: Location) -> None:
    assert parse_location(text) == expected


def test_guest_path_must_be_absolute(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="absolute"):
        parse_location("vm1:tmp/x")


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
