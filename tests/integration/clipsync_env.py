"""A real ``hypercore clip sync`` process for the clipboard sync tests."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import tempfile
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import IO

from ..conftest import HYPERCORE, HcEnv, _kill_leftover_qemus
from ..helpers import wait_until
from .real_guest import UID, create_real_vm, overlay_disk, private_env, real_guest
from .storage_env import guest_sh

#: Succeeds once hcuser ($1) has a process whose environment has DISPLAY=:0, and :0's socket.
SESSION_READY = r"""
[ -S /tmp/.X11-unix/X0 ] || exit 1
for e in /proc/[0-9]*/environ; do
    [ "$(stat -c %u "${e%/environ}" 2>/dev/null)" = "$1" ] || continue
    tr '\0' '\n' < "$e" 2>/dev/null | grep -qx 'DISPLAY=:0' && exit 0
done
exit 1
"""


#: The desktop pair the real-guest clipboard modules share (one boot for all of them);
#: rsb shows its screen over SPICE (test_real_guest_clipspice.py's viewer joins it).
PAIR_NAMES = ("rsa", "rsb")
PAIR_EXTRA = {"rsb": ("--display", "spice")}
_pair: tuple[ExitStack, HcEnv] | None = None


def shared_pair() -> HcEnv:
    """The desktop pair (rsa, rsb; /shared mounted), booted on first use. It stays up
    across the modules that use it (the ``desktop_pair`` fixture) and is stopped by
    :func:`release_shared_pair` as soon as the next test does not use it."""
    global _pair
    if _pair is None:
        stack = ExitStack()
        env = stack.enter_context(desktop_guests("hcrp-", PAIR_NAMES, share=True,
                                                 extra=PAIR_EXTRA))
        _pair = (stack, env)
    return _pair[1]


def release_shared_pair() -> None:
    global _pair
    pair, _pair = _pair, None
    if pair is not None:
        pair[0].close()


@contextmanager
def desktop_guests(prefix: str, names: Sequence[str], *, share: bool = False,
                   extra: Mapping[str, Sequence[str]] | None = None) -> Iterator[HcEnv]:
    """Real Debian guests in one private home, booted at once (plain boots), each until
    hcuser's X session runs (and, with ``share``, /shared is mounted); stopped after.
    ``extra``: more create-vm arguments, by name."""
    image = real_guest()
    base = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    env = private_env(base)
    try:
        for name in names:
            create_real_vm(env, image, name, overlay_disk(image, base / f"{name}.qcow2"),
                           *(extra or {}).get(name, ()))
        for name in names:  # plain boots return once QEMU runs: all boot at once
            env.run("boot-vm", name, check=True, timeout=120)
        for name in names:
            env.run("exec", "--timeout", "200", name, "--", "systemctl", "is-system-running",
                    "--wait", timeout=260)
            wait_until(f"{name}: hcuser's X session", lambda n=name: guest_sh(  # type: ignore[misc]
                env, n, SESSION_READY, str(UID), check=False).returncode == 0, 120, step=2)
            if share:
                wait_until(f"{name}: /shared mounted", lambda n=name: guest_sh(  # type: ignore[misc]
                    env, n, "mountpoint -q /shared", check=False).returncode == 0, 60, step=1)
        yield env
    finally:
        for name in names:
            env.run("stop-vm", name, "--force", timeout=90)
        _kill_leftover_qemus(env)
        shutil.rmtree(base, ignore_errors=True)


class Sync:
    """A real ``hypercore clip sync`` process, its stdout and stderr kept."""

    def __init__(self, env: HcEnv, *args: str, extra_env: dict[str, str] | None = None) -> None:
        self.env = env
        self.proc = subprocess.Popen([*HYPERCORE, "clip", "sync", "--no-host", *args],
                                     env={**env.environ, **(extra_env or {})},
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     stdin=subprocess.DEVNULL)
        #: what it printed so far (its events; warnings go to stderr), read as it goes
        self.said: list[str] = []
        self._readers = [threading.Thread(target=self._read, args=(stream,), daemon=True)
                         for stream in (self.proc.stdout, self.proc.stderr)]
        for reader in self._readers:
            reader.start()
        wait_until("the sync serves its control socket",
                   lambda: self.status().get("running") is True or self.proc.poll() is not None,
                   30)
        assert self.proc.poll() is None, self.stop()

    def status(self) -> dict[str, object]:
        proc = self.env.run("clip", "status", "--json", check=True)
        data = json.loads(proc.stdout)
        assert isinstance(data, dict)
        return data

    def vm_states(self) -> dict[str, str]:
        vms = self.status().get("vms") or []
        assert isinstance(vms, list)
        return {str(v["name"]): str(v["state"]) for v in vms}

    def _read(self, stream: IO[bytes] | None) -> None:
        assert stream is not None
        for line in stream:
            self.said.append(("err: " if stream is self.proc.stderr else "")
                             + line.decode(errors="replace"))

    def has_said(self, text: str) -> bool:
        return any(text in line for line in list(self.said))

    def stop(self) -> tuple[int, str, str]:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        self.proc.wait(timeout=30)
        for reader in self._readers:
            reader.join(timeout=10)
        said = list(self.said)
        out = "".join(line for line in said if not line.startswith("err: "))
        err = "".join(line[5:] for line in said if line.startswith("err: "))
        return self.proc.returncode, out, err
