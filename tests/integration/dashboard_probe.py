"""The real dashboard (:class:`HypercoreApp` with the live backend, headless) on a host,
printing its VM list a few times a second, one JSON object a line, for the multi-host
tests: ``{"t": MONOTONIC, "rows": {KEY: [TEXT, GREYED]}}`` in the list's order (a remote
VM's key is ``HOST/NAME``, a host's header ``HOST/``). Run inside a host's namespace:
``python -m tests.integration.dashboard_probe``; ends on SIGTERM."""

from __future__ import annotations

import asyncio
import json
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
    async with app.run_test(size=(120, 40)) as pilot:
        while not stop.is_set():
            await pilot.pause()
            vm_list = app.dashboard.vm_list
            rows = vm_list.rows_view
            shown = {key: [vm_list.row_text(key), str(rows._lines[key].style) == "grey50"]
                     for key in vm_list.visible_names() if key in rows._lines}
            sys.stdout.write(json.dumps({"t": time.monotonic(), "rows": shown}) + "\n")
            sys.stdout.flush()
            try:
                await asyncio.wait_for(stop.wait(), EVERY)
            except TimeoutError:
                pass


if __name__ == "__main__":
    asyncio.run(main())
