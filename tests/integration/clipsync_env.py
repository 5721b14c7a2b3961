"""A real ``hypercore clip sync`` process for the clipboard sync tests."""

from __future__ import annotations

import json
import signal
import subprocess

from ..conftest import HYPERCORE, HcEnv
from ..helpers import wait_until


class Sync:
    """A real ``hypercore clip sync`` process, its stdout and stderr kept."""

    def __init__(self, env: HcEnv, *args: str, extra_env: dict[str, str] | None = None) -> None:
        self.env = env
        self.proc = subprocess.Popen([*HYPERCORE, "clip", "sync", "--no-host", *args],
                                     env={**env.environ, **(extra_env or {})},
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     stdin=subprocess.DEVNULL)
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

    def stop(self) -> tuple[int, str, str]:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        out, err = self.proc.communicate(timeout=30)
        return self.proc.returncode, out.decode(errors="replace"), err.decode(errors="replace")
