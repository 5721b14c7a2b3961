"""ceph.conf checks made before librados sees a conf (it prints some errors straight to
the terminal, which would garble the dashboard and ``--json`` output)."""

from __future__ import annotations

from pathlib import Path

import pytest

from hypercore_tui.adapters.rbd.conf import _monitor_hosts, check_conf
from hypercore_tui.core.errors import ClusterUnavailable

from ..conftest import HcEnv


@pytest.mark.parametrize(("text", "hosts"), [
    ("[global]\nmon_host = v2:127.0.0.1:3300\n", ["127.0.0.1"]),
    ("[global]\nmon host = [v2:10.0.0.1:3300,v1:10.0.0.1:6789] 10.0.0.2\n",
     ["10.0.0.1", "10.0.0.1", "10.0.0.2"]),
    ("[global]\n  mon-host=ceph-mon.example.org ; a comment\n", ["ceph-mon.example.org"]),
    ("[global]\n# mon_host = 1.2.3.4\n; mon_host = 5.6.7.8\nfsid = x\n", None),
    ("[mon.a]\nmon_addr = 192.0.2.7:6789\n", ["192.0.2.7"]),
    ("", None),
])
def test_monitor_hosts_are_read_like_ceph_reads_them(text: str, hosts: list[str] | None
                                                     ) -> None:
    assert _monitor_hosts(text) == hosts


def test_check_conf_refuses_what_librados_would_print_about(tmp_path: Path) -> None:
    with pytest.raises(ClusterUnavailable, match=r"scripts/ceph-dev.sh up"):
        check_conf(str(tmp_path / "missing.conf"))
    empty = tmp_path / "empty.conf"
    empty.write_text("[global]\nfsid = 00000000-0000-0000-0000-000000000000\n")
    with pytest.raises(ClusterUnavailable, match="names no monitor"):
        check_conf(str(empty))
    bad = tmp_path / "bad.conf"
    bad.write_text("[global]\nmon_host = no-such-host.invalid\n")
    with pytest.raises(ClusterUnavailable, match="cannot resolve the Ceph monitor host"):
        check_conf(str(bad))
    good = tmp_path / "good.conf"
    good.write_text("[global]\nmon_host = v2:127.0.0.1:3300\n")
    assert check_conf(str(good)) == str(good)


def test_a_bad_conf_gives_one_line_and_no_noise(hc_env: HcEnv) -> None:
    bad = hc_env.home.parent / "bad.conf"
    bad.write_text("[global]\nmon_host = no-such-host.invalid\n")
    hc_env.environ["HYPERCORE_CEPH_CONF"] = str(bad)
    proc = hc_env.run("storage", "list", "--json")
    assert proc.returncode == 1
    assert proc.stdout == b""
    assert proc.stderr == (b"hypercore: error: cannot resolve the Ceph monitor host "
                           b"'no-such-host.invalid' named in " + str(bad).encode() + b"\n")
