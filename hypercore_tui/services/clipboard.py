"""The clipboard hub: one host-side clipboard shared by the host and every VM.

Text moves host→guest (``push``), guest→host (``pull``) and guest→guest (pull from
one, push to the other). Inside a guest the text goes:

* **Linux, graphical session**: qemu-ga runs as root without the desktop's
  environment, so a fixed shell script (``hypercore_tui/guest/clipboard.sh``, run with
  guest-exec; its only inputs are argv and stdin) finds the session by scanning
  ``/proc/*/environ`` for a process whose ``DISPLAY`` / ``WAYLAND_DISPLAY`` names a
  display socket that exists (ordinary users' processes before root's, newest
  first by start time), and runs ``wl-copy`` / ``xclip`` / ``xsel`` as that user
  (setpriv with the process's ids and groups; runuser or su) with only that session's
  variables, the text on stdin and the tool's output redirected (the tool forks a
  holder process that would otherwise keep the agent's pipes open and
  ``guest-exec-status`` would never say ``exited``). The scan costs a few hundred ms
  under emulation, so the session it found is kept beside the VM's sockets
  (:func:`records.read_clip_session`, one QEMU boot) and named to the script next
  time: only a hint, which the script checks in the guest as a scan would (same
  process, same uid, not root, its environment still naming a display whose socket
  exists, no display come or gone) before it uses it, and scans again otherwise.
* **Linux, no graphical session** (or no clipboard tool): the fallback file
  :data:`FALLBACK_FILE`, mode 0600 in a 0700 directory, readable by root only,
  written to a temporary name and renamed.
* **Windows**: ``Set-Clipboard`` / ``Get-Clipboard`` through powershell.exe, the text
  on stdin/stdout as UTF-8. qemu-ga runs as a service in session 0, so this reaches
  the clipboard of session 0, *not* the logged-in user's desktop: Windows gives a
  service no way into another session's clipboard. The result says so.

Text is exact: any Unicode, newlines (LF, CRLF, trailing), tabs, quotes and shell
metacharacters arrive unchanged, because the text only ever travels as stdin
bytes. A NUL character is refused (:func:`check_text`): X11/Wayland/Windows
clipboards hold C strings for text, so it could not arrive unchanged; binary data
belongs in ``hypercore cp``.

Nothing here imports Textual: the UI calls :func:`push` / :func:`pull` and holds a
:class:`ClipboardHub`.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from hypercore_tui.adapters.qga import AgentClient, AgentCommandError, ExecResult, agent_session
from hypercore_tui.core.errors import (
    AgentCommandUnsupported,
    HypercoreError,
    InvalidInput,
    InvalidState,
    OperationFailed,
)
from hypercore_tui.core.layout import VmPaths
from hypercore_tui.core.models import ClipboardMode, VmSpec, VmState
from hypercore_tui.core.text import printable
from hypercore_tui.services import guest_exec, records, registry, vmstate
from hypercore_tui.services.context import Context
from hypercore_tui.services.records import CLIP_SESSION_KEYS, ClipSession

log = logging.getLogger("hypercore.clipboard")
log.addHandler(logging.NullHandler())

#: Largest clipboard text accepted (bytes of UTF-8). guest-exec stdin travels in one
#: JSON message and captured output is capped at 16 MiB; 8 MiB keeps well inside both.
MAX_TEXT_BYTES = 8 * 1024 * 1024

FALLBACK_DIR = "/var/lib/hypercore"
FALLBACK_FILE = f"{FALLBACK_DIR}/clipboard"
EXEC_TIMEOUT = 30.0

#: The guest side for Linux. argv: ACTION (push|pull) FALLBACK_DIR [SESSION...] (the
#: hint: :meth:`ClipSession.args`); push text on stdin, pulled text on stdout; ``hc-*``
#: status lines and error text on stderr.
LINUX_SCRIPT = "clipboard.sh"
#: How the script found the session (``hc-lookup``): the host's hint passed its checks,
#: a scan without a hint, a scan after the hint failed its checks.
LOOKUP_CACHED = "cached"
LOOKUP_SCAN = "scan"
LOOKUP_STALE = "stale"

#: What xclip / wl-paste / xsel say when the clipboard holds nothing.
EMPTY_MARKERS = ("not available", "Nothing is copied", "No selection", "No suitable type")

#: The guest side for Windows (powershell.exe -Command); the text on stdin/stdout, UTF-8.
WINDOWS_PUSH = (
    "$ErrorActionPreference='Stop';"
    "$s=[Console]::OpenStandardInput();$m=New-Object IO.MemoryStream;$s.CopyTo($m);"
    "$t=[Text.Encoding]::UTF8.GetString($m.ToArray());"
    "if($t.Length -eq 0){Set-Clipboard -Value $null}else{Set-Clipboard -Value $t}"
)
WINDOWS_PULL = (
    "$ErrorActionPreference='Stop';"
    "$t=Get-Clipboard -Raw;if($null -eq $t){$t=''};"
    "$b=[Text.Encoding]::UTF8.GetBytes([string]$t);"
    "$o=[Console]::OpenStandardOutput();$o.Write($b,0,$b.Length);$o.Flush()"
)
WINDOWS_NOTE = ("Windows: qemu-ga runs in service session 0, so the text reached session 0's "
                "clipboard, not the logged-in desktop's")
#: What the clipboard says when the agent blocks guest-exec.
NEEDS_EXEC = "the clipboard needs"


class ClipboardError(OperationFailed):
    """The guest could not take or give clipboard text."""


class ClipboardRefused(InvalidState):
    """The VM's clipboard mode (``vm.json``) forbids the read or the write."""


def _to_change(name: str) -> str:
    return f"hypercore set {name} clipboard=sync to change"


def check_readable(spec: VmSpec) -> None:
    """:class:`ClipboardRefused` unless Hypercore may read ``spec``'s clipboard."""
    mode, name = spec.clipboard, spec.name
    if mode is ClipboardMode.OFF:
        raise ClipboardRefused(f"{name}: its clipboard is off ({_to_change(name)})")
    if not mode.readable:
        raise ClipboardRefused(f"{name}: its clipboard is {mode.value}: it is written, "
                               "never read")


def check_writable(spec: VmSpec) -> None:
    """:class:`ClipboardRefused` unless Hypercore may write ``spec``'s clipboard."""
    if not spec.clipboard.writable:
        name = spec.name
        raise ClipboardRefused(f"{name}: its clipboard is {spec.clipboard.value} "
                               f"({_to_change(name)})")


# -- text -----------------------------------------------------------------------------


def check_text(text: str) -> bytes:
    """The UTF-8 bytes of ``text``, or :class:`InvalidInput` saying why it cannot be sent."""
    if "\x00" in text:
        raise InvalidInput("clipboard text contains a NUL character, which no clipboard can "
                           "hold as text; use `hypercore cp` for binary data")
    try:
        data = text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInput("clipboard text is not valid Unicode (undecodable bytes)") from None
    if len(data) > MAX_TEXT_BYTES:
        raise InvalidInput(f"clipboard text is {len(data)} bytes; the limit is "
                           f"{MAX_TEXT_BYTES // (1024 * 1024)} MiB (use `hypercore cp` for "
                           "files)")
    return data


def decode_text(data: bytes) -> str:
    """Text from a guest or a pipe: UTF-8 (undecodable bytes shown as U+FFFD)."""
    return data.decode("utf-8", errors="replace")


# -- the agent-facing part (testable against any AgentClient) ------------------------------


@dataclass(frozen=True)
class GuestClipboard:
    """What a push or pull did in one guest."""

    method: str  # the tool (xclip, xsel, wl), "file" or "windows"
    session: str | None = None  # e.g. "x11 :0 uid=1000"
    note: str | None = None
    text: str | None = None  # pull only
    empty: bool = False  # pull: the clipboard holds no text
    lookup: str | None = None  # LOOKUP_* (a graphical session only)
    found: ClipSession | None = None  # what a scan found, for the host to name next time


def _status_lines(stderr: bytes) -> tuple[dict[str, str], list[str]]:
    status: dict[str, str] = {}
    other: list[str] = []
    for raw in decode_text(stderr).splitlines():
        if raw.startswith("hc-"):
            key, _, value = raw.partition("=")
            status[key] = printable(value)
        elif raw.strip():
            other.append(printable(raw.strip()))
    return status, other


def _found(stderr: bytes) -> ClipSession | None:
    """The session a scan found (its ``hc-found-KEY=VALUE`` lines, exact: they go back
    to the script as argv), or None."""
    values: dict[str, str] = {}
    for raw in stderr.split(b"\n"):
        if not raw.startswith(b"hc-found-"):
            continue
        key, sep, value = raw[len(b"hc-found-"):].partition(b"=")
        try:
            name, text = key.decode("ascii"), value.decode("utf-8")
        except UnicodeDecodeError:
            return None
        if not sep or name not in CLIP_SESSION_KEYS or name in values:
            return None
        values[name] = text
    return ClipSession.from_values(values) if values else None


def _done(result: ExecResult, status: dict[str, str], *, text: str | None = None,
          empty: bool = False) -> GuestClipboard:
    lookup = status.get("hc-lookup")
    return GuestClipboard(method=status.get("hc-method", "?"), session=status.get("hc-session"),
                          note=status.get("hc-note"), text=text, empty=empty, lookup=lookup,
                          found=_found(result.stderr) if lookup != LOOKUP_CACHED else None)


@functools.cache
def linux_script() -> str:
    """The Linux helper as sent: its code without comment lines or indentation (the
    file keeps them). qemu-ga takes the script as JSON argv: the full text cost 2-4 ms
    more per push on the TCG test guest, and Debian's qemu-ga logs the whole argv to the
    journal. (The script has no here-document or string whose lines this could change.)"""
    code = (line.strip() for line in guest_exec.script_text(LINUX_SCRIPT).splitlines())
    return "".join(f"{line}\n" for line in code if line and not line.startswith("#"))


async def _run_linux(agent: AgentClient, action: str, stdin: bytes | None,
                     fallback_dir: str, session: ClipSession | None) -> ExecResult | None:
    """Run the Linux helper (as :func:`guest_exec.run_script` runs a script, in its
    short form); ``None`` when the guest has no /bin/sh (not Linux)."""
    hint = session.args() if session is not None else []
    argv = ["/bin/sh", "-c", linux_script(), "hypercore-clipboard", action, fallback_dir, *hint]
    try:
        return await agent.exec(argv, stdin=stdin, env=list(guest_exec.SCRIPT_ENV),
                                timeout=EXEC_TIMEOUT)
    except AgentCommandError as exc:
        if exc.command == "guest-exec" and await guest_exec.is_windows(agent):
            return None
        raise


def _failure(agent: AgentClient, result: ExecResult, other: list[str]) -> ClipboardError:
    why = other[-1] if other else f"exit status {result.shell_status}"
    return ClipboardError(f"{agent.vm_name}: clipboard helper failed in the guest: {why}")


async def push_via_agent(agent: AgentClient, text: str, *, fallback_dir: str = FALLBACK_DIR,
                         session: ClipSession | None = None) -> GuestClipboard:
    """Put ``text`` on the guest's clipboard (or in ``fallback_dir``/clipboard);
    ``session``: the one found last time (a hint the guest checks)."""
    data = check_text(text)
    result = await _run_linux(agent, "push", data, fallback_dir, session)
    if result is None:
        await _run_windows(agent, WINDOWS_PUSH, data)
        return GuestClipboard(method="windows", session="session 0", note=WINDOWS_NOTE)
    status, other = _status_lines(result.stderr)
    if result.shell_status != 0:
        raise _failure(agent, result, other)
    return _done(result, status)


async def pull_via_agent(agent: AgentClient, *, fallback_dir: str = FALLBACK_DIR,
                         session: ClipSession | None = None) -> GuestClipboard:
    """The guest's clipboard text (from its session, else its fallback file);
    ``session``: as for :func:`push_via_agent`."""
    result = await _run_linux(agent, "pull", None, fallback_dir, session)
    if result is None:
        out = await _run_windows(agent, WINDOWS_PULL, None)
        text = decode_text(out)
        return GuestClipboard(method="windows", session="session 0", note=WINDOWS_NOTE,
                              text=text, empty=not text)
    status, other = _status_lines(result.stderr)
    if result.shell_status != 0:
        if status.get("hc-method") not in (None, "file") and any(
                marker in line for line in other for marker in EMPTY_MARKERS):
            return _done(result, status, text="", empty=True)
        raise _failure(agent, result, other)
    if result.stdout_truncated:
        raise ClipboardError(f"{agent.vm_name}: the guest clipboard holds more than the "
                             "agent can return (16 MiB)")
    # (an empty fallback file, or an empty text in xclip/xsel, is no text either)
    empty = "hc-empty" in status or not result.stdout
    return _done(result, status, text="" if empty else decode_text(result.stdout), empty=empty)


async def _run_windows(agent: AgentClient, script: str, stdin: bytes | None) -> bytes:
    try:
        result = await guest_exec.run_powershell(agent, script, stdin=stdin,
                                                 timeout=EXEC_TIMEOUT)
    except AgentCommandError as exc:
        raise ClipboardError(f"{agent.vm_name}: cannot run powershell.exe in the guest: "
                             f"{printable(exc.desc)}") from None
    if result.shell_status != 0:
        err = decode_text(result.stderr).strip().splitlines()
        raise ClipboardError(f"{agent.vm_name}: PowerShell clipboard command failed: "
                             f"{printable(err[-1]) if err else result.shell_status}")
    return result.stdout


# -- services -------------------------------------------------------------------------


@dataclass(frozen=True)
class PushResult:
    """The outcome of a push to one VM."""

    name: str
    ok: bool
    method: str | None = None
    error: str | None = None
    note: str | None = None
    session: str | None = None
    seconds: float = 0.0
    lookup: str | None = None  # how the guest found its session (LOOKUP_*)


def running_vms(ctx: Context) -> list[str]:
    """Names of VMs whose QEMU runs."""
    names = []
    for name in registry.vm_names(ctx):
        state, _ = vmstate.process_state(ctx.vm_paths(name))
        if state is VmState.RUNNING:
            names.append(name)
    return names


def push_targets(ctx: Context) -> tuple[list[str], list[str]]:
    """The targets of ``push --all``: the running VMs whose clipboard may be written, and
    those skipped because their clipboard is off. (A definition that cannot be read stays
    a target: its push reports why.)"""
    targets: list[str] = []
    skipped: list[str] = []
    for name in running_vms(ctx):
        try:
            writable = registry.load(ctx, name).clipboard.writable
        except HypercoreError:
            writable = True
        (targets if writable else skipped).append(name)
    return targets, skipped


def _unsupported_message(name: str) -> str:
    return (f"{name}: the guest agent does not allow guest-exec, which the clipboard needs; "
            "enable it in the guest's qemu-ga configuration (remove guest-exec and "
            "guest-exec-status from block-rpcs / --block-rpcs, or add them to allow-rpcs)")


def _remember(paths: VmPaths, known: ClipSession | None, done: GuestClipboard) -> None:
    """Keep what the guest's scan found for the next push or pull (or forget a hint
    that no longer holds)."""
    if done.lookup == LOOKUP_CACHED:
        return
    if done.found is not None:
        if done.found != known:
            records.write_clip_session(paths, done.found)
    elif known is not None:
        records.clear_clip_session(paths)


async def push_one(ctx: Context, name: str, text: str, *, check_paused: bool = True
                   ) -> PushResult:
    return await push_with(ctx, name,
                           lambda agent, known: push_via_agent(agent, text, session=known),
                           check_paused=check_paused)


Writer = Callable[[AgentClient, ClipSession | None], Awaitable[GuestClipboard]]


async def push_with(ctx: Context, name: str, write: Writer, *, check_paused: bool = True
                    ) -> PushResult:
    """One VM's push, whatever ``write`` puts there (text, an image): the mode, running
    and not paused, the session hint, one result that says how it went. (The clipboard
    sync passes ``check_paused=False``: it follows pauses itself, and the QMP question
    costs tens of ms a push under emulation.)"""
    started = time.monotonic()
    try:
        check_writable(registry.load(ctx, name))  # before anything else: a stopped VM too
        paths = vmstate.require_running(ctx, name).paths
        if check_paused:  # paused: say so now, not at the timeout
            await vmstate.require_guest_running(paths)
        known = records.read_clip_session(paths)
        async with agent_session(paths.qga_socket, vm_name=name) as agent:
            done = await write(agent, known)
        _remember(paths, known, done)
    except AgentCommandUnsupported:
        return PushResult(name, False, error=guest_exec.exec_blocked(name, NEEDS_EXEC),
                          seconds=time.monotonic() - started)
    except HypercoreError as exc:
        return PushResult(name, False, error=str(exc), seconds=time.monotonic() - started)
    return PushResult(name, True, method=done.method, note=done.note, session=done.session,
                      seconds=time.monotonic() - started, lookup=done.lookup)


async def push(ctx: Context, names: Sequence[str], text: str) -> list[PushResult]:
    """Push ``text`` to every VM in ``names`` at once; one result per VM, in order."""
    check_text(text)  # bad text is the caller's error, not a per-VM failure
    return list(await asyncio.gather(*(push_one(ctx, n, text) for n in names)))


async def pull_detail(ctx: Context, name: str, *, check_paused: bool = True
                      ) -> GuestClipboard:
    check_readable(registry.load(ctx, name))  # before anything else: a stopped VM too
    paths = vmstate.require_running(ctx, name).paths
    if check_paused:  # paused: say so now, not at the timeout
        await vmstate.require_guest_running(paths)
    known = records.read_clip_session(paths)
    try:
        async with agent_session(paths.qga_socket, vm_name=name) as agent:
            done = await pull_via_agent(agent, session=known)
    except AgentCommandUnsupported:
        raise ClipboardError(guest_exec.exec_blocked(name, NEEDS_EXEC)) from None
    _remember(paths, known, done)
    return done


async def pull(ctx: Context, name: str) -> str:
    """The text on ``name``'s clipboard ("" when it is empty)."""
    return (await pull_detail(ctx, name)).text or ""


# -- the hub ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ClipEntry:
    text: str
    source: str  # "paste", "host", "cli", "vm:NAME", ...
    at: float = field(default_factory=time.time)


class ClipboardHub:
    """The one clipboard buffer shared by all VMs: the text last copied, and from where.

    Kept in memory only, on purpose: clipboards carry passwords, and nothing here
    should leave them on disk.
    """

    def __init__(self) -> None:
        self._current: ClipEntry | None = None

    @property
    def current(self) -> ClipEntry | None:
        return self._current

    @property
    def text(self) -> str | None:
        entry = self.current
        return entry.text if entry else None

    def set_text(self, text: str, *, source: str) -> ClipEntry:
        """Make ``text`` the hub's clipboard."""
        check_text(text)
        self._current = ClipEntry(text=text, source=source)
        return self._current

    def clear(self) -> None:
        self._current = None

    async def push(self, ctx: Context, names: Sequence[str]) -> list[PushResult]:
        text = self.text
        if text is None:
            raise InvalidInput("the clipboard hub is empty")
        return await push(ctx, names, text)

    async def pull(self, ctx: Context, name: str) -> ClipEntry:
        return self.set_text(await pull(ctx, name), source=f"vm:{name}")
