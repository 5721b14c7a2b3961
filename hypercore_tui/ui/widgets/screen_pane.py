"""The Screen tab: the selected VM's screen (QMP ``screendump``), drawn with
textual-image in the mode :mod:`hypercore_tui.ui.screen_image` chose for the terminal.

Frames are taken only while the tab is visible and the VM runs: one a second, and one
every 0.2 s for 2 s after :meth:`ScreenPane.nudge` (the keyboard feature calls it each
time it sends the VM a key, so what the key did shows at once). No timer runs while
the tab is hidden, the VM is paused (the last frame stays, marked "paused"; a paused VM
gets one frame when it is selected, shown again or just paused: its screen cannot change
until it runs), stopped or crashed ("stopped", "crashed": the frame goes), or has no
display device. One frame at a time: the next is timed from the
start of the previous, and never asked for while one is on its way. A failed frame is
one line above the last good one, and the next comes at the usual time.

The frame comes from ``Backend.screendump`` (a coroutine on the app's loop: the UI never
touches a socket); its PNG is decoded in a thread.
"""

from __future__ import annotations

import asyncio
import io
import logging
import time
from collections.abc import Awaitable, Callable

from PIL import Image as PILImage
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Container, Vertical
from textual.timer import Timer
from textual.widgets import Static

from hypercore_tui.core.errors import HypercoreError
from hypercore_tui.core.models import VmState
from hypercore_tui.core.text import printable
from hypercore_tui.ui.backend import VmView
from hypercore_tui.ui.screen_image import Rendering

log = logging.getLogger("hypercore.ui")

#: Seconds between frames while the tab shows a running VM.
PERIOD = 1.0
#: ... and right after a key was sent to it (``nudge``), for ``FAST_FOR`` seconds.
FAST_PERIOD = 0.2
FAST_FOR = 2.0

Dump = Callable[[str], Awaitable[bytes]]


def decode_png(data: bytes) -> PILImage.Image:
    """A screendump's PNG, decoded (in a worker thread: a 1080p frame takes ~10 ms)."""
    image = PILImage.open(io.BytesIO(data))
    image.load()
    return image.convert("RGB") if image.mode != "RGB" else image


class ScreenPane(Vertical):
    """The selected VM's screen and one status line above it.

    The dashboard calls :meth:`show` when the selection, the VM's state or the active
    tab changes, and the keyboard feature calls :meth:`nudge` after each key it sends.
    """

    ALLOW_MAXIMIZE = True  # z: the whole terminal for the screen

    DEFAULT_CSS = """
    ScreenPane > #screen-status {
        height: 1;
        padding: 0 1;
        color: $text-muted;
    }
    ScreenPane > #screen-status.-error {
        color: $warning;
    }
    ScreenPane > #screen-frame {
        height: 1fr;
        align: center top;
    }
    ScreenPane #screen-image {
        width: auto;
        height: auto;
    }
    """

    def __init__(self, dump: Dump, rendering: Rendering, *,
                 id: str | None = None) -> None:  # noqa: A002 - Textual API
        super().__init__(id=id)
        self._dump_fn = dump
        self.rendering = rendering
        self.status = Static("", id="screen-status", markup=False)
        self.image = rendering.widget(None, id="screen-image")
        self.view: VmView | None = None
        self.visible = False
        #: the frame shown (decoded), whose VM, and what went wrong with the last try
        self.frame: PILImage.Image | None = None
        self.frame_of: str | None = None
        self.error: str | None = None
        #: frames asked for since the start (tests and the benchmark count them)
        self.dumps = 0
        self._in_flight: str | None = None  # the VM whose frame is on its way
        self._started = 0.0  # when the last frame was asked for
        self._fast_until = 0.0
        self._stale = True  # the frame shown may not be the screen now
        self._state: VmState | None = None
        self._timer: Timer | None = None
        self._line = ""

    def compose(self) -> ComposeResult:
        yield self.status
        with Container(id="screen-frame"):
            yield self.image

    def on_mount(self) -> None:
        self._update()

    # -- what the dashboard and the keyboard feature call -----------------------------

    def show(self, view: VmView | None, *, visible: bool) -> None:
        """Follow the selected VM (its live view) and whether the tab is visible."""
        state = view.state if view else None
        if (view.name if view else None) != (self.view.name if self.view else None):
            self._drop_frame()
            self._started = 0.0
            self._fast_until = 0.0
            self._stale = True
        elif (visible and not self.visible) or \
                (state is VmState.PAUSED and self._state is not VmState.PAUSED):
            self._stale = True  # shown again, or just paused: the frame may be old
        self.view, self.visible, self._state = view, visible, state
        self._update()

    def refresh_status(self) -> None:
        """Say again what is shown (after a zoom)."""
        self._show_status()

    def nudge(self) -> None:
        """A key was just sent to the selected VM: frames every ``FAST_PERIOD`` for the
        next ``FAST_FOR`` seconds (from now: each key starts the window again)."""
        now = time.monotonic()
        self._fast_until = now + FAST_FOR
        if self._polling():
            self._schedule(max(0.0, min(self._due_at() - now, FAST_PERIOD)))

    # -- the cadence --------------------------------------------------------------------

    def _polling(self) -> bool:
        """Frames are taken: the tab is visible and the VM runs with a display."""
        view = self.view
        return (self.visible and view is not None and view.display != "none"
                and view.state in (VmState.RUNNING, VmState.SHUTTING_DOWN))

    def _one_frame_wanted(self) -> bool:
        """A paused VM gets one frame when its shown one may be old (selected, shown
        again, or just paused): its screen cannot change while it stays paused."""
        view = self.view
        return (self.visible and view is not None and view.display != "none"
                and view.state is VmState.PAUSED and self._stale)

    def _due_at(self) -> float:
        period = FAST_PERIOD if time.monotonic() < self._fast_until else PERIOD
        return self._started + period

    def _schedule(self, delay: float) -> None:
        self._stop_timer()
        # (a Textual timer of 0 s divides by zero)
        self._timer = self.set_timer(max(delay, 0.01), self._due, name="screen frame")

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.stop()
            self._timer = None

    def _update(self) -> None:
        """Start or stop the frames for the current view and visibility, and say why."""
        view = self.view
        if view is not None and view.state in (VmState.STOPPED, VmState.CRASHED):
            self._drop_frame()
        if not self.is_mounted:
            return
        if self._in_flight is None and self._polling():
            if self._timer is None:
                self._schedule(max(0.0, self._due_at() - time.monotonic()))
        elif self._in_flight is None and self._one_frame_wanted():
            self._schedule(0.0)  # at once: the screen as it stays
        else:
            self._stop_timer()
        self._show_status()

    def _due(self) -> None:
        self._timer = None
        view = self.view
        if view is None or self._in_flight is not None or \
                not (self._polling() or self._one_frame_wanted()):
            return
        self._started = time.monotonic()
        self._stale = False
        self._in_flight = view.name
        self.dumps += 1
        self.run_worker(self._take(view.name), group="screen-frame", exit_on_error=False)

    async def _take(self, name: str) -> None:
        error: str | None = None
        image: PILImage.Image | None = None
        try:
            data = await self._dump_fn(name)
            image = await asyncio.to_thread(decode_png, data)
        except HypercoreError as exc:
            error = str(exc)
        except Exception as exc:  # noqa: BLE001 - one line in the pane, details logged
            log.error("screen frame of %s failed", name, exc_info=exc)
            error = f"internal error: {type(exc).__name__}: {exc}"
        finally:
            self._in_flight = None
        if self.view is None or self.view.name != name:
            self._update()  # selection changed meanwhile: that frame is not wanted
            return
        if image is not None:
            self.error = None
            self.frame, self.frame_of = image, name
            self.image.image = image
        else:
            self.error = printable(error or "no frame", limit=300)
        self._update()

    # -- what is shown ------------------------------------------------------------------

    def _drop_frame(self) -> None:
        self.error = None
        if self.frame is None and self.frame_of is None:
            return
        self.frame = self.frame_of = None
        self.image.image = None

    def _show_status(self) -> None:
        view = self.view
        self.status.set_class(False, "-error")
        if view is None:
            line = "no VM selected"
        elif view.display == "none":
            line = f"{view.name}: no display device (display=none)"
        elif view.state is VmState.STOPPED:
            line = f"{view.name}: stopped"
        elif view.state is VmState.CRASHED:
            line = f"{view.name}: crashed (QEMU is gone)"
        elif view.state is VmState.STARTING:
            line = f"{view.name}: starting"
        elif self.error is not None:
            self.status.set_class(True, "-error")
            line = f"{view.name}: {self.error}"
        else:
            line = self._frame_line(view)
        if self.is_maximized:
            line += "   (z or Esc: back)"
        if line != self._line:
            self._line = line
            self.status.update(Text(line, no_wrap=True, overflow="ellipsis"))

    def _frame_line(self, view: VmView) -> str:
        parts = [view.name]
        if view.state is VmState.PAUSED:
            parts.append("paused")
        if self.frame is not None:
            parts.append(f"{self.frame.width}x{self.frame.height}")
        elif view.state is not VmState.PAUSED:
            parts.append("waiting for the first frame")
        parts.append(self.rendering.label)
        if view.state is not VmState.PAUSED:
            fast = time.monotonic() < self._fast_until
            parts.append(f"{1 / FAST_PERIOD:.0f} frames/s" if fast else
                         f"{1 / PERIOD:.0f} frame/s")
        return " · ".join(parts)
