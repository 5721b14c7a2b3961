"""The Screen tab against one real TCG test guest (shared by the module): a known pattern
written to the guest's VGA console is in the screendump, the half-block picture is the
screendump scaled to the pane, the Kitty and Sixel escape sequences textual-image makes
of it are well-formed and sized to the pane, and the real dashboard in real tmux shows
half-blocks for the running VM and "stopped" for a stopped one.

The guest boots its bzImage (``vmlinuz``): booted through the PVH entry (``vmlinux``,
what the other tests use) the kernel gets no VGA console, and /dev/tty1 draws nothing.
"""

from __future__ import annotations

import base64
import io
import re
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from PIL import Image, ImageChops
from textual.geometry import Region
from textual.pilot import Pilot

from hypercore_tui.services.context import Context
from hypercore_tui.ui.app import HypercoreApp
from hypercore_tui.ui.backend import LiveBackend
from hypercore_tui.ui.widgets.screen_pane import ScreenPane

from ..conftest import GuestImage, HcEnv, private_hc_env
from ..helpers import Tmux, halfblock_image, strip_cells, wait_until, wait_until_async

pytestmark = [pytest.mark.qemu, pytest.mark.timeout(300)]

VM, STOPPED_VM = "scr", "off"
#: VGA text mode: 80x25 cells of 9x16 pixels. The pattern: a red block over cells
#: (10..49, 8..16), a line of text at row 2, the cursor hidden (it blinks).
RED_BLOCK = (10 * 9, 8 * 16, 50 * 9, 17 * 16)  # pixels: left, top, right, bottom
PATTERN = ("\033[?25l\033[2J\033[H\n\nHYPERCORE SCREEN TEST 0123456789\n"
           + "".join(f"\033[{row + 1};11H\033[41m{' ' * 40}\033[0m" for row in range(8, 17)))
PANE = (100, 30)  # the dashboard's size for the in-process runs


@dataclass(frozen=True)
class ScreenVm:
    env: HcEnv
    name: str
    blank: Image.Image  # the screen before the pattern
    pattern: Image.Image  # ... and with it


def dump(env: HcEnv, name: str) -> Image.Image:
    """`hypercore screenshot NAME -`: the PNG on stdout."""
    data = env.run("screenshot", name, "-", check=True).stdout
    return Image.open(io.BytesIO(data)).convert("RGB")


def red(pixel: tuple[int, ...]) -> bool:
    r, g, b = pixel[:3]
    return r > 120 and g < 50 and b < 50


@pytest.fixture(scope="module")
def screen_vm(test_guest: GuestImage) -> Iterator[ScreenVm]:
    with private_hc_env() as env:
        bzimage = test_guest.directory / "vmlinuz"
        for name in (VM, STOPPED_VM):
            env.run("create-vm", name, "256", "1", "--disk-size", "64M", "--kernel",
                    str(bzimage), "--initrd", str(test_guest.initrd),
                    f"--append={test_guest.append}", check=True)
        env.run("boot-vm", VM, "--wait-agent", "90", check=True, timeout=150)
        env.run("exec", VM, "--", "/bin/sh", "-c", "printf '\\033[?25l\\033[2J' > /dev/tty1",
                check=True)
        blank = dump(env, VM)
        env.run("exec", VM, "--", "/bin/sh", "-c", 'printf "$1" > /dev/tty1', "sh",
                PATTERN.replace("\033", "\\033"), check=True)
        shots: list[Image.Image] = []
        wait_until("the pattern on the VGA screen",
                   lambda: shots.append(dump(env, VM)) or red(shots[-1].getpixel((270, 200))),
                   10)
        yield ScreenVm(env, VM, blank, shots[-1])
        env.run("stop-vm", VM, "--force")


def test_pattern_on_the_vga_console_is_in_the_screendump(screen_vm: ScreenVm) -> None:
    before, after = screen_vm.blank, screen_vm.pattern
    assert after.size == (720, 400)
    changed = ImageChops.difference(before, after).getbbox()
    assert changed is not None
    left, top, right, bottom = changed
    # Only the text area changed: the text line (row 2) to the bottom of the red block.
    assert left == 0 and 2 * 16 <= top < 3 * 16, changed  # (glyphs start below the top)
    assert right <= RED_BLOCK[2] and bottom == RED_BLOCK[3], changed
    x0, y0, x1, y1 = RED_BLOCK
    assert all(red(after.getpixel((x, y))) for x in (x0, x1 - 1) for y in (y0, y1 - 1))
    assert not red(after.getpixel((x0 - 1, y0))) and not red(after.getpixel((x0, y1)))
    assert after.crop((0, 2 * 16, 32 * 9, 3 * 16)).getbbox() is not None  # the text drew


# -- the real dashboard, in process (LiveBackend, Textual's virtual terminal) -------------


def dashboard(screen_vm: ScreenVm, mode: str) -> HypercoreApp:
    environ = {**screen_vm.env.environ, "HYPERCORE_SCREEN_MODE": mode}
    return HypercoreApp(LiveBackend(Context.from_environ(environ)), environ=environ)


async def shown_frame(pilot: Pilot[None], app: HypercoreApp) -> ScreenPane:
    """The Screen tab of the test VM, once it shows a frame."""
    await wait_until_async("the VM listed", lambda: VM in app.dashboard.views, 20,
                           pause=pilot.pause)
    app.dashboard.select_vm(VM)
    await pilot.press("6")
    pane = app.dashboard.screen_pane
    await wait_until_async("a frame", lambda: pane.frame is not None, 20,
                           lambda: str(pane.status.content), pause=pilot.pause)
    await pilot.pause(0.1)
    return pane


def pane_fit(pane: ScreenPane) -> tuple[int, int]:
    """The image's size in cells: within the pane's frame area, filling one side, the
    screen's aspect kept (cells of 10x20 px without a terminal to ask)."""
    columns, rows = pane.image.content_size
    area = pane.query_one("#screen-frame").content_size
    assert columns <= area.width and rows <= area.height
    assert columns == area.width or rows == area.height, ((columns, rows), area)
    assert abs((columns * 10) / (rows * 20) - 720 / 400) < 0.15, (columns, rows)
    return columns, rows


async def test_halfblock_picture_is_the_screendump_scaled(screen_vm: ScreenVm) -> None:
    app = dashboard(screen_vm, "halfblock")
    async with app.run_test(size=PANE) as pilot:
        pane = await shown_frame(pilot, app)
        assert pane.frame is not None
        # The frame is the screen the CLI dumped (the cursor is hidden: nothing blinks).
        assert ImageChops.difference(pane.frame, screen_vm.pattern).getbbox() is None
        columns, rows = pane_fit(pane)
        shown = halfblock_image(strip_cells(pane.image.render_lines(
            Region(0, 0, columns, rows))))
        expected = screen_vm.pattern.resize((columns, 2 * rows))
        assert shown.tobytes() == expected.tobytes()  # type: ignore[attr-defined]
        x0, y0, x1, y1 = RED_BLOCK
        middle = ((x0 + x1) / 2 * columns / 720, (y0 + y1) / 2 * 2 * rows / 400)
        assert red(shown.getpixel((int(middle[0]), int(middle[1]))))  # type: ignore[attr-defined]
        assert "scr · 720x400 · half-blocks · 1 frame/s" in str(pane.status.content)


APC = re.compile(r"\x1b_G([^;\x1b]*)(?:;([^\x1b]*))?\x1b\\")


async def test_kitty_escapes_carry_the_pixels_sized_to_the_pane(
        screen_vm: ScreenVm, monkeypatch: pytest.MonkeyPatch) -> None:
    written = io.StringIO()
    monkeypatch.setattr(sys, "__stdout__", written)  # textual-image writes Kitty's APCs there
    app = dashboard(screen_vm, "kitty")
    async with app.run_test(size=PANE) as pilot:
        pane = await shown_frame(pilot, app)
        columns, rows = pane_fit(pane)
        await wait_until_async("the image sent", lambda: "a=p" in written.getvalue(), 5,
                               pause=pilot.pause)
        placeholders = "".join(s.text for strip in pane.image.render_lines(
            Region(0, 0, columns, rows)) for s in strip)
    text = written.getvalue()
    messages = [(dict(kv.split("=", 1) for kv in m.group(1).split(",")), m.group(2) or "")
                for m in APC.finditer(text)]
    assert "".join(m.group(0) for m in APC.finditer(text)) == text  # nothing else written
    # The first image: chunks of base64 (m=1 but the last, m=0), then its placement.
    transfer = []
    for keys, payload in messages:
        if keys.get("a") == "p":
            placement = keys
            break
        transfer.append((keys, payload))
    assert transfer, messages
    image_id = transfer[0][0]["i"]
    assert all(k["i"] == image_id and k.get("t", "d") == "d" and k["f"] == "100"
               for k, _ in transfer)  # direct transmission (t=d, the default), PNG
    assert [k["m"] for k, _ in transfer] == ["1"] * (len(transfer) - 1) + ["0"]
    assert all(len(p) <= 4096 and re.fullmatch(r"[A-Za-z0-9+/=]+", p) for _, p in transfer)
    png = base64.b64decode("".join(p for _, p in transfer), validate=True)
    sent = Image.open(io.BytesIO(png)).convert("RGB")
    assert sent.size == (columns * 10, rows * 20)  # the pane's cells in pixels
    assert ImageChops.difference(sent, screen_vm.pattern.resize(sent.size)).getbbox() is None
    assert (placement["i"], placement["c"], placement["r"], placement["U"]) == \
        (image_id, str(columns), str(rows), "1")
    assert placeholders.count("\U0010eeee") == columns * rows  # Kitty's placeholder cells


SIXEL_TOKEN = re.compile(r"#(\d+)(?:;2;(\d+);(\d+);(\d+))?|!(\d+)([?-~])|([?-~])|(\$)|(-)")


def decode_sixel(data: str) -> Image.Image:
    """A Sixel DCS sequence (raster attributes, colour registers, bands) as an image;
    fails on anything not well-formed."""
    assert data.startswith("\x1bP") and data.endswith("\x1b\\"), data[:20]
    params, q, body = data[2:-2].partition("q")
    assert q and re.fullmatch(r"[0-9;]*", params), params
    raster = re.match(r'"1;1;(\d+);(\d+)', body)
    assert raster, body[:20]
    width, height = int(raster.group(1)), int(raster.group(2))
    image = Image.new("RGB", (width, height))
    colours: dict[int, tuple[int, int, int]] = {}
    colour, x, band, at = None, 0, 0, raster.end()
    for token in SIXEL_TOKEN.finditer(body, at):
        assert token.start() == at, f"not Sixel at {at}: {body[at:at + 20]!r}"
        at = token.end()
        number, r, g, b, repeat, repeated, single, cr, nl = token.groups()
        if number is not None:
            colour = int(number)
            if r is not None:
                assert max(int(r), int(g), int(b)) <= 100
                colours[colour] = (round(int(r) * 2.55), round(int(g) * 2.55),
                                   round(int(b) * 2.55))
            assert colour in colours
        elif cr:
            x = 0
        elif nl:
            x, band = 0, band + 1
        else:
            char, count = (repeated, int(repeat)) if repeat else (single, 1)
            bits = ord(char) - 63
            assert colour is not None and x + count <= width, (x, count, width)
            for dx in range(count):
                for row in range(6):
                    y = band * 6 + row
                    if bits >> row & 1 and y < height:
                        image.putpixel((x + dx, y), colours[colour])
            x += count
    assert at == len(body), body[at:at + 20]
    assert (band + 1) * 6 >= height
    return image


async def test_sixel_sequence_is_well_formed_and_sized_to_the_pane(
        screen_vm: ScreenVm) -> None:
    app = dashboard(screen_vm, "sixel")
    async with app.run_test(size=PANE) as pilot:
        pane = await shown_frame(pilot, app)
        columns, rows = pane_fit(pane)
        await pilot.pause(0.2)
        inner = pane.image.children[0]  # textual-image's Sixel widget draws in a child
        sixels = [s.text for strip in inner.render_lines(Region(0, 0, columns, rows))
                  for s in strip if s.text.startswith("\x1bP")]
    assert len(sixels) == 1
    picture = decode_sixel(sixels[0])
    assert picture.size == (columns * 10, rows * 20)
    expected = screen_vm.pattern.resize(picture.size)
    x0, y0, x1, y1 = (round(v * picture.width / 720) if i % 2 == 0 else
                      round(v * picture.height / 400) for i, v in enumerate(RED_BLOCK))
    assert red(picture.getpixel(((x0 + x1) // 2, (y0 + y1) // 2)))
    assert not red(picture.getpixel((x0 // 2, (y0 + y1) // 2)))
    # Sixel's palette (at most 256 colours, 0-100 per channel) is close to the frame.
    diff = ImageChops.difference(picture, expected).convert("L")
    histogram = diff.histogram()
    assert sum(histogram[24:]) / (picture.width * picture.height) < 0.01


# -- the real dashboard in real tmux ----------------------------------------------------------


def test_screen_tab_in_tmux_half_blocks_and_stopped(screen_vm: ScreenVm) -> None:
    assert shutil.which("tmux"), "tmux is required (scripts/setup.sh installs it)"
    tmux = Tmux()
    try:
        tmux.start_dashboard(screen_vm.env.environ, width=100, height=30)
        wait_until("the VMs listed", lambda: "▶ running" in tmux.screen(), 20,
                   show=tmux.screen)
        tmux.keys("6")  # "off" is selected first (alphabetical): stopped
        wait_until("the stopped VM said", lambda: f"{STOPPED_VM}: stopped" in tmux.screen(),
                   10, show=tmux.screen)
        assert "▀" not in tmux.screen()
        tmux.keys("Down")
        wait_until("half-blocks of the running VM",
                   lambda: tmux.screen().count("▀") > 500, 15, show=tmux.screen)
        assert f"{VM} · 720x400 · half-blocks · 1 frame/s" in tmux.screen()
    finally:
        tmux.kill()
