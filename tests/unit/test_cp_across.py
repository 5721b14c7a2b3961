"""Copies across hosts without SSH: the stream's messages (core/cpwire.py), reading them
off a pipe, a file arriving on this host (placed only when its sum matched, nothing left
otherwise), the far end's receiving half, and the far end's failures in one line."""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path

import pytest

from hypercore_tui.core import cpwire
from hypercore_tui.core.errors import (
    HostUnreachable,
    InvalidInput,
    OperationFailed,
    ProtocolError,
)
from hypercore_tui.core.hosts import Host
from hypercore_tui.services.transfer import across, far_end
from hypercore_tui.services.transfer.errors import TransferError
from hypercore_tui.services.transfer.wire_io import read_message

SUM = "ab" * 32
HOST = Host("b", "root@10.0.0.2")


# -- messages --------------------------------------------------------------------------


@pytest.mark.parametrize("message", [
    cpwire.Progress("fetching", 10, 100),
    cpwire.FileHeader("it's a \"file\"\n.txt", 3 << 20, 0o640, "agent"),
    cpwire.FileHeader("ünïcode ✓", 0, 0),
    cpwire.End(SUM),
    cpwire.Ready(),
    cpwire.Done("/tmp/x y", "shared folder", SUM),
])
def test_messages_round_trip_on_one_ascii_line(message: cpwire.Message) -> None:
    raw = cpwire.encode(message)
    assert raw.endswith(b"\n") and raw.count(b"\n") == 1 and raw.isascii()
    assert cpwire.decode(raw) == message


@pytest.mark.parametrize("raw", [b"Welcome to b!\n", b"\n", b"[1, 2]\n", b'{"no": "type"}\n',
                                 b'{"type": "newer-kind"}\n', b"\xff\xfe\n"])
def test_lines_that_are_no_message_are_skipped(raw: bytes) -> None:
    assert cpwire.decode(raw) is None


@pytest.mark.parametrize("fields", [
    '"type": "file", "name": "../x", "size": 1, "mode": 420',
    '"type": "file", "name": "a/b", "size": 1, "mode": 420',
    '"type": "file", "name": "", "size": 1, "mode": 420',
    '"type": "file", "name": "a\\u0000b", "size": 1, "mode": 420',
    '"type": "file", "name": "x", "size": -1, "mode": 420',
    '"type": "file", "name": "x", "size": true, "mode": 420',
    '"type": "file", "name": "x", "size": 1.5, "mode": 420',
    '"type": "file", "name": "x", "size": 1, "mode": 4096',
    '"type": "file", "name": "x", "size": 1',
    '"type": "end", "sha256": "ABC"',
    '"type": "end", "sha256": "' + "A" * 64 + '"',
    '"type": "done", "final": 3, "sha256": "' + SUM + '"',
    '"type": "progress", "stage": "x", "done": "1", "total": 2',
])
def test_messages_with_wrong_fields_are_refused(fields: str) -> None:
    with pytest.raises(cpwire.WireError):
        cpwire.decode(("{" + fields + "}\n").encode())


def _reader(data: bytes, *, eof: bool = True) -> asyncio.StreamReader:
    reader = asyncio.StreamReader(limit=cpwire.MAX_LINE)
    reader.feed_data(data)
    if eof:
        reader.feed_eof()
    return reader


def test_read_message_skips_a_greeting_and_ends_at_eof() -> None:
    async def run() -> list[object]:
        reader = _reader(b"motd line\n" + cpwire.encode(cpwire.Ready()) + b'{"type": "rea')
        return [await read_message(reader), await read_message(reader)]

    assert asyncio.run(run()) == [cpwire.Ready(), None]  # (a line cut short: the end)


def test_read_message_refuses_bad_fields_and_endless_garbage() -> None:
    async def run(data: bytes) -> object:
        return await read_message(_reader(data))

    with pytest.raises(ProtocolError, match="not a file name"):
        asyncio.run(run(b'{"type": "file", "name": "..", "size": 1, "mode": 0}\n'))
    with pytest.raises(ProtocolError, match="no messages"):
        asyncio.run(run(b"noise\n" * 200))


# -- a file arriving here (the ``send`` end's stream) ------------------------------------


class FakeEnd:
    """A far end whose stdout is ``data``; its failure is a lost connection."""

    def __init__(self, data: bytes) -> None:
        self.stdout = _reader(data)
        self.what = "b:vm:/x"

    async def message(self) -> cpwire.Message | None:
        return await read_message(self.stdout)

    async def failure(self) -> Exception:
        return HostUnreachable("b: the SSH connection to root@b was lost during the copy")


def _stream(data: bytes, *, digest: str | None = None, cut: int | None = None) -> bytes:
    head = cpwire.encode(cpwire.Progress("fetching", 1, 2)) + \
        cpwire.encode(cpwire.FileHeader("data.bin", len(data), 0o640, "agent"))
    body = head + data + cpwire.encode(cpwire.End(digest or hashlib.sha256(data).hexdigest()))
    return body if cut is None else body[:len(head) + cut]


def _arrive(stream: bytes, dst: Path) -> tuple[str, str]:
    async def run() -> tuple[str, str]:
        end = FakeEnd(stream)
        assert isinstance(await end.message(), cpwire.Progress)
        header = await end.message()
        assert isinstance(header, cpwire.FileHeader)
        incoming = across._FarFile(end, header)  # type: ignore[arg-type]
        return await across._into_host_path(incoming, str(dst), None)

    return asyncio.run(run())


def test_a_file_arrives_with_its_mode_after_its_sum_matched(tmp_path: Path) -> None:
    data = os.urandom(5 << 20)
    final, digest = _arrive(_stream(data), tmp_path)
    assert final == str(tmp_path / "data.bin") and digest == hashlib.sha256(data).hexdigest()
    assert (tmp_path / "data.bin").read_bytes() == data
    assert (tmp_path / "data.bin").stat().st_mode & 0o777 == 0o640
    assert os.listdir(tmp_path) == ["data.bin"]


@pytest.mark.parametrize(("cut", "digest", "error"), [
    (3 << 20, None, HostUnreachable),  # the connection lost mid-file
    (5 << 20, None, HostUnreachable),  # ... after the bytes, before the sum
    (None, "cd" * 32, TransferError),  # the sum does not match
])
def test_nothing_is_left_when_the_stream_breaks(tmp_path: Path, cut: int | None,
                                                digest: str | None, error: type) -> None:
    data = os.urandom(5 << 20)
    with pytest.raises(error):
        _arrive(_stream(data, digest=digest, cut=cut), tmp_path / "x")
    assert os.listdir(tmp_path) == []


# -- the far end's receiving half -----------------------------------------------------


def _receive(stream: bytes, staged: Path) -> None:
    async def run() -> None:
        reader = _reader(stream)
        header = await read_message(reader)
        assert isinstance(header, cpwire.FileHeader)
        await far_end._receive_into(reader, staged, header, "vm:/x")

    asyncio.run(run())


def test_far_end_stages_what_arrives(tmp_path: Path) -> None:
    data = os.urandom(3 << 20)
    stream = cpwire.encode(cpwire.FileHeader("a", len(data), 0o600)) + data + \
        cpwire.encode(cpwire.End(hashlib.sha256(data).hexdigest()))
    _receive(stream, tmp_path / "staged")
    assert (tmp_path / "staged").read_bytes() == data


@pytest.mark.parametrize(("cut", "match"), [(1 << 20, "cut off"), (3 << 20, "cut off"),
                                            (None, "checksum mismatch")])
def test_far_end_refuses_a_cut_or_wrong_stream(tmp_path: Path, cut: int | None,
                                               match: str) -> None:
    data = os.urandom(3 << 20)
    head = cpwire.encode(cpwire.FileHeader("a", len(data), 0o600))
    stream = head + data + cpwire.encode(cpwire.End("cd" * 32))
    if cut is not None:
        stream = stream[:len(head) + cut]
    with pytest.raises(TransferError, match=match):
        _receive(stream, tmp_path / "staged")


# -- why a far end stopped, in one line -------------------------------------------------


def test_far_end_errors_name_the_host_and_keep_the_exit_code() -> None:
    said = b"some ssh noise\nhypercore: error: no VM named 'nosuch'\n"
    error = across._ended(HOST, 2, said, "b:nosuch:/x", master_alive=True)
    assert isinstance(error, InvalidInput) and str(error) == "b: no VM named 'nosuch'"
    error = across._ended(HOST, 1, b"hypercore: error: vm: no space left in the guest\n",
                          "b:vm:/x", master_alive=True)
    assert type(error) is OperationFailed and str(error).startswith("b: vm: no space")
    lost = across._ended(HOST, 255, b"", "b:vm:/x", master_alive=False)
    assert isinstance(lost, HostUnreachable) and str(lost) == (
        "b: the SSH connection to root@10.0.0.2 was lost during the copy; nothing was "
        "placed at b:vm:/x")
    killed = across._ended(HOST, 255, b"", "/tmp/x", master_alive=True)
    assert "was stopped" in str(killed) and "nothing was placed at /tmp/x" in str(killed)


def test_legs_report_one_copy() -> None:
    seen: list[tuple[float | None, float]] = []
    legs = across._legs(lambda stage, done, total: seen.append((done, total)), 3)
    legs[0]("a", 50, 100)
    legs[1]("b", 100, 100)
    legs[2]("c", None, 100)
    legs[2]("c", 100, 100)
    assert seen == [(50, 300), (200, 300), (None, 300), (300, 300)]
    assert across._legs(None, 2) == [None, None]
