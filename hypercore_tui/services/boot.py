"""Booting a VM: the checks before QEMU starts, the launch plan, starting QEMU detached and
waiting until its monitor (and, if asked, the guest agent) answers."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import signal
import time
from pathlib import Path

from hypercore_tui.adapters import process
from hypercore_tui.adapters.fs import atomic_write_bytes
from hypercore_tui.adapters.qmp import qmp_session
from hypercore_tui.core.argv import BALLOON_ID, LaunchPlan, build_qemu_argv
from hypercore_tui.core.errors import (
    HypercoreError,
    InvalidInput,
    InvalidState,
    NotFound,
    OperationFailed,
    Timeout,
)
from hypercore_tui.core.layout import VmPaths
from hypercore_tui.core.models import DisplayKind, SharedMode, VmSpec, VmState
from hypercore_tui.services import bases, rbd_disks, records, share_mounter, shared, vmstate
from hypercore_tui.services.context import Context
from hypercore_tui.services.create import is_installed
from hypercore_tui.services.diskcheck import check_disk, local_qcow2
from hypercore_tui.services.lifecycle import VmStatus, clean_runtime

log = logging.getLogger("hypercore.vm")
log.addHandler(logging.NullHandler())

QMP_READY_TIMEOUT = 30.0


async def boot_vm(ctx: Context, name: str, *, wait_agent: float | None = None,
                  loadvm: str | None = None, lock_held: bool = False,
                  repair: bool = False) -> VmStatus:
    """Start the VM detached; return once QMP answers (and the agent, if asked).

    ``loadvm``: start from that internal snapshot (RAM + disks) instead of a cold boot.
    ``lock_held``: the caller already holds the VM's lock (snapshot restore does).
    ``repair``: ``qemu-img check -r all`` the local qcow2 disk first (boots only if it is
    clean then). Without it, a disk whose QEMU died without a clean stop is checked:
    leaked clusters are given back (said in ``notes``), errors refuse the boot.
    """
    paths = ctx.vm_paths(name)
    async with vmstate.locked_definition(ctx, name, "boot", held=lock_held) as spec:
        if repair and not local_qcow2(spec):
            raise InvalidInput(f"{name}'s disk is {spec.disk.describe()}: --repair applies "
                               "to local qcow2 images only")
        state, pid = vmstate.process_state(paths)
        if state is VmState.RUNNING:
            raise InvalidState(f"{name} is already running (pid {pid})")
        spec = bases.check_not_base(ctx, spec, "booting it would change the disk they are "
                                    "built on; boot a clone, or delete the clones first")
        # Before the runtime files that tell how QEMU stopped go: a refused boot keeps them.
        notes = await check_disk(spec, records.unclean_stop(paths), repair=repair)
        if state is VmState.CRASHED:
            log.warning("%s: cleaning up after a crashed QEMU (pid %s)", name, pid)
        clean_runtime(paths)
        records.clear_unclean_stop(paths)  # checked (or nothing to check)
        accel = await asyncio.to_thread(process.choose_accel, ctx.environ,
                                        cache_dir=ctx.layout.runtime_base)  # may probe KVM
        plan = _launch_plan(ctx, spec, paths, accel.accel)
        if spec.display is DisplayKind.SPICE:
            plan = await with_spice_devices(spec, plan)
        if loadvm:
            plan = dataclasses.replace(plan, loadvm=loadvm)
        check_boot_files(spec, plan)
        if spec.disk.is_rbd:
            await rbd_disks.check_bootable(ctx, spec)
        ctx.ensure_home()
        ctx.ensure_runtime(paths)
        argv = build_qemu_argv(spec, paths, plan)
        if spec.shared and spec.shared_mode is SharedMode.VIRTIOFS:
            await asyncio.to_thread(shared.start_virtiofsd, ctx, paths)
        log.info("%s: starting QEMU (%s%s)", name, plan.accel,
                 f": {accel.note}" if accel.note else "")
        try:
            await asyncio.to_thread(process.launch_daemonized, argv, log_path=paths.qemu_log)
        except HypercoreError as exc:
            clean_runtime(paths)  # and the virtiofsd started for it
            if plan.accel == "kvm" and "kvm" in str(exc).lower():
                # QEMU aborted in its KVM code (seen on a cloud VM: kvm_buf_set_msrs).
                raise OperationFailed(f"{exc} (under KVM: try HYPERCORE_ACCEL=tcg)") from None
            raise
        pid = process.read_pidfile(paths.pidfile)
        try:
            if pid is not None:  # fails on a full disk: then no QEMU is left running
                atomic_write_bytes(paths.pid_record, f"{pid}\n".encode(), mode=0o600)
            await wait_qmp_ready(paths, QMP_READY_TIMEOUT)
            make_sockets_private(paths)
        except HypercoreError:
            if pid is not None:
                process.send_signal(pid, signal.SIGKILL)
            clean_runtime(paths)
            raise
    if wait_agent:
        try:
            await wait_for_agent(paths, wait_agent)
        except Timeout:
            if spec.shared:  # the VM runs on: its share is mounted when the agent comes
                await asyncio.to_thread(share_mounter.start_share_mounter, ctx, name)
            raise
        if spec.shared:
            await share_mounter.mount_after_boot(ctx, name)
    elif spec.shared:  # nobody waits for the agent here: a detached helper mounts the share
        await asyncio.to_thread(share_mounter.start_share_mounter, ctx, name)
    return VmStatus(name=name, state=VmState.RUNNING, pid=pid, spec=spec, agent=bool(wait_agent),
                    agent_state=(vmstate.AgentState.ANSWERING if wait_agent
                                 else vmstate.AgentState.UNKNOWN),
                    notes=notes, accel_note=accel.note)


def make_sockets_private(paths: VmPaths) -> None:
    """QEMU daemonizes with umask 027; the sockets are for this user only (0600)."""
    for sock in (paths.qmp_socket, paths.qmp_monitor_socket, paths.qga_socket,
                 paths.clip_socket, paths.serial_socket, paths.vnc_socket,
                 paths.spice_socket):
        with contextlib.suppress(OSError):
            os.chmod(sock, 0o600)


def _launch_plan(ctx: Context, spec: VmSpec, paths: VmPaths, accel: str) -> LaunchPlan:
    return LaunchPlan(
        qemu_binary=process.find_qemu(ctx.environ),
        accel=accel,
        shared_dir=str(ctx.layout.shared_folder),
        boot_from_cdrom=bool(spec.iso) and not is_installed(paths),
        rbd_conf=ctx.ceph_conf if spec.disk.is_rbd else None,
    )


#: What the SPICE display needs of QEMU; Debian 13 ships it as qemu-system-modules-spice
#: (Debian 12: in qemu-system-common).
SPICE_PACKAGE = "qemu-system-modules-spice"


async def with_spice_devices(spec: VmSpec, plan: LaunchPlan) -> LaunchPlan:
    """The plan for a SPICE display: refused in one line when QEMU has no SPICE; USB
    redirection only where QEMU offers it. (Two QEMU probes at once: ~0.2 s.)"""
    devices, spice = await asyncio.gather(
        asyncio.to_thread(process.qemu_devices, plan.qemu_binary),
        asyncio.to_thread(process.qemu_has_spice, plan.qemu_binary))
    if "qxl-vga" not in devices or not spice:
        raise OperationFailed(
            f"{spec.name}: this QEMU has no SPICE display (apt-get install {SPICE_PACKAGE}, "
            f"or qemu-system-common on Debian 12), or `hypercore set {spec.name} display=vnc`")
    usb = "usb-redir" in devices and "qemu-xhci" in devices
    if not usb:
        log.info("%s: QEMU offers no usb-redir/qemu-xhci: SPICE without USB redirection",
                 spec.name)
    return dataclasses.replace(plan, usb_redirect=usb)


def check_boot_files(spec: VmSpec, plan: LaunchPlan) -> None:
    if spec.disk.path and not Path(spec.disk.path).exists():
        raise NotFound(f"{spec.name}: disk image {spec.disk.path} is missing")
    if plan.boot_from_cdrom and spec.iso and not Path(spec.iso).exists():
        raise NotFound(f"{spec.name}: ISO {spec.iso} is missing")
    for what, path in (("kernel", spec.kernel), ("initrd", spec.initrd)):
        if path and not Path(path).exists():
            raise NotFound(f"{spec.name}: {what} {path} is missing")


async def wait_qmp_ready(paths: VmPaths, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    last: HypercoreError | None = None
    while time.monotonic() < deadline:
        try:
            async with qmp_session(paths.qmp_socket, vm_name=paths.name, timeout=2.0) as qmp:
                await qmp.execute("query-status")
                # Ask the balloon to collect guest memory stats every 2 s (for monitoring).
                with contextlib.suppress(HypercoreError):
                    await qmp.execute("qom-set", {
                        "path": f"/machine/peripheral/{BALLOON_ID}",
                        "property": "guest-stats-polling-interval", "value": 2,
                    })
                return
        except HypercoreError as exc:
            last = exc
            state, _ = vmstate.process_state(paths)
            if state is VmState.CRASHED:
                raise OperationFailed(f"{paths.name}: QEMU exited during start-up; see "
                                      f"{paths.qemu_log}") from None
            await asyncio.sleep(0.05)
    raise Timeout(f"{paths.name}: QEMU monitor did not answer within {timeout:g}s ({last})")


async def wait_for_agent(paths: VmPaths, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        if await vmstate.agent_answers(paths, timeout=min(1.0, max(remaining, 0.1))):
            return
        state, _ = vmstate.process_state(paths)
        if state is not VmState.RUNNING:
            raise OperationFailed(f"{paths.name}: QEMU stopped while waiting for the agent")
        await asyncio.sleep(0.05)
    raise Timeout(f"{paths.name}: booted, but the guest agent did not answer within "
                  f"{timeout:g}s")
