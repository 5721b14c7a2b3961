"""`hypercore exec` of a command that forks a process keeping its output open (xclip and
wl-copy do), in the real test guest: qemu-ga answers only when the pipes close, so exec
would wait for its whole --timeout in silence. On a terminal (a real pty here) one note
says why after 5 s; the end is the timeout's one error line, exit 1."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import time
from dataclasses import dataclass

import pytest

from ..conftest import HYPERCORE, HcEnv
from ..helpers import one_error_line

pytestmark = [pytest.mark.qemu, pytest.mark.timeout(180)]

FORKS = ["/bin/sh", "-c", "sleep 30 & echo started"]
NOTE = ("hypercore: note: tg1: /bin/sh has ended, but a process it started still holds its "
        "output open (xclip and wl-copy fork), so exec waits for that process or --timeout "
        "(8 s): redirect that process's output (>/dev/null 2>&1) or pass --timeout SECONDS")
TIMED_OUT = "still running after 8s"
HELD = "it has ended, but a process it started still holds its output open"


@dataclass
class TerminalRun:
    returncode: int
    stdout: bytes
    stderr_lines: list[tuple[float, str]]  # (seconds after the start, line) as they came
    seconds: float


def run_with_terminal(env: HcEnv, *args: str, timeout: float = 60) -> TerminalRun:
    """The real CLI with its stderr on a pty (a terminal, as a user's), stdout a pipe."""
    master, slave = pty.openpty()
    started = time.monotonic()
    proc = subprocess.Popen([*HYPERCORE, *args], env=env.environ, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=slave)
    os.close(slave)
    lines: list[tuple[float, str]] = []
    pending = b""
    deadline = started + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.1)
            if not ready:
                continue
            try:
                data = os.read(master, 4096)
            except OSError:  # EIO: the child closed the terminal
                break
            if not data:
                break
            pending += data
            while b"\n" in pending:
                line, pending = pending.split(b"\n", 1)
                lines.append((time.monotonic() - started, line.decode().rstrip("\r")))
        assert proc.stdout is not None
        stdout = proc.stdout.read()
        returncode = proc.wait(10)
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
    return TerminalRun(returncode, stdout, lines, time.monotonic() - started)


def test_forked_holder_gets_one_note_then_the_timeout(hc_env: HcEnv, running_vm: str) -> None:
    """4 cases: on a terminal, a command whose forked child holds its output gets the note
    once, about 5 s in, then the timeout's error line (naming the held output), exit 1, no
    hang; the same without a terminal: the error line only; a command that itself runs
    past 5 s gets no note and its own result; a redirected fork returns at once."""
    run = run_with_terminal(hc_env, "exec", running_vm, "--timeout", "8", "--", *FORKS)
    texts = [text for _, text in run.stderr_lines]
    assert run.returncode == 1, run
    assert texts.count(NOTE) == 1, texts
    noted_at = next(at for at, text in run.stderr_lines if text == NOTE)
    assert 5.0 <= noted_at < 7.5, run.stderr_lines
    assert len(texts) == 2, texts
    assert texts[1].startswith("hypercore: error: tg1: guest command '/bin/sh' "), texts
    assert TIMED_OUT in texts[1] and HELD in texts[1], texts
    assert run.seconds < 12, run
    assert run.stdout == b""
    print(f"note after {noted_at:.1f}s, timeout error after {run.seconds:.1f}s")

    piped = hc_env.run("exec", running_vm, "--timeout", "8", "--", *FORKS)
    error = one_error_line(piped)
    assert piped.returncode == 1 and TIMED_OUT in error and HELD in error, error

    slow = run_with_terminal(hc_env, "exec", running_vm, "--timeout", "30", "--",
                             "/bin/sh", "-c", "sleep 7; echo done")
    assert slow.returncode == 0 and slow.stdout == b"done\n", slow
    assert slow.stderr_lines == [], slow

    quiet = run_with_terminal(hc_env, "exec", running_vm, "--timeout", "8", "--",
                              "/bin/sh", "-c", "sleep 30 >/dev/null 2>&1 & echo started")
    assert quiet.returncode == 0 and quiet.stdout == b"started\n", quiet
    assert quiet.stderr_lines == [] and quiet.seconds < 5, quiet
