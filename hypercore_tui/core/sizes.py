"""Human-readable sizes: parsing ``20G`` and formatting byte counts."""

from __future__ import annotations

import re

from hypercore_tui.core.errors import InvalidInput

_UNITS = {"": 1, "B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:I?B)?\s*", re.IGNORECASE)


def parse_size(text: str) -> int:
    """Parse ``20G``, ``512M``, ``1.5T``, ``4096`` (bytes) into bytes (binary units)."""
    match = _SIZE.fullmatch(text)
    if not match:
        raise InvalidInput(f"invalid size {text!r}: use a number with K, M, G or T (e.g. 20G)")
    number, unit = match.groups()
    value = int(float(number) * _UNITS[unit.upper()])
    if value <= 0:
        raise InvalidInput(f"invalid size {text!r}: must be greater than zero")
    return value


def format_bytes(value: float | None, *, precision: int = 1) -> str:
    """``1536`` -> ``1.5 KiB``; ``None`` -> ``—``."""
    if value is None:
        return "—"
    size = float(value)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(size) < 1024 or unit == "TiB":
            if unit == "B":
                return f"{int(size)} B"
            return f"{size:.{precision}f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")
