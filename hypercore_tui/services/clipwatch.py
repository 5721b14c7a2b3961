"""Starting the guest's clipboard watcher (``hypercore_tui/guest/clipwatch.py``).

The watcher is a Python 3 program that runs inside a Linux guest with a graphical
session and writes one line ``c`` to the VM's clipboard notification port
(``org.hypercore.clipboard.0``, :attr:`VmPaths.clip_socket` on the host) whenever the
session's CLIPBOARD changes: the host then reads the content through the agent
(:mod:`services.clipboard`). Nothing is installed in the guest: clipboard.sh ``watch``
finds the session exactly as a push does, and runs ``python3 -`` with the program's text
as guest-exec stdin; the watcher detaches (qemu-ga sees the command end) and keeps
running, one per guest.

:func:`start_watcher` reports what happened as a :class:`WatchStart`; :func:`parse_start`
reads the script's ``hc-*`` lines.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from hypercore_tui.adapters.qga import AgentClient, AgentCommandError, ExecResult
from hypercore_tui.core.models import CLIP_PORT_NAME
from hypercore_tui.services import guest_exec
from hypercore_tui.services.clipboard import (
    EXEC_TIMEOUT,
    FALLBACK_DIR,
    LOOKUP_CACHED,
    ClipboardError,
    _found,
    _status_lines,
    linux_script,
)
from hypercore_tui.services.records import ClipSession

#: The watcher's program (a file beside clipboard.sh, sent as stdin).
WATCHER_PROGRAM = "clipwatch.py"
#: Where the watcher writes (clipboard.sh names the same path).
GUEST_PORT = f"/dev/virtio-ports/{CLIP_PORT_NAME}"

#: What :attr:`WatchStart.kind` says.
KIND_X11 = "x11"
KIND_WAYLAND = "wayland"
KIND_RUNNING = "running"  # a watcher was already running (pid: its pid, when known)
KIND_NONE = "none"  # no graphical session: the host watches the fallback file
KIND_UNSUPPORTED = "unsupported"  # no python3, libX11/libXfixes, wl-paste, data-control...
KINDS = (KIND_X11, KIND_WAYLAND, KIND_RUNNING, KIND_NONE, KIND_UNSUPPORTED)
#: The kinds that mean a watcher now runs in the guest.
WATCHING = (KIND_X11, KIND_WAYLAND, KIND_RUNNING)
#: What a watcher that takes the host's writes says (hc-watch-write=TOKEN).
TOKEN = re.compile(r"[0-9a-f]{16}")


@dataclass(frozen=True)
class WatchStart:
    """What ``clipboard.sh watch`` did in one guest."""

    kind: str  # one of KINDS
    pid: int | None = None  # the watcher's pid in the guest
    reason: str | None = None  # why not (unsupported), or a note
    session: str | None = None  # e.g. "x11 :0 uid=1000"
    lookup: str | None = None  # how the guest found its session (clipboard.LOOKUP_*)
    found: ClipSession | None = None  # what a scan found, for the host to name next time
    #: the watcher's token for writes down the port (``w TOKEN ID BASE64``: see
    #: :mod:`services.clipsync.vmsync`); None: it takes none (an older watcher)
    token: str | None = None

    @property
    def watching(self) -> bool:
        return self.kind in WATCHING


def parse_start(result: ExecResult, vm_name: str) -> WatchStart:
    """The :class:`WatchStart` the script's status and ``hc-*`` lines describe, or
    :class:`ClipboardError` saying why the watcher failed."""
    status, other = _status_lines(result.stderr)
    kind = status.get("hc-watch")
    reason = other[-1] if other else None
    if kind not in KINDS or (result.shell_status != 0) != (kind in (KIND_NONE,
                                                                     KIND_UNSUPPORTED)):
        why = reason or f"exit status {result.shell_status}"
        raise ClipboardError(f"{vm_name}: the clipboard watcher did not start: {why}")
    pid_text = status.get("hc-watch-pid", "")
    pid = int(pid_text) if pid_text.isascii() and pid_text.isdigit() and len(pid_text) < 10 \
        else None
    if kind in (KIND_X11, KIND_WAYLAND) and pid is None:
        raise ClipboardError(f"{vm_name}: the clipboard watcher started but gave no pid")
    lookup = status.get("hc-lookup")
    token = status.get("hc-watch-write")
    if token is not None and not TOKEN.fullmatch(token):
        token = None
    return WatchStart(kind=kind, pid=pid, reason=reason, session=status.get("hc-session"),
                      lookup=lookup,
                      found=_found(result.stderr) if lookup != LOOKUP_CACHED else None,
                      token=token if kind in WATCHING else None)


async def start_watcher(agent: AgentClient, *, fallback_dir: str = FALLBACK_DIR,
                        session: ClipSession | None = None,
                        replace: bool = False) -> WatchStart:
    """Start the guest's clipboard watcher (``replace``: stop a running one first);
    ``session``: the one found last time (a hint the guest checks, as for a push).

    Raises :class:`ClipboardError` when the watcher failed, and what
    :meth:`AgentClient.exec` raises (``AgentCommandUnsupported`` when the agent blocks
    guest-exec). A Windows guest is ``unsupported``.
    """
    hint = session.args() if session is not None else []
    argv = ["/bin/sh", "-c", linux_script(), "hypercore-clipboard", "watch", fallback_dir,
            *(["--replace"] if replace else []), *hint]
    program = guest_exec.script_text(WATCHER_PROGRAM).encode("utf-8")
    try:
        result = await agent.exec(argv, stdin=program, env=list(guest_exec.SCRIPT_ENV),
                                  timeout=EXEC_TIMEOUT)
    except AgentCommandError as exc:
        if exc.command == "guest-exec" and await guest_exec.is_windows(agent):
            return WatchStart(kind=KIND_UNSUPPORTED, reason="Windows guest")
        raise
    return parse_start(result, agent.vm_name)
