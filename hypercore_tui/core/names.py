"""Validation of names that end up in paths, argv and QMP/QGA messages."""

from __future__ import annotations

import re

from hypercore_tui.core.errors import InvalidInput

_VM_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_SNAPSHOT_TAG = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:+-]{0,63}")
_RBD_PART = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def _shown(value: str) -> str:
    """A value as it may appear inside an error message: escaped and bounded."""
    text = value if len(value) <= 40 else value[:40] + "…"
    return ascii(text)


def validate_vm_name(name: str) -> str:
    """Return ``name`` if it is a valid VM name, else raise :class:`InvalidInput`.

    Letters, digits, ``-``, ``_`` and ``.``; 1-64 characters; starting with a
    letter or digit (so it can never be an option, a hidden file or ``..``).
    """
    if not _VM_NAME.fullmatch(name) or name.endswith("."):
        raise InvalidInput(
            f"invalid VM name {_shown(name)}: use 1-64 letters, digits, '-', '_' or '.', "
            "starting with a letter or digit"
        )
    return name


def validate_host_name(name: str) -> str:
    """Return ``name`` if it is a valid host name (``hypercore hosts add NAME ...``): the
    same rule as VM names, so a host name is safe in paths, argv and a later ``HOST:VM``."""
    if not _VM_NAME.fullmatch(name) or name.endswith("."):
        raise InvalidInput(
            f"invalid host name {_shown(name)}: use 1-64 letters, digits, '-', '_' or '.', "
            "starting with a letter or digit"
        )
    return name


def validate_snapshot_tag(tag: str) -> str:
    """Return ``tag`` if it is a valid snapshot tag, else raise :class:`InvalidInput`."""
    if not _SNAPSHOT_TAG.fullmatch(tag) or tag.isdigit():
        raise InvalidInput(
            f"invalid snapshot tag {_shown(tag)}: use 1-64 letters, digits, '-', '_', '.', "
            "':' or '+', starting with a letter or digit, not all digits"
        )
    return tag


def validate_rbd_component(kind: str, value: str) -> str:
    """Validate a Ceph pool or image name (no '/', '@', ':' or leading '-')."""
    if not _RBD_PART.fullmatch(value):
        raise InvalidInput(
            f"invalid RBD {kind} name {_shown(value)}: use letters, digits, '-', '_' or '.', "
            "starting with a letter or digit"
        )
    return value
