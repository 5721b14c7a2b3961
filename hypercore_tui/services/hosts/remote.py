"""Hypercore commands run on another host through its shared SSH connection.

* :func:`run_attached`: ``hypercore --host NAME COMMAND ...``: the remote command gets
  this process's stdin, stdout and stderr; its exit code is returned unchanged.
* :func:`run_captured`: a command whose output the caller reads (``list --json``...).
* :func:`start`: a long-lived command read as it goes (``watch --json``: ``.stream``).

Every argument is one argv element there (``shlex.join``): spaces, quotes, ``$(...)``,
``;`` and newlines arrive as they were typed.
"""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Sequence

from hypercore_tui.adapters import ssh
from hypercore_tui.core.errors import HostUnreachable, HypercoreError
from hypercore_tui.core.hosts import Host
from hypercore_tui.services.context import Context
from hypercore_tui.services.hosts.connection import HostConnection

#: The exit code of a command ended by an interrupt (as the CLI's own).
INTERRUPTED = 130


def lost(conn: HostConnection) -> HostUnreachable:
    return HostUnreachable(f"{conn.name}: the SSH connection to {conn.host.destination} "
                           "failed or was lost")


def run_attached(ctx: Context, host: Host, args: Sequence[str], *, tty: bool) -> int:
    """Run ``hypercore ARGS`` there with this process's stdio; its exit code. ``tty``: a
    person is at this terminal (the remote command gets one too: the dashboard, a
    console, Ctrl-C reaching it)."""
    conn = HostConnection(ctx, host)
    conn.ensure_ready()
    # ssh's own diagnostics are silenced: the remote command's stderr passes through
    # unchanged, and a failed connection is said once, below.
    argv = conn.target.command_argv(conn.remote_argv(list(args)), tty=tty, log_level="QUIET")
    code, interrupted = ssh.run_attached(argv)
    if code == ssh.SSH_FAILED:
        if interrupted:
            return INTERRUPTED
        raise lost(conn)
    return code


def run_captured(ctx: Context, host: Host, args: Sequence[str], *, timeout: float,
                 stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    """Run ``hypercore ARGS`` there, output captured; the caller judges the exit code
    (the remote ``hypercore: error: ...`` line is in ``stderr``)."""
    conn = HostConnection(ctx, host)
    conn.ensure_ready()
    try:
        return ssh.run(conn.target, conn.remote_argv(list(args)), timeout=timeout,
                       stdin=stdin)
    except HypercoreError as exc:
        raise conn.named(exc) from None


async def start(ctx: Context, host: Host, args: Sequence[str], *, stdin: int = subprocess.DEVNULL,
                own_session: bool = False, limit: int = 1 << 16
                ) -> asyncio.subprocess.Process:
    """Start ``hypercore ARGS`` there, stdout and stderr as pipes to read, no stdin
    (``stdin=subprocess.PIPE``: one to write). The version check runs in a thread (it may
    take seconds on a slow link). ``own_session``: a Ctrl-C at this terminal does not
    reach the ssh (the caller ends it in its own time). ``limit``: the longest line its
    stdout reader takes."""
    conn = HostConnection(ctx, host)
    await asyncio.to_thread(conn.ensure_ready)
    argv = conn.target.command_argv(conn.remote_argv(list(args)), log_level="ERROR")
    return await asyncio.create_subprocess_exec(
        *argv, stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        start_new_session=own_session, limit=limit)
