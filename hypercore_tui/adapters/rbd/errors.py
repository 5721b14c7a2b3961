"""Library exceptions as :class:`~hypercore_tui.core.errors.HypercoreError` subclasses.

Every rados/rbd error becomes one with a one-line message at this boundary.
``mon_command`` does not raise on a timeout (it returns ``-110``): its callers check
return codes and raise :func:`unavailable` themselves.
"""

from __future__ import annotations

import errno
import re

from hypercore_tui.adapters.rbd.library import bindings
from hypercore_tui.core.errors import (
    AlreadyExists,
    ClusterUnavailable,
    HypercoreError,
    InvalidState,
    NotFound,
    OperationFailed,
)

STATUS_HINT = "(scripts/ceph-dev.sh status)"

_ERRNO_TEXT = re.compile(r"\[errno \d+\]\s*(?P<text>[^(]*)")


def short_message(exc: BaseException) -> str:
    match = _ERRNO_TEXT.match(str(exc))
    text = match["text"].strip() if match else str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def unavailable(conf: str, seconds: float) -> ClusterUnavailable:
    return ClusterUnavailable(f"Ceph cluster at {conf} did not answer within {seconds:g} s: "
                              f"is it running? {STATUS_HINT}")


def translate(exc: BaseException, conf: str, what: str, timeout: float) -> HypercoreError:
    rados, rbd = bindings()
    code = getattr(exc, "errno", None)
    if isinstance(exc, (rados.TimedOut, rbd.Timeout)) or code == errno.ETIMEDOUT:
        return unavailable(conf, timeout)
    if isinstance(exc, rbd.ImageNotFound):
        return NotFound(f"RBD image {what} does not exist")
    if isinstance(exc, rbd.ImageExists):
        return AlreadyExists(f"RBD image {what} already exists")
    if isinstance(exc, rbd.ImageHasSnapshots):
        return InvalidState(f"RBD image {what} has snapshots; delete them first")
    if isinstance(exc, rbd.ImageBusy):
        return InvalidState(f"RBD image {what} is busy: a client has it open or clones "
                            "depend on it")
    if code in (errno.EACCES, errno.EPERM):
        return OperationFailed(f"Ceph refused access to {what}: permission denied (check the "
                               "keyring and caps of the client in the conf)")
    if code in (errno.ENOSPC, errno.EDQUOT):
        return OperationFailed(f"Ceph cluster at {conf} is full (or the pool quota is reached)")
    if code in (errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH):
        return unavailable(conf, timeout)
    return OperationFailed(f"Ceph: {what}: {short_message(exc)}")
