"""Running Hypercore's guest-side scripts through the agent (``guest-exec``).

The scripts are files in ``hypercore_tui/guest/``: POSIX sh that busybox ash and
Debian's dash both run, checked by shellcheck. One runs as
``/bin/sh -c SCRIPT NAME ARG...`` with ``PATH=/usr/bin:/bin``; argv and stdin are its
only inputs, so no file name, VM name, clipboard text or guest-reported value is ever
part of a command string. Their replies are read here too: ``KEY=VALUE`` records
(:func:`parse_out`) and the one line that says why a script failed
(:func:`error_line`); a failure that says the guest's disk is full becomes
:class:`ScriptNoSpace` (:func:`script_failure`).
"""

from __future__ import annotations

import functools
import importlib.resources
import re

from hypercore_tui.adapters.qga import AgentClient, ExecResult
from hypercore_tui.core.errors import HypercoreError, NoSpace, OperationFailed, says_no_space
from hypercore_tui.core.text import printable

#: The environment a guest script starts with (it sets its own, longer PATH).
SCRIPT_ENV = ("PATH=/usr/bin:/bin",)
POWERSHELL = ("powershell.exe", "-NoProfile", "-NonInteractive", "-ExecutionPolicy", "Bypass",
              "-Command")

#: dd's statistics, which are no reason.
_NOISE = re.compile(r"records (in|out)|bytes .* copied|^\d+\+\d+ ")


@functools.cache
def script_text(name: str) -> str:
    """The text of the guest script ``name`` (a file in ``hypercore_tui/guest/``)."""
    return importlib.resources.files("hypercore_tui").joinpath("guest", name).read_text(
        encoding="utf-8")


async def run_script(agent: AgentClient, name: str, *args: str, argv0: str,
                     stdin: bytes | None = None, timeout: float) -> ExecResult:
    """Run the guest script ``name`` with ``args`` (``$0`` is ``argv0``) and wait for it.

    Raises what :meth:`AgentClient.exec` raises: ``AgentCommandUnsupported`` when the
    agent blocks guest-exec (see :func:`exec_blocked`), ``AgentCommandError`` when the
    guest cannot start ``/bin/sh`` (a Windows guest).
    """
    return await agent.exec(["/bin/sh", "-c", script_text(name), argv0, *args], stdin=stdin,
                            env=list(SCRIPT_ENV), timeout=timeout)


async def run_powershell(agent: AgentClient, command: str, *, stdin: bytes | None,
                         timeout: float) -> ExecResult:
    """Run one PowerShell ``command`` in a Windows guest and wait for it."""
    return await agent.exec([*POWERSHELL, command], stdin=stdin, timeout=timeout)


async def is_windows(agent: AgentClient) -> bool:
    """Whether the guest says it runs Windows (False when it cannot tell)."""
    try:
        info = await agent.execute("guest-get-osinfo")
    except HypercoreError:
        return False
    return isinstance(info, dict) and str(info.get("id", "")).lower() == "mswindows"


def exec_blocked(vm: str, needed_by: str) -> str:
    """The message for an agent that blocks guest-exec, which ``needed_by`` (e.g. "the
    clipboard needs")."""
    return (f"{vm}: the guest agent does not allow guest-exec, which {needed_by}; enable it "
            "in the guest's qemu-ga configuration (remove guest-exec and guest-exec-status "
            "from block-rpcs / --block-rpcs, or add them to allow-rpcs)")


# -- what the scripts say ---------------------------------------------------------------


def parse_out(data: bytes) -> dict[str, str]:
    """The ``KEY=VALUE`` records a script printed, each ended by a NUL (first one wins)."""
    values: dict[str, str] = {}
    for item in data.split(b"\0"):
        key, sep, value = item.decode("utf-8", errors="surrogateescape").partition("=")
        if sep and key not in values:
            values[key] = value
    return values


def _last_line(result: ExecResult) -> str | None:
    lines = [ln.strip() for ln in result.stderr.decode(errors="replace").splitlines()
             if ln.strip() and not _NOISE.search(ln)]
    return lines[-1] if lines else None


def error_line(result: ExecResult) -> str:
    """Why a script failed, safe to show: its last line on stderr, else its exit status."""
    line = _last_line(result)
    return printable(line) if line is not None else f"exit status {result.shell_status}"


class ScriptFailed(OperationFailed):
    """A guest script ended with a non-zero status; ``reason`` is :func:`error_line`."""

    def __init__(self, vm: str, result: ExecResult) -> None:
        self.result = result
        self.reason = error_line(result)
        super().__init__(f"{vm}: {self.reason}")


class ScriptNoSpace(ScriptFailed, NoSpace):
    """A guest script failed because a disk it wrote to is full (the guest's own, or the
    host's through the shared folder)."""


def script_failure(vm: str, result: ExecResult) -> ScriptFailed:
    """The error for a script that failed: :class:`ScriptNoSpace` when its reason is
    ``ENOSPC``."""
    line = _last_line(result)
    if line is not None and says_no_space(line):
        return ScriptNoSpace(vm, result)
    return ScriptFailed(vm, result)
