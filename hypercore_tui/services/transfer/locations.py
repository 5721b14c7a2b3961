"""Where a copy goes from and to: ``NAME:/path`` (a guest) or a host path."""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass
from pathlib import Path

from hypercore_tui.core.errors import InvalidInput
from hypercore_tui.core.names import validate_vm_name


@dataclass(frozen=True)
class Location:
    """One side of a copy: a host path (``vm is None``) or ``NAME:/path`` in a guest."""

    vm: str | None
    path: str

    @property
    def is_guest(self) -> bool:
        return self.vm is not None

    def __str__(self) -> str:
        return f"{self.vm}:{self.path}" if self.vm else self.path


_VM_PREFIX = re.compile(r"([A-Za-z0-9][A-Za-z0-9._-]{0,63}):(.*)", re.DOTALL)


def parse_location(text: str) -> Location:
    """``NAME:/abs/path`` is a guest path; anything else a host path.

    A host file whose name looks like ``NAME:/x`` can be given as ``./NAME:/x``.
    """
    if not text:
        raise InvalidInput("empty path")
    if "\x00" in text:
        raise InvalidInput("a path cannot contain a NUL character")
    match = _VM_PREFIX.fullmatch(text)
    if match and not text.startswith(("./", "/")):
        name, path = match.group(1), match.group(2)
        try:
            validate_vm_name(name)
        except InvalidInput:
            return Location(None, text)
        if not path.startswith("/"):
            if Path(text).exists():
                return Location(None, text)
            raise InvalidInput(f"guest paths must be absolute: {name}:/path (got {text!r})")
        return Location(name, _normalise_guest_path(path))
    return Location(None, text)


def _normalise_guest_path(path: str) -> str:
    trailing = path.endswith("/") and path != "/"
    norm = posixpath.normpath(path)
    if norm.startswith("//"):
        norm = "/" + norm.lstrip("/")
    return norm + "/" if trailing else norm


def basename(path: str) -> str:
    name = posixpath.basename(path.rstrip("/"))
    if name in ("", ".", ".."):
        raise InvalidInput(f"{path!r} does not name a file")
    return name
