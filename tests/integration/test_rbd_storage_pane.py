"""The storage pane against the real Ceph cluster (Textual Pilot), and the delete
prompt on a real terminal (a pty)."""

from __future__ import annotations

import json
import os
import pty
import subprocess

import pytest
from textual.app import App, ComposeResult
from textual.widgets import DataTable, Static

from hypercore_tui.ui.backend import storage_loader
from hypercore_tui.ui.widgets.storage_pane import StoragePane

from ..conftest import HYPERCORE, HcEnv
from ..helpers import wait_until_async
from .conftest import POOL, CephCluster, free_port, unique

pytestmark = [pytest.mark.ceph]


class PaneApp(App[None]):
    def __init__(self, pane: StoragePane) -> None:
        super().__init__()
        self.pane = pane

    def compose(self) -> ComposeResult:
        yield self.pane


def cell_text(table: DataTable[object], row: str, column: str) -> str:
    value = table.get_cell(row, column)
    return str(getattr(value, "plain", value))


async def test_pane_lists_images_their_vms_and_health(
        rbd_env: HcEnv, ceph_cluster: CephCluster, image_names: list[str]) -> None:
    used, spare = unique("pane"), unique("spare")
    image_names += [used, spare]
    rbd_env.run("create-vm", "panevm", "64", "1", f"rbd:{POOL}/{used}", "--disk-size", "24M",
                check=True)
    ceph_cluster.create(spare, 8 * 1024 * 1024)

    pane = StoragePane(storage_loader(rbd_env.ctx), interval=60)
    async with PaneApp(pane).run_test(size=(100, 30)) as pilot:
        await wait_until_async("the first report",
                               lambda: pane.report is not None or pane.error is not None, 15,
                               pause=pilot.pause, max_stall=1.0)
        assert pane.error is None
        table = pane.query_one(DataTable)
        assert cell_text(table, f"{POOL}/{used}", "vm") == "■ panevm"
        assert cell_text(table, f"{POOL}/{used}", "size") == "24.0 MiB"
        assert cell_text(table, f"{POOL}/{spare}", "vm") == "—"
        health = str(pane.query_one("#storage-health", Static).render())
        assert "Ceph HEALTH_OK" in health and "1/1 OSDs up" in health

        # `r` reads again: the VM is gone, its image stays unused.
        rbd_env.run("delete-vm", "panevm", "--yes", "--keep-image", check=True)
        first = pane.report
        await pilot.press("r")
        await wait_until_async("a new report", lambda: pane.report is not first, 15,
                               pause=pilot.pause, max_stall=1.0)
        assert cell_text(table, f"{POOL}/{used}", "vm") == "—"


async def test_pane_shows_an_unreachable_cluster_fast_and_stays_responsive(
        hc_env: HcEnv) -> None:
    conf = hc_env.home.parent / "dead.conf"
    conf.write_text(f"[global]\nmon_host = v2:127.0.0.1:{free_port()}\n")
    hc_env.environ["HYPERCORE_CEPH_CONF"] = str(conf)
    pane = StoragePane(storage_loader(hc_env.ctx), interval=60)
    async with PaneApp(pane).run_test(size=(80, 24)) as pilot:
        elapsed = await wait_until_async("the error", lambda: pane.error is not None, 10,
                                         pause=pilot.pause, max_stall=1.0)
        assert elapsed < 10
        assert pane.error is not None
        assert f"Ceph cluster at {conf} did not answer within 5 s" in pane.error
        status = str(pane.query_one("#storage-status", Static).render())
        assert "did not answer" in status
        assert "unavailable" in str(pane.query_one("#storage-health", Static).render())


# -- the delete prompt on a terminal ----------------------------------------------------


def run_on_tty(env: HcEnv, args: list[str], answers: str) -> subprocess.CompletedProcess[bytes]:
    master, slave = pty.openpty()
    try:
        proc = subprocess.Popen([*HYPERCORE, *args], env=env.environ, stdin=slave,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        os.write(master, answers.encode())
        out, err = proc.communicate(timeout=60)
    finally:
        os.close(master)
        os.close(slave)
    return subprocess.CompletedProcess(args, proc.returncode, out, err)


def test_delete_vm_asks_about_the_image_on_a_terminal(
        rbd_env: HcEnv, ceph_cluster: CephCluster, image_names: list[str]) -> None:
    owned, adopted = unique("ttyown"), unique("ttyadopt")
    image_names += [owned, adopted]
    ceph_cluster.create(adopted)
    rbd_env.run("create-vm", "ttyown", "64", "1", f"rbd:{POOL}/{owned}", "--disk-size", "8M",
                check=True)
    rbd_env.run("create-vm", "ttyadopt", "64", "1", f"rbd:{POOL}/{adopted}", check=True)

    # Owned: the default is to remove it; the user says no.
    kept = run_on_tty(rbd_env, ["delete-vm", "ttyown"], "n\nttyown\n")
    assert kept.returncode == 0, kept.stderr
    assert b"Also remove its RBD image" in kept.stderr and b"(created by hypercore)? [Y/n]" \
        in kept.stderr
    assert ceph_cluster.exists(owned)

    # Adopted: the default is to keep it; the user says yes.
    removed = run_on_tty(rbd_env, ["delete-vm", "ttyadopt"], "y\nttyadopt\n")
    assert removed.returncode == 0, removed.stderr
    assert b"[y/N]" in removed.stderr
    assert not ceph_cluster.exists(adopted)
    listed = json.loads(rbd_env.run("list", "--json", check=True).stdout)
    assert listed == []
