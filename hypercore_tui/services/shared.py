"""The shared folder: ``$HYPERCORE_HOME/shared_folder``, attached to every VM and mounted
in every guest at ``/shared``.

The host side is QEMU's job (9p ``-fsdev ... security_model=mapped-xattr``, or
virtiofsd + ``vhost-user-fs-pci``; see ``core.argv`` and ``adapters.virtiofsd``).
The guest side is ours: once the agent answers, :func:`ensure_share_mounted` checks
``/proc/mounts`` (read with guest-file-*, so it works even where guest-exec is
disabled) and, if the share is not mounted, runs ``mount`` in the guest with argv::

    mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 hypercore_share /shared
    mount -t virtiofs hypercore_share /shared

It is idempotent: a share already mounted anywhere is left as it is. A share Hypercore
mounts gets mode 1777 at its root (:data:`SHARE_ROOT_MODE`), so every user of the guest
can write there (see :func:`_open_to_guest_users`).

Nobody has to wait for it: :func:`mount_when_agent_answers` (``share mount NAME --wait
SECONDS``, started detached by ``services.boot`` after a boot that does not wait for the
agent) mounts it as soon as the agent answers, and a dashboard's monitor mounts it when a
guest's agent answers again after the guest rebooted (:func:`mount_unattended`).
"""

from __future__ import annotations

import contextlib
import enum
import logging
import os
import re
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from hypercore_tui.adapters import virtiofsd
from hypercore_tui.adapters.guest_files import read_file
from hypercore_tui.adapters.qga import AgentClient, AgentCommandError, ExecResult, agent_session
from hypercore_tui.core.errors import (
    AgentCommandUnsupported,
    AgentUnavailable,
    Busy,
    HypercoreError,
    InvalidState,
    OperationFailed,
    Timeout,
)
from hypercore_tui.core.jobs import SHARE_UNMOUNT_WHY
from hypercore_tui.core.layout import VmPaths
from hypercore_tui.core.models import GUEST_MOUNTPOINT, SHARE_TAG, SharedMode, VmSpec, VmState
from hypercore_tui.core.text import printable
from hypercore_tui.services import guest_exec, records, registry, vmstate
from hypercore_tui.services.context import Context

log = logging.getLogger("hypercore.shared")
log.addHandler(logging.NullHandler())

NINEP_OPTIONS = "trans=virtio,version=9p2000.L,msize=512000"
FSTYPE = {SharedMode.NINEP: "9p", SharedMode.VIRTIOFS: "virtiofs"}
#: Kernel modules each mode needs, in load order.
MODULES = {SharedMode.NINEP: ("9pnet", "9pnet_virtio", "9p"),
           SharedMode.VIRTIOFS: ("fuse", "virtiofs")}
MODULES_HINT = {
    SharedMode.NINEP: "load the 9p and 9pnet_virtio modules in the guest "
                      "(modprobe 9pnet_virtio 9p; they ship with the distribution kernel, "
                      "e.g. linux-modules-extra on Ubuntu)",
    SharedMode.VIRTIOFS: "load the virtiofs module in the guest (modprobe virtiofs; "
                         "Linux 5.4 or newer)",
}
STAGING_DIR = ".hypercore-transfer"
#: The share's root after Hypercore mounts it: like /tmp, every guest user creates files
#: there, and only a file's owner renames or removes it.
SHARE_ROOT_MODE = "1777"
NOT_LOADED = "modules not loaded yet (share mount loads them)"


class ShareStatus(enum.StrEnum):
    MOUNTED = "mounted"
    NOT_MOUNTED = "not mounted"
    MODULES_MISSING = "modules missing"
    NO_AGENT = "no agent"
    NOT_ATTACHED = "not attached"
    NOT_RUNNING = "not running"
    UNSUPPORTED = "unsupported"
    FAILED = "mount failed"


@dataclass(frozen=True)
class ShareState:
    """What the dashboard shows about one VM's shared folder."""

    status: ShareStatus
    mode: SharedMode | None = None
    mountpoint: str | None = None  # where the guest has it mounted
    message: str = ""

    @property
    def mounted(self) -> bool:
        return self.status is ShareStatus.MOUNTED

    def describe(self) -> str:
        where = f" at {self.mountpoint}" if self.mountpoint else ""
        mode = f" ({self.mode.value})" if self.mode else ""
        text = f"{self.status.value}{where}{mode}"
        return f"{text}: {self.message}" if self.message else text


def host_share_dir(ctx: Context) -> Path:
    """The host side of the shared folder (created if missing)."""
    ctx.ensure_home()
    return ctx.layout.shared_folder


def copy_into_share(ctx: Context, source: Path) -> Path:
    """Copy a host file into the shared folder every VM mounts, under a new name (never
    over an existing file), placed atomically. Returns the file's path on the host."""
    folder = host_share_dir(ctx)
    target = folder / source.name
    index = 2
    while target.exists():
        target = folder / f"{source.stem} ({index}){source.suffix}"
        index += 1
    partial = target.with_name(f".{target.name}.partial-{os.getpid()}")
    try:
        shutil.copyfile(source, partial)
        os.replace(partial, target)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise OperationFailed(f"cannot copy {printable(source)} into the shared folder: "
                              f"{exc.strerror or exc}") from None
    return target


# -- /proc/mounts -----------------------------------------------------------------------


def _unescape(field: str) -> str:
    r"""/proc/mounts escapes space, tab, newline and backslash as \040 \011 \012 \134."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), field)


def parse_mounts(text: str) -> list[tuple[str, str, str]]:
    """``(device, mountpoint, fstype)`` for each line of /proc/mounts."""
    entries = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 3:
            entries.append((_unescape(parts[0]), _unescape(parts[1]), parts[2]))
    return entries


def find_share_mount(mounts_text: str, tag: str = SHARE_TAG) -> tuple[str, str] | None:
    """``(mountpoint, fstype)`` of the share's first mount (9p or virtiofs), if any."""
    for device, mountpoint, fstype in parse_mounts(mounts_text):
        if device == tag and fstype in ("9p", "virtiofs"):
            return mountpoint, fstype
    return None


# -- the agent-facing part ----------------------------------------------------------------


async def guest_share_state(agent: AgentClient, mode: SharedMode) -> ShareState:
    """Whether the share is mounted in this guest (no changes made)."""
    return (await _look(agent, mode))[0]


async def _look(agent: AgentClient, mode: SharedMode, *, why_unloaded: bool = True
                ) -> tuple[ShareState, bool]:
    """The share's state, and whether the kernel knows the filesystem already (its
    module loaded or built in). ``why_unloaded``: tell "not loaded yet" from "missing"
    (which reads modules.dep: half a MiB on a distribution kernel)."""
    try:
        mounts = (await read_file(agent, "/proc/mounts")).decode(errors="replace")
    except AgentCommandError:
        if await guest_exec.is_windows(agent):
            return ShareState(ShareStatus.UNSUPPORTED, mode, message=(
                "Windows guests reach the share through virtiofs and WinFsp (the VirtIO-FS "
                "service); Hypercore does not mount it there")), True
        raise
    found = find_share_mount(mounts)
    if found:
        mountpoint, fstype = found
        return ShareState(ShareStatus.MOUNTED, SharedMode(fstype), mountpoint), True
    if await _fs_available(agent, mode):
        return ShareState(ShareStatus.NOT_MOUNTED, mode), True
    if not why_unloaded or await _module_installed(agent, mode):
        return ShareState(ShareStatus.NOT_MOUNTED, mode, message=NOT_LOADED), False
    return ShareState(ShareStatus.MODULES_MISSING, mode, message=MODULES_HINT[mode]), False


async def _fs_available(agent: AgentClient, mode: SharedMode) -> bool:
    try:
        text = (await read_file(agent, "/proc/filesystems")).decode(errors="replace")
    except AgentCommandError:
        return True  # unknown: let mount tell
    return any(line.split()[-1:] == [FSTYPE[mode]] for line in text.splitlines())


async def _module_installed(agent: AgentClient, mode: SharedMode) -> bool:
    """Whether the running kernel's modules include the filesystem's (``modules.dep`` of
    ``/lib/modules/RELEASE``, read with guest-file-*: no guest-exec needed)."""
    try:
        release = (await read_file(agent, "/proc/sys/kernel/osrelease")).decode(
            errors="replace").strip()
        if not release or "/" in release or release in (".", ".."):
            return False
        deps = (await read_file(agent, f"/lib/modules/{release}/modules.dep")).decode(
            errors="replace")
    except AgentCommandError:
        return False  # no modules for this kernel (or unreadable): say what to install
    return module_listed(deps, MODULES[mode][-1])


def module_listed(modules_dep: str, module: str) -> bool:
    """Whether ``modules.dep`` lists ``module`` (``kernel/fs/9p/9p.ko: deps...``; the file
    may be compressed: ``.ko.xz``, ``.ko.zst``, ``.ko.gz``)."""
    pattern = re.compile(rf"{re.escape(module)}\.ko(\.(xz|zst|gz))?")
    for line in modules_dep.splitlines():
        path, sep, _ = line.partition(":")
        if sep and pattern.fullmatch(path.rsplit("/", 1)[-1]):
            return True
    return False


async def mount_share_via_agent(agent: AgentClient, mode: SharedMode,
                                mountpoint: str = GUEST_MOUNTPOINT) -> ShareState:
    """Mount the share at ``mountpoint`` unless it is mounted already."""
    state, loaded = await _look(agent, mode, why_unloaded=False)
    if state.status is not ShareStatus.MODULES_MISSING and state.status is not \
            ShareStatus.NOT_MOUNTED:
        return state
    fstype = FSTYPE[mode]
    try:
        if not loaded:
            for module in MODULES[mode]:
                await agent.exec(["modprobe", module], timeout=30.0)
            if not await _fs_available(agent, mode):
                return ShareState(ShareStatus.MODULES_MISSING, mode,
                                  message=MODULES_HINT[mode])
        await agent.exec(["mkdir", "-p", mountpoint], timeout=30.0)
        argv = ["mount", "-t", fstype]
        if mode is SharedMode.NINEP:
            argv += ["-o", NINEP_OPTIONS]
        result = await agent.exec([*argv, SHARE_TAG, mountpoint], timeout=60.0)
    except AgentCommandUnsupported:
        return ShareState(ShareStatus.FAILED, mode, message=(
            "the guest agent does not allow guest-exec, so Hypercore cannot mount the share; "
            f"mount it in the guest: {' '.join(_manual_mount(mode, mountpoint))}"))
    if result.shell_status != 0:
        err = result.stderr.decode(errors="replace").strip().splitlines()
        why = printable(err[-1]) if err else f"exit status {result.shell_status}"
        if "No such device" in why or "unknown filesystem" in why:
            return ShareState(ShareStatus.MODULES_MISSING, mode, message=MODULES_HINT[mode])
        if "No such file" in why or "not found" in why.lower():
            why += (f" (the VM has no {fstype} device tagged {SHARE_TAG}: is it attached and "
                    "was the VM booted since?)")
        return ShareState(ShareStatus.FAILED, mode, message=f"mount failed: {why}")
    after = await guest_share_state(agent, mode)
    if not after.mounted:
        return ShareState(ShareStatus.FAILED, mode, message="mount reported success but the "
                          "share is not in /proc/mounts")
    log.info("%s: mounted the shared folder at %s", agent.vm_name, after.mountpoint)
    await _open_to_guest_users(agent, after.mountpoint or mountpoint)
    return after


async def _open_to_guest_users(agent: AgentClient, mountpoint: str) -> None:
    """``chmod 1777`` the share's root in the guest, so that its ordinary users can write
    there (best effort, logged). The host is not opened by this: with 9p's mapped-xattr
    QEMU keeps the guest's mode in an xattr of the host directory (whose own mode stays
    as it is, and set-uid bits and symlinks made in the share stay plain data on the
    host); with virtiofs the host directory itself gets the mode, inside the private
    (0700) HYPERCORE_HOME."""
    try:
        result = await agent.exec(["chmod", SHARE_ROOT_MODE, mountpoint], timeout=30.0)
    except HypercoreError as exc:
        log.info("%s: cannot open the shared folder to the guest's users: %s",
                 agent.vm_name, exc)
        return
    if result.shell_status != 0:
        err = result.stderr.decode(errors="replace").strip().splitlines()
        log.info("%s: chmod %s %s failed: %s", agent.vm_name, SHARE_ROOT_MODE, mountpoint,
                 printable(err[-1]) if err else f"exit status {result.shell_status}")


def _manual_mount(mode: SharedMode, mountpoint: str) -> list[str]:
    if mode is SharedMode.NINEP:
        return ["mount", "-t", "9p", "-o", NINEP_OPTIONS, SHARE_TAG, mountpoint]
    return ["mount", "-t", "virtiofs", SHARE_TAG, mountpoint]


# -- services ---------------------------------------------------------------------------


def precheck(ctx: Context, name: str) -> tuple[VmSpec, ShareState | None]:
    spec = registry.load(ctx, name)
    if not spec.shared:
        return spec, ShareState(ShareStatus.NOT_ATTACHED, None, message=(
            "the VM was created with --no-shared"))
    state, _ = vmstate.process_state(ctx.vm_paths(name))
    if state is not VmState.RUNNING:
        return spec, ShareState(ShareStatus.NOT_RUNNING, spec.shared_mode)
    return spec, None


async def _with_agent(ctx: Context, name: str, mount: bool) -> ShareState:
    spec, early = precheck(ctx, name)
    if early is not None:
        return early
    paths = ctx.vm_paths(name)
    try:
        async with agent_session(paths.qga_socket, vm_name=name, timeout=3.0) as agent:
            if mount:
                return await mount_share_via_agent(agent, spec.shared_mode)
            return await guest_share_state(agent, spec.shared_mode)
    except (AgentUnavailable, Timeout, Busy) as exc:
        return ShareState(ShareStatus.NO_AGENT, spec.shared_mode, message=str(exc))
    except OperationFailed as exc:
        return ShareState(ShareStatus.FAILED, spec.shared_mode, message=str(exc))


async def share_state(ctx: Context, name: str) -> ShareState:
    """The share's state in ``name`` (mounted / not mounted / modules missing / no agent...)."""
    return await _with_agent(ctx, name, mount=False)


async def ensure_share_mounted(ctx: Context, name: str) -> ShareState:
    """Mount the share in ``name`` at /shared unless it is mounted already."""
    return await _with_agent(ctx, name, mount=True)


# -- virtiofs (host side) ----------------------------------------------------------------------


def start_virtiofsd(ctx: Context, paths: VmPaths) -> int:
    """Start the virtiofsd serving the shared folder to one VM boot (before QEMU)."""
    source = host_share_dir(ctx)
    return virtiofsd.start(virtiofsd.find_virtiofsd(ctx.environ),
                           socket_path=paths.virtiofs_socket, source=source,
                           pidfile=paths.virtiofsd_pidfile,
                           log_path=paths.vm_dir / "virtiofsd.log")


def stop_virtiofsd(paths: VmPaths) -> None:
    """Stop the VM's virtiofsd if one is still running (QEMU gone, or never started)."""
    virtiofsd.stop(paths.virtiofsd_pidfile)


# -- RAM snapshots ----------------------------------------------------------------------------


#: What ``umount`` says (util-linux, busybox) when something in the guest uses the mount.
_BUSY = ("target is busy", "device or resource busy", "ebusy")


def unmount_busy(said: str) -> bool:
    """Whether a failed ``umount`` failed because the mount is in use (a program's open
    file or working directory under it), the one failure ``--force-unmount`` overrides."""
    said = said.lower()
    return any(marker in said for marker in _BUSY)


@dataclass(frozen=True)
class GuestUnmount:
    """The share unmounted in the guest: where it was, and whether it had to be
    detached lazily (``umount -l``) because it was in use."""

    mountpoint: str
    forced: bool = False


async def unmount_in_guest(agent: AgentClient, spec: VmSpec, paths: VmPaths, *, purpose: str,
                           otherwise: str = "") -> str | None:
    """Unmount the share in the guest; where it was, or None when it was not mounted.
    Noted first: if this process dies before mounting it again, the next snapshot
    operation or a dashboard sees the note and mounts it. One that cannot be unmounted
    (files open under it) is refused: it "must be unmounted in the guest ``purpose``"."""
    done = await unmount_share_in_guest(agent, spec, paths, purpose=purpose,
                                        otherwise=otherwise)
    return done.mountpoint if done is not None else None


async def unmount_share_in_guest(agent: AgentClient, spec: VmSpec, paths: VmPaths, *,
                                 purpose: str, otherwise: str = "", force: bool = False,
                                 why: str = SHARE_UNMOUNT_WHY) -> GuestUnmount | None:
    """:func:`unmount_in_guest`; ``force``: a share in use (``umount`` says it is busy) is
    detached lazily instead (``umount -l``: gone from the guest's tree at once, the 9p
    session ends when the last program using it lets go). Any other failure refuses."""
    state = await guest_share_state(agent, spec.shared_mode)
    if not state.mounted:
        return None
    mountpoint = state.mountpoint or GUEST_MOUNTPOINT
    records.note_share_unmount(paths, mountpoint, why)
    result = await agent.exec(["umount", mountpoint], timeout=30.0)
    why = _said(result)
    if result.shell_status == 0:
        return GuestUnmount(mountpoint)
    if force and unmount_busy(why):
        lazy = await agent.exec(["umount", "-l", mountpoint], timeout=30.0)
        if lazy.shell_status == 0:
            log.warning("%s: the shared folder at %s was in use (%s): detached lazily",
                        spec.name, mountpoint, why)
            return GuestUnmount(mountpoint, forced=True)
        why = f"{why}; umount -l: {_said(lazy)}"
    records.clear_share_unmount(paths)  # still mounted
    raise InvalidState(
        f"{spec.name}: the shared folder must be unmounted in the guest {purpose}, and "
        f"unmounting {mountpoint} failed ({why}): close what uses it{otherwise}")


def _said(result: ExecResult) -> str:
    err = result.stderr.decode(errors="replace").strip().splitlines()
    return printable(err[-1]) if err else f"exit status {result.shell_status}"


@contextlib.asynccontextmanager
async def unmounted_for_ram_save(spec: VmSpec, paths: VmPaths) -> AsyncIterator[bool]:
    """Unmount the share in the guest while QEMU saves the VM's RAM, then mount it again.

    QEMU refuses to save RAM while a 9p or virtiofs export is mounted in the guest
    ("Migration is disabled when VirtFS export path is mounted"). Yields whether
    the share was unmounted. A share that cannot be unmounted (files open under
    it) is refused with the reason; without an agent nothing is touched and QEMU's
    own refusal explains it.
    """
    if not spec.shared:
        yield False
        return
    mountpoint = None
    left = records.read_share_unmount(paths)  # a process that died mid-save left it unmounted
    try:
        async with agent_session(paths.qga_socket, vm_name=spec.name, timeout=3.0) as agent:
            mountpoint = await unmount_in_guest(agent, spec, paths,
                                                purpose="while its RAM is saved",
                                                otherwise=", or take a --disk-only snapshot")
            if mountpoint is None and left is not None:
                mountpoint = left.mountpoint  # owed since that process died: mounted after
                log.info("%s: the shared folder was left unmounted at %s by pid %s; it is "
                         "mounted again after this save", spec.name, mountpoint, left.pid)
    except (AgentUnavailable, Timeout, Busy) as exc:
        log.info("%s: cannot check the share before a RAM save: %s", spec.name, exc)
    try:
        yield mountpoint is not None
    finally:
        if mountpoint is not None:
            await remount_after_ram_change(spec, paths, mountpoint)


async def remount_after_ram_change(spec: VmSpec, paths: VmPaths,
                                   mountpoint: str = GUEST_MOUNTPOINT, *,
                                   why: str = SHARE_UNMOUNT_WHY) -> None:
    """Mount the share again after a RAM save or load (best effort, logged). If that
    fails, the unmount note stays (or is written): a dashboard retries and shows it."""
    if not spec.shared:
        return
    try:
        async with agent_session(paths.qga_socket, vm_name=spec.name, timeout=5.0) as agent:
            state = await mount_share_via_agent(agent, spec.shared_mode, mountpoint)
        if state.mounted:
            records.clear_share_unmount(paths)
            return
        log.warning("%s: shared folder not mounted again: %s", spec.name, state.describe())
    except HypercoreError as exc:
        log.warning("%s: shared folder not mounted again: %s", spec.name, exc)
    if records.read_share_unmount(paths) is None:
        records.note_share_unmount(paths, mountpoint, why)


# -- a share left unmounted (the process doing a RAM save died) -------------------------------


async def remount_left_unmounted(spec: VmSpec, paths: VmPaths) -> ShareState | None:
    """Mount the share again where a RAM save (or load) left it unmounted because the
    process doing it died (or the agent did not answer then). Call it holding the VM's
    lock, with no snapshot job running. None when nothing is owed."""
    left = records.read_share_unmount(paths)
    if left is None:
        return None
    if not spec.shared:
        records.clear_share_unmount(paths)
        return None
    try:
        async with agent_session(paths.qga_socket, vm_name=spec.name, timeout=5.0) as agent:
            state = await mount_share_via_agent(agent, spec.shared_mode, left.mountpoint)
    except (AgentUnavailable, Timeout, Busy) as exc:
        return ShareState(ShareStatus.NO_AGENT, spec.shared_mode, message=str(exc))
    except HypercoreError as exc:
        return ShareState(ShareStatus.FAILED, spec.shared_mode, message=str(exc))
    if state.mounted:
        records.clear_share_unmount(paths)
        log.info("%s: mounted the shared folder again at %s (left unmounted by pid %s)",
                 spec.name, state.mountpoint, left.pid)
    return state
