"""Untrusted text made safe to show: guest-reported strings, file names, error details.

Control characters (ESC, BEL, CR, LF, DEL, C1...) and invisible format characters
(bidi overrides, zero-width) become visible escapes, so a value can neither send
escape sequences to the terminal nor reorder or split the line it is shown in.
"""

from __future__ import annotations

import unicodedata

ELLIPSIS = "…"


def printable(value: object, *, limit: int | None = 300) -> str:
    """``value`` as one printable line: controls escaped, at most ``limit`` characters."""
    out: list[str] = []
    for char in str(value):
        if char.isprintable() and unicodedata.category(char) not in ("Cf", "Zl", "Zp"):
            out.append(char)
        elif char == "\t":
            out.append(" ")
        else:
            out.append(f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}")
    text = "".join(out)
    if limit is not None and len(text) > limit:
        text = text[: max(limit - 1, 0)] + ELLIPSIS
    return text
