"""The Ceph Python bindings and how every librados client of this program is set up.

librados' own timeouts (:data:`CLIENT_TIMEOUT`): ``client_mount_timeout`` bounds
``connect()`` (``Rados.connect(timeout=...)`` is ignored), ``rados_mon_op_timeout``
and ``rados_osd_op_timeout`` bound each monitor/OSD operation. A stopped cluster
gives ``TimedOut`` after 5 s instead of librados' default 300 s or forever.
"""

from __future__ import annotations

from types import ModuleType

from hypercore_tui.core.errors import OperationFailed

#: Seconds librados waits for the monitors (connect) and for each monitor/OSD operation.
CLIENT_TIMEOUT = 5


def client_settings(timeout: int) -> dict[str, str]:
    seconds = str(timeout)
    return {
        "client_mount_timeout": seconds,
        "rados_mon_op_timeout": seconds,
        "rados_osd_op_timeout": seconds,
        # Errors go to the (disabled) log, never to the terminal the dashboard draws on.
        "log_to_stderr": "false",
        "err_to_stderr": "false",
        "log_to_file": "false",
        "log_file": "",
        "admin_socket": "",
    }


def bindings() -> tuple[ModuleType, ModuleType]:
    try:
        import rados
        import rbd
    except ImportError:
        raise OperationFailed("the Ceph Python bindings are missing: apt-get install "
                              "python3-rados python3-rbd (and use the system Python 3)") from None
    return rados, rbd
