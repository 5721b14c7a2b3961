"""Disk images through ``qemu-img``: create, inspect, convert, internal snapshots.

Only argv lists are run (no shell). Every path handed over is absolute, so no
file name can be taken for an option or a protocol prefix.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hypercore_tui.core.errors import InvalidInput, InvalidState, OperationFailed, Timeout

QEMU_IMG = "qemu-img"


@dataclass(frozen=True)
class ImageInfo:
    path: str
    format: str
    virtual_size: int
    actual_size: int | None
    backing_file: str | None
    snapshots: tuple[dict[str, Any], ...]


def _qemu_img() -> str:
    found = shutil.which(QEMU_IMG)
    if not found:
        raise OperationFailed("qemu-img not found: install the qemu-utils package")
    return found


def _absolute(path: Path | str) -> str:
    p = str(path)
    if not p.startswith("/"):
        raise InvalidInput(f"image path {p!r} must be absolute")
    return p


def run_qemu_img(args: Sequence[str], *, timeout: float = 120.0) -> str:
    argv = [_qemu_img(), *args]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise Timeout(f"qemu-img {args[0]} did not finish within {timeout:g}s") from None
    if proc.returncode != 0:
        message = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else ""
        message = message.removeprefix("qemu-img: ")
        if "Failed to get" in message and "lock" in message:
            raise InvalidState(f"image is in use by a running QEMU: {message}")
        if "No space left" in message:
            raise OperationFailed(f"no space left on device: {message}")
        raise OperationFailed(f"qemu-img {args[0]} failed: {message or proc.returncode}")
    return proc.stdout


def create_image(path: Path, size_bytes: int, *, fmt: str = "qcow2",
                 backing: Path | None = None, backing_fmt: str | None = None) -> None:
    args = ["create", "-q", "-f", fmt]
    if backing is not None:
        args += ["-b", _absolute(backing), "-F", backing_fmt or "qcow2"]
    args += [_absolute(path)]
    if backing is None:
        args.append(str(size_bytes))
    run_qemu_img(args)


def image_info(path: Path | str) -> ImageInfo:
    """Inspect an image; ``-U`` so that an image held by a running VM can be read."""
    out = run_qemu_img(["info", "-U", "--output=json", _absolute(path)], timeout=30)
    try:
        data = json.loads(out)
    except ValueError as exc:
        raise OperationFailed(f"qemu-img info gave unreadable output for {path}") from exc
    return ImageInfo(
        path=str(path),
        format=str(data.get("format", "")),
        virtual_size=int(data.get("virtual-size", 0)),
        actual_size=data.get("actual-size"),
        backing_file=data.get("full-backing-filename") or data.get("backing-filename"),
        snapshots=tuple(data.get("snapshots", [])),
    )
