"""The clipboard hub on a real Wayland session: qemu-ga on the host (no display variables
in its environment, as in a guest) and a real headless compositor with the data-control
protocol (sway 1.7 on wlroots' headless backend) run by ``nobody``, whose "desktop
session" process has WAYLAND_DISPLAY and XDG_RUNTIME_DIR. The Wayland path must find
that session from /proc, run wl-copy / wl-paste as its user in its runtime directory and
carry text byte-exact and images (image/png) both ways; an X display in the same
session (XWayland) does not make it take the X path. (The guest's watcher program on
this compositor: test_clipwatch_host.py.)
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from hypercore_tui.adapters.qga import agent_session
from hypercore_tui.services import clipboard
from hypercore_tui.services.clipboard import FALLBACK_FILE, pull_via_agent, push_via_agent
from hypercore_tui.services.clipimage import pull_image_via_agent, push_image_via_agent

from .storage_env import (
    NOBODY,
    WaylandSession,
    XSession,
    _as_user,
    png,
    start_wayland_session,
    start_x_session,
)
from .test_clipboard import ADVERSARIAL


@pytest.fixture
def wayland() -> Iterator[WaylandSession]:
    session = start_wayland_session(NOBODY)
    yield session
    session.stop()


async def test_text_both_ways_byte_exact(wayland: WaylandSession, agent_sock: Path,
                                         tmp_path: Path) -> None:
    """Every adversarial text pushed lands exactly on the Wayland clipboard (wl-paste as
    the session's user), and a pull gives it back exactly; a copy made by the user is
    pulled exactly too."""
    fallback = str(tmp_path / "fallback")
    async with agent_session(agent_sock, vm_name="host") as agent:
        for text in ADVERSARIAL:
            done = await push_via_agent(agent, text, fallback_dir=fallback)
            assert done.method == "wl", done
            assert done.session == f"wayland {wayland.display} uid={NOBODY}", done
            wayland.clipboard_becomes(text.encode("utf-8"))
            pulled = await pull_via_agent(agent, fallback_dir=fallback)
            assert (pulled.method, pulled.text) == ("wl", text), pulled
        mine = "copied in a Wayland app ✓\n\ttab"
        wayland.write_clipboard(mine.encode())
        pulled = await pull_via_agent(agent, fallback_dir=fallback)
        assert pulled.text == mine and not pulled.empty
    assert not (Path(fallback) / Path(FALLBACK_FILE).name).exists(), "the fallback was used"


async def test_a_remembered_session_is_used_and_checked(wayland: WaylandSession,
                                                      agent_sock: Path,
                                                      tmp_path: Path) -> None:
    """The session a scan found, named again: used as it is (no scan); a forged one (root's
    process, another runtime directory) is refused and scanned for again."""
    fallback = str(tmp_path / "fb")
    async with agent_session(agent_sock, vm_name="host") as agent:
        first = await push_via_agent(agent, "one", fallback_dir=fallback)
        found = first.found
        assert first.lookup == clipboard.LOOKUP_SCAN and found is not None
        assert (found.kind, found.uid, found.wayland) == ("wayland", NOBODY, wayland.display)
        again = await push_via_agent(agent, "two", fallback_dir=fallback, session=found)
        assert again.lookup == clipboard.LOOKUP_CACHED
        wayland.clipboard_becomes(b"two")
        for n, hint in enumerate([replace(found, uid=0, gid=0),
                                  replace(found, runtime="/tmp"),
                                  replace(found, wayland="wayland-99")]):
            done = await push_via_agent(agent, f"three {n}", fallback_dir=fallback,
                                        session=hint)
            assert done.lookup == clipboard.LOOKUP_STALE, hint
            assert done.found == found
            wayland.clipboard_becomes(f"three {n}".encode())


async def test_images_both_ways(wayland: WaylandSession, agent_sock: Path,
                                tmp_path: Path) -> None:
    """A PNG pushed is offered as image/png, identical; one copied by the user is pulled
    identical; an image offered only as another type is named, not carried."""
    fallback = str(tmp_path / "fb")
    picture = png(64, 48)
    async with agent_session(agent_sock, vm_name="host") as agent:
        done = await push_image_via_agent(agent, picture, fallback_dir=fallback)
        assert done.method == "wl", done
        wayland.clipboard_becomes(picture, "image/png")
        assert "image/png" in wayland.types()

        theirs = png(32, 32)
        wayland.write_clipboard(theirs, "image/png")
        pulled, _ = await pull_image_via_agent(agent, fallback_dir=fallback)
        assert pulled.data == theirs

        wayland.write_clipboard(b"BM not really a bitmap", "image/bmp")
        other, _ = await pull_image_via_agent(agent, fallback_dir=fallback)
        assert other.data is None and other.other == "image/bmp", other


async def test_wayland_is_preferred_over_its_x_display(wayland: WaylandSession,
                                                       agent_sock: Path,
                                                       tmp_path: Path) -> None:
    """A session process with both WAYLAND_DISPLAY and DISPLAY (XWayland; here a real
    Xvfb of the same user) is served on Wayland: the X clipboard is left alone."""
    x_session: XSession = start_x_session(NOBODY)
    try:
        for proc in wayland.procs[1:]:  # only the both-worlds process stays a candidate
            proc.kill()
            proc.wait(5)
        x_session.procs[-1].kill()  # (its own X-only desktop process)
        x_session.procs[-1].wait(5)
        both = subprocess.Popen(_as_user(NOBODY, ["sleep", "600"]), env={
            **wayland.client_env, "DISPLAY": x_session.display,
            "XAUTHORITY": str(x_session.xauthority)}, stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wayland.procs.append(both)
        x_session.write_clipboard(b"x side untouched")
        async with agent_session(agent_sock, vm_name="host") as agent:
            done = await push_via_agent(agent, "to wayland", fallback_dir=str(tmp_path))
        assert done.method == "wl" and (done.session or "").startswith("wayland "), done
        wayland.clipboard_becomes(b"to wayland")
        assert x_session.read_clipboard() == b"x side untouched"
    finally:
        x_session.stop()

