"""Hosts: this one (``local``) and the others Hypercore reaches over SSH, as the user
settings keep them (``{"hosts": {"NAME": {"ssh": DEST, "command": CMD}}}``).

An SSH destination and a remote command are data: they go to ``ssh`` as argv elements
(after ``--``), never into a shell string on this host.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from hypercore_tui.core.errors import InvalidInput, NotFound
from hypercore_tui.core.names import validate_host_name

#: The name of this host. Always listed; never removed, never shadowed.
LOCAL_HOST = "local"
#: What runs on a remote host unless its entry says otherwise (found on the SSH user's PATH).
DEFAULT_REMOTE_COMMAND = "hypercore"
_MAX_DESTINATION = 255
_MAX_COMMAND = 1024


@dataclass(frozen=True)
class Host:
    """One host: ``local`` (destination None) or one reached with ``ssh DESTINATION``."""

    name: str
    destination: str | None = None
    #: The ``hypercore`` program there: a name on the SSH user's PATH, or a path
    #: (relative paths start in the SSH user's home directory).
    command: str = DEFAULT_REMOTE_COMMAND

    @property
    def is_local(self) -> bool:
        return self.destination is None

    def as_json(self) -> dict[str, object]:
        return {"name": self.name, "local": self.is_local, "ssh": self.destination,
                "command": None if self.is_local else self.command}


LOCAL = Host(LOCAL_HOST)


def _shown(value: str) -> str:
    return ascii(value if len(value) <= 60 else value[:60] + "…")


def _check_argument(value: str, what: str, longest: int) -> str:
    """A value that becomes one argv element of ``ssh``: not empty, not an option, no
    whitespace or control character (none is meaningful there, and each would make the
    value read as something else in a message or a config line)."""
    if not value:
        raise InvalidInput(f"the {what} is empty")
    if value.startswith("-"):
        raise InvalidInput(f"invalid {what} {_shown(value)}: it must not start with '-'")
    if len(value) > longest:
        raise InvalidInput(f"invalid {what} {_shown(value)}: longer than {longest} characters")
    if any(char.isspace() or not char.isprintable() for char in value):
        raise InvalidInput(f"invalid {what} {_shown(value)}: no spaces or control characters")
    return value


def validate_ssh_destination(destination: str) -> str:
    """``[user@]host`` or ``ssh://[user@]host[:port]`` (or an alias of ~/.ssh/config)."""
    return _check_argument(destination, "SSH destination", _MAX_DESTINATION)


def validate_remote_command(command: str) -> str:
    return _check_argument(command, "remote command", _MAX_COMMAND)


def new_host(name: str, destination: str, command: str = DEFAULT_REMOTE_COMMAND) -> Host:
    """A remote host from what the user typed, checked."""
    validate_host_name(name)
    if name == LOCAL_HOST:
        raise InvalidInput(f"{LOCAL_HOST!r} is this host; choose another name")
    return Host(name, validate_ssh_destination(destination), validate_remote_command(command))


def hosts_from_settings(settings: Mapping[str, Any]) -> list[Host]:
    """Every host, ``local`` first, then the remote ones by name. Entries that do not
    read as a host (edited by hand) raise :class:`InvalidInput` naming them."""
    raw = settings.get("hosts", {})
    if not isinstance(raw, Mapping):
        raise InvalidInput("settings: 'hosts' is not an object")
    hosts = [LOCAL]
    for name in sorted(raw):
        entry = raw[name]
        if not isinstance(entry, Mapping) or not isinstance(entry.get("ssh"), str):
            raise InvalidInput(f"settings: host {_shown(str(name))} has no 'ssh' destination")
        command = entry.get("command", DEFAULT_REMOTE_COMMAND)
        if not isinstance(command, str):
            raise InvalidInput(f"settings: host {_shown(str(name))}: 'command' is not text")
        try:
            hosts.append(new_host(str(name), entry["ssh"], command))
        except InvalidInput as exc:
            raise InvalidInput(f"settings: {exc}") from None
    return hosts


def host_entry(host: Host) -> dict[str, str]:
    """What the settings keep of a remote host."""
    assert host.destination is not None
    entry = {"ssh": host.destination}
    if host.command != DEFAULT_REMOTE_COMMAND:
        entry["command"] = host.command
    return entry


def find_host(hosts: list[Host], name: str) -> Host:
    for host in hosts:
        if host.name == name:
            return host
    raise NotFound(f"no host named {_shown(name)} (see `hypercore hosts list`)")
