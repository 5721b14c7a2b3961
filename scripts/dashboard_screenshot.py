#!/usr/bin/env python3
"""Screenshots of the live dashboard for the docs: SVG (Textual) and PNG (rsvg-convert).

    .venv/bin/python scripts/dashboard_screenshot.py [--size 160x45] [--select NAME]
                                                     [--press KEY]... [--wait SECONDS]
                                                     OUTPUT_STEM

Runs the real dashboard headless (Textual's test driver) on the VMs of
$HYPERCORE_HOME, presses the given keys (``--press 6``: the Screen tab), waits for
history to fill the graphs, and writes OUTPUT_STEM.svg and OUTPUT_STEM.png. Start some
VMs first: the point is real figures.

rsvg-convert drops the leading and trailing no-break spaces of Textual's text
spans (their positions then drift): the PNG is made from a copy of the SVG whose
spans start and end on their first and last visible character.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from hypercore_tui.services.context import Context  # noqa: E402
from hypercore_tui.ui.app import HypercoreApp  # noqa: E402
from hypercore_tui.ui.backend import LiveBackend  # noqa: E402

NBSP = "&#160;"
SPAN = re.compile(r"<text([^>]*)>([^<]*)</text>")
CHAR = re.compile(r"&#\d+;|&\w+;|.")


def trim_spans(svg: str) -> str:
    """Move each text span's leading/trailing no-break spaces into its x and length."""

    def trim(match: re.Match[str]) -> str:
        attrs, content = match.group(1), match.group(2)
        x = re.search(r'x="([\d.]+)"', attrs)
        length = re.search(r'textLength="([\d.]+)"', attrs)
        count = len(CHAR.findall(content))
        if not x or not length or not count:
            return match.group(0)
        cell = float(length.group(1)) / count
        lead = trail = 0
        while content.startswith(NBSP):
            content, lead = content[len(NBSP):], lead + 1
        while content.endswith(NBSP):
            content, trail = content[:-len(NBSP)], trail + 1
        if not content:
            return ""
        attrs = attrs.replace(x.group(0), f'x="{float(x.group(1)) + lead * cell:.1f}"')
        attrs = attrs.replace(length.group(0),
                              f'textLength="{float(length.group(1)) - (lead + trail) * cell:.1f}"')
        return f"<text{attrs}>{content}</text>"

    return SPAN.sub(trim, svg)


async def shoot(size: tuple[int, int], select: str | None, keys: list[str], wait: float,
                svg: Path) -> None:
    ctx = Context.from_environ()
    app = HypercoreApp(LiveBackend(ctx), environ=ctx.environ)
    async with app.run_test(size=size) as pilot:
        await pilot.pause(1.0)
        if select:
            app.dashboard.select_vm(select)
        for key in keys:
            await pilot.press(key)
        await pilot.pause(wait)
        app.save_screenshot(svg.name, path=str(svg.parent))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("output", type=Path, help="output path without extension")
    parser.add_argument("--size", default="160x45", help="COLUMNSxROWS (160x45)")
    parser.add_argument("--select", metavar="NAME", help="the VM to show in detail")
    parser.add_argument("--press", metavar="KEY", action="append", default=[],
                        help="a key to press after selecting (again for more)")
    parser.add_argument("--wait", type=float, default=5.0,
                        help="seconds of live data before the shot (5)")
    args = parser.parse_args()
    columns, rows = (int(n) for n in args.size.lower().split("x"))
    svg = args.output.with_suffix(".svg")
    svg.parent.mkdir(parents=True, exist_ok=True)
    asyncio.run(shoot((columns, rows), args.select, args.press, args.wait, svg))
    with tempfile.NamedTemporaryFile("w", suffix=".svg", delete=False) as trimmed:
        trimmed.write(trim_spans(svg.read_text()))
    png = args.output.with_suffix(".png")
    subprocess.run(["rsvg-convert", trimmed.name, "-o", str(png)], check=True)
    Path(trimmed.name).unlink()
    print(f"{svg}\n{png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
