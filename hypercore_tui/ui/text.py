"""Turning untrusted strings (VM names, guest hostnames, OS names, addresses,
users, paths, error messages) into Rich ``Text`` that is shown literally.

``Text`` never parses markup, and control characters (ESC, BEL, CR, DEL, C1...)
are replaced by visible escapes, so a guest cannot restyle the dashboard or send
escape sequences to the terminal. Long values are cut with an ellipsis.
"""

from __future__ import annotations

import unicodedata

from rich.text import Text

ELLIPSIS = "…"


def printable(value: object, *, limit: int = 120) -> str:
    """``value`` as one printable line: controls escaped, at most ``limit`` characters."""
    raw = str(value)
    out: list[str] = []
    for char in raw:
        if char.isprintable() and unicodedata.category(char) not in ("Cf", "Zl", "Zp"):
            out.append(char)
        elif char == "\t":
            out.append(" ")
        else:
            out.append(f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}")
    text = "".join(out)
    if len(text) > limit:
        text = text[: max(limit - 1, 0)] + ELLIPSIS
    return text


def safe(value: object, style: str = "", *, limit: int = 120) -> Text:
    """A literal ``Text`` of ``value`` (never markup)."""
    return Text(printable(value, limit=limit), style=style, no_wrap=True, overflow="ellipsis")


def joined(parts: list[tuple[object, str]], *, limit: int = 120) -> Text:
    """Several literal pieces with their styles, e.g. ``[(name, "bold"), (" running", "")]``."""
    text = Text(no_wrap=True, overflow="ellipsis")
    for value, style in parts:
        text.append(printable(value, limit=limit), style=style or None)
    return text
