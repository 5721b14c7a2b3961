"""Files and folders on guests' clipboards, carried through the shared folder.

A copy in a guest's file manager offers ``x-special/gnome-copied-files`` or
``text/uri-list``; the guest's watcher says so on the port ("c files"). The host then names
a fresh entry (16 hex digits) and runs ``clipboard.sh pull-files``: as the session's user
(so it reads only what that user may read), ``clipwatch.py pull-files`` reads the list,
takes only local ``file://`` URIs (percent-decoded to their exact bytes), refuses a set
holding a symbolic link (links are never followed: the whole copy is refused, one line),
a device, FIFO or socket, or more than the cap (``HYPERCORE_CLIP_FILES_MAX`` bytes, else
``clipboard.files_max`` in the settings, default 1 GiB: :mod:`.clipsettings`), and copies
the items into ``/shared/.hypercore-clip/ENTRY.part/``, renamed to ``ENTRY`` once
complete. Files and folders of the host become an entry the same way
(:mod:`.clipfiles_host`).

The host then looks only at the entry directory it named, in its own side of the share,
with ``lstat``/``O_NOFOLLOW`` and directory descriptors (:func:`check_entry`, through
:func:`walk_tree`, which keeps open only the folders of the current path): the names
must be the ones the guest said, one component each; symbolic links, devices, FIFOs and
sockets are refused; the total is counted again against the cap. Names with new lines,
leading dashes or non-UTF-8 bytes arrive exact (they only ever travel as bytes: base64 in
the entry's JSON, percent-encoded in URIs). The hub's entry (kind ``files``) is a
:class:`~hypercore_tui.core.clip.FilesEntry` as JSON; the files stay in the share.

Into another guest: ``clipboard.sh push-files`` with the ``gnome-copied-files`` text the
host builds (``copy`` / ``cut``, then ``file:///shared/.hypercore-clip/ENTRY/NAME``):
``clipwatch.py own`` owns the session's CLIPBOARD and offers it with ``text/uri-list``
(CRLF), the paths as text and KDE's cut flag (Wayland: ``wl-copy --type
x-special/gnome-copied-files``). Ctrl+V in a file manager copies from the share.

The sync keeps the entry directories of the files entries in its history and removes the
others it made (:func:`remove_entry`); at start, leftover ``ENTRY.part`` directories
(called off first: a guest may still be copying into one; swept until gone).
Nothing else in the share is ever removed.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import stat
import time
from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from hypercore_tui.adapters.qga import (
    AgentClient,
    AgentCommandError,
    agent_session,
    exec_released,
)
from hypercore_tui.core.clip import ENTRY_RE, FILES_DIR, FilesEntry, gnome_copied_files, valid_name
from hypercore_tui.core.errors import AgentCommandUnsupported, HypercoreError, OperationFailed
from hypercore_tui.core.models import GUEST_MOUNTPOINT
from hypercore_tui.core.text import printable
from hypercore_tui.services import clipsettings, guest_exec, records, registry, vmstate
from hypercore_tui.services.clipboard import (
    FALLBACK_DIR,
    NEEDS_EXEC,
    ClipboardError,
    PushResult,
    _found,
    _status_lines,
    check_readable,
    check_writable,
    linux_script,
)
from hypercore_tui.services.context import Context
from hypercore_tui.services.shared import host_share_dir

#: The guest program (clipwatch.py has the pull-files and own modes).
PROGRAM = "clipwatch.py"
#: The user's cap per entry (bytes): the environment's, else the settings' (clipsettings).
CAP_ENV = clipsettings.CAP_ENV
DEFAULT_CAP = clipsettings.DEFAULT_CAP
#: A copy of up to the cap through 9p under emulation takes minutes.
FILES_TIMEOUT = 1800.0
PUSH_TIMEOUT = 30.0
#: A file list offered to a guest is small (no INCR transfers): larger is refused.
MAX_LIST = 256 * 1024
#: The host walks at most this many items of one entry (a guest could make millions).
MAX_ITEMS = 200_000
#: clipwatch.py's exit statuses.
EXIT_REFUSED = 4
EXIT_NO_SHARE = 5
EXIT_TOO_LARGE = 6
EXIT_CANCELLED = 7  # (clipwatch.py: the copy called off)
PART_RE = re.compile(r"[0-9a-f]{16}\.part")
CANCEL_RE = re.compile(r"[0-9a-f]{16}\.cancel")


class FilesRefused(OperationFailed):
    """A copied set of files that is not carried (and why), or an entry that fails the
    host's checks."""


class FilesCancelled(FilesRefused):
    """The copy was called off before it was complete (:func:`cancel_pull`)."""


def files_cap(ctx: Context) -> clipsettings.FilesCap:
    """The largest entry carried, in bytes, and where that was set
    (``HYPERCORE_CLIP_FILES_MAX``, else ``clipboard.files_max`` in the settings, else
    1 GiB)."""
    return clipsettings.files_cap(ctx)


def new_entry_id() -> str:
    return secrets.token_hex(8)


def share_files_dir(ctx: Context) -> Path:
    """The host side of ``/shared/.hypercore-clip`` (not made here: a guest makes it)."""
    return host_share_dir(ctx) / FILES_DIR


# -- the host's checks ------------------------------------------------------------------


#: A folder opened on the host: never through a link at its last step.
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


@contextlib.contextmanager
def opened_dir(name: str | bytes, dir_fd: int | None) -> Iterator[int]:
    """The folder ``name`` (in ``dir_fd``) opened with :data:`DIR_FLAGS`."""
    fd = os.open(name, DIR_FLAGS, dir_fd=dir_fd)
    try:
        yield fd
    finally:
        os.close(fd)


@contextlib.contextmanager
def _files_dir_fd(ctx: Context) -> Iterator[int]:
    """The entries' directory, opened without following a link at its last step (the
    share's own path is the host's)."""
    with opened_dir(str(host_share_dir(ctx)), None) as share, \
            opened_dir(FILES_DIR, share) as fd:
        yield fd


def _names(fd: int) -> list[bytes]:
    return [os.fsencode(name) for name in os.listdir(fd)]


@dataclass(frozen=True)
class Walked:
    """One item met by :func:`walk_tree`: ``name`` in the folder ``parent`` (a
    descriptor, open while the item is looked at), its ``lstat``, ``shown`` (its path from
    the walk's start, for messages) and ``depth`` (0: one of the names given)."""

    parent: int
    name: bytes
    shown: bytes
    depth: int
    st: os.stat_result


def walk_tree(fd: int, names: Sequence[bytes], *, prefix: bytes = b""
              ) -> Generator[Walked, None, None]:
    """Every item under ``names`` in the folder ``fd``, depth first, each ``lstat``-ed:
    never following a link. A folder is given before its content, which is then read
    through a descriptor of its own (:data:`DIR_FLAGS`); only the folders of the current
    path are open at once (a tree of thousands of folders needs no more descriptors than
    its depth). ``prefix``: what ``shown`` starts with. Raises the ``OSError`` it meets."""
    stack: list[tuple[int, bytes, Iterator[bytes]]] = [(fd, prefix, iter(names))]
    try:
        while stack:
            parent, shown, pending = stack[-1]
            name = next(pending, None)
            if name is None:
                stack.pop()
                if parent != fd:
                    os.close(parent)
                continue
            path = shown + b"/" + name if shown else name
            st = os.lstat(name, dir_fd=parent)
            yield Walked(parent, name, path, len(stack) - 1, st)
            if stat.S_ISDIR(st.st_mode):
                sub = os.open(name, DIR_FLAGS, dir_fd=parent)
                try:
                    children = _names(sub)
                except BaseException:
                    os.close(sub)
                    raise
                stack.append((sub, path, iter(children)))
    finally:
        for parent, _, _ in stack:
            if parent != fd:
                os.close(parent)


def not_carried(item: Walked) -> str | None:
    """Why ``item`` cannot be in an entry (a symbolic link, a device, FIFO or socket), or
    None for a regular file or a folder."""
    mode = item.st.st_mode
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return None
    if stat.S_ISLNK(mode):
        return f"{show_name(item.shown)} is a symbolic link: links are never followed, so " \
            "the copy is not carried"
    return f"{show_name(item.shown)} is a device, FIFO or socket: the copy is not carried"


def _measure(fd: int, names: Sequence[bytes], cap: int) -> tuple[int, int]:
    """(total size of the regular files, top-level folders) under ``names`` in the
    directory ``fd``, never following a link; :class:`FilesRefused` for a link, a device,
    FIFO or socket, more than ``cap`` bytes or :data:`MAX_ITEMS` items."""
    total = items = folders = 0
    walk = walk_tree(fd, names)
    try:
        for item in walk:
            items += 1
            if items > MAX_ITEMS:
                raise FilesRefused(f"more than {MAX_ITEMS} files and folders: not carried")
            if (why := not_carried(item)) is not None:
                raise FilesRefused(why)
            if stat.S_ISREG(item.st.st_mode):
                total += item.st.st_size
                if total > cap:
                    raise FilesRefused(clipsettings.cap_refusal(cap))
            elif item.depth == 0:
                folders += 1
    except OSError as exc:
        raise FilesRefused(f"the entry changed while it was checked: "
                           f"{exc.strerror or exc}") from None
    finally:
        walk.close()
    return total, folders


def show_name(name: bytes) -> str:
    """A name or path for a message: one line, undecodable bytes and controls escaped."""
    return printable(name.decode("utf-8", errors="backslashreplace"), limit=80)


def check_entry(ctx: Context, entry: str, names: Sequence[bytes], *, cut: bool, cap: int,
                whole: bool = True) -> FilesEntry:
    """The :class:`FilesEntry` for the entry directory ``entry`` the host named, after its
    checks (see the module's text); ``whole``: ``names`` must be everything in it (a new
    entry), else a part of it (an entry offered earlier, copied again)."""
    if not ENTRY_RE.fullmatch(entry):
        raise FilesRefused("not an entry the host named")
    if not names:
        raise FilesRefused("an empty file list")
    if len(set(names)) != len(names):
        raise FilesRefused("a file list naming one item twice")
    for name in names:
        if not valid_name(name):
            raise FilesRefused(f"a bad name in the file list: {show_name(name)}")
    try:
        with _files_dir_fd(ctx) as base, opened_dir(entry, base) as fd:
            there = set(_names(fd))
            if (there != set(names)) if whole else not there.issuperset(names):
                raise FilesRefused("the entry in the shared folder does not hold what the "
                                   "guest said it copied")
            total, folders = _measure(fd, names, cap)
    except FileNotFoundError:
        raise FilesRefused("the entry is not in the shared folder") from None
    except OSError as exc:  # (ELOOP/ENOTDIR: a link or a file where a folder must be)
        raise FilesRefused(f"the entry cannot be checked: {exc.strerror or exc}") from None
    return FilesEntry(entry=entry, names=tuple(names), cut=cut, size=total, folders=folders)


def remove_entry(ctx: Context, name: str) -> bool:
    """Remove the entry directory ``name`` (``ENTRY`` or ``ENTRY.part``, or the marker
    ``ENTRY.cancel``) from the share; False when it was not there. Never anything else:
    only those names, in the entries' directory, without following a link."""
    if not (ENTRY_RE.fullmatch(name) or PART_RE.fullmatch(name)
            or CANCEL_RE.fullmatch(name)):
        raise ValueError(f"not an entry name: {name!r}")
    try:
        with _files_dir_fd(ctx) as base:
            try:
                st = os.lstat(name, dir_fd=base)
            except FileNotFoundError:
                return False
            if not stat.S_ISDIR(st.st_mode):
                os.unlink(name, dir_fd=base)
                return True
            shutil.rmtree(name, dir_fd=base)
    except FileNotFoundError:
        return False
    return True


def cancel_pull(ctx: Context, entry: str) -> bool:
    """Call off the guest's copy into ``entry``: the marker ``ENTRY.cancel`` beside its
    ``ENTRY.part``, which the guest looks for before each file and each MiB (it then
    removes its part and ends: :class:`FilesCancelled`). False when the marker could not
    be made (the share gone: the copy fails by itself then)."""
    if not ENTRY_RE.fullmatch(entry):
        raise ValueError(f"not an entry name: {entry!r}")
    try:
        with _files_dir_fd(ctx) as base:
            fd = os.open(f"{entry}.cancel", os.O_WRONLY | os.O_CREAT | os.O_EXCL
                         | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644, dir_fd=base)
            os.close(fd)
    except FileExistsError:
        return True
    except OSError:
        return False
    return True


def call_off_leftover_parts(ctx: Context) -> list[str]:
    """What an interrupted sync left: each ``ENTRY.part`` gets its ``ENTRY.cancel``
    marker (a guest still copying into it stops at its next file or MiB and removes it)
    and is removed here too where it can be (a guest creating files in it meanwhile can
    make that fail); stale markers alone are removed. The entries still to sweep (their
    part or marker is left): :func:`sweep_leftover_parts` until it returns none."""
    try:
        with _files_dir_fd(ctx) as base:
            names = os.listdir(base)
    except OSError:
        return []
    parts = {n[:-len(".part")] for n in names if PART_RE.fullmatch(n)}
    for entry in sorted(parts):
        with contextlib.suppress(OSError):
            cancel_pull(ctx, entry)
    stale = {n[:-len(".cancel")] for n in names if CANCEL_RE.fullmatch(n)} - parts
    return sweep_leftover_parts(ctx, sorted(parts | stale))


def sweep_leftover_parts(ctx: Context, entries: list[str]) -> list[str]:
    """Remove ``ENTRY.part`` of each of ``entries``, then its marker once the part is
    gone; the entries with something still left."""
    left = []
    for entry in entries:
        with contextlib.suppress(OSError):
            remove_entry(ctx, f"{entry}.part")
        try:
            with _files_dir_fd(ctx) as base:
                os.lstat(f"{entry}.part", dir_fd=base)
            left.append(entry)  # still there: the marker stays for the guest
            continue
        except FileNotFoundError:
            pass
        except OSError:
            continue  # the share itself is gone: nothing to sweep there
        with contextlib.suppress(OSError):
            remove_entry(ctx, f"{entry}.cancel")
    return left


# -- the guest's side ----------------------------------------------------------------------


@dataclass(frozen=True)
class GuestFiles:
    """What ``pull-files`` copied (or found already in the share: ``held``)."""

    entry: str
    names: tuple[bytes, ...]
    cut: bool
    held: bool = False


def _program() -> bytes:
    return guest_exec.script_text(PROGRAM).encode("utf-8")


def parse_pulled(status: dict[str, str], stdout: bytes, *, entry: str,
                 held: str | None) -> GuestFiles | None:
    """The :class:`GuestFiles` the ``hc-*`` lines and NUL-separated names describe; None
    when the clipboard holds no file list. The entry must be the one the host named (or
    the one it offered there: ``held``)."""
    if status.get("hc-kind") != "files":
        return None
    if "hc-held" in status:
        if held is None or status["hc-held"] != held:
            raise FilesRefused("the guest named an entry the host did not offer it")
        got = held
    elif status.get("hc-entry") == entry:
        got = entry
    else:
        raise FilesRefused("the guest named an entry the host did not name")
    if not stdout.endswith(b"\0"):
        raise FilesRefused("a file list the guest did not end")
    names = tuple(stdout[:-1].split(b"\0"))
    return GuestFiles(entry=got, names=names, cut=status.get("hc-cut") == "1",
                      held="hc-held" in status)


async def pull_files_via_agent(socket_path: Path, *, vm_name: str, entry: str, cap: int,
                               held: str | None, session: records.ClipSession | None = None
                               ) -> tuple[GuestFiles | None, records.ClipSession | None]:
    """Copy the files on the guest's clipboard into the share as ``entry`` (see the
    module's text); None when it holds no file list. The copy can take minutes: it does
    not hold the agent meanwhile (:func:`exec_released`)."""
    program = _program()
    hint = session.args() if session is not None else []
    argv = ["/bin/sh", "-c", linux_script(), "hypercore-clipboard", "pull-files", FALLBACK_DIR,
            str(len(program)), entry, str(cap), held or "-", *hint]
    try:
        result = await exec_released(socket_path, argv, vm_name=vm_name, stdin=program,
                                     env=list(guest_exec.SCRIPT_ENV), timeout=FILES_TIMEOUT)
    except AgentCommandError as exc:
        if exc.command == "guest-exec":
            async with agent_session(socket_path, vm_name=vm_name) as agent:
                if await guest_exec.is_windows(agent):
                    return None, None
        raise
    status, other = _status_lines(result.stderr)
    if result.shell_status != 0:
        why = other[-1] if other else f"exit status {result.shell_status}"
        if result.shell_status == EXIT_TOO_LARGE:  # (the line names where the cap was set)
            raise FilesRefused(clipsettings.cap_refusal(cap))
        if result.shell_status == EXIT_CANCELLED:
            raise FilesCancelled("a newer copy came while they were copied")
        if result.shell_status in (EXIT_REFUSED, EXIT_NO_SHARE):
            raise FilesRefused(why)
        raise ClipboardError(f"files not read in the guest: {why}")
    if result.stdout_truncated:
        raise FilesRefused("the copied file list is longer than the agent returns")
    return parse_pulled(status, result.stdout, entry=entry, held=held), _found(result.stderr)


def offer_text(files: FilesEntry) -> bytes:
    """The ``x-special/gnome-copied-files`` text offered in the guests."""
    payload = gnome_copied_files(files.guest_paths(GUEST_MOUNTPOINT), cut=files.cut)
    if len(payload) > MAX_LIST:
        raise FilesRefused(f"the file list is longer than {MAX_LIST // 1024} KiB")
    return payload


async def push_files_via_agent(agent: AgentClient, files: FilesEntry, *,
                               session: records.ClipSession | None = None
                               ) -> records.ClipSession | None:
    """Offer ``files`` (in the share) on the guest's clipboard."""
    payload = offer_text(files)
    program = _program()
    hint = session.args() if session is not None else []
    argv = ["/bin/sh", "-c", linux_script(), "hypercore-clipboard", "push-files", FALLBACK_DIR,
            str(len(program)), *hint]
    try:
        result = await agent.exec(argv, stdin=program + payload,
                                  env=list(guest_exec.SCRIPT_ENV), timeout=PUSH_TIMEOUT)
    except AgentCommandError as exc:
        if exc.command == "guest-exec" and await guest_exec.is_windows(agent):
            raise ClipboardError(f"{agent.vm_name}: files reach Linux guests only") from None
        raise
    _, other = _status_lines(result.stderr)
    if result.shell_status != 0:
        why = other[-1] if other else f"exit status {result.shell_status}"
        raise ClipboardError(f"{agent.vm_name}: files not offered: {why}")
    return _found(result.stderr)


def _keep(ctx: Context, name: str, known: records.ClipSession | None,
          found: records.ClipSession | None) -> None:
    if found is not None and found != known:
        records.write_clip_session(ctx.vm_paths(name), found)


async def pull_files(ctx: Context, name: str, *, entry: str, cap: int,
                     held: str | None = None) -> FilesEntry | None:
    """The files on ``name``'s clipboard, copied into the share as ``entry`` and checked
    there (or the entry ``held`` the host offered there, copied again); None when the
    clipboard holds no file list. :class:`FilesRefused` says why a copy is not carried;
    nothing of it is left in the share then."""
    check_readable(registry.load(ctx, name))
    paths = vmstate.require_running(ctx, name).paths
    known = records.read_clip_session(paths)
    try:
        try:
            got, found = await pull_files_via_agent(paths.qga_socket, vm_name=name,
                                                    entry=entry, cap=cap, held=held,
                                                    session=known)
        except AgentCommandUnsupported:
            raise ClipboardError(guest_exec.exec_blocked(name, NEEDS_EXEC)) from None
        _keep(ctx, name, known, found)
        if got is None:
            return None
        return check_entry(ctx, got.entry, got.names, cut=got.cut, cap=cap,
                           whole=not got.held)
    except BaseException:
        forget(ctx, entry)  # (a new entry only: never the one offered earlier)
        raise


def forget(ctx: Context, entry: str) -> None:
    """Remove ``entry``, ``entry.part`` and its marker from the share (a copy not
    carried)."""
    for name in (entry, f"{entry}.part", f"{entry}.cancel"):
        with contextlib.suppress(OSError):
            remove_entry(ctx, name)


async def push_files(ctx: Context, name: str, data: bytes, *, check_paused: bool = True
                     ) -> PushResult:
    """Offer the files entry ``data`` (its JSON) on ``name``'s clipboard."""
    started = time.monotonic()
    try:
        files = FilesEntry.from_json(data)
        check_writable(registry.load(ctx, name))
        paths = vmstate.require_running(ctx, name).paths
        if check_paused:
            await vmstate.require_guest_running(paths)
        known = records.read_clip_session(paths)
        async with agent_session(paths.qga_socket, vm_name=name) as agent:
            found = await push_files_via_agent(agent, files, session=known)
        _keep(ctx, name, known, found)
    except AgentCommandUnsupported:
        return PushResult(name, False, error=guest_exec.exec_blocked(name, NEEDS_EXEC),
                          seconds=time.monotonic() - started)
    except (HypercoreError, ValueError) as exc:
        return PushResult(name, False, error=str(exc), seconds=time.monotonic() - started)
    return PushResult(name, True, method="files", seconds=time.monotonic() - started)
