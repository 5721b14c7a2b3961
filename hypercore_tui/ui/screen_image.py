"""How the Screen tab draws a VM's screen in this terminal, with ``textual-image``:
Kitty graphics (the PNG's pixels travel base64-encoded inside the escape sequences,
direct transmission, never a file path: works over SSH), Sixel, or Unicode half-blocks
(two pixels a cell, 24-bit colours: any terminal, plain tmux, 80x24).

textual-image probes the terminal when it is first imported (its answer to DA1 for
Sixel, a Kitty graphics query, the cell size in pixels), reading the answers from stdin,
which Textual takes over once it runs. :func:`load` therefore runs in
``ui.launch.run_dashboard`` after the terminal check and before the app starts, and only
there: no other command pays for the import (~12 ms) or the probe (~0.1 s in a terminal
that ignores Kitty's query, e.g. tmux). Without a terminal (tests) nothing is probed.

``HYPERCORE_SCREEN_MODE=auto|kitty|sixel|halfblock`` overrides the probe's choice (for
tests, and for terminals that claim what they cannot do). ``halfblock`` asks the
terminal nothing at all, and a probe that fails falls back to half-blocks.
"""

from __future__ import annotations

import importlib
import io
import logging
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, cast

from hypercore_tui.core.errors import InvalidInput
from hypercore_tui.core.text import printable

if TYPE_CHECKING:  # (importing textual-image probes the terminal: only in load())
    from textual_image.widget._base import Image as ImageWidget

log = logging.getLogger("hypercore.ui")

MODE_ENV = "HYPERCORE_SCREEN_MODE"
Mode = Literal["kitty", "sixel", "halfblock"]
REQUESTS = ("auto", "kitty", "sixel", "halfblock")
#: What the Screen tab's status line calls each mode.
LABELS: dict[Mode, str] = {"kitty": "Kitty graphics", "sixel": "Sixel",
                           "halfblock": "half-blocks"}


@dataclass(frozen=True)
class Rendering:
    """The mode the Screen tab draws with, the textual-image widget class for it, and
    why that mode (``detected``, ``HYPERCORE_SCREEN_MODE``, or the probe's failure)."""

    mode: Mode
    widget: type[ImageWidget]
    why: str

    @property
    def label(self) -> str:
        return LABELS[self.mode]


def requested_mode(environ: Mapping[str, str]) -> str:
    """``HYPERCORE_SCREEN_MODE`` (``auto`` when unset); another value is refused."""
    value = environ.get(MODE_ENV, "").strip().lower() or "auto"
    if value not in REQUESTS:
        raise InvalidInput(f"{MODE_ENV}={environ.get(MODE_ENV)!r}: use one of "
                           f"{', '.join(REQUESTS)}")
    return value


_probe_failure: str | None = None


def _import_library(*, probe: bool) -> None:
    """Import textual-image once: with its terminal probe, or (``probe`` false, or the
    probe failed) while ``sys.__stdout__`` is no terminal, which is how the library
    skips the probe (its cell size is then the 10x20 default: only the aspect of the
    half-block cells depends on it, and those are 1:2 anyway)."""
    global _probe_failure
    if "textual_image.widget" in sys.modules:
        return
    if probe:
        try:
            importlib.import_module("textual_image.widget")
            return
        except Exception as exc:  # noqa: BLE001 - any failure: half-blocks, said once
            _probe_failure = f"{type(exc).__name__}: {exc}"
            log.warning("textual-image's terminal probe failed: %s", _probe_failure)
            for name in [m for m in sys.modules if m.startswith("textual_image")]:
                del sys.modules[name]
    stdout = sys.__stdout__
    setattr(sys, "__stdout__", io.StringIO())  # noqa: B010 - Final in typeshed
    try:
        importlib.import_module("textual_image.widget")
    finally:
        setattr(sys, "__stdout__", stdout)  # noqa: B010


def detected_mode() -> Mode:
    """What textual-image's probe chose (it prefers Sixel, then Kitty graphics)."""
    from textual_image.renderable import Image as Chosen
    from textual_image.renderable.sixel import Image as SixelRenderable
    from textual_image.renderable.tgp import Image as TGPRenderable

    if Chosen is SixelRenderable:
        return "sixel"
    if Chosen is TGPRenderable:
        return "kitty"
    return "halfblock"  # half cells on a terminal, grey shades without one: half-blocks


#: TERM of a terminal multiplexer: tmux and screen take the probe's Kitty query (an APC
#: sequence) for a window title (seen: the pane's title became ``Gi=…,a=q,t=d…``), also
#: when Hypercore runs over SSH in a pane on the user's own machine (no TMUX here).
MULTIPLEXER_TERMS = ("screen", "tmux")


def load(environ: Mapping[str, str], *,
         tmux_features: tuple[str, ...] | None = None) -> Rendering:
    """The Screen tab's rendering for this process's terminal and ``environ``.

    ``tmux_features``: what tmux says the terminal can do, inside tmux (TMUX set). Only
    Sixel passes through tmux: with it, Sixel; without it (Debian 12's 3.3a), half-blocks.
    Under a multiplexer (TMUX set, or TERM ``screen*``/``tmux*``) the terminal is never
    probed: the probe's Kitty query would become the pane's title (and it waits 0.1 s
    for an answer that never comes)."""
    request = requested_mode(environ)
    term = environ.get("TERM", "")
    multiplexed = tmux_features is not None or term.startswith(MULTIPLEXER_TERMS)
    _import_library(probe=request != "halfblock" and not multiplexed)
    from textual_image.widget import HalfcellImage, SixelImage, TGPImage

    widgets: dict[Mode, type[ImageWidget]] = {"kitty": TGPImage, "sixel": SixelImage,
                                         "halfblock": HalfcellImage}
    if request != "auto":
        mode = cast(Mode, request)  # (checked by requested_mode)
        return Rendering(mode, widgets[mode], MODE_ENV)
    if tmux_features is not None and "sixel" in tmux_features:
        return Rendering("sixel", SixelImage, "tmux passes Sixel to this terminal")
    if multiplexed:
        why = ("tmux passes no Sixel to this terminal" if tmux_features is not None
               else f"TERM={printable(term, limit=40)}: a multiplexer, not asked")
        return Rendering("halfblock", HalfcellImage, why)
    mode = detected_mode() if _probe_failure is None else "halfblock"
    why = "detected" if _probe_failure is None else f"terminal probe failed: {_probe_failure}"
    return Rendering(mode, widgets[mode], why)
