"""The real dashboard (:class:`HypercoreApp` with the live backend, headless) on a host,
printing its VM list a few times a second, one JSON object a line, for the multi-host
tests: ``{"t": MONOTONIC, "rows": {KEY: [TEXT, GREYED]}, "notes": [NOTIFICATION...]}`` in
the list's order (a remote VM's key is ``HOST/NAME``, a host's header ``HOST/``). Lines on
its stdin act as the user would: ``select KEY``, ``action NAME`` (the dashboard's
``action_NAME``), ``press KEY``. Run inside a host's namespace: ``python -m
tests.integration.dashboard_probe``; ends on SIGTERM."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time

from hypercore_tui.services.context import Context
from hypercore_tui.ui.app import HypercoreApp
from hypercore_tui.ui.backend import LiveBackend

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
                                         "notes": notes}) + "\n")
            sys.stdout.flush()
            try:
                await asyncio.wait_for(stop.wait(), EVERY)
            except TimeoutError:
                pass


if __name__ == "__main__":
    asyncio.run(main())
