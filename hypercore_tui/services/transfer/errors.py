"""What a failed copy says, in one line: :class:`TransferError`, and the translations of
guest-script failures, agent errors and a full disk (in the guest or on the host)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from hypercore_tui.adapters.qga import AgentCommandError, ExecResult
from hypercore_tui.core.errors import (
    AgentUnavailable,
    HypercoreError,
    InvalidInput,
    NoSpace,
    NotFound,
    OperationFailed,
    ProtocolError,
    Timeout,
)
from hypercore_tui.core.text import printable
from hypercore_tui.services import guest_exec


class TransferError(OperationFailed):
    """A copy failed; nothing was left under the destination name. (A full disk, on
    either side: :class:`~hypercore_tui.core.errors.NoSpace`.)"""


def space_error(vm: str, what: str, needed: int | None = None) -> NoSpace:
    extra = f" ({needed / (1024 * 1024):.1f} MiB needed)" if needed is not None else ""
    return NoSpace(f"{vm}: no space left in the guest for {what}{extra}")


def guest_failure(vm: str, result: ExecResult, what: str | None = None) -> HypercoreError:
    failure = guest_exec.script_failure(vm, result)
    line = failure.reason
    if isinstance(failure, NoSpace):
        return space_error(vm, what) if what else NoSpace(f"{vm}: no space left in the "
                                                            f"guest: {line}")
    if result.exitcode == 3:  # the scripts' "no such file or directory"
        return NotFound(f"{vm}: {line}")
    if result.exitcode == 4:  # a directory where a file was expected
        return InvalidInput(f"{vm}: {line}")
    return TransferError(f"{vm}: {line}")


HOST_FULL = "no space left on the host"


@contextlib.contextmanager
def host_writes(final: Path) -> Iterator[None]:
    """Host writes (``fs.write_all``) refused for want of space say where they went."""
    try:
        yield
    except NoSpace:
        raise NoSpace(f"{HOST_FULL} for {printable(str(final), limit=500)}; nothing was "
                      "placed there (free some space and copy again)") from None



def translate(vm: str, exc: BaseException, what: str) -> BaseException:
    """One clear line for what went wrong mid-transfer."""
    if isinstance(exc, AgentCommandError):
        if isinstance(exc, NoSpace):  # qga.AgentNoSpace
            return space_error(vm, what)
        if "Permission denied" in exc.desc:
            return TransferError(f"{vm}: permission denied writing {what}")
        if exc.command.startswith("guest-file-") and "handle" in exc.desc:
            return TransferError(f"{vm}: the guest agent restarted during the transfer (its "
                                 f"open file is gone); nothing was placed at {what}")
        return TransferError(f"{vm}: {printable(exc.desc)}")
    if isinstance(exc, AgentUnavailable | Timeout | ProtocolError):
        return TransferError(f"{exc} (during the transfer; nothing was placed at {what})")
    return exc
