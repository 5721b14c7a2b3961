"""The clipboard's remembered guest session: what the script says, the record, and when the
host keeps, replaces or forgets it (no guest: the guest's own checks are in
tests/integration/test_clipboard.py and test_real_guest.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from hypercore_tui.adapters.qga import ExecResult
from hypercore_tui.core.layout import VmPaths
from hypercore_tui.services import clipboard, guest_exec, records
from hypercore_tui.services.records import CLIP_SESSION_KEYS, ClipSession

SESSION = ClipSession(pid=4242, start=123456, uid=1000, gid=1000, kind="x11", display=":0",
                      xauthority="/home/u/My Files/.Xauthority", wayland="",
                      runtime="/run/user/1000", sockets=" /tmp/.X11-unix/X0")


def stderr_for(session: ClipSession, *extra: bytes) -> bytes:
    lines = [b"hc-session=x11 :0 uid=1000", b"hc-lookup=scan"]
    lines += [f"hc-found-{key}={value}".encode() for key, value in
              zip(CLIP_SESSION_KEYS, session.args(), strict=True)]
    return b"\n".join([*lines, *extra, b"hc-method=xclip", b""])


def test_the_scripts_found_lines_round_trip_exactly() -> None:
    """Values keep their spaces; the argv order is the script's."""
    assert clipboard._found(stderr_for(SESSION)) == SESSION
    assert SESSION.args()[:5] == ["4242", "123456", "1000", "1000", "x11"]
    assert ClipSession.from_json(SESSION.to_json()) == SESSION


@pytest.mark.parametrize("extra", [
    b"hc-found-pid=1",  # said twice
    b"hc-found-colour=blue",  # not a field
    b"hc-found-pid",  # no value
])
def test_odd_found_lines_leave_nothing_to_remember(extra: bytes) -> None:
    assert clipboard._found(stderr_for(SESSION, extra)) is None


@pytest.mark.parametrize("values", [
    {"pid": "-1"}, {"pid": "4x"}, {"uid": ""}, {"start": "١٢"}, {"kind": "vnc"},
    {"display": "x" * (records.MAX_CLIP_VALUE + 1)},
])
def test_bad_values_are_refused(values: dict[str, str]) -> None:
    good = dict(zip(CLIP_SESSION_KEYS, SESSION.args(), strict=True))
    assert ClipSession.from_values({**good, **values}) is None
    missing = dict(good)
    del missing["sockets"]
    assert ClipSession.from_values(missing) is None


@pytest.mark.parametrize("data", [
    None, [], {**SESSION.to_json(), "uid": True}, {**SESSION.to_json(), "pid": -4},
    {**SESSION.to_json(), "display": 0}, {**SESSION.to_json(), "runtime": "/a\0b"},
])
def test_a_bad_record_is_no_record(data: object) -> None:
    assert ClipSession.from_json(data) is None


def done(lookup: str | None, found: ClipSession | None = None) -> clipboard.GuestClipboard:
    return clipboard.GuestClipboard(method="xclip", lookup=lookup, found=found)


def test_the_host_keeps_replaces_or_forgets_the_record(tmp_path: Path) -> None:
    paths = VmPaths("vm1", tmp_path / "vm", tmp_path / "run")
    paths.run_dir.mkdir()
    assert records.read_clip_session(paths) is None
    clipboard._remember(paths, None, done(clipboard.LOOKUP_SCAN, SESSION))
    assert records.read_clip_session(paths) == SESSION
    clipboard._remember(paths, SESSION, done(clipboard.LOOKUP_CACHED))
    assert records.read_clip_session(paths) == SESSION
    newer = ClipSession(**{**SESSION.to_json(), "pid": 5000, "start": 200000})
    clipboard._remember(paths, SESSION, done(clipboard.LOOKUP_STALE, newer))
    assert records.read_clip_session(paths) == newer
    # Several users (or only root's session, or none): nothing to name next time.
    clipboard._remember(paths, newer, done(clipboard.LOOKUP_SCAN))
    assert records.read_clip_session(paths) is None
    records.clip_session_path(paths).write_text("{not json")
    assert records.read_clip_session(paths) is None


def test_a_cached_lookup_reports_nothing_found() -> None:
    result = ExecResult(exitcode=0, signal=None, stdout=b"", stderr=stderr_for(SESSION))
    status, _ = clipboard._status_lines(result.stderr)
    assert clipboard._done(result, status).found == SESSION
    status["hc-lookup"] = clipboard.LOOKUP_CACHED
    assert clipboard._done(result, status).found is None


def test_the_script_sent_is_the_files_code_without_comments() -> None:
    """The same code lines (a third less text for qemu-ga to parse and log); it parses in
    the guests' shells."""
    import shutil
    import subprocess

    sent = clipboard.linux_script()
    text = guest_exec.script_text(clipboard.LINUX_SCRIPT)
    code = [line.strip() for line in text.splitlines()
            if line.strip() and not line.strip().startswith("#")]
    assert sent.splitlines() == code
    assert len(sent) < 0.7 * len(text)
    for shell in (["dash"], ["busybox", "sh"]):
        if shutil.which(shell[0]):
            proc = subprocess.run([*shell, "-n"], input=sent.encode(), capture_output=True,
                                  check=False, timeout=30)
            assert proc.returncode == 0, (shell, proc.stderr)
