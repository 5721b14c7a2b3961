"""Untrusted text is shown as one printable line."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from hypercore_tui.core.text import printable


def test_controls_and_format_characters_are_escaped() -> None:
    assert printable("a\x1b]52;c;aGk=\x07b") == "a\\x1b]52;c;aGk=\\x07b"
    assert printable("line1\nline2\r") == "line1\\x0aline2\\x0d"
    assert printable("abc\u202edcba") == "abc\\u202edcba"  # right-to-left override
    assert printable("[bold]x[/]") == "[bold]x[/]"  # markup is data, left as typed
    assert printable("héllo 😀 שלום") == "héllo 😀 שלום"


def test_length_is_bounded() -> None:
    assert printable("x" * 500, limit=10) == "x" * 9 + "…"
    assert printable("x" * 500, limit=None) == "x" * 500


@given(st.text())
def test_always_one_printable_line(value: str) -> None:
    out = printable(value, limit=None)
    assert "\n" not in out and "\r" not in out and "\x1b" not in out
    assert all(c.isprintable() for c in out)
