"""The clipboard port's lines: what the guest watcher writes (clipwatch.py's Notifier)
and what the host takes from them (vmsync.port_line): ``c [HINT]`` or ``t BASE64``."""

from __future__ import annotations

import base64
import os
import time

import pytest

from hypercore_tui.services.clipsync.vmsync import INLINE_MAX, PORT_LINE_MAX, port_line

from .test_clipfiles import guest_program


def test_the_two_sides_agree_on_the_sizes() -> None:
    guest = guest_program()
    assert guest.INLINE_MAX == INLINE_MAX
    longest = b"t " + base64.b64encode(b"x" * INLINE_MAX) + b"\n"
    assert len(longest) <= PORT_LINE_MAX and len(longest) < 32 * 1024  # one whole write


@pytest.mark.parametrize(("line", "taken"), [
    (b"c", ("", None)),
    (b"c files", ("files", None)),
    (b"c image", ("image", None)),
    (b"c what", ("", None)),
    (b"t " + base64.b64encode("ünïcode ✓\n\ttabs".encode()), ("", "ünïcode ✓\n\ttabs".encode())),
    (b"t " + base64.b64encode(b"$(id) `id` \x1b]52;c;eA==\x07"),
     ("", b"$(id) `id` \x1b]52;c;eA==\x07")),  # (data: what it says is never run or shown raw)
    (b"t " + base64.b64encode(b"x" * INLINE_MAX), ("", b"x" * INLINE_MAX)),
    (b"t " + base64.b64encode(b"x" * (INLINE_MAX + 1)), ("", None)),  # too long: the agent
    (b"t " + base64.b64encode(b"nul\0inside"), ("", None)),
    (b"t " + base64.b64encode(b"\xff\xfe not utf-8"), ("", None)),
    (b"t not base64 at all!", ("", None)),
    (b"t ", ("", None)),  # (empty: the agent is asked)
])
def test_the_host_takes_a_line(line: bytes, taken: tuple[str, bytes | None]) -> None:
    assert port_line(line) == taken


def test_the_watcher_writes_text_or_a_hint() -> None:
    guest = guest_program()
    read, write = os.pipe()
    try:
        notifier = guest.Notifier(write)
        notifier.changed("", "copied ✓".encode())
        assert os.read(read, 4096) == b"t " + base64.b64encode("copied ✓".encode()) + b"\n"
        time.sleep(guest.COALESCE * 2)
        notifier.changed("files")
        assert os.read(read, 4096) == b"c files\n"
        time.sleep(guest.COALESCE * 2)
        notifier.changed("", b"y" * (INLINE_MAX + 1))  # too long to carry: a plain change
        assert os.read(read, 4096) == b"c\n"
    finally:
        os.close(read)
        os.close(write)


def test_coalesced_changes_carry_the_last_text() -> None:
    guest = guest_program()
    read, write = os.pipe()
    os.set_blocking(read, False)
    try:
        notifier = guest.Notifier(write)
        notifier.changed("", b"first")
        notifier.changed("", b"second")  # within COALESCE: written when it ends
        notifier.changed("", b"third")
        assert os.read(read, 4096) == b"t " + base64.b64encode(b"first") + b"\n"
        time.sleep(guest.COALESCE * 2)
        notifier.tick()
        assert os.read(read, 4096) == b"t " + base64.b64encode(b"third") + b"\n"
    finally:
        os.close(read)
        os.close(write)


def test_read_text_takes_small_text_and_gives_up_on_long_or_failing() -> None:
    guest = guest_program()
    assert guest.read_text(["printf", "%s", "abc"]) == b"abc"
    assert guest.read_text(["head", "-c", str(INLINE_MAX + 1), "/dev/zero"]) is None
    assert guest.read_text(["sh", "-c", "printf x; exit 1"]) is None
    assert guest.read_text(["/nonexistent/tool"]) is None
    started = time.monotonic()
    assert guest.read_text(["sleep", "30"]) is None
    assert time.monotonic() - started < guest.TEXT_WAIT + 1.5
    # A reader given up on is not killed (an X owner in the middle of INCR would wait for
    # it for good): left to end, and reaped at a later call once it has.
    slow = guest.LEFT[-1]
    assert slow.poll() is None
    slow.terminate()
    slow.wait()
    assert guest.read_text(["printf", "x"]) == b"x" and slow not in guest.LEFT
