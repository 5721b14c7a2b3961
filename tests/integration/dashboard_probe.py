"""The real dashboard (:class:`HypercoreApp` with the live backend, headless) on a host,
printing its VM list a few times a second, one JSON object a line, for the multi-host
tests: ``{"t": MONOTONIC, "rows": {KEY: [TEXT, GREYED]}, "notes": [NOTIFICATION...]}`` in
the list's order (a remote VM's key is ``HOST/NAME``, a host's header ``HOST/``). Lines on
its stdin act as the user would: ``select KEY``, ``action NAME`` (the dashboard's
``action_NAME``), ``press KEY``. Run inside a host's namespace: ``python -m
tests.integration.dashboard_probe``; ends on SIGTERM. Each frame also names the screen on
top (``"screen": "DashboardScreen"``, a dialog's class). :class:`DashboardProbe` is the
tests' side: it starts one on a host and reads its frames."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, cast

from hypercore_tui.services.context import Context
from hypercore_tui.ui.app import HypercoreApp
from hypercore_tui.ui.backend import LiveBackend

if TYPE_CHECKING:
    from .sshhosts import SshHost

EVERY = 0.2


async def main() -> None:
    ctx = Context.from_environ()
    app = HypercoreApp(LiveBackend(ctx))
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    commands: asyncio.Queue[str] = asyncio.Queue()
    loop = asyncio.get_running_loop()
    pending = b""

    def readable() -> None:  # (os.read: a buffered readline would keep a second line)
        nonlocal pending
        chunk = os.read(sys.stdin.fileno(), 4096)
        if not chunk:
            loop.remove_reader(sys.stdin.fileno())
            return
        *lines, pending = (pending + chunk).split(b"\n")
        for line in lines:
            commands.put_nowait(line.decode())

    loop.add_reader(sys.stdin.fileno(), readable)
    async with app.run_test(size=(120, 40)) as pilot:
        while not stop.is_set():
            while not commands.empty():
                verb, _, arg = commands.get_nowait().strip().partition(" ")
                if verb == "select":
                    app.dashboard.select_vm(arg)
                elif verb == "action":
                    getattr(app.dashboard, f"action_{arg}")()
                elif verb == "press":
                    await pilot.press(arg)
                await pilot.pause()  # (its messages handled before the next command)
            await pilot.pause()
            vm_list = app.dashboard.vm_list
            rows = vm_list.rows_view
            shown = {key: [vm_list.row_text(key), str(rows._lines[key].style) == "grey50"]
                     for key in vm_list.visible_names() if key in rows._lines}
            notes = [n.message for n in app._notifications]
            sys.stdout.write(json.dumps({"t": time.monotonic(), "rows": shown,
                                         "notes": notes,
                                         "screen": type(app.screen).__name__}) + "\n")
            sys.stdout.flush()
            try:
                await asyncio.wait_for(stop.wait(), EVERY)
            except TimeoutError:
                pass


Rows = dict[str, list[object]]


class DashboardProbe:
    """``dashboard_probe.py`` on a host: the real dashboard's VM list, as it changes."""

    def __init__(self, host: SshHost) -> None:
        self.proc = host.popen([sys.executable, "-m", "tests.integration.dashboard_probe"],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
        self.frames: list[dict[str, object]] = []
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            self.frames.append(json.loads(raw))

    def wait_for(self, what: str, timeout: float, test: Callable[[Rows], bool], *,
                 since: float = 0.0) -> tuple[float, Rows]:
        """The first frame since ``since`` whose rows pass ``test``: (when, rows)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for frame in list(self.frames):
                rows = cast(Rows, frame["rows"])
                if float(str(frame["t"])) >= since and test(rows):
                    return float(str(frame["t"])), rows
            time.sleep(0.05)
        last = self.frames[-1]["rows"] if self.frames else None
        raise AssertionError(f"no {what} within {timeout} s; last rows: {last}")

    def do(self, command: str) -> None:
        """``select KEY``, ``action NAME``, ``press KEY``: as the user would."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(command.encode() + b"\n")
        self.proc.stdin.flush()

    def until(self, what: str, timeout: float, test: Callable[[], bool]) -> None:
        """Wait until ``test()`` (it reads the frames) holds."""
        deadline = time.monotonic() + timeout
        while not test():
            if time.monotonic() > deadline:
                raise AssertionError(f"no {what} within {timeout} s; last frame: "
                                     f"{self.frames[-1] if self.frames else None}")
            time.sleep(0.05)

    def screen(self) -> str:
        """The screen on top in the latest frame (a dialog's class name)."""
        return str(self.frames[-1].get("screen")) if self.frames else ""

    def notes(self) -> list[str]:
        return [str(n) for n in cast(list[object], self.frames[-1]["notes"])] \
            if self.frames else []

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)


if __name__ == "__main__":
    asyncio.run(main())
