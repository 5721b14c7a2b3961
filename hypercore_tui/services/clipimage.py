"""Images on guests' clipboards (``image/png``), for the clipboard sync.

A copy that offers no text is asked again for an image (``clipboard.sh pull-image``: the
owner's TARGETS, then the ``image/png`` bytes); an image goes into a guest with
``clipboard.sh push-image`` (xclip ``-t image/png`` or ``wl-copy --type image/png`` as the
session's user). Another image type (``image/bmp``, ``image/jpeg``...) without a PNG is
named, not converted: nothing in a guest may be installed to convert it. A guest without
a graphical session has no place for an image (its fallback file holds text).
"""

from __future__ import annotations

from dataclasses import dataclass

from hypercore_tui.adapters.qga import AgentClient, agent_session
from hypercore_tui.core.errors import AgentCommandUnsupported
from hypercore_tui.core.layout import VmPaths
from hypercore_tui.services import guest_exec, records, registry, vmstate
from hypercore_tui.services.clipboard import (
    FALLBACK_DIR,
    NEEDS_EXEC,
    ClipboardError,
    GuestClipboard,
    PushResult,
    _found,
    _run_linux,
    _status_lines,
    check_readable,
    push_with,
)
from hypercore_tui.services.context import Context

KIND_PNG = "image/png"
#: guest-exec returns at most 16 MiB of output: an image is taken up to 12 MiB.
MAX_IMAGE_BYTES = 12 * 1024 * 1024


@dataclass(frozen=True)
class GuestImage:
    """What ``pull-image`` found: PNG bytes, or the name of an image type not carried."""

    data: bytes | None = None
    other: str | None = None  # e.g. "image/bmp": offered, not PNG, not converted


async def pull_image_via_agent(agent: AgentClient, *, fallback_dir: str = FALLBACK_DIR,
                               session: records.ClipSession | None = None
                               ) -> tuple[GuestImage, records.ClipSession | None]:
    result = await _run_linux(agent, "pull-image", None, fallback_dir, session)
    if result is None:
        return GuestImage(), None  # Windows: text only
    status, other = _status_lines(result.stderr)
    if result.shell_status != 0:
        why = other[-1] if other else f"exit status {result.shell_status}"
        raise ClipboardError(f"{agent.vm_name}: image not read in the guest: {why}")
    kind = status.get("hc-kind", "")
    if kind.startswith("other "):
        return GuestImage(other=kind[len("other "):][:60]), _found(result.stderr)
    if kind != KIND_PNG or not result.stdout:
        return GuestImage(), _found(result.stderr)
    if result.stdout_truncated or len(result.stdout) > MAX_IMAGE_BYTES:
        raise ClipboardError(f"{agent.vm_name}: the copied image is larger than "
                             f"{MAX_IMAGE_BYTES // (1 << 20)} MiB: not taken")
    return GuestImage(data=result.stdout), _found(result.stderr)


async def push_image_via_agent(agent: AgentClient, data: bytes, *,
                               fallback_dir: str = FALLBACK_DIR,
                               session: records.ClipSession | None = None) -> GuestClipboard:
    result = await _run_linux(agent, "push-image", data, fallback_dir, session)
    if result is None:
        raise ClipboardError(f"{agent.vm_name}: images reach Linux guests only")
    status, other = _status_lines(result.stderr)
    if result.shell_status != 0:
        why = other[-1] if other else f"exit status {result.shell_status}"
        raise ClipboardError(f"{agent.vm_name}: image not written: {why}")
    return GuestClipboard(method=status.get("hc-method", "?"), session=status.get("hc-session"),
                          lookup=status.get("hc-lookup"), found=_found(result.stderr))


def _keep(paths: VmPaths, known: records.ClipSession | None,
          found: records.ClipSession | None) -> None:
    if found is not None and found != known:
        records.write_clip_session(paths, found)


async def pull_image(ctx: Context, name: str) -> GuestImage:
    """The PNG on ``name``'s clipboard, if its owner offers one."""
    check_readable(registry.load(ctx, name))
    paths = vmstate.require_running(ctx, name).paths
    known = records.read_clip_session(paths)
    try:
        async with agent_session(paths.qga_socket, vm_name=name) as agent:
            image, found = await pull_image_via_agent(agent, session=known)
    except AgentCommandUnsupported:
        raise ClipboardError(guest_exec.exec_blocked(name, NEEDS_EXEC)) from None
    _keep(paths, known, found)
    return image


async def push_image(ctx: Context, name: str, data: bytes, *, check_paused: bool = True
                     ) -> PushResult:
    """Put the PNG ``data`` on ``name``'s clipboard (one result, as ``push_one``)."""
    return await push_with(ctx, name, lambda agent, known: push_image_via_agent(
        agent, data, session=known), check_paused=check_paused)
