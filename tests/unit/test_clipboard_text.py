"""Clipboard text rules and the hub (pure: no guest, no agent)."""

from __future__ import annotations

import pytest

from hypercore_tui.core.errors import InvalidInput
from hypercore_tui.services.clipboard import (
    MAX_TEXT_BYTES,
    ClipboardHub,
    _status_lines,
    check_text,
    decode_text,
)

ADVERSARIAL = [
    "plain",
    "a'b\"c `id` $(id) ${HOME} \\ ; | & > < * ? ~ # !",
    "line1\nline2\n",
    "crlf\r\nline\r\n",
    "\ttab\tseparated\t",
    "emoji 😀👩‍👩‍👧 and combining é",
    "\u202eright-to-left override שלום مرحبا",
    "-n",  # looks like an option
    "\n",
    "",
]


@pytest.mark.parametrize("text", ADVERSARIAL)
def test_text_is_sent_as_exact_utf8(text: str) -> None:
    assert check_text(text) == text.encode("utf-8")
    assert decode_text(check_text(text)) == text


def test_nul_is_refused_with_a_clear_message() -> None:
    with pytest.raises(InvalidInput, match="NUL.*hypercore cp"):
        check_text("a\x00b")


def test_undecodable_text_is_refused() -> None:
    broken = b"\xff\xfeabc".decode("utf-8", errors="surrogateescape")
    with pytest.raises(InvalidInput, match="not valid Unicode"):
        check_text(broken)


def test_size_limit() -> None:
    check_text("x" * MAX_TEXT_BYTES)
    with pytest.raises(InvalidInput, match="limit"):
        check_text("x" * (MAX_TEXT_BYTES + 1))


def test_guest_bytes_decode_without_failing() -> None:
    assert decode_text(b"ok \xff") == "ok \ufffd"


def test_status_lines_split_markers_from_errors() -> None:
    status, other = _status_lines(b"hc-session=x11 :0 uid=1000\nxclip: oops\nhc-method=xclip\n")
    assert status == {"hc-session": "x11 :0 uid=1000", "hc-method": "xclip"}
    assert other == ["xclip: oops"]


def test_hub_holds_the_latest_text_and_its_source() -> None:
    hub = ClipboardHub()
    assert hub.text is None and hub.current is None
    for i in range(5):
        hub.set_text(f"t{i}", source="paste")
    hub.set_text("t2", source="vm:a")
    assert hub.current is not None and hub.current.source == "vm:a"


def test_hub_refuses_nul() -> None:
    hub = ClipboardHub()
    with pytest.raises(InvalidInput):
        hub.set_text("\x00", source="paste")
    assert hub.text is None


def test_guest_reported_status_cannot_carry_terminal_escapes() -> None:
    status, other = _status_lines(b"hc-session=x11 :0\x1b]52;c;aGk=\x07 uid=1\n\x1b[2Jboom\n")
    assert status["hc-session"] == "x11 :0\\x1b]52;c;aGk=\\x07 uid=1"
    assert other == ["\\x1b[2Jboom"]
    assert all(c.isprintable() for c in status["hc-session"] + other[0])
