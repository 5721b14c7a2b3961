"""Several hosts through real OpenSSH: hosts a and b (network namespaces, a real sshd each,
``sshhosts.py``); every command typed on a, ``--host b`` running it on b.

No QEMU here but in ``test_cp_across_hosts`` (``test_hosts_guest.py`` boots one too). The
namespaces and sshds are shared by the module; a test that breaks a host (sshd stopped, link
down) mends it before it ends.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hypercore_tui import __version__

from ..helpers import Tmux, wait_until
from .dashboard_probe import DashboardProbe, Rows
from .sshhosts import (
    OLD_VERSION,
    SshHost,
    SshHosts,
    cmdline_of,
    kill_netns_processes,
    netns_pids,
    one_line,
    require_root,
    signal_netns_processes,
    ssh_hosts,
)

pytestmark = pytest.mark.skipif(require_root() is not None, reason=str(require_root()))

HOSTILE = [
    "two words",
    "it's",
    'say "hi"',
    "$(touch /tmp/hc-pwned)",
    "`touch /tmp/hc-pwned`",
    "a; touch /tmp/hc-pwned",
    "line one\nline two",
    "back\\slash",
    "*",
    "~root",
    "$HOME",
    "'",
    "",
    "-o ProxyCommand=touch /tmp/hc-pwned",
    "tab\there",
    "ünïcode ✓",
]


@pytest.fixture(scope="module")
def hosts() -> Iterator[SshHosts]:
    with ssh_hosts() as pair:
        added = pair.a.run("hosts", "add", "b", pair.b.destination)
        assert added.returncode == 0, added.stderr
        yield pair


def same_result(hosts: SshHosts, *args: str) -> subprocess.CompletedProcess[bytes]:
    """``--host b ARGS`` on a gives what ``ARGS`` gives typed on b: exit code, stdout and
    stderr, byte for byte."""
    remote = hosts.a.run("--host", "b", *args)
    local = hosts.b.run(*args)
    assert (remote.returncode, remote.stdout, remote.stderr) == \
        (local.returncode, local.stdout, local.stderr), (remote, local)
    return remote


def test_hosts_add_list_remove(hosts: SshHosts) -> None:
    a = hosts.a
    listed = json.loads(a.run("hosts", "list", "--json").stdout)
    assert listed[0] == {"name": "local", "local": True, "ssh": None, "command": None}
    assert {"name": "b", "local": False, "ssh": hosts.b.destination,
            "command": "hypercore"} in listed
    added = a.run("hosts", "add", "c", "root@10.77.0.99", "--command", "bin/hc", "--no-check")
    assert (added.returncode, added.stdout) == (0, b"added c (ssh root@10.77.0.99)\n")
    assert [h["name"] for h in json.loads(a.run("hosts", "list", "--json").stdout)] == \
        ["local", "b", "c"]
    text = a.run("hosts", "list").stdout.decode()
    assert "local  (this host)" in text and "c      ssh root@10.77.0.99 (bin/hc)" in text
    settings = json.loads((a.home / "settings.json").read_text())
    assert settings["hosts"]["c"] == {"ssh": "root@10.77.0.99", "command": "bin/hc"}

    refused = {
        ("add", "local", "root@x"): "'local' is this host; choose another name",
        ("add", "c", "root@y", "--no-check"): "a host named 'c' exists already",
        ("add", "bad/name", "root@x"): "invalid host name 'bad/name'",
        ("add", "d", "--", "-oProxyCommand=touch /tmp/hc-pwned"): "must not start with '-'",
        ("add", "d", "root@x y"): "no spaces or control characters",
        ("remove", "local"): "'local' is this host; it cannot be removed",
        ("remove", "nosuch"): "no host named 'nosuch'",
    }
    for args, message in refused.items():
        proc = a.run("hosts", *args)
        assert proc.returncode == 2, (args, proc)
        assert one_line(proc).startswith("hypercore: error: ") and message in proc.stderr.decode()
    assert not Path("/tmp/hc-pwned").exists()

    removed = a.run("hosts", "remove", "c")
    assert (removed.returncode, removed.stdout) == (0, b"removed c (ssh root@10.77.0.99)\n")
    assert [h["name"] for h in json.loads(a.run("hosts", "list", "--json").stdout)] == \
        ["local", "b"]
    unknown = a.run("--host", "c", "list")
    assert unknown.returncode == 2
    assert one_line(unknown) == "hypercore: error: no host named 'c' (see `hypercore hosts list`)"
    # `--host local` is this host.
    assert a.run("--host", "local", "list", "--json").stdout == a.run("list", "--json").stdout

    checked = json.loads(a.run("hosts", "list", "--json", "--check").stdout)
    assert [h["status"] for h in checked] == [f"Hypercore {__version__}"] * 2


def test_remote_list_equals_list_on_the_host(hosts: SshHosts) -> None:
    for name in ("web", "db"):
        created = hosts.a.run("--host", "b", "create-vm", name, "128", "1", "--disk-size", "8M")
        assert created.returncode == 0, created.stderr
    listed = same_result(hosts, "list", "--json")
    assert sorted(vm["name"] for vm in json.loads(listed.stdout)) == ["db", "web"]
    assert json.loads(hosts.a.run("list", "--json").stdout) == []  # nothing came to a
    same_result(hosts, "list")


def test_exit_codes_and_one_line_errors_pass_through(hosts: SshHosts) -> None:
    cases = [
        (("boot-vm", "nosuch"), 2),  # not found
        (("stats", "web"), 1),  # defined but not running: the operation fails
        (("snapshot", "list", "nosuch", "--json"), 2),
        (("no-such-command",), 2),  # a usage error, said by b's parser
        (("exec", "web", "--", "true"), 1),
    ]
    for args, code in cases:
        proc = same_result(hosts, *args)
        assert proc.returncode == code, (args, proc)
        assert one_line(proc).startswith("hypercore: error: ")
    version = same_result(hosts, "--version")
    assert version.stdout == f"hypercore {__version__}\n".encode()


def test_hostile_arguments_arrive_exact(hosts: SshHosts) -> None:
    """Each argument is one argv element on b, whatever the shell would make of it."""
    qemu_args = [f"--qemu-arg={value}" for value in HOSTILE]
    created = hosts.a.run("--host", "b", "create-vm", "hostile", "64", "1", "--disk-size", "8M",
                          *qemu_args)
    assert created.returncode == 0, created.stderr
    spec = json.loads((hosts.b.home / "vms" / "hostile" / "vm.json").read_text())
    assert spec["extra_args"] == HOSTILE
    for value in ("$(touch /tmp/hc-pwned)", "a; b", "it's\nthere"):  # in errors too
        assert same_result(hosts, "boot-vm", value).returncode == 2
    assert not Path("/tmp/hc-pwned").exists()
    assert not (hosts.b.user_home / "hc-pwned").exists()


def test_second_command_reuses_the_connection(hosts: SshHosts) -> None:
    a, b = hosts.a, hosts.b
    a.run("hosts", "remove", "b", timeout=20)  # also closes its connection
    a.run("hosts", "add", "b", b.destination, "--no-check")
    assert not list((a.runtime / "ssh").glob("*.sock"))
    logins = b.auth_count()
    timings = []
    for _ in range(2):
        started = time.monotonic()
        proc = a.run("--host", "b", "list", "--json")
        timings.append(time.monotonic() - started)
        assert proc.returncode == 0, proc.stderr
        assert len(list((a.runtime / "ssh").glob("*.sock"))) == 1  # the master's socket
    first, second = timings
    print(f"\n  --host b list --json: first {first * 1000:.0f} ms (connect, log in, "
          f"version check), second {second * 1000:.0f} ms (shared connection)")
    assert b.auth_count() == logins + 1  # one login for both commands
    assert second < first


def test_version_mismatch_is_one_line(hosts: SshHosts) -> None:
    a = hosts.a
    a.run("hosts", "add", "old", hosts.b.destination, "--command", hosts.b.old_command,
          "--no-check")
    try:
        proc = a.run("--host", "old", "list")
        assert proc.returncode == 1
        assert one_line(proc) == (
            f"hypercore: error: old: runs Hypercore {OLD_VERSION}, this host runs "
            f"{__version__}; install the same version on both")
        added = a.run("hosts", "add", "old2", hosts.b.destination, "--command",
                      hosts.b.old_command)
        assert added.returncode == 0 and OLD_VERSION in added.stderr.decode()
    finally:
        a.run("hosts", "remove", "old")
        a.run("hosts", "remove", "old2")


def test_missing_remote_hypercore_is_one_line(hosts: SshHosts) -> None:
    a = hosts.a
    a.run("hosts", "add", "bare", hosts.b.destination, "--command", "no-such-hypercore",
          "--no-check")
    try:
        proc = a.run("--host", "bare", "list")
        assert proc.returncode == 1
        assert one_line(proc).startswith("hypercore: error: bare: no 'no-such-hypercore' there")
    finally:
        a.run("hosts", "remove", "bare")


def test_host_key_and_login_failures_are_one_line(hosts: SshHosts, tmp_path: Path) -> None:
    a = hosts.a
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    stranger = hosts.client_config("stranger", known_hosts=empty)
    started = time.monotonic()
    proc = a.run("--host", "b", "list", environ={**a.environ,
                                                 "HYPERCORE_SSH_CONFIG": str(stranger)})
    assert proc.returncode == 1
    assert one_line(proc) == ("hypercore: error: b: the SSH host key of root@10.77.0.2 is not "
                              "known: connect once with `ssh root@10.77.0.2` to check and "
                              "accept it")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f",
                    str(tmp_path / "other_key")], check=True)
    unknown_key = hosts.client_config("unknown-key", identity=tmp_path / "other_key")
    proc = a.run("--host", "b", "list", environ={**a.environ,
                                                 "HYPERCORE_SSH_CONFIG": str(unknown_key)})
    assert proc.returncode == 1
    assert one_line(proc).startswith("hypercore: error: b: SSH login to root@10.77.0.2 refused "
                                     "(publickey)")
    assert time.monotonic() - started < 6


def test_unreachable_host_is_one_line_within_seconds(hosts: SshHosts) -> None:
    a, b = hosts.a, hosts.b
    assert a.run("--host", "b", "list").returncode == 0  # a shared connection is up
    b.stop_sshd()  # sshd and its sessions gone: the connection ends, new ones are refused
    try:
        started = time.monotonic()
        proc = a.run("--host", "b", "list", "--json")
        refused_after = time.monotonic() - started
        assert proc.returncode == 1 and proc.stdout == b""
        assert one_line(proc) == ("hypercore: error: b: cannot connect to root@10.77.0.2: "
                                  "connection refused (is sshd running there?)")
        b.start_sshd()
        hosts.silence(True)  # packets vanish: only the connect timeout (5 s) ends the wait
        started = time.monotonic()
        proc = a.run("--host", "b", "list", "--json")
        silent_after = time.monotonic() - started
        assert proc.returncode == 1
        assert one_line(proc) == ("hypercore: error: b: no answer from root@10.77.0.2 within 5 s "
                                  "(connection timed out)")
        print(f"\n  sshd stopped: said after {refused_after:.2f} s; "
              f"packets lost: after {silent_after:.2f} s")
        assert refused_after < 6 and silent_after < 6.5
    finally:
        hosts.silence(False)
        if b.sshd is None:
            b.start_sshd()
    assert a.run("--host", "b", "list").returncode == 0


class Follower:
    """``follow_host.py`` on host a following b's stream; its lines collected."""

    def __init__(self, host: SshHost, name: str) -> None:
        self.proc = host.popen([sys.executable, "-m", "tests.integration.follow_host", name],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.events: list[dict[str, object]] = []
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            self.events.append(json.loads(raw))

    def wait_for(self, what: str, timeout: float, *, since: float = 0.0,
                 **match: object) -> dict[str, object]:
        """The first event since ``since`` whose fields are ``match`` (a tuple: any of)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for event in list(self.events):
                if float(str(event["t"])) >= since and all(
                        event.get(k) in (v if isinstance(v, tuple) else (v,))
                        for k, v in match.items()):
                    return event
            time.sleep(0.05)
        raise AssertionError(f"no {what} within {timeout} s; seen: {self.events[-20:]}")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


def test_watch_stream_over_ssh_and_its_stalls(hosts: SshHosts) -> None:
    a, b = hosts.a, hosts.b
    follower = Follower(a, "b")
    try:
        follower.wait_for("the stream live", 20, status="live")
        follower.wait_for("the hello line", 5, line="hello")
        follower.wait_for("the VMs", 5, line="vms")
        follower.wait_for("a host sample", 5, line="host")

        # The remote watch freezes (a host too busy to run it), the connection stays up:
        # the missing heartbeats say it within 5 s; it goes on when it thaws.
        frozen = time.monotonic()
        assert signal_netns_processes(b.netns, signal.SIGSTOP, b"watch")
        try:
            stall = follower.wait_for("a stall", 6, since=frozen, status="stalled")
        finally:
            signal_netns_processes(b.netns, signal.SIGCONT, b"watch")
        stall_after = float(str(stall["t"])) - frozen
        follower.wait_for("the stream live after the thaw", 5, since=frozen, status="live")
        follower.wait_for("a line after the thaw", 5, since=frozen, line=("host", "heartbeat"))

        # The network goes silent: within 5 s the stream is said to be stalled (4 s without
        # a line) or down (ssh's keep-alives unanswered for about 4 s), whichever comes first.
        cut = time.monotonic()
        hosts.silence(True)
        try:
            stalled = follower.wait_for("a stall", 6, since=cut, status=("stalled", "down"))
        finally:
            hosts.silence(False)
        stalled_after = float(str(stalled["t"])) - cut
        recovered = follower.wait_for("the stream live again", 30, since=cut, status="live")
        recovered_after = float(str(recovered["t"])) - cut

        # The host's sshd stops (the stream and its connection with it): said at once.
        kill = time.monotonic()
        b.stop_sshd()
        try:
            down = follower.wait_for("the stream down", 6, since=kill, status="down")
        finally:
            b.start_sshd()
        down_after = float(str(down["t"])) - kill
        again = follower.wait_for("the stream live after sshd came back", 20, since=kill,
                                  status="live")
        # Only the remote watch process is killed: its end is seen at once too.
        watch_killed = time.monotonic()
        kill_netns_processes(b.netns, cmdline_has=b"watch")
        ended = follower.wait_for("the stream's end", 6, since=watch_killed, status="down")
        assert ended["detail"] == "b: the watch there ended by a signal"
        print(f"\n  remote watch frozen: stalled after {stall_after:.1f} s; "
              f"network silent: {stalled['status']} after {stalled_after:.1f} s, live again "
              f"{recovered_after:.1f} s after the cut; sshd stopped: down after "
              f"{down_after:.2f} s ({down['detail']}), live again "
              f"{float(str(again['t'])) - kill:.1f} s later; remote watch killed: down after "
              f"{float(str(ended['t'])) - watch_killed:.2f} s ({ended['detail']})")
        assert stall_after < 5 and stalled_after < 5
        assert down_after < 5
    finally:
        follower.stop()




def _header(rows: Rows, host: str) -> str:
    return str(rows.get(f"{host}/", [""])[0])


def test_dashboard_shows_the_other_hosts_vms_and_its_outage(hosts: SshHosts) -> None:
    """The real dashboard on a lists b's VMs under b (a snapshot of b's taken from a); the
    link silent: b stalled (or down) within 5 s, its VMs greyed with their last state;
    the link back: b live again by itself. (Stopped VMs: no QEMU.)"""
    a, b = hosts.a, hosts.b
    names = ("dash1", "dash2")
    for name in names:
        created = b.run("create-vm", name, "128", "1", "--disk-size", "8M")
        assert created.returncode == 0, created.stderr
    # a has a dash2 of its own: the same name, never confused with b's
    created = a.run("create-vm", "dash2", "128", "1", "--disk-size", "8M")
    assert created.returncode == 0, created.stderr
    probe = DashboardProbe(a)
    try:
        started = time.monotonic()
        seen, rows = probe.wait_for("b's VMs under b", 20, lambda r: "live" in _header(r, "b")
                                    and all(f"b/{n}" in r for n in names))
        keys = list(rows)
        assert keys.index("local/") < keys.index("dash2") < keys.index("b/") \
            < keys.index("b/dash1") < keys.index("b/dash2")
        assert all("stopped" in str(rows[f"b/{n}"][0]) and rows[f"b/{n}"][1] is False
                   for n in names)
        assert "free " in _header(rows, "b")  # the host's free space (and load) came too
        listed_after = seen - started

        # A snapshot of b's dash2 from the dashboard on a: taken there (through --host),
        # never of a's own dash2.
        probe.do("select b/dash2")
        probe.do("action remote_snapshot")
        deadline = time.monotonic() + 30
        while not any("snapshot" in n for n in probe.notes()) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert any(n.startswith("b: ") and "snapshot" in n for n in probe.notes()), \
            probe.notes()
        snaps = b.run("snapshot", "list", "dash2", "--json")
        assert snaps.returncode == 0 and len(json.loads(snaps.stdout)) == 1, snaps
        assert json.loads(a.run("snapshot", "list", "dash2", "--json").stdout) == []

        # (b's sshd stopped and started: the real-tmux test below)
        # The network goes silent: stalled (or down) within 5 s, greyed; back by itself.
        cut = time.monotonic()
        hosts.silence(True)
        try:
            seen, rows = probe.wait_for("b stalled", 5, lambda r: any(
                word in _header(r, "b") for word in ("stalled", "down")), since=cut)
            stalled_after, said = seen - cut, _header(rows, "b").split()[1]
            assert all(rows[f"b/{n}"][1] is True for n in names), rows
        finally:
            hosts.silence(False)
        back = time.monotonic()
        seen, rows = probe.wait_for("b live after the silence", 30, lambda r: "live" in
                                    _header(r, "b"), since=back)
        print(f"\n  dashboard on a: b's VMs listed {listed_after:.1f} s after start; link "
              f"silent: {said} after {stalled_after:.1f} s, live {seen - back:.1f} s after "
              "it came back")
    finally:
        probe.stop()
        for name in names:
            b.run("delete-vm", name)
        a.run("delete-vm", "dash2")


def _host_word(screen: str, host: str) -> str:
    """The state word in ``host``'s header line on the screen (``live``, ``down``...)."""
    for line in screen.splitlines():
        match = re.search(rf"(?:^|[│ ]){re.escape(host)} (live|down|stalled|connecting)\b",
                          line)
        if match:
            return match.group(1)
    return ""


def test_the_dashboard_in_real_tmux_rides_out_bs_sshd_restart(hosts: SshHosts) -> None:
    """The real dashboard in a real tmux on a: b's header live with its VM; b's sshd
    stopped: b down, its VM still listed; started again: live again by itself, the
    dashboard never stuck (it still answers keys) and it quits cleanly."""
    a, b = hosts.a, hosts.b
    created = b.run("create-vm", "tm1", "128", "1", "--disk-size", "8M")
    assert created.returncode == 0, created.stderr
    tmux = Tmux()
    variables = {k: v for k, v in a.environ.items()
                 if k.startswith("HYPERCORE_") or k in ("PATH", "HOME", "LANG", "USER")}
    started = subprocess.run(
        ["ip", "netns", "exec", a.netns, "tmux", "-L", tmux.socket, "-f", "/dev/null",
         "new-session", "-d", "-s", "dash", "-x", "120", "-y", "36",
         "env", "-u", "COLUMNS", "-u", "LINES", *(f"{k}={v}" for k, v in variables.items()),
         sys.executable, "-m", "hypercore_tui"],
        env=a.environ, capture_output=True, timeout=10, check=False)
    assert started.returncode == 0, started.stderr
    try:
        wait_until("b live with tm1", lambda: _host_word(tmux.screen(), "b") == "live"
                   and "tm1" in tmux.screen(), 30, show=tmux.screen)
        cut = time.monotonic()
        b.stop_sshd()
        try:
            wait_until("b down", lambda: _host_word(tmux.screen(), "b") == "down", 5,
                       show=tmux.screen, step=0.05)
            down_after = time.monotonic() - cut
            assert "tm1" in tmux.screen()  # its last known state stays listed
        finally:
            b.start_sshd()
        back = time.monotonic()
        wait_until("b live again", lambda: _host_word(tmux.screen(), "b") == "live", 30,
                   show=tmux.screen)
        live_after = time.monotonic() - back
        tmux.keys("4")  # the Events tab: the dashboard still answers keys
        wait_until("the Events tab", lambda: "Events" in tmux.screen(), 10, show=tmux.screen)
        tmux.keys("q")
        wait_until("the dashboard quit", lambda: not tmux.session_alive(), 10,
                   show=tmux.screen)
        print(f"\n  real tmux on a: b down {down_after:.1f} s after its sshd stopped, live "
              f"{live_after:.1f} s after it started")
    finally:
        tmux.kill()
        b.run("delete-vm", "tm1")


# -- the clipboard sync across hosts (`clip sync --link`) ----------------------------------

_OFFER = ("import asyncio, sys\n"
          "from hypercore_tui.services.context import Context\n"
          "from hypercore_tui.services.clipsync import control\n"
          "reply = asyncio.run(control.request(Context.from_environ(), 'offer',"
          " text=sys.argv[1], source='host:test'))\n"
          "sys.exit(0 if reply and reply.get('item') else 1)\n")


def _offer_text(host: SshHost, text: str) -> None:
    """A copy on that host's board: the running sync's control socket (its offer op)."""
    proc = subprocess.run(["ip", "netns", "exec", host.netns, sys.executable, "-c", _OFFER,
                           text], env=host.environ, capture_output=True, timeout=30)
    assert proc.returncode == 0, proc.stderr.decode()


def _clip_status(host: SshHost) -> dict[str, object]:
    proc = host.run("clip", "status", "--json", timeout=30)
    assert proc.returncode == 0, proc.stderr.decode()
    status = json.loads(proc.stdout)
    assert isinstance(status, dict)
    return status


def _current(host: SshHost) -> dict[str, object]:
    current = _clip_status(host).get("current")
    return current if isinstance(current, dict) else {}


def _link_state(host: SshHost) -> str:
    links = _clip_status(host).get("links")
    if not isinstance(links, list) or not links:
        return ""
    return f"{links[0]['state']} {links[0].get('note') or ''}"


def _entry_dir(host: SshHost, preview: str) -> Path:
    """The files entry of the host's share whose preview the status shows."""
    base = host.home / "shared_folder" / ".hypercore-clip"
    found = [p for p in base.iterdir() if not p.name.endswith((".part", ".cancel"))
             and sorted(os.listdir(p)) == sorted(n.strip() for n in
                                                preview.split(": ", 1)[1].split(","))]
    assert found, (preview, os.listdir(base))
    return max(found, key=lambda p: p.stat().st_mtime)


def _tree(path: Path) -> dict[str, bytes | None]:
    return {str(p.relative_to(path)): (p.read_bytes() if p.is_file() else None)
            for p in sorted(path.rglob("*"))}


def test_clipboard_sync_links_two_hosts(hosts: SshHosts, tmp_path: Path) -> None:
    """Text and files cross both ways between a's sync (``--link b``) and b's (attached to
    the one running there; after b's sshd stopped, killing it, and started again, the
    link comes back by itself and runs b's sync itself). No VM: each host's board is its
    sync's control socket (the offer op) and ``clip push --files``."""
    from hypercore_tui.services.clipsync.link import peer_label

    a, b = hosts.a, hosts.b
    started = time.monotonic()
    b_log = open(b.root / "clip-sync.log", "wb")  # noqa: SIM115
    a_log = open(a.root / "clip-sync.log", "wb")  # noqa: SIM115
    b_sync = b.popen([sys.executable, "-m", "hypercore_tui", "clip", "sync", "--no-host"],
                     stdout=b_log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    a_sync: subprocess.Popen[bytes] | None = None
    try:
        wait_until("b's sync", lambda: _clip_status(b).get("running") is True, 10, step=0.2)
        a_sync = a.popen([sys.executable, "-m", "hypercore_tui", "clip", "sync", "--no-host",
                          "--link", "b"], stdout=a_log, stderr=subprocess.STDOUT,
                         stdin=subprocess.DEVNULL)
        wait_until("the link live", lambda: _link_state(a).startswith("live"), 15, step=0.2,
                   show=lambda: (a.root / "clip-sync.log").read_text(errors="replace"))
        assert "its clipboard sync (pid" in _link_state(a)

        _offer_text(a, "copied on a ✓")
        wait_until("a's text on b", lambda: _current(b).get("preview") == "copied on a ✓",
                   5, step=0.1)
        assert _current(b)["source"] == f"link:{peer_label()}"
        _offer_text(b, "copied on b")
        wait_until("b's text on a", lambda: _current(a).get("preview") == "copied on b",
                   5, step=0.1)
        assert _current(a)["source"] == "link:b"

        folder = tmp_path / "docs"
        (folder / "sub").mkdir(parents=True)
        (folder / "sub" / "note.txt").write_bytes(b"a small file\n")
        (tmp_path / "blob.bin").write_bytes(os.urandom(70_000))
        pushed = a.run("clip", "push", "--files", str(folder), str(tmp_path / "blob.bin"))
        assert pushed.returncode == 0, pushed.stderr.decode()
        wait_until("a's files on b", lambda: _current(b).get("kind") == "files", 5, step=0.1)
        there = _entry_dir(b, str(_current(b)["preview"]))
        assert _tree(there) == {"blob.bin": (tmp_path / "blob.bin").read_bytes(),
                                "docs": None, "docs/sub": None,
                                "docs/sub/note.txt": b"a small file\n"}

        (tmp_path / "from-b.txt").write_bytes(b"made on b\n")
        pushed = b.run("clip", "push", "--files", str(tmp_path / "from-b.txt"))
        assert pushed.returncode == 0, pushed.stderr.decode()
        wait_until("b's files on a", lambda: _current(a).get("kind") == "files"
                   and _current(a).get("source") == "link:b", 5, step=0.1)
        here = _entry_dir(a, str(_current(a)["preview"]))
        assert _tree(here) == {"from-b.txt": b"made on b\n"}
        history = json.loads(subprocess.run(
            ["ip", "netns", "exec", a.netns, sys.executable, "-c",
             "import asyncio, json\n"
             "from hypercore_tui.services.context import Context\n"
             "from hypercore_tui.services.clipsync import control\n"
             "print(json.dumps(asyncio.run(control.request(Context.from_environ(),"
             " 'history'))))\n"], env=a.environ, capture_output=True, timeout=30).stdout)
        assert len(history["entries"]) == 4  # (nothing came back as a new entry)

        # b's sshd stops (its sessions and b's sync die with it): one line, down at once;
        # started again, the link comes back by itself and runs b's sync there itself.
        cut = time.monotonic()
        b.stop_sshd()
        try:
            wait_until("the link down", lambda: _link_state(a).startswith(("down",
                                                                             "connecting")),
                       6, step=0.2)
        finally:
            b.start_sshd()
        wait_until("the link live again", lambda: _link_state(a).startswith("live"), 20,
                   step=0.2, show=lambda: (a.root / "clip-sync.log").read_text(
                       errors="replace"))
        back_after = time.monotonic() - cut
        assert "synced by the link" in _link_state(a)
        _offer_text(a, "after the outage")
        wait_until("a's text on b again", lambda: _current(b).get("preview")
                   == "after the outage", 5, step=0.1)
        _offer_text(b, "and back")
        wait_until("b's text on a again", lambda: _current(a).get("preview") == "and back",
                   5, step=0.1)
        log = (a.root / "clip-sync.log").read_text(errors="replace")
        assert log.count("clipboard link down") == 1, log

        # The network goes silent: the link is down within seconds (ssh's keep-alives, or
        # the link's own heartbeats), and live again once packets flow.
        cut = time.monotonic()
        hosts.silence(True)
        try:
            wait_until("the link down (silence)", lambda: _link_state(a).startswith(
                ("down", "connecting")), 10, step=0.2)
            silent_down = time.monotonic() - cut
        finally:
            hosts.silence(False)
        wait_until("the link live after the silence", lambda: _link_state(a).startswith(
            "live"), 20, step=0.2)
        silent_back = time.monotonic() - cut
        _offer_text(b, "after the silence")
        wait_until("b's text on a after the silence", lambda: _current(a).get("preview")
                   == "after the silence", 5, step=0.1)
        print(f"\n  clip link: live again {back_after:.1f} s after b's sshd stopped; "
              f"network silent: down after {silent_down:.1f} s, live {silent_back:.1f} s "
              f"after the cut; the whole test {time.monotonic() - started:.1f} s")

        # a's sync stops: the far end there ends with it.
        a_sync.send_signal(signal.SIGTERM)
        assert a_sync.wait(timeout=10) == 0
        wait_until("b's link end gone", lambda: not [
            pid for pid in netns_pids(b.netns) if b"clip\0link" in cmdline_of(pid)], 10,
            step=0.2)
    finally:
        for proc in (a_sync, b_sync):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
        a_log.close()
        b_log.close()
        kill_netns_processes(b.netns, cmdline_has=b"clip")
        kill_netns_processes(a.netns, cmdline_has=b"clip")
