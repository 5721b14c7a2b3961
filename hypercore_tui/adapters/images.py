"""Disk images through ``qemu-img``: create, inspect, convert, internal snapshots.

Only argv lists are run (no shell). Every path handed over is absolute, so no
file name can be taken for an option or a protocol prefix.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hypercore_tui.core.errors import (
    InvalidInput,
    InvalidState,
    NoSpace,
    OperationFailed,
    Timeout,
    says_no_space,
)
from hypercore_tui.core.progress import Progress
from hypercore_tui.core.snapshots import (
    SnapshotInfo,
    parse_convert_progress,
    snapshots_from_qemu,
)

QEMU_IMG = "qemu-img"
#: How every "disk full" message from qemu-img starts (raised as :class:`NoSpace`).
NO_SPACE = "no space left on device"


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


def run_qemu_img(args: Sequence[str], *, timeout: float = 120.0,
                 subject: str | None = None) -> str:
    """Run ``qemu-img ARGS``; its last error line becomes the raised message.

    ``subject`` (an image path) names the image in the "in use" error.
    """
    argv = [_qemu_img(), *args]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise Timeout(f"qemu-img {args[0]} did not finish within {timeout:g}s") from None
    except OSError as exc:
        raise OperationFailed(f"cannot run qemu-img: {exc.strerror or exc}") from None
    if proc.returncode != 0:
        raise _qemu_img_error(args[0], proc.stderr, proc.returncode, subject)
    return proc.stdout


def _qemu_img_error(command: str, stderr: str, returncode: int,
                    subject: str | None) -> OperationFailed | InvalidState:
    lines = [ln.strip().removeprefix("qemu-img: ") for ln in stderr.splitlines() if ln.strip()]
    # QEMU's image lock is the last line of defence: "Failed to get "write" lock" is
    # followed by "Is another process using the image [...]?", so look at every line.
    if any("Failed to get" in ln and "lock" in ln for ln in lines):
        what = f"image {subject}" if subject else "the image"
        return InvalidState(f"{what} is in use by a running QEMU (qemu-img could not lock it); "
                            "refusing to touch it")
    message = lines[-1] if lines else f"exit status {returncode}"
    if any(says_no_space(ln) for ln in lines):
        return NoSpace(f"{NO_SPACE}: {message}")
    return OperationFailed(f"qemu-img {command} failed: {message}")


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


# -- internal snapshots of a qcow2 image that no QEMU holds ---------------------------
#
# Callers check that the VM is stopped and hold its lock; without ``-U`` qemu-img
# takes QEMU's image lock itself, so an image a running QEMU holds is refused
# ("Failed to get "write" lock" -> InvalidState) rather than damaged.


def _forced_format(path: Path | str, fmt: str) -> str:
    """A ``json:`` filename that opens ``path`` as ``fmt`` with no format probing.

    ``qemu-img snapshot`` has no ``-f``; probing could take a raw image whose guest
    wrote a qcow2 header for a qcow2 image.
    """
    return "json:" + json.dumps({"driver": fmt, "file": {"driver": "file",
                                                         "filename": _absolute(path)}})


def list_snapshots(path: Path | str, *, fmt: str = "qcow2") -> list[SnapshotInfo]:
    """Internal snapshots of a stopped VM's image (oldest first)."""
    out = run_qemu_img(["info", "--output=json", "-f", fmt, _absolute(path)], timeout=60,
                       subject=str(path))
    try:
        data = json.loads(out)
    except ValueError:
        raise OperationFailed(f"qemu-img info gave unreadable output for {path}") from None
    records = data.get("snapshots", []) if isinstance(data, dict) else []
    return snapshots_from_qemu(records if isinstance(records, list) else [])


def _snapshot(flag: str, path: Path | str, tag: str, timeout: float) -> None:
    try:
        run_qemu_img(["snapshot", "-q", flag, tag, _forced_format(path, "qcow2")],
                     timeout=timeout, subject=str(path))
    except OperationFailed as exc:
        if exc.message.startswith(NO_SPACE):
            # A write refused half-way leaves clusters allocated but unused (no harm to
            # data, but `qemu-img check` reports them): give them back. Rewrites only
            # refcounts already allocated, so it works on a full disk.
            with contextlib.suppress(OperationFailed, InvalidState):
                run_qemu_img(["check", "-q", "-r", "leaks", "-f", "qcow2", _absolute(path)],
                             timeout=timeout, subject=str(path))
        raise


def snapshot_create(path: Path | str, tag: str, *, timeout: float = 600.0) -> None:
    """``qemu-img snapshot -c``: a disk-only internal snapshot of a qcow2 image."""
    _snapshot("-c", path, tag, timeout)


def snapshot_apply(path: Path | str, tag: str, *, timeout: float = 600.0) -> None:
    """``qemu-img snapshot -a``: revert a qcow2 image to the snapshot's disk contents."""
    _snapshot("-a", path, tag, timeout)


def snapshot_delete(path: Path | str, tag: str, *, timeout: float = 600.0) -> None:
    """``qemu-img snapshot -d``."""
    _snapshot("-d", path, tag, timeout)


#: ``qemu-img check`` exit codes (qemu-img(1)): 2 and 3 are findings, not failures.
CHECK_CLEAN, CHECK_ERRORS, CHECK_LEAKS = 0, 2, 3
#: Longest qemu-img detail line kept for a message.
_MAX_DETAIL = 200


@dataclass(frozen=True)
class CheckResult:
    """What ``qemu-img check`` found (left, after a repair) and repaired."""

    status: int  # CHECK_CLEAN / CHECK_ERRORS / CHECK_LEAKS
    corruptions: int
    leaks: int
    corruptions_fixed: int
    leaks_fixed: int
    detail: str | None  # qemu-img's first ERROR line (else its first remark)

    @property
    def clean(self) -> bool:
        return self.status == CHECK_CLEAN


def check_qcow2(path: Path | str, *, repair: str | None = None,
                timeout: float = 600.0) -> CheckResult:
    """``qemu-img check -f qcow2 [-r leaks|all]`` of an image no QEMU holds.

    No ``-U``: an image a running QEMU holds is refused (InvalidState), never read while
    it moves nor repaired under it. Errors (exit 2) and leaks (exit 3) are returned; a
    check that could not finish (exit 1) raises. With ``repair`` the counts left are
    those after the repair (qemu-img re-checks by itself).
    """
    if repair not in (None, "leaks", "all"):
        raise ValueError(f"repair must be leaks or all, not {repair!r}")
    args = ["check", "--output=json", "-f", "qcow2"]
    if repair:
        args += ["-r", repair]
    argv = [_qemu_img(), *args, _absolute(path)]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                              check=False, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise Timeout(f"qemu-img check did not finish within {timeout:g}s") from None
    except OSError as exc:
        raise OperationFailed(f"cannot run qemu-img: {exc.strerror or exc}") from None
    if proc.returncode not in (CHECK_CLEAN, CHECK_ERRORS, CHECK_LEAKS):
        raise _qemu_img_error("check", proc.stderr, proc.returncode, str(path))
    try:
        data = json.loads(proc.stdout)
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise OperationFailed(f"qemu-img check gave unreadable output for {path}")

    def count(key: str) -> int:
        value = data.get(key, 0)
        return value if isinstance(value, int) and not isinstance(value, bool) else 0

    lines = [ln.strip() for ln in proc.stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("ERROR")]
    detail = (errors or lines)[0] if errors or lines else None
    return CheckResult(status=proc.returncode, corruptions=count("corruptions"),
                       leaks=count("leaks"), corruptions_fixed=count("corruptions-fixed"),
                       leaks_fixed=count("leaks-fixed"),
                       detail=detail[:_MAX_DETAIL] if detail else None)


def qcow2_cluster_size(path: Path | str) -> int:
    """The image's cluster size in bytes (``qemu-img info``, format forced)."""
    out = run_qemu_img(["info", "--output=json", "-f", "qcow2", _absolute(path)], timeout=60,
                       subject=str(path))
    try:
        size = json.loads(out).get("cluster-size")
    except (ValueError, AttributeError):
        size = None
    if not isinstance(size, int) or isinstance(size, bool) or size <= 0:
        raise OperationFailed(f"qemu-img info gave no cluster size for {path}")
    return size


# -- copies ---------------------------------------------------------------------------


async def convert_image(src: Path | str, dst: Path | str, *, src_fmt: str,
                        dst_fmt: str = "qcow2",
                        progress: Progress | None = None,
                        timeout: float | None = None) -> None:
    """``qemu-img convert -p``: copy ``src`` into a new image ``dst``, reporting a fraction.

    Runs as an asyncio subprocess (nothing blocks the loop); progress is parsed from
    ``-p`` output and reported on the loop's thread. On a timeout, a failure or
    cancellation the child is killed; removing ``dst`` is the caller's job.
    """
    argv = [_qemu_img(), "convert", "-p", "-f", src_fmt, "-O", dst_fmt, _absolute(src),
            _absolute(dst)]
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE)
    except OSError as exc:
        raise OperationFailed(f"cannot run qemu-img: {exc.strerror or exc}") from None
    assert proc.stdout is not None and proc.stderr is not None
    stdout, stderr = proc.stdout, proc.stderr

    async def pump_progress() -> None:
        while chunk := await stdout.read(4096):
            value = parse_convert_progress(chunk.decode(errors="replace"))
            if value is not None and progress is not None:
                progress("copying disk", value, 1.0)

    async def run() -> bytes:
        _, err = await asyncio.gather(pump_progress(), stderr.read())
        await proc.wait()
        return err

    try:
        err = await asyncio.wait_for(run(), timeout)
    except TimeoutError:
        raise Timeout(f"qemu-img convert did not finish within {timeout:g}s") from None
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(proc.wait(), 10)
    if proc.returncode != 0:
        raise _qemu_img_error("convert", err.decode(errors="replace"), proc.returncode or 1,
                              str(src))
