"""The guest scripts as files (run here under the guests' shells, no VM) and "no space"
raised as a type where it is first seen (their real paths: tests/integration/test_transfer,
test_disk_full)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from hypercore_tui.adapters.fs import write_all
from hypercore_tui.adapters.images import _qemu_img_error
from hypercore_tui.adapters.qga import AgentClient, AgentCommandError, AgentNoSpace, ExecResult
from hypercore_tui.core.errors import NoSpace, OperationFailed
from hypercore_tui.services import guest_exec

GUEST_DIR = Path(guest_exec.__file__).parent.parent / "guest"
SCRIPTS = sorted(p.name for p in GUEST_DIR.glob("*.sh"))
#: The guests' shells: busybox ash (the test guest) and dash (Debian's /bin/sh).
SHELLS = [sh for sh in (["dash"], ["busybox", "sh"]) if shutil.which(sh[0])]


def run(shell: list[str], script: str, *args: str) -> subprocess.CompletedProcess[bytes]:
    """As guest_exec runs it: sh -c TEXT NAME ARGS, PATH=/usr/bin:/bin."""
    return subprocess.run([*shell, "-c", guest_exec.script_text(script), "hypercore-cp", *args],
                          capture_output=True, env={"PATH": "/usr/bin:/bin"}, check=False,
                          timeout=30)


def test_every_script_is_a_documented_posix_sh_file() -> None:
    """9 scripts x (shebang, header naming argv, parses in each guest shell)."""
    assert len(SCRIPTS) == 9 and SHELLS
    for name in SCRIPTS:
        text = guest_exec.script_text(name)
        assert text.startswith("#!/bin/sh\n# "), name
        assert "argv:" in text.split("\nset -u\n", 1)[0], name
        for shell in SHELLS:
            proc = subprocess.run([*shell, "-n", str(GUEST_DIR / name)], capture_output=True,
                                  check=False)
            assert proc.returncode == 0, (shell, name, proc.stderr)


@pytest.mark.parametrize("shell", SHELLS, ids=lambda s: s[0])
def test_prepare_scripts_under_the_guest_shells(shell: list[str], tmp_path: Path) -> None:
    """2 shells x 4 cases: into a directory, into the share (direct), a missing directory,
    a source file's size and mode."""
    (tmp_path / "dir").mkdir()
    share = tmp_path / "share"
    (share / "sub").mkdir(parents=True)
    into = run(shell, "cp-prepare-destination.sh", f"{tmp_path}/dir/", "a b.txt", "t0k", "", "0")
    values = guest_exec.parse_out(into.stdout)
    assert into.returncode == 0, into.stderr
    assert values["final"] == f"{tmp_path}/dir/a b.txt"
    assert values["tmp"] == f"{tmp_path}/dir/.hypercore-t0k.part"
    assert os.stat(values["tmp"]).st_mode & 0o777 == 0o600
    assert len(values["free"].split()) == 2
    direct = run(shell, "cp-prepare-destination.sh", f"{share}/sub", "x", "t1", str(share), "1")
    assert guest_exec.parse_out(direct.stdout)["share_rel"] == "/sub/x"
    assert "tmp" not in guest_exec.parse_out(direct.stdout)
    missing = run(shell, "cp-prepare-destination.sh", f"{tmp_path}/nope/", "x", "t2", "", "0")
    assert missing.returncode == 3 and b"no such directory" in missing.stderr
    (tmp_path / "src").write_bytes(b"12345")
    (tmp_path / "src").chmod(0o640)
    src = run(shell, "cp-prepare-source.sh", f"{tmp_path}/src", "")
    assert guest_exec.parse_out(src.stdout) == {"size": "5", "mode": "640"}


def result(stderr: bytes, exitcode: int = 7) -> ExecResult:
    return ExecResult(exitcode=exitcode, signal=None, stdout=b"", stderr=stderr)


def test_script_failure_types_a_full_disk() -> None:
    """4 cases: ENOSPC (after dd's statistics), another reason, nothing said, escapes."""
    full = guest_exec.script_failure("vm1", result(
        b"copying failed: dd: error writing '/x': No space left on device\n"
        b"1+0 records in\n0+0 records out\n"))
    assert isinstance(full, guest_exec.ScriptNoSpace) and isinstance(full, NoSpace)
    assert full.reason == "copying failed: dd: error writing '/x': No space left on device"
    other = guest_exec.script_failure("vm1", result(b"checksum mismatch\n", 9))
    assert type(other) is guest_exec.ScriptFailed and str(other) == "vm1: checksum mismatch"
    assert guest_exec.error_line(result(b"", 3)) == "exit status 3"
    assert guest_exec.error_line(result(b"\x1b]0;x\x07bad\n")) == "\\x1b]0;x\\x07bad"


def test_no_space_is_raised_where_it_is_first_seen() -> None:
    """3 cases: a host write (ENOSPC from /dev/full), qemu-img's words, qemu-ga's reply."""
    fd = os.open("/dev/full", os.O_WRONLY)
    try:
        with pytest.raises(NoSpace, match="^no space left on the host: "):
            write_all(fd, b"x" * 4096)
    finally:
        os.close(fd)
    img = _qemu_img_error("convert", "qemu-img: error while writing at byte 0: No space left "
                          "on device\n", 1, None)
    assert isinstance(img, NoSpace) and img.message.startswith("no space left on device: ")
    assert type(_qemu_img_error("convert", "qemu-img: oops\n", 1, None)) is OperationFailed

    agent = AgentClient(Path("/nonexistent"), vm_name="vm1")
    line = json.dumps({"id": "hc-1", "error": {
        "class": "GenericError", "desc": "failed to write to file: No space left on device"}})
    with pytest.raises(AgentNoSpace) as info:
        agent._reply_line("guest-file-write", "hc-1", line.encode(), set())
    assert isinstance(info.value, AgentCommandError) and isinstance(info.value, NoSpace)
    assert info.value.command == "guest-file-write"
