"""One error hierarchy for everything Hypercore reports to a user.

Every adapter wraps the errors of the library it talks to into one of these,
so the CLI and the UI can show ``str(error)`` as one clear line.
"""

from __future__ import annotations

import errno


class HypercoreError(Exception):
    """Base of all user-facing errors. ``str()`` is the one-line message."""

    #: CLI exit code: 1 = the operation failed, 2 = bad usage or bad input.
    exit_code: int = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class InvalidInput(HypercoreError):
    """The user asked for something malformed (name, size, path...)."""

    exit_code = 2


class NotFound(HypercoreError):
    """A VM, snapshot, image or file that was named does not exist."""

    exit_code = 2


class AlreadyExists(HypercoreError):
    """The name is taken."""

    exit_code = 2


class InvalidState(HypercoreError):
    """The VM is in the wrong state for the operation (running, stopped...)."""

    exit_code = 1


class Busy(HypercoreError):
    """Another operation holds the VM's lock."""

    exit_code = 1


class OperationFailed(HypercoreError):
    """An outside system (QEMU, qemu-img, qemu-ga, Ceph) failed."""

    exit_code = 1


class Timeout(OperationFailed):
    """An outside system did not answer in time."""


class ProtocolError(OperationFailed):
    """A peer sent something that breaks the protocol."""


class AgentUnavailable(OperationFailed):
    """The guest agent is not reachable or not answering."""


class NoSpace(OperationFailed):
    """A write was refused for want of space (``ENOSPC``): a full disk on the host, in a
    guest, or in the shared folder. Raised where the failure is first seen (an adapter, or
    the guest scripts' reply), so callers catch this type instead of reading messages."""

    errno = errno.ENOSPC


#: How ``strerror(ENOSPC)`` reads (glibc, musl, busybox): all that a child process (qemu-img,
#: a guest's dd, qemu-ga, a QEMU job) tells of the errno.
NO_SPACE_TEXT = "No space left on device"


def says_no_space(text: str) -> bool:
    """Whether an outside program's error text reports ``ENOSPC``."""
    return NO_SPACE_TEXT in text


def os_failure(message: str, exc: OSError) -> OperationFailed:
    """``message`` as the error for a failed host call: :class:`NoSpace` for ``ENOSPC``."""
    if exc.errno == errno.ENOSPC:
        return NoSpace(message)
    return OperationFailed(message)


class AgentCommandUnsupported(OperationFailed):
    """The guest agent lacks (or disables) a needed command."""


class ClusterUnavailable(OperationFailed):
    """The Ceph cluster is not configured, not reachable or not answering."""


class HostUnreachable(OperationFailed):
    """Another host cannot be reached over SSH, refuses the login or its host key, or its
    connection was lost."""


class VersionMismatch(OperationFailed):
    """Another host runs another version of Hypercore."""
