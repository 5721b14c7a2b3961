"""The hosts Hypercore knows, kept in the user settings (``services/settings.py``):
``local`` always, then the ones added with ``hypercore hosts add``."""

from __future__ import annotations

from hypercore_tui.core.errors import AlreadyExists, InvalidInput
from hypercore_tui.core.hosts import (
    DEFAULT_REMOTE_COMMAND,
    LOCAL_HOST,
    Host,
    find_host,
    host_entry,
    hosts_from_settings,
    new_host,
)
from hypercore_tui.services.context import Context
from hypercore_tui.services.settings import changing_settings, read_settings


def list_hosts(ctx: Context) -> list[Host]:
    """``local`` first, then the others by name."""
    return hosts_from_settings(read_settings(ctx))


def get_host(ctx: Context, name: str) -> Host:
    """The host called ``name`` (``local`` is this one); :class:`NotFound` otherwise."""
    if name == LOCAL_HOST:
        return list_hosts(ctx)[0]
    return find_host(list_hosts(ctx), name)


def add_host(ctx: Context, name: str, destination: str,
             command: str = DEFAULT_REMOTE_COMMAND) -> Host:
    host = new_host(name, destination, command)
    with changing_settings(ctx, f"add host {name}") as settings:
        hosts_from_settings(settings)  # the others read well (else say so, write nothing)
        entries = settings.setdefault("hosts", {})
        if name in entries:
            raise AlreadyExists(f"a host named {name!r} exists already "
                                f"(ssh {entries[name].get('ssh')}); remove it first")
        entries[name] = host_entry(host)
    return host


def remove_host(ctx: Context, name: str) -> Host:
    """Forget a host; returns what it was."""
    if name == LOCAL_HOST:
        raise InvalidInput(f"{LOCAL_HOST!r} is this host; it cannot be removed")
    with changing_settings(ctx, f"remove host {name}") as settings:
        host = find_host(hosts_from_settings(settings), name)
        del settings["hosts"][name]
    return host
