"""Checking a ceph.conf before librados reads it.

librados prints some configuration errors straight to stdout/stderr (an unresolvable
monitor host, a conf naming no monitor), which would garble the dashboard and
``--json`` output: :func:`check_conf` finds those cases first.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from pathlib import Path

from hypercore_tui.core.errors import ClusterUnavailable

_MON_KEYS = {"mon_host", "mon_addr"}
_SECTION = re.compile(r"\s*\[(?P<name>[^\]]*)\]\s*")
_KEY_VALUE = re.compile(r"\s*(?P<key>[^=#;]+?)\s*=\s*(?P<value>.*)")


def _monitor_hosts(text: str) -> list[str] | None:
    """Monitor addresses named in a ceph.conf (None: it names none)."""
    found: list[str] | None = None
    for raw in text.splitlines():
        line = re.split(r"[#;]", raw, maxsplit=1)[0]  # Ceph's comment characters
        if not line.strip() or _SECTION.fullmatch(line):
            continue
        match = _KEY_VALUE.fullmatch(line)
        if not match:
            continue
        key = re.sub(r"[\s-]+", "_", match["key"].strip().lower())
        if key in _MON_KEYS:
            found = (found or []) + _address_hosts(match["value"])
    return found


def _address_hosts(value: str) -> list[str]:
    hosts = []
    for token in re.split(r"[\s,;\[\]]+", value):
        token = re.sub(r"^v[12]:", "", token).split("/", 1)[0]
        if not token:
            continue
        host = token.rsplit(":", 1)[0] if token.count(":") == 1 else token
        hosts.append(host)
    return hosts


def check_conf(conf: str) -> str:
    """``conf`` as an absolute path of a readable ceph.conf naming resolvable monitors."""
    path = Path(conf).expanduser().absolute()
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        raise ClusterUnavailable(f"Ceph config {path} does not exist: start the development "
                                 "cluster with `scripts/ceph-dev.sh up` or set "
                                 "HYPERCORE_CEPH_CONF") from None
    except OSError as exc:
        raise ClusterUnavailable(f"cannot read Ceph config {path}: {exc.strerror}") from None
    hosts = _monitor_hosts(text)
    if not hosts:
        raise ClusterUnavailable(f"Ceph config {path} names no monitor (mon_host)")
    for host in hosts:
        try:
            ipaddress.ip_address(host)
            continue
        except ValueError:
            pass
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9.-]*", host):
            continue  # an address form we do not parse: librados will judge it
        try:
            socket.getaddrinfo(host, None)
        except (socket.gaierror, UnicodeError):
            raise ClusterUnavailable(f"cannot resolve the Ceph monitor host {host!r} named in "
                                     f"{path}") from None
    return str(path)
