"""The clipboard hub: one host-side clipboard shared by the host and every VM.

Text moves host→guest (``push``), guest→host (``pull``) and guest→guest (pull from
one, push to the other). Inside a guest the text goes:

* **Linux, graphical session**: qemu-ga runs as root without the desktop's
  environment, so a fixed shell script (``hypercore_tui/guest/clipboard.sh``, run with
  guest-exec; its only inputs are argv and stdin) finds the session by scanning
  ``/proc/*/environ`` for a process whose ``DISPLAY`` / ``WAYLAND_DISPLAY`` names a
  display socket that exists (ordinary users' processes before root's, newest
  first), and runs ``wl-copy`` / ``xclip`` / ``xsel`` as that user (setpriv, runuser
  or su) with only that session's variables, the text on stdin and the tool's
  output redirected (the tool forks a holder process that would otherwise keep the
  agent's pipes open and ``guest-exec-status`` would never say ``exited``).
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
import contextlib
import logging
import time
from collections import deque
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
from hypercore_tui.core.models import VmState
from hypercore_tui.core.text import printable
from hypercore_tui.services import guest_exec, registry
from hypercore_tui.services.context import Context

log = logging.getLogger("hypercore.clipboard")
log.addHandler(logging.NullHandler())

#: Largest clipboard text accepted (bytes of UTF-8). guest-exec stdin travels in one
#: JSON message and captured output is capped at 16 MiB; 8 MiB keeps well inside both.
MAX_TEXT_BYTES = 8 * 1024 * 1024
HISTORY = 20

FALLBACK_DIR = "/var/lib/hypercore"
FALLBACK_FILE = f"{FALLBACK_DIR}/clipboard"
EXEC_TIMEOUT = 30.0

#: The guest side for Linux. argv: ACTION (push|pull) FALLBACK_DIR; push text on stdin,
#: pulled text on stdout; ``hc-*`` status lines and error text on stderr.
LINUX_SCRIPT = "clipboard.sh"

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
    empty: bool = False


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


async def _run_linux(agent: AgentClient, action: str, stdin: bytes | None,
                     fallback_dir: str) -> ExecResult | None:
    """Run the Linux helper; ``None`` when the guest has no /bin/sh (not Linux)."""
    try:
        return await guest_exec.run_script(agent, LINUX_SCRIPT, action, fallback_dir,
                                           argv0="hypercore-clipboard", stdin=stdin,
                                           timeout=EXEC_TIMEOUT)
    except AgentCommandError as exc:
        if exc.command == "guest-exec" and await guest_exec.is_windows(agent):
            return None
        raise


def _failure(agent: AgentClient, result: ExecResult, other: list[str]) -> ClipboardError:
    why = other[-1] if other else f"exit status {result.shell_status}"
    return ClipboardError(f"{agent.vm_name}: clipboard helper failed in the guest: {why}")


async def push_via_agent(agent: AgentClient, text: str, *,
                         fallback_dir: str = FALLBACK_DIR) -> GuestClipboard:
    """Put ``text`` on the guest's clipboard (or in ``fallback_dir``/clipboard)."""
    data = check_text(text)
    result = await _run_linux(agent, "push", data, fallback_dir)
    if result is None:
        await _run_windows(agent, WINDOWS_PUSH, data)
        return GuestClipboard(method="windows", session="session 0", note=WINDOWS_NOTE)
    status, other = _status_lines(result.stderr)
    if result.shell_status != 0:
        raise _failure(agent, result, other)
    return GuestClipboard(method=status.get("hc-method", "?"),
                          session=status.get("hc-session"), note=status.get("hc-note"))


async def pull_via_agent(agent: AgentClient, *,
                         fallback_dir: str = FALLBACK_DIR) -> GuestClipboard:
    """The guest's clipboard text (from its session, else its fallback file)."""
    result = await _run_linux(agent, "pull", None, fallback_dir)
    if result is None:
        out = await _run_windows(agent, WINDOWS_PULL, None)
        text = decode_text(out)
        return GuestClipboard(method="windows", session="session 0", note=WINDOWS_NOTE,
                              text=text, empty=not text)
    status, other = _status_lines(result.stderr)
    if result.shell_status != 0:
        if status.get("hc-method") not in (None, "file") and any(
                marker in line for line in other for marker in EMPTY_MARKERS):
            return GuestClipboard(method=status["hc-method"], session=status.get("hc-session"),
                                  note=status.get("hc-note"), text="", empty=True)
        raise _failure(agent, result, other)
    if result.stdout_truncated:
        raise ClipboardError(f"{agent.vm_name}: the guest clipboard holds more than the "
                             "agent can return (16 MiB)")
    empty = "hc-empty" in status
    return GuestClipboard(method=status.get("hc-method", "?"), session=status.get("hc-session"),
                          note=status.get("hc-note"), text="" if empty else
                          decode_text(result.stdout), empty=empty)


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


def running_vms(ctx: Context) -> list[str]:
    """Names of VMs whose QEMU runs (the targets of ``push --all``)."""
    from hypercore_tui.services.lifecycle import process_state

    names = []
    for name in registry.vm_names(ctx):
        state, _ = process_state(ctx.vm_paths(name))
        if state is VmState.RUNNING:
            names.append(name)
    return names


def _require_running(ctx: Context, name: str) -> None:
    from hypercore_tui.services.lifecycle import process_state

    registry.load(ctx, name)
    state, _ = process_state(ctx.vm_paths(name))
    if state is not VmState.RUNNING:
        raise InvalidState(f"{name} is not running ({state.value})")


async def _require_guest_running(paths: VmPaths) -> None:
    from hypercore_tui.services.lifecycle import require_guest_running

    await require_guest_running(paths)  # paused: say so now, not after the agent's timeout


async def push_one(ctx: Context, name: str, text: str) -> PushResult:
    started = time.monotonic()
    try:
        _require_running(ctx, name)
        paths = ctx.vm_paths(name)
        await _require_guest_running(paths)
        async with agent_session(paths.qga_socket, vm_name=name) as agent:
            done = await push_via_agent(agent, text)
    except AgentCommandUnsupported:
        return PushResult(name, False, error=guest_exec.exec_blocked(name, NEEDS_EXEC),
                          seconds=time.monotonic() - started)
    except HypercoreError as exc:
        return PushResult(name, False, error=str(exc), seconds=time.monotonic() - started)
    return PushResult(name, True, method=done.method, note=done.note, session=done.session,
                      seconds=time.monotonic() - started)


async def push(ctx: Context, names: Sequence[str], text: str) -> list[PushResult]:
    """Push ``text`` to every VM in ``names`` at once; one result per VM, in order."""
    check_text(text)  # bad text is the caller's error, not a per-VM failure
    return list(await asyncio.gather(*(push_one(ctx, n, text) for n in names)))


async def pull_detail(ctx: Context, name: str) -> GuestClipboard:
    _require_running(ctx, name)
    paths = ctx.vm_paths(name)
    await _require_guest_running(paths)
    try:
        async with agent_session(paths.qga_socket, vm_name=name) as agent:
            return await pull_via_agent(agent)
    except AgentCommandUnsupported:
        raise ClipboardError(guest_exec.exec_blocked(name, NEEDS_EXEC)) from None


async def pull(ctx: Context, name: str) -> str:
    """The text on ``name``'s clipboard ("" when it is empty)."""
    return (await pull_detail(ctx, name)).text or ""


async def copy_between(ctx: Context, source: str, targets: Sequence[str],
                       hub: ClipboardHub | None = None) -> list[PushResult]:
    """Guest→guest: pull from ``source``, push to ``targets`` (through the hub if given)."""
    text = await pull(ctx, source)
    if hub is not None:
        hub.set_text(text, source=f"vm:{source}")
    return await push(ctx, targets, text)


# -- the hub ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ClipEntry:
    text: str
    source: str  # "paste", "host", "cli", "vm:NAME", ...
    at: float = field(default_factory=time.time)


Listener = Callable[[ClipEntry], None]


class ClipboardHub:
    """The one clipboard buffer shared by all VMs: current text plus a short history.

    Kept in memory only, on purpose: clipboards carry passwords, and nothing here
    should leave them on disk.
    """

    def __init__(self, *, history: int = HISTORY) -> None:
        self._history: deque[ClipEntry] = deque(maxlen=history)
        self._listeners: list[Listener] = []

    @property
    def current(self) -> ClipEntry | None:
        return self._history[-1] if self._history else None

    @property
    def text(self) -> str | None:
        entry = self.current
        return entry.text if entry else None

    def history(self) -> list[ClipEntry]:
        """Newest first."""
        return list(reversed(self._history))

    def set_text(self, text: str, *, source: str) -> ClipEntry:
        """Make ``text`` the hub's clipboard (the same text again just moves to the top)."""
        check_text(text)
        for old in list(self._history):
            if old.text == text:
                self._history.remove(old)
        entry = ClipEntry(text=text, source=source)
        self._history.append(entry)
        for listener in list(self._listeners):
            try:
                listener(entry)
            except Exception:  # noqa: BLE001 - one broken listener must not stop the others
                log.exception("clipboard listener failed")
        return entry

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        self._listeners.append(listener)

        def unsubscribe() -> None:
            with contextlib.suppress(ValueError):
                self._listeners.remove(listener)
        return unsubscribe

    def clear(self) -> None:
        self._history.clear()

    async def push(self, ctx: Context, names: Sequence[str]) -> list[PushResult]:
        text = self.text
        if text is None:
            raise InvalidInput("the clipboard hub is empty")
        return await push(ctx, names, text)

    async def pull(self, ctx: Context, name: str) -> ClipEntry:
        return self.set_text(await pull(ctx, name), source=f"vm:{name}")


# -- auto-sync ----------------------------------------------------------------------------


Reader = Callable[[], "str | None"]
Pusher = Callable[[Sequence[str], str], Awaitable[list[PushResult]]]


class ClipboardSync:
    """Pushes host clipboard changes to selected VMs while running.

    ``reader`` returns the host clipboard's text (``None`` when empty), e.g.
    ``adapters.hostclip.host_clipboard().read``; it blocks, so it runs in a thread.
    ``pusher`` replaces :func:`push` (e.g. to go through the UI's own bookkeeping).
    A change is pushed when the host text differs from what was last seen *and*
    from the hub's current text (text that came from a VM and was put on the host
    clipboard is not echoed back).
    """

    def __init__(self, ctx: Context, reader: Reader, targets: Sequence[str], *,
                 hub: ClipboardHub | None = None, interval: float = 0.5,
                 on_result: Callable[[list[PushResult]], None] | None = None,
                 pusher: Pusher | None = None) -> None:
        self.ctx = ctx
        self.reader = reader
        self.pusher: Pusher = pusher or (lambda names, text: push(ctx, names, text))
        self.targets = list(targets)
        self.hub = hub if hub is not None else ClipboardHub()
        self.interval = interval
        self.on_result = on_result
        self.last_seen: str | None = None
        self.last_error: str | None = None
        self.pushes = 0
        self._task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def start(self, *, push_current: bool = False) -> None:
        """Start polling. The text already on the host clipboard is pushed only if asked
        (otherwise it is read now and counts as seen)."""
        if self.running:
            return
        if not push_current:
            try:
                self.last_seen = await asyncio.to_thread(self.reader)
            except HypercoreError as exc:
                self.last_error = str(exc)
        self._task = asyncio.get_running_loop().create_task(self._run(), name="clipboard-sync")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        while True:
            await self.poll_once()
            await asyncio.sleep(self.interval)

    async def poll_once(self) -> list[PushResult] | None:
        """Read the host clipboard once; push it if it changed. Returns the push results."""
        try:
            text = await asyncio.to_thread(self.reader)
        except HypercoreError as exc:
            self.last_error = str(exc)
            return None
        if text is None or text == self.last_seen:
            return None
        self.last_seen = text
        if text == self.hub.text:
            return None
        try:
            self.hub.set_text(text, source="host")
        except InvalidInput as exc:
            self.last_error = str(exc)
            return None
        if not self.targets:
            return []
        results = await self.pusher(self.targets, text)
        self.pushes += 1
        failed = [r.error for r in results if not r.ok and r.error]
        self.last_error = failed[0] if failed else None
        if self.on_result is not None:
            self.on_result(results)
        return results
