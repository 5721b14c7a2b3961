"""One error hierarchy for everything Hypercore reports to a user.

Every adapter wraps the errors of the library it talks to into one of these,
so the CLI and the UI can show ``str(error)`` as one clear line.
"""

from __future__ import annotations


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


class AgentCommandUnsupported(OperationFailed):
    """The guest agent lacks (or disables) a needed command."""


class ClusterUnavailable(OperationFailed):
    """The Ceph cluster is not configured, not reachable or not answering."""
