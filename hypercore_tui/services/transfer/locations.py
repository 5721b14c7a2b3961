"""Where a copy goes from and to: ``NAME:/path`` (a guest), ``HOST:NAME:/path`` (a guest of
another configured host) or a host path."""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass
from pathlib import Path

from hypercore_tui.core.errors import InvalidInput
from hypercore_tui.core.hosts import LOCAL_HOST
from hypercore_tui.core.names import validate_host_name, validate_vm_name


@dataclass(frozen=True)
class Location:
    """One side of a copy: a host path (``vm is None``), ``NAME:/path`` in a guest here, or
    ``HOST:NAME:/path`` in a guest of another host (``host`` set; never ``local``)."""

    vm: str | None
    path: str
    host: str | None = None

    @property
    def is_guest(self) -> bool:
        return self.vm is not None

    @property
    def is_remote(self) -> bool:
        return self.host is not None

    def __str__(self) -> str:
        if self.vm is None:
            return self.path
        return f"{self.host}:{self.vm}:{self.path}" if self.host else f"{self.vm}:{self.path}"


_NAME = r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}"
_VM_PREFIX = re.compile(rf"({_NAME}):(.*)", re.DOTALL)
_HOST_VM_PREFIX = re.compile(rf"({_NAME}):({_NAME}):(/.*)", re.DOTALL)


def parse_location(text: str) -> Location:
    """``NAME:/abs/path`` is a guest path, ``HOST:NAME:/abs/path`` one in a guest of the
    host ``HOST`` (``local``: this one); anything else a host path.

    Host and VM names hold no ``:``, so the two forms never overlap. A host file whose
    name looks like either can be given as ``./NAME:/x``.
    """
    if not text:
        raise InvalidInput("empty path")
    if "\x00" in text:
        raise InvalidInput("a path cannot contain a NUL character")
    remote = _HOST_VM_PREFIX.fullmatch(text)
    if remote:
        host, name, path = remote.groups()
        try:
            validate_host_name(host)
            validate_vm_name(name)
        except InvalidInput:
            pass
        else:
            return Location(name, _normalise_guest_path(path),
                            None if host == LOCAL_HOST else host)
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
