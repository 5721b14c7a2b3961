"""``hypercore watch --json`` on this host (no VM, no SSH): its first lines, and a quiet end
when its reader goes away or a signal comes (no traceback, no error line)."""

from __future__ import annotations

import json
import signal
import subprocess
import time

import pytest

from ..conftest import HYPERCORE, HcEnv


def _start(env: HcEnv) -> subprocess.Popen[bytes]:
    return subprocess.Popen([*HYPERCORE, "watch", "--json"], env=env.environ,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)


def test_first_lines(hc_env: HcEnv) -> None:
    watch = _start(hc_env)
    assert watch.stdout is not None
    try:
        first = [json.loads(watch.stdout.readline()) for _ in range(3)]
    finally:
        watch.kill()
        watch.communicate()
    assert first[0]["type"] == "hello" and first[0]["protocol"] == 1
    assert {"type": "vms", "vms": []} in first
    assert "host" in [line["type"] for line in first]


def test_reader_gone_ends_it_quietly(hc_env: HcEnv) -> None:
    watch = _start(hc_env)
    assert watch.stdout is not None and watch.stderr is not None
    watch.stdout.readline()
    watch.stdout.close()  # the reader goes away: the next line (a heartbeat at most 1.5 s on)
    started = time.monotonic()
    assert watch.wait(timeout=10) == 0
    assert time.monotonic() - started < 3
    assert watch.stderr.read() == b""


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGHUP, signal.SIGTERM])
def test_signals_end_it_quietly(hc_env: HcEnv, signum: int) -> None:
    watch = _start(hc_env)
    assert watch.stdout is not None
    watch.stdout.readline()
    watch.send_signal(signum)
    out, err = watch.communicate(timeout=10)
    assert (watch.returncode, err) == (0, b"")
    assert all(json.loads(line)["type"] for line in out.splitlines())
