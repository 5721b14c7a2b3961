"""SPICE's agent end to end: the real Debian guest (spice-vdagent in hcuser's X session)
with --display spice (rsb of the shared desktop pair, the ``desktop_pair`` fixture: no
boot of its own), a real remote-viewer started by `hypercore display` on a private Xvfb
here, gone again before the pair's next module. Text copied on the viewer's display is
what the guest's clipboard holds (read with `hypercore clip pull`), and the other way
round; a file dropped on the viewer's window (a real XDND drop,
tests/integration/xdnd_drop.py) lands in ~/Downloads, equal."""

from __future__ import annotations

import dataclasses
import hashlib
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ..conftest import HcEnv
from ..helpers import wait_until
from .clipsync_env import PAIR_EXTRA
from .real_guest import USER
from .storage_env import guest_sh
from .viewer_env import private_xvfb, qmp, viewer_window, x_clipboard

pytestmark = [pytest.mark.qemu, pytest.mark.timeout(420)]

VM = "rsb"


@dataclasses.dataclass(frozen=True)
class Viewer:
    env: HcEnv  # the VM's home, DISPLAY naming the viewer's Xvfb
    display: str


@pytest.fixture(scope="module")
def viewer(desktop_pair: HcEnv) -> Iterator[Viewer]:
    """rsb (SPICE display, X session up); remote-viewer on it on an Xvfb, gone after."""
    assert PAIR_EXTRA[VM] == ("--display", "spice")
    with private_xvfb() as display:
        env = HcEnv(desktop_pair.home, desktop_pair.runtime,
                    desktop_pair.environ | {"DISPLAY": display})
        shown = env.run("display", VM, check=True)
        assert b"remote-viewer started on spice+unix://" in shown.stdout, shown.stdout
        # The guest's spice-vdagentd opened its port and the agent serves the viewer.
        started = time.monotonic()
        wait_until("the SPICE agent", lambda: qmp(env, VM, "query-spice")
                   .get("mouse-mode") == "client", 60,
                   show=lambda: str(qmp(env, VM, "query-spice")))
        print(f"\nSPICE viewer served by the guest's agent after "
              f"{time.monotonic() - started:.1f}s")
        yield Viewer(env, display)
    # The viewer dies with its Xvfb: the pair's next module sees no SPICE client.
    wait_until("the viewer to leave", lambda: not qmp(env, VM, "query-spice").get("channels"),
               30, show=lambda: str(qmp(env, VM, "query-spice")))


def test_the_viewers_clipboard_reaches_the_guest_and_back(viewer: Viewer) -> None:
    env = viewer.env
    copied = x_clipboard(viewer.display, f"from the viewer's side {secrets.token_hex(4)} ✓")
    pulled: list[str] = []

    def guest_has_it() -> bool:
        proc = env.run("clip", "pull", VM)
        pulled.append(proc.stdout.decode(errors="replace") or proc.stderr.decode())
        return proc.returncode == 0 and pulled[-1] == copied

    seconds = wait_until("the guest's clipboard to hold the viewer's copy", guest_has_it,
                         30, show=lambda: f"pulled {pulled[-3:]}", step=0.5)
    pushed = f"from the guest {secrets.token_hex(4)} ✓"
    env.run("clip", "push", VM, "--text", pushed, check=True)
    back = wait_until("the viewer's display to hold the guest's copy",
                      lambda: x_clipboard(viewer.display) == pushed, 30,
                      show=lambda: repr(x_clipboard(viewer.display)), step=0.5)
    print(f"SPICE clipboard: viewer -> guest {seconds:.1f}s, guest -> viewer {back:.1f}s")


DROP = Path(__file__).with_name("xdnd_drop.py")


def test_a_file_dropped_on_the_viewer_lands_in_the_guest(viewer: Viewer,
                                                        tmp_path: Path) -> None:
    env = viewer.env
    dropped = tmp_path / "rapport final ✓.bin"
    dropped.write_bytes(secrets.token_bytes(300_000))
    want = hashlib.sha256(dropped.read_bytes()).hexdigest()
    window = viewer_window(viewer.display, VM)
    assert window is not None
    started = time.monotonic()
    drop = subprocess.run([sys.executable, str(DROP), viewer.display, window, str(dropped)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert drop.returncode == 0, drop.stderr  # the viewer took the drop
    landed = f"/home/{USER}/Downloads/{dropped.name}"
    sums: list[str] = []

    def arrived() -> bool:
        proc = guest_sh(env, VM, 'sha256sum "$1" 2>/dev/null', landed, check=False)
        sums.append(proc.stdout.decode(errors="replace"))
        return sums[-1].split(" ")[0] == want

    wait_until("the dropped file in the guest's ~/Downloads", arrived, 60,
               show=lambda: f"sha256sum said {sums[-3:]}", step=0.5)
    owner = guest_sh(env, VM, 'stat -c %U "$1"', landed).stdout.decode().strip()
    assert owner == USER
    print(f"SPICE drop: 300 kB file in the guest after {time.monotonic() - started:.1f}s")
