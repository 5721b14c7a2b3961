"""A VM's life from the command line (DESIGN §3): ``create-vm``, ``boot-vm``, ``stop-vm``,
``delete-vm``, ``pause-vm``/``resume-vm``/``reset-vm``, ``mark-installed``, ``list``, and
``exec`` (a command in the guest through its agent)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Coroutine
from typing import Any

from hypercore_tui.adapters.qga import ExecPending, ExecResult
from hypercore_tui.commands import (
    PROG,
    Handler,
    note_clock,
    out,
    run_async,
    seconds,
    whole_number,
)
from hypercore_tui.core.errors import InvalidInput
from hypercore_tui.core.models import (
    CLIPBOARD_MODES_HELP,
    DISPLAY_KINDS_HELP,
    ClipboardMode,
    DisplayKind,
)
from hypercore_tui.core.text import printable
from hypercore_tui.services import boot, create, lifecycle, registry
from hypercore_tui.services.context import Context


def register(sub: Any) -> dict[str, Handler]:
    p = sub.add_parser("create-vm", help="define a VM and create its disk")
    p.add_argument("name")
    p.add_argument("ram_mb", type=whole_number, metavar="RAM_MB")
    p.add_argument("cpus", type=whole_number, metavar="CPUS")
    p.add_argument("disk", nargs="?", metavar="DISK",
                   help="auto (default), a qcow2/raw image path, or rbd:POOL/IMAGE[:conf=PATH]")
    p.add_argument("iso", nargs="?", metavar="ISO", help="installer ISO booted until installed")
    p.add_argument("--disk-size", default="20G")
    p.add_argument("--kernel")
    p.add_argument("--initrd")
    p.add_argument("--append")
    p.add_argument("--net", default="user", help="user | none | bridge=BRIDGE")
    p.add_argument("--no-shared", action="store_true", help="do not attach the shared folder")
    p.add_argument("--shared-mode", default="9p", choices=["9p", "virtiofs"])
    p.add_argument("--clipboard", default=ClipboardMode.SYNC.value,
                   choices=[m.value for m in ClipboardMode], help=CLIPBOARD_MODES_HELP)
    p.add_argument("--display", default=DisplayKind.VNC.value,
                   choices=[k.value for k in DisplayKind], help=DISPLAY_KINDS_HELP)
    p.add_argument("--qemu-arg", action="append", default=[], metavar="ARG",
                   help="extra QEMU argument (repeatable; use --qemu-arg=-foo for dashes)")

    p = sub.add_parser("boot-vm", help="start a VM detached")
    p.add_argument("name")
    p.add_argument("--wait-agent", type=seconds, metavar="SECONDS",
                   help="also wait until the guest agent answers")
    p.add_argument("--repair", action="store_true",
                   help="first repair the qcow2 disk image (qemu-img check -r all); boot "
                        "only if it is clean then")

    p = sub.add_parser("stop-vm", help="stop a VM (graceful unless --force)")
    p.add_argument("name")
    p.add_argument("--force", action="store_true", help="QMP quit, then SIGKILL")
    p.add_argument("--timeout", type=seconds, default=60.0, metavar="SECONDS")

    p = sub.add_parser("delete-vm", help="delete a stopped VM and its disk")
    p.add_argument("name")
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    image = p.add_mutually_exclusive_group()
    image.add_argument("--remove-image", action="store_true",
                       help="RBD disk: also remove the Ceph image (default for images "
                            "hypercore created)")
    image.add_argument("--keep-image", action="store_true",
                       help="RBD disk: keep the Ceph image (default for images that "
                            "existed before)")

    for verb, text in (("pause-vm", "pause a running VM"), ("resume-vm", "resume a paused VM"),
                       ("reset-vm", "hard-reset a running VM")):
        sub.add_parser(verb, help=text).add_argument("name")

    p = sub.add_parser("mark-installed", help="boot from the disk from now on (ISO detached)")
    p.add_argument("name")
    p.add_argument("--undo", action="store_true", help="boot from the ISO again")

    p = sub.add_parser("list", help="list VMs and their state")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser(
        "exec", help="run a command in the guest through the agent",
        description="Run a command in the guest through its agent: its stdout and stderr are "
                    "relayed when it ends, its exit code becomes this command's.",
        epilog="The guest agent answers only once the command's output is closed: a process "
               "it starts that keeps that output open (xclip and wl-copy fork one to own the "
               "clipboard) makes exec wait until that process ends, or --timeout. On a "
               "terminal, a command still unfinished after 5 s because of this gets one note "
               "on stderr. Redirect that process's output (>/dev/null 2>&1), or pass a "
               "shorter --timeout.")
    p.add_argument("name")
    p.add_argument("--stdin", action="store_true", help="send this command's stdin to it")
    p.add_argument("--timeout", type=seconds, default=300.0, metavar="SECONDS",
                   help="give up after this long (default 300; 0: wait for ever)")
    p.add_argument("argv", nargs="*", metavar="-- CMD [ARG]...",
                   help="the command and its arguments, after --")

    return {
        "create-vm": cmd_create,
        "boot-vm": cmd_boot,
        "stop-vm": cmd_stop,
        "delete-vm": cmd_delete,
        "pause-vm": cmd_simple(lifecycle.pause_vm, "paused"),
        "resume-vm": cmd_resume,
        "reset-vm": cmd_simple(lifecycle.reset_vm, "reset"),
        "mark-installed": cmd_mark_installed,
        "list": cmd_list,
        "exec": cmd_exec,
    }


def cmd_create(ctx: Context, args: argparse.Namespace) -> int:
    req = create.CreateRequest(
        name=args.name, ram_mb=args.ram_mb, cpus=args.cpus, disk=args.disk, iso=args.iso,
        disk_size=args.disk_size, kernel=args.kernel, initrd=args.initrd, append=args.append,
        net=args.net, shared=not args.no_shared, shared_mode=args.shared_mode,
        clipboard=args.clipboard, display=args.display, extra_args=tuple(args.qemu_arg),
    )
    spec = create.create_vm(ctx, req)
    origin = ""
    if spec.disk.is_rbd:
        origin = " (new image)" if spec.disk.owned else " (existing image, kept on delete-vm)"
    out(f"created {spec.name}: {spec.ram_mb} MB, {spec.cpus} CPU(s), "
        f"disk {spec.disk.describe()}{origin}")
    return 0


def cmd_boot(ctx: Context, args: argparse.Namespace) -> int:
    status = run_async(boot.boot_vm(ctx, args.name, wait_agent=args.wait_agent,
                                         repair=args.repair))
    if status.accel_note:  # (KVM opens but guests do not run: TCG)
        sys.stderr.write(f"{PROG}: note: {printable(status.accel_note, limit=500)}\n")
    for note in status.notes:  # (a disk repaired after QEMU died)
        sys.stderr.write(f"{PROG}: note: {status.name}: {printable(note, limit=500)}\n")
    agent = ", agent answers" if args.wait_agent else ""
    out(f"{status.name} is running (pid {status.pid}{agent})")
    return 0


def cmd_stop(ctx: Context, args: argparse.Namespace) -> int:
    how = run_async(lifecycle.stop_vm(ctx, args.name, force=args.force, timeout=args.timeout))
    out(f"{args.name} stopped ({how})")
    return 0


def cmd_delete(ctx: Context, args: argparse.Namespace) -> int:
    spec = registry.load(ctx, args.name)
    remove_image: bool | None = True if args.remove_image else False if args.keep_image else None
    rbd = spec.disk.is_rbd
    image = f"{spec.disk.pool}/{spec.disk.image}" if rbd else spec.disk.describe()
    if not args.yes:
        if not sys.stdin.isatty():
            raise InvalidInput(f"refusing to delete {args.name} without confirmation: "
                               "pass --yes")
        if rbd and remove_image is None:
            remove_image = _ask_remove_image(image, owned=spec.disk.owned)
        removes = spec.disk.owned if remove_image is None else remove_image
        if rbd:
            disk = f"{'and remove' if removes else 'keeping'} its RBD image {image}"
        elif spec.disk.owned:
            disk = f"and its disk {spec.disk.describe()}"
        else:
            disk = f"keeping its disk image {spec.disk.describe()}"
        sys.stderr.write(f"Delete VM {args.name!r} {printable(disk, limit=None)}? "
                         "Type the VM name: ")
        sys.stderr.flush()
        if sys.stdin.readline().strip() != args.name:
            sys.stderr.write("not deleted\n")
            return 1
    lifecycle.delete_vm(ctx, args.name, remove_image=remove_image)
    if rbd:
        removed = spec.disk.owned if remove_image is None else remove_image
        out(f"deleted {args.name} (RBD image {image} {'removed' if removed else 'kept'})")
    else:
        out(f"deleted {args.name}")
    return 0


def _ask_remove_image(image: str, *, owned: bool) -> bool:
    """On a terminal: also remove the VM's RBD image? (default: remove it if owned)."""
    origin = "created by hypercore" if owned else "it existed before this VM"
    sys.stderr.write(f"Also remove its RBD image {image} ({origin})? "
                     f"[{'Y/n' if owned else 'y/N'}] ")
    sys.stderr.flush()
    answer = sys.stdin.readline().strip().lower()
    return owned if not answer else answer in ("y", "yes")


def cmd_simple(action: Callable[[Context, str], Coroutine[Any, Any, None]], done: str
               ) -> Handler:
    def run(ctx: Context, args: argparse.Namespace) -> int:
        run_async(action(ctx, args.name))
        out(f"{args.name} {done}")
        return 0
    return run


def cmd_resume(ctx: Context, args: argparse.Namespace) -> int:
    correction = run_async(lifecycle.resume_vm(ctx, args.name))
    out(f"{args.name} resumed")
    note_clock(correction)
    return 0


def cmd_mark_installed(ctx: Context, args: argparse.Namespace) -> int:
    create.mark_installed(ctx, args.name, installed=not args.undo)
    out(f"{args.name} will boot from {'the ISO' if args.undo else 'its disk'} next time")
    return 0


def cmd_list(ctx: Context, args: argparse.Namespace) -> int:
    statuses = run_async(lifecycle.list_vms(ctx))
    rows = []
    for st in statuses:
        spec = st.spec
        rows.append({
            "name": st.name,
            "state": st.state.value,
            "pid": st.pid if st.state.is_active else None,
            "ram_mb": spec.ram_mb if spec else None,
            "cpus": spec.cpus if spec else None,
            "disk": spec.disk.describe() if spec else None,
            "agent": st.agent,
            "agent_state": st.agent_state.value,
            "error": st.error,
        })
    if args.json:
        out(json.dumps(rows, indent=2))
        return 0
    if not rows:
        out("no VMs defined (create one with `hypercore create-vm NAME RAM_MB CPUS`)")
        return 0
    header = f"{'NAME':<20} {'STATE':<13} {'PID':>7} {'RAM':>7} {'CPUS':>4} {'AGENT':<5} DISK"
    out(header)
    for r in rows:
        pid = str(r["pid"]) if r["pid"] else "-"
        ram = f"{r['ram_mb']}M" if r["ram_mb"] else "?"
        out(f"{r['name']:<20} {r['state']:<13} {pid:>7} {ram:>7} {r['cpus'] or '?':>4} "
             f"{'yes' if r['agent'] else 'no':<5} {r['disk'] or '?'}")
        if r["error"]:  # why it is paused, or why its state is unknown
            out(f"  {printable(str(r['error']), limit=500)}")
    return 0


def cmd_exec(ctx: Context, args: argparse.Namespace) -> int:
    argv = list(args.argv)
    if not argv:
        raise InvalidInput("exec needs a command: hypercore exec NAME -- CMD [ARG]...")
    stdin = sys.stdin.buffer.read() if args.stdin else None
    # Someone at a terminal is told early why the command may hang on (scripts are not).
    on_slow = _held_output_note(args.name, argv[0], args.timeout) \
        if sys.stderr.isatty() else None
    result: ExecResult = run_async(lifecycle.exec_in_vm(ctx, args.name, argv, stdin=stdin,
                                       timeout=args.timeout or None, on_slow=on_slow))
    sys.stdout.buffer.write(result.stdout)
    sys.stdout.buffer.flush()
    sys.stderr.buffer.write(result.stderr)
    sys.stderr.buffer.flush()
    if result.stdout_truncated or result.stderr_truncated:
        sys.stderr.write(f"{PROG}: warning: the guest agent truncated the output (16 MiB cap)\n")
    return result.shell_status


def _held_output_note(name: str, command: str, timeout: float) -> Callable[[ExecPending], None]:
    """The one note for a command whose output a process it started holds open."""
    waits = f"--timeout ({timeout:g} s)" if timeout else "for ever (--timeout 0)"

    def note(pending: ExecPending) -> None:
        if pending.command_ended:
            what = (f"{printable(command, limit=100)} has ended, but a process it started "
                    "still holds its output open (xclip and wl-copy fork), so exec waits for "
                    f"that process or {waits}: redirect that process's output")
        else:
            what = (f"still running after {pending.seconds:.0f} s; a process it started may be "
                    "holding its output open (xclip and wl-copy fork): redirect its output")
        sys.stderr.write(f"{PROG}: note: {name}: {what} (>/dev/null 2>&1) or pass --timeout "
                         "SECONDS\n")
        sys.stderr.flush()

    return note
