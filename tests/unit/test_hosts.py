"""Hosts without a network: names and destinations, the settings file, the ssh command line,
ssh's failures as one line, the watch stream's lines, and the stream reader against a real
local process that writes garbage, long lines, or goes silent."""

from __future__ import annotations

import asyncio
import json
import shlex
import subprocess
from pathlib import Path

import pytest

from hypercore_tui.adapters.ssh import SshTarget, describe_failure
from hypercore_tui.core import watchwire
from hypercore_tui.core.errors import AlreadyExists, InvalidInput, NotFound
from hypercore_tui.core.hosts import LOCAL, Host, hosts_from_settings, new_host
from hypercore_tui.services.context import Context
from hypercore_tui.services.hosts import registry
from hypercore_tui.services.hosts.stream import HostStream, StreamState, StreamStatus


@pytest.fixture
def ctx(tmp_path: Path) -> Context:
    return Context.from_environ({"HYPERCORE_HOME": str(tmp_path / "home"),
                                 "HYPERCORE_RUNTIME_DIR": str(tmp_path / "run")})


@pytest.mark.parametrize("name", ["local", "", "-x", "a b", "a/b", ".x", "x.", "a" * 65, "é"])
def test_bad_host_names(name: str) -> None:
    with pytest.raises(InvalidInput):
        new_host(name, "root@h")


@pytest.mark.parametrize("destination", ["", "-oProxyCommand=x", "-p", "a b", "a\nb", "a\tb",
                                         "a\x1b[31m", "x" * 256])
def test_bad_destinations(destination: str) -> None:
    with pytest.raises(InvalidInput):
        new_host("b", destination)


def test_good_hosts() -> None:
    assert new_host("b-2.x", "ssh://root@h:2222") == Host("b-2.x", "ssh://root@h:2222")
    assert new_host("b", "alias", "bin/hypercore").command == "bin/hypercore"


def test_settings_round_trip(ctx: Context) -> None:
    assert registry.list_hosts(ctx) == [LOCAL]
    registry.add_host(ctx, "zeta", "root@z")
    registry.add_host(ctx, "beta", "u@b", ".local/bin/hypercore")
    assert [h.name for h in registry.list_hosts(ctx)] == ["local", "beta", "zeta"]
    with pytest.raises(AlreadyExists):
        registry.add_host(ctx, "beta", "u@c")
    data = json.loads(ctx.layout.settings_file.read_text())
    data["theme"] = "dark"  # a key of another idea survives every change
    ctx.layout.settings_file.write_text(json.dumps(data))
    assert registry.remove_host(ctx, "zeta") == Host("zeta", "root@z")
    with pytest.raises(NotFound):
        registry.remove_host(ctx, "zeta")
    with pytest.raises(InvalidInput):
        registry.remove_host(ctx, "local")
    data = json.loads(ctx.layout.settings_file.read_text())
    assert data == {"theme": "dark",
                    "hosts": {"beta": {"ssh": "u@b", "command": ".local/bin/hypercore"}}}
    assert registry.get_host(ctx, "local") == LOCAL


def test_settings_edited_by_hand_are_refused_by_name() -> None:
    with pytest.raises(InvalidInput, match="host 'b' has no 'ssh'"):
        hosts_from_settings({"hosts": {"b": {"host": "x"}}})
    with pytest.raises(InvalidInput, match="must not start with '-'"):
        hosts_from_settings({"hosts": {"b": {"ssh": "-oProxyCommand=x"}}})
    with pytest.raises(InvalidInput, match="'local' is this host"):
        hosts_from_settings({"hosts": {"local": {"ssh": "x"}}})


def test_ssh_command_line() -> None:
    target = SshTarget("root@h", Path("/run/u/hc/ssh/abc.sock"), Path("/etc/hc/ssh_config"))
    args = ["hypercore", "create-vm", "$(rm -rf ~)", "a b", "it's", "x\ny"]
    argv = target.command_argv(args)
    assert argv[:3] == ["ssh", "-F", "/etc/hc/ssh_config"]
    assert argv[-3:] == ["--", "root@h", shlex.join(args)]  # never an option of ssh
    assert shlex.split(argv[-1]) == args  # what the remote shell makes of it
    options = dict(argv[i + 1].split("=", 1) for i, a in enumerate(argv) if a == "-o")
    assert options["BatchMode"] == "yes" and options["ControlMaster"] == "auto"
    assert options["ControlPath"] == "/run/u/hc/ssh/abc.sock"
    assert options["ConnectTimeout"] == "5"
    assert "-T" in argv and "-t" in target.command_argv(args, tty=True)
    percent = SshTarget("h", Path("/tmp/100%/x.sock"))
    assert "ControlPath=/tmp/100%%/x.sock" in percent.command_argv(["x"])


@pytest.mark.parametrize(("stderr", "said"), [
    (b"root@h: Permission denied (publickey,password).\r\n",
     "SSH login to root@h refused (publickey,password)"),
    (b"No ED25519 host key is known for h and you have requested strict checking.\r\n"
     b"Host key verification failed.\r\n", "the SSH host key of root@h is not known"),
    (b"@@@@\r\n@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @\r\n"
     b"Host key verification failed.\r\n", "the SSH host key of root@h CHANGED"),
    (b"ssh: connect to host h port 22: Connection refused\r\n",
     "cannot connect to root@h: connection refused"),
    (b"ssh: connect to host h port 22: Connection timed out\r\n", "no answer from root@h"),
    (b"ssh: connect to host h port 22: No route to host\r\n",
     "cannot reach root@h: No route to host"),
    (b"ssh: Could not resolve hostname h: Name or service not known\r\n",
     "cannot resolve the host name of root@h"),
    (b"kex_exchange_identification: read: Connection reset by peer\r\n",
     "ssh root@h failed: kex_exchange_identification: read: Connection reset by peer"),
    (b"", "the SSH connection to root@h failed or was lost"),
])
def test_ssh_failures_in_one_line(stderr: bytes, said: str) -> None:
    line = describe_failure(stderr, "root@h")
    assert said in line and "\n" not in line


def test_watch_lines() -> None:
    line = watchwire.encode("event", vm="a", detail="x\ny\x1b[2J")
    assert line.count(b"\n") == 1 and line.endswith(b"\n") and b"\x1b" not in line
    read = watchwire.decode(line)
    assert read is not None and read.type == "event" and read.vm == "a"
    assert read.fields["detail"] == "x\ny\x1b[2J"
    for garbage in (b"", b"hello", b"[1,2]", b'{"vm":"a"}', b'{"type":7}', b"\xff\xfe",
                    b'{"type":"x"' , b"[" * 100000):
        assert watchwire.decode(garbage) is None


class LocalStream(HostStream):
    """The stream reader on a local process instead of ssh (the same pipes)."""

    def __init__(self, ctx: Context, script: str, **kwargs: float) -> None:
        self.lines_seen: list[watchwire.WatchLine] = []
        self.statuses: list[tuple[float, StreamStatus]] = []
        super().__init__(ctx, Host("far", "nowhere"), self.lines_seen.append, self._status,
                         **kwargs)
        self.script = script

    def _status(self, status: StreamStatus) -> None:
        self.statuses.append((asyncio.get_running_loop().time(), status))

    async def _start(self) -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(
            "sh", "-c", self.script, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE)

    def states(self) -> list[StreamState]:
        return [status.state for _t, status in self.statuses]


async def test_stream_skips_garbage_and_long_lines(ctx: Context) -> None:
    long_line = "x" * (watchwire.MAX_LINE + 10)
    script = ("echo 'Welcome to the remote shell'; "
              f"printf '%s\\n' '{watchwire.encode('hello', version='1').decode().strip()}'; "
              f"head -c {len(long_line)} /dev/zero | tr '\\0' x; echo; "
              "printf '{\"type\": \"vms\", \"vms\": []}\\n{broken\\n'; "
              "printf '{\"type\":\"sample\",\"vm\":\"a\"}'; echo; "
              "echo 'hypercore: error: gone' >&2; exit 1")
    stream = LocalStream(ctx, script)
    await stream.run_once()
    assert [line.type for line in stream.lines_seen] == ["hello", "vms", "sample"]
    assert stream.garbage == 3  # the greeting, the long line, the broken one
    assert stream.states() == [StreamState.CONNECTING, StreamState.LIVE, StreamState.DOWN]
    assert stream.statuses[-1][1].detail == "far: gone"


async def test_stream_silence_is_a_stall_then_given_up(ctx: Context) -> None:
    stream = LocalStream(ctx, "echo '{\"type\":\"hello\"}'; exec sleep 30", stall_after=0.5,
                         drop_after=1.0)
    started = asyncio.get_running_loop().time()
    await stream.run_once()
    assert stream.states() == [StreamState.CONNECTING, StreamState.LIVE, StreamState.STALLED,
                               StreamState.DOWN]
    stalled_at = stream.statuses[2][0] - started
    given_up_at = stream.statuses[3][0] - started
    assert 0.5 <= stalled_at < 1.0 and 1.0 <= given_up_at < 2.0
    assert "no line for 1 s" in stream.statuses[3][1].detail


async def test_stream_comes_back_after_a_stall(ctx: Context) -> None:
    stream = LocalStream(ctx, "echo '{\"type\":\"a\"}'; sleep 0.8; echo '{\"type\":\"b\"}'",
                         stall_after=0.4, drop_after=5.0)
    await stream.run_once()
    assert stream.states() == [StreamState.CONNECTING, StreamState.LIVE, StreamState.STALLED,
                               StreamState.LIVE, StreamState.DOWN]
    assert [line.type for line in stream.lines_seen] == ["a", "b"]
