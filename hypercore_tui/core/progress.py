"""How a long operation reports how far it got: one callback shape for all of them.

A file copy reports bytes, a QEMU job, a disk conversion or a Ceph flatten a fraction;
the CLI draws a line on a terminal, the dashboard a progress bar. All of them meet here.
"""

from __future__ import annotations

from typing import Protocol


class Progress(Protocol):
    """Told how far an operation got, as often as the operation likes.

    ``stage``: what happens now, for a person ("saving the RAM state", "copying disk").
    ``done`` of ``total``: how far, in the operation's own unit: bytes for a file copy, a
    fraction with ``total`` 1.0 otherwise; ``done`` is None while it is not known.
    """

    def __call__(self, stage: str, done: float | None, total: float, /) -> None: ...


def fraction(done: float | None, total: float) -> float | None:
    """``done`` of ``total`` as 0..1 (None when not known)."""
    if done is None:
        return None
    if total <= 0:
        return 1.0
    return max(0.0, min(1.0, done / total))
