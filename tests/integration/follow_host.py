"""Follows a host's watch stream with :class:`HostStream` (the consumer a dashboard uses)
and prints what it sees, one JSON object a line, for the multi-host tests to read:
``{"t": MONOTONIC, "status": STATE, "detail": TEXT}`` or ``{"t": ..., "line": TYPE,
"vm": NAME}``. Run inside a host's namespace: ``python -m tests.integration.follow_host
HOST``; ends on SIGTERM."""

from __future__ import annotations

import asyncio
import json
import sys
import time

from hypercore_tui.core.watchwire import WatchLine
from hypercore_tui.services.context import Context
from hypercore_tui.services.hosts import registry
from hypercore_tui.services.hosts.stream import HostStream, StreamStatus


def emit(obj: dict[str, object]) -> None:
    sys.stdout.write(json.dumps({"t": time.monotonic(), **obj}) + "\n")
    sys.stdout.flush()


def on_line(line: WatchLine) -> None:
    emit({"line": line.type, "vm": line.vm})


def on_status(status: StreamStatus) -> None:
    emit({"status": status.state.value, "detail": status.detail})


async def main(name: str) -> None:
    ctx = Context.from_environ()
    stream = HostStream(ctx, registry.get_host(ctx, name), on_line, on_status,
                        retry_delays=(0.5, 1.0))
    await stream.run()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
