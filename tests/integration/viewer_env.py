"""What the display tests share: a private Xvfb for remote-viewer, its windows, QMP
questions to a VM, the X clipboard of a display."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from hypercore_tui.adapters.qmp import qmp_session

from ..conftest import HcEnv
from ..helpers import wait_until


@contextlib.contextmanager
def private_xvfb() -> Iterator[str]:
    """An Xvfb of its own (no TCP, 1024x768); its DISPLAY. Stopped afterwards (the
    clients still on it, xclip's selection owners included, then end)."""
    number = next(n for n in range(90, 200) if not Path(f"/tmp/.X11-unix/X{n}").exists()
                  and not Path(f"/tmp/.X{n}-lock").exists())
    proc = subprocess.Popen(["Xvfb", f":{number}", "-screen", "0", "1024x768x24",
                             "-nolisten", "tcp"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        wait_until("Xvfb to listen", lambda: Path(f"/tmp/.X11-unix/X{number}").exists(), 10)
        yield f":{number}"
    finally:
        proc.terminate()
        proc.wait(5)


def qmp(env: HcEnv, name: str, command: str) -> Any:
    """One QMP command's answer from a running VM."""
    async def ask() -> Any:
        async with qmp_session(env.ctx.vm_paths(name).qmp_socket, vm_name=name) as session:
            return await session.execute(command)
    return asyncio.run(ask())


def x_windows(display: str) -> dict[str, str]:
    """Top-level window titles → ids on ``display``."""
    out = subprocess.run(["xwininfo", "-root", "-tree"], env={**os.environ, "DISPLAY": display},
                         capture_output=True, text=True, timeout=10, check=True).stdout
    return {m[2]: m[1] for m in re.finditer(r'^\s+(0x[0-9a-f]+) "([^"]*)"', out, re.M)}


def viewer_window(display: str, name: str) -> str | None:
    """The id of remote-viewer's window for VM ``name`` (titled ``NAME (hypercore) (1)``:
    remote-viewer adds the monitor's number)."""
    title = f"{name} (hypercore)"
    return next((wid for found, wid in x_windows(display).items()
                 if found.startswith(title)), None)


def x_clipboard(display: str, text: str | None = None) -> str:
    """Write ``text`` to ``display``'s CLIPBOARD (xclip stays as its owner), or read it
    ("" when nobody owns it)."""
    env = {**os.environ, "DISPLAY": display}
    if text is not None:
        subprocess.run(["xclip", "-selection", "clipboard", "-i"], input=text.encode(),
                       env=env, check=True, timeout=10, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        return text
    proc = subprocess.run(["xclip", "-selection", "clipboard", "-o"], env=env,
                          capture_output=True, timeout=10, check=False)
    return proc.stdout.decode(errors="replace") if proc.returncode == 0 else ""
