"""services/hosts/fleet.py without SSH: the streams' lines as the dashboard's remote rows,
the stream states a header shows, and the verbs as ``--host`` command lines."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Sequence
from typing import Any, cast

import pytest

from hypercore_tui.core.errors import InvalidInput, OperationFailed
from hypercore_tui.core.hosts import Host
from hypercore_tui.core.models import VmState
from hypercore_tui.core.watchwire import WatchLine
from hypercore_tui.services.context import Context
from hypercore_tui.services.hosts import fleet
from hypercore_tui.services.hosts.fleet import RemoteChange, RemoteFleet, run_verb
from hypercore_tui.services.hosts.stream import StreamState, StreamStatus

HOST = Host("b", "root@b.example")


class NoStream:
    def __init__(self, ctx: object, host: Host, on_line: object, on_status: object) -> None:
        self.host = host

    async def run(self) -> None:
        raise AssertionError("not run here")


def line(kind: str, **fields: object) -> WatchLine:
    return WatchLine(kind, {"type": kind, **fields})


def make() -> tuple[RemoteFleet, list[RemoteChange]]:
    changes: list[RemoteChange] = []
    return RemoteFleet(cast(Context, None), [HOST], changes.append,
                       stream_factory=NoStream), changes


def test_rows_samples_and_states_from_the_stream() -> None:
    hosts, changes = make()
    hosts.on_line("b", line("vms", vms=[{"name": "web", "state": "running", "cpus": 2,
                                         "ram_mb": 512, "agent_status": "answering"},
                                        {"name": "db", "state": "stopped"}]))
    b = hosts.hosts["b"]
    assert sorted(b.vms) == ["db", "web"] and b.vms["web"].cpus == 2
    web = b.vms["web"]
    hosts.on_line("b", line("sample", vm="web", cpu_percent=12.5, rss_bytes=2**20))
    assert web.sample is not None and web.sample.cpu_percent == 12.5 and len(web.history) == 1
    hosts.on_line("b", line("state", vm="web", old="running", new="paused", reason="pause"))
    assert web.state is VmState.PAUSED
    assert changes[-1] == RemoteChange("b", "web", log="running → paused (pause)")
    # A later full list: the same view kept (its history), a VM gone is gone.
    hosts.on_line("b", line("vms", vms=[{"name": "web", "state": "paused"}]))
    assert b.vms == {"web": web} and len(web.history) == 1
    hosts.on_line("b", line("host", load=[1.5, 1.0, 0.5], disk_free_bytes=123))
    assert b.load == (1.5, 1.0, 0.5) and b.disk_free_bytes == 123


def test_a_hostile_stream_is_data() -> None:
    hosts, _ = make()
    hosts.on_line("b", line("vms", vms=[{"name": "../x"}, {"name": "-rf"}, {"name": None},
                                        {"name": "ok", "state": "bogus", "cpus": "8",
                                         "ram_mb": True, "error": "\x1b[2Jboom"}, 7]))
    ok = hosts.hosts["b"].vms["ok"]
    assert list(hosts.hosts["b"].vms) == ["ok"]
    assert ok.state is VmState.STOPPED and ok.cpus is None and ok.ram_mb is None
    assert ok.error is not None and "\x1b" not in ok.error
    hosts.on_line("b", line("sample", vm="ok", cpu_percent="x", vcpu_percent=[1, "y", None]))
    assert ok.sample is not None and ok.sample.cpu_percent is None
    assert ok.sample.vcpu_percent == (1.0, None, None)
    hosts.on_line("b", line("state", vm="nope", new="running"))  # an unknown VM: ignored
    hosts.on_line("b", line("host", load="high", disk_free_bytes="lots"))
    assert hosts.hosts["b"].load is None and hosts.hosts["b"].disk_free_bytes is None


def test_stream_states_and_since_when() -> None:
    hosts, changes = make()
    b = hosts.hosts["b"]
    hosts.on_status(StreamStatus("b", StreamState.CONNECTING))
    assert b.out_since is None and not b.ever_live
    hosts.on_status(StreamStatus("b", StreamState.LIVE))
    assert b.live and b.out_since is None
    hosts.on_status(StreamStatus("b", StreamState.STALLED, "b: no line for 4 s"))
    since = b.out_since
    assert since is not None and changes[-1].log == "host b: stalled (b: no line for 4 s)"
    hosts.on_status(StreamStatus("b", StreamState.DOWN, "b: lost"))
    hosts.on_status(StreamStatus("b", StreamState.CONNECTING))
    assert b.out_since == since  # out since the stall, whatever came after
    hosts.on_status(StreamStatus("b", StreamState.LIVE))
    assert b.out_since is None and changes[-1].log == "host b: live"


def _ran(monkeypatch: pytest.MonkeyPatch, code: int, out: bytes = b"", err: bytes = b"",
         stdins: list[bytes | None] | None = None) -> list[Sequence[str]]:
    calls: list[Sequence[str]] = []

    def run_captured(ctx: Any, host: Host, args: Sequence[str], *, timeout: float,
                     stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
        calls.append(list(args))
        if stdins is not None:
            stdins.append(stdin)
        return subprocess.CompletedProcess(list(args), code, out, err)

    monkeypatch.setattr(fleet.remote, "run_captured", run_captured)
    return calls


def test_verbs_run_there_as_cli_commands(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _ran(monkeypatch, 0, b"web stopped (guest agent)\n")
    ctx = cast(Context, None)
    assert run_verb(ctx, HOST, "stop", "web") == "b: web stopped (guest agent)"
    for verb in ("start", "force stop", "pause", "resume", "reset", "snapshot", "delete"):
        run_verb(ctx, HOST, verb, "web")
    assert calls == [["stop-vm", "web"], ["boot-vm", "web"], ["stop-vm", "--force", "web"],
                     ["pause-vm", "web"], ["resume-vm", "web"], ["reset-vm", "web"],
                     ["snapshot", "create", "web"], ["delete-vm", "--yes", "web"]]


def test_clipboard_console_display_migrate_run_there(monkeypatch: pytest.MonkeyPatch) -> None:
    """Text goes on stdin, never as an argument; the VM name is one argv element after
    every option; what comes back is the last line, or the exact clipboard text."""
    stdins: list[bytes | None] = []
    hostile = "$(rm -rf ~); 'x' --all\nline 2"
    calls = _ran(monkeypatch, 0, hostile.encode(), stdins=stdins)
    ctx = cast(Context, None)
    fleet.clip_push(ctx, HOST, "web", hostile)
    assert fleet.clip_pull(ctx, HOST, "web") == hostile  # exact: not a summary line
    fleet.set_clipboard_mode(ctx, HOST, "web", "push-only")
    fleet.type_text(ctx, HOST, "web", hostile)
    assert fleet.display_line(ctx, HOST, "web") == "line 2"
    assert fleet.migrate(ctx, HOST, "web", "a") == "b: line 2"
    assert calls == [["clip", "push", "web"], ["clip", "pull", "--raw", "web"],
                     ["set", "web", "clipboard=push-only"], ["type", "--yes", "web"],
                     ["display", "web"], ["migrate", "web", "a"]]
    assert stdins == [hostile.encode(), None, None, hostile.encode(), None, None]


def test_migration_targets_are_the_hosts_that_host_reaches(
        monkeypatch: pytest.MonkeyPatch) -> None:
    rows = [{"name": "local", "local": True}, {"name": "a"}, {"name": 5}, "junk", {"name": "c"}]
    calls = _ran(monkeypatch, 0, json.dumps(rows).encode())
    assert fleet.other_hosts(cast(Context, None), HOST) == ["a", "c"]
    assert calls == [["hosts", "list", "--json"]]
    _ran(monkeypatch, 0, b"not json")
    with pytest.raises(OperationFailed, match="not JSON"):
        fleet.other_hosts(cast(Context, None), HOST)


def test_a_remote_clipboard_that_is_not_utf8_is_one_line(
        monkeypatch: pytest.MonkeyPatch) -> None:
    _ran(monkeypatch, 0, b"\xff\xfe")
    with pytest.raises(OperationFailed, match=r"^b/web: copy: the clipboard text is not "
                                              r"valid UTF-8$"):
        fleet.clip_pull(cast(Context, None), HOST, "web")
    _ran(monkeypatch, 1, err=b"hypercore: error: web: the guest agent is not answering\n")
    with pytest.raises(OperationFailed, match=r"^b/web: copy: web: the guest agent is not "):
        fleet.clip_pull(cast(Context, None), HOST, "web")


def test_verb_failures_and_refusals_are_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _ran(monkeypatch, 1, err=b"hypercore: error: web is not running\n")
    ctx = cast(Context, None)
    with pytest.raises(OperationFailed, match=r"^b/web: pause: web is not running$"):
        run_verb(ctx, HOST, "pause", "web")
    with pytest.raises(InvalidInput, match="not supported on a remote VM yet"):
        run_verb(ctx, HOST, "keyboard", "web")
    with pytest.raises(InvalidInput):
        run_verb(ctx, HOST, "stop", "--force")  # never sent as an option
    assert len(calls) == 1
