"""The clipboard's user settings: the ``clipboard`` object of ``settings.json``.

* ``files_max``: the largest files entry carried, in bytes or as a size (``"2G"``);
  ``HYPERCORE_CLIP_FILES_MAX`` in the environment wins (tests set it); default 1 GiB.
  Read at each use: a change applies to the next copy, also in a running sync.
* ``dashboard_sync``: whether the dashboard runs the clipboard sync (the ``C`` toggle,
  remembered across restarts of the dashboard).

A refusal names where its cap was set (:class:`FilesCap`).
"""

from __future__ import annotations

from typing import Any

from hypercore_tui.core.errors import InvalidInput
from hypercore_tui.core.sizes import format_bytes, parse_size
from hypercore_tui.services.context import Context
from hypercore_tui.services.settings import changing_settings, read_settings

SECTION = "clipboard"
FILES_MAX = "files_max"
DASHBOARD_SYNC = "dashboard_sync"
#: The environment's cap per entry (bytes); it wins over the settings.
CAP_ENV = "HYPERCORE_CLIP_FILES_MAX"
DEFAULT_CAP = 1 << 30


class FilesCap(int):
    """The cap on a files entry, in bytes (an ``int``), and where it was set."""

    origin: str

    def __new__(cls, size: int, origin: str) -> FilesCap:
        cap = super().__new__(cls, size)
        cap.origin = origin
        return cap


def cap_refusal(cap: int) -> str:
    """The one line of a set of files above ``cap``, naming where the cap was set."""
    where = f", {cap.origin}" if isinstance(cap, FilesCap) else ""
    return f"the copied files are larger than the cap ({format_bytes(cap)}{where}): not carried"


def _section(ctx: Context) -> dict[str, Any]:
    section = read_settings(ctx).get(SECTION, {})
    if not isinstance(section, dict):
        raise InvalidInput(f"{ctx.layout.settings_file}: {SECTION!r} must be an object")
    return section


def files_cap(ctx: Context) -> FilesCap:
    """The largest files entry carried (see the module)."""
    text = ctx.environ.get(CAP_ENV, "").strip()
    if text.isascii() and text.isdigit() and 0 < len(text) < 20 and int(text) > 0:
        return FilesCap(int(text), f"set by {CAP_ENV}")
    path = ctx.layout.settings_file
    value = _section(ctx).get(FILES_MAX)
    if value is None:
        return FilesCap(DEFAULT_CAP, f"the default; {SECTION}.{FILES_MAX} in {path} sets it")
    try:
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise InvalidInput("not a size")
        size = value if isinstance(value, int) else parse_size(value)
        if size <= 0:
            raise InvalidInput("not a size")
    except InvalidInput:
        raise InvalidInput(f"{path}: {SECTION}.{FILES_MAX} must be a size such as \"2G\" or "
                           f"a number of bytes, not {str(value)[:40]!r}") from None
    return FilesCap(size, f"set by {SECTION}.{FILES_MAX} in {path}")


def dashboard_sync(ctx: Context) -> bool:
    """Whether the dashboard runs the clipboard sync when it starts (``C`` remembered)."""
    return _section(ctx).get(DASHBOARD_SYNC) is True


def remember_dashboard_sync(ctx: Context, on: bool) -> None:
    """Remember the dashboard's ``C`` toggle (the other settings kept as they are)."""
    with changing_settings(ctx, "clipboard sync on/off") as settings:
        section = settings.get(SECTION)
        if not isinstance(section, dict):
            section = settings[SECTION] = {}
        section[DASHBOARD_SYNC] = on
