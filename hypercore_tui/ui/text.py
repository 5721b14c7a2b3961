"""Turning untrusted strings (VM names, guest hostnames, OS names, addresses,
users, paths, error messages) into Rich ``Text`` that is shown literally.

``Text`` never parses markup, and control characters (ESC, BEL, CR, DEL, C1...)
are replaced by visible escapes, so a guest cannot restyle the dashboard or send
escape sequences to the terminal. Long values are cut with an ellipsis.
"""

from __future__ import annotations

from rich.text import Text

from hypercore_tui.core.text import ELLIPSIS, printable

__all__ = ["ELLIPSIS", "fit_path", "joined", "printable", "safe"]


def safe(value: object, style: str = "", *, limit: int = 120) -> Text:
    """A literal ``Text`` of ``value`` (never markup)."""
    return Text(printable(value, limit=limit), style=style, no_wrap=True, overflow="ellipsis")


def joined(parts: list[tuple[object, str]], *, limit: int = 120) -> Text:
    """Several literal pieces with their styles, e.g. ``[(name, "bold"), (" running", "")]``."""
    text = Text(no_wrap=True, overflow="ellipsis")
    for value, style in parts:
        text.append(printable(value, limit=limit), style=style or None)
    return text


def fit_path(path: str, width: int) -> str:
    """``path`` in at most ``width`` characters: its start replaced by an ellipsis, keeping
    the trailing components that fit whole (``…/web1/vnc.sock``; only ``…`` when not even
    the last one fits); unchanged when ``width`` is 0 (not known yet)."""
    if width <= 0 or len(path) <= width:
        return path
    kept = ""
    for part in reversed(path.split("/")[1:]):
        candidate = f"/{part}{kept}"
        if len(candidate) + len(ELLIPSIS) > width:
            break
        kept = candidate
    return ELLIPSIS + kept
