"""The per-VM clipboard mode: ``create-vm --clipboard``, ``hypercore set NAME KEY=VALUE``
and the clipboard commands refusing what a VM's mode forbids (no QEMU: every VM here is
stopped, and the mode is checked before anything else)."""

from __future__ import annotations

import asyncio
import json
import subprocess

import pytest

from hypercore_tui.core.errors import HypercoreError
from hypercore_tui.core.models import ClipboardMode
from hypercore_tui.services import clipboard
from hypercore_tui.services.monitor import Monitor, MonitorNotice, VmDefinitionChanged
from hypercore_tui.ui.backend import LiveBackend

from ..conftest import HcEnv


def definition(env: HcEnv, name: str) -> dict[str, object]:
    data = json.loads((env.home / "vms" / name / "vm.json").read_text())
    assert isinstance(data, dict)
    return data


def create(env: HcEnv, name: str, *extra: str) -> None:
    env.run("create-vm", name, "64", "1", "--disk-size", "16M", *extra, check=True)


def lines(proc: subprocess.CompletedProcess[bytes]) -> list[str]:
    return proc.stdout.decode().splitlines()


def one_line_error(proc: subprocess.CompletedProcess[bytes], code: int) -> str:
    err = proc.stderr.decode()
    assert proc.returncode == code, err
    assert err.startswith("hypercore: error: ") and err.count("\n") == 1, err
    return err.removeprefix("hypercore: error: ").rstrip("\n")


@pytest.mark.parametrize("mode", ["sync", "push-only", "off"])
def test_create_vm_records_the_mode(hc_env: HcEnv, mode: str) -> None:
    create(hc_env, "m1", "--clipboard", mode)
    assert definition(hc_env, "m1")["clipboard"] == mode


def test_create_vm_syncs_by_default_and_refuses_an_unknown_mode(hc_env: HcEnv) -> None:
    create(hc_env, "m1")
    assert definition(hc_env, "m1")["clipboard"] == "sync"
    err = one_line_error(hc_env.run("create-vm", "m2", "64", "1", "--clipboard", "both"), 2)
    assert "invalid choice: 'both'" in err
    assert not (hc_env.home / "vms" / "m2").exists()
    help_text = hc_env.run("create-vm", "--help", check=True).stdout.decode()
    assert "push-only: the shared clipboard is written into this VM" in " ".join(
        help_text.split())


def test_set_changes_the_mode_and_says_so(hc_env: HcEnv) -> None:
    create(hc_env, "m1")
    assert lines(hc_env.run("set", "m1", "clipboard=off", check=True)) == [
        "m1: clipboard=off (was sync)"]
    assert definition(hc_env, "m1")["clipboard"] == "off"
    before = (hc_env.home / "vms" / "m1" / "vm.json").stat().st_mtime_ns
    assert lines(hc_env.run("set", "m1", "clipboard=off", check=True)) == [
        "m1: clipboard is already off"]
    assert (hc_env.home / "vms" / "m1" / "vm.json").stat().st_mtime_ns == before  # not written
    proc = hc_env.run("set", "m1", "clipboard=push-only", "--json", check=True)
    assert json.loads(proc.stdout) == {"clipboard": "push-only", "display": "vnc"}
    assert definition(hc_env, "m1")["clipboard"] == "push-only"
    # The rest of the definition is kept as it was.
    rest = {k: v for k, v in definition(hc_env, "m1").items() if k != "clipboard"}
    hc_env.run("set", "m1", "clipboard=sync", check=True)
    assert {k: v for k, v in definition(hc_env, "m1").items() if k != "clipboard"} == rest


@pytest.mark.parametrize("args,code,message", [
    (["m1", "colour=blue"], 2,
     "unknown setting 'colour': the settable keys are clipboard, display"),
    (["m1", "clipboard=both"], 2, "invalid clipboard 'both': use sync, push-only, off"),
    (["m1", "clipboard"], 2,
     "malformed setting 'clipboard': use KEY=VALUE (keys: clipboard, display)"),
    (["m1", "=off"], 2, "malformed setting '=off': use KEY=VALUE (keys: clipboard, display)"),
    (["m1", "clipboard=off", "clipboard=sync"], 2, "clipboard is given twice"),
    (["ghost", "clipboard=off"], 2, "no VM named 'ghost' (see `hypercore list`)"),
])
def test_set_errors_are_one_line(hc_env: HcEnv, args: list[str], code: int,
                                 message: str) -> None:
    create(hc_env, "m1")
    assert one_line_error(hc_env.run("set", *args), code) == message
    assert definition(hc_env, "m1")["clipboard"] == "sync"


def test_set_needs_a_setting(hc_env: HcEnv) -> None:
    assert "required" in one_line_error(hc_env.run("set", "m1"), 2)


def test_off_is_never_read_nor_written(hc_env: HcEnv) -> None:
    create(hc_env, "m1", "--clipboard", "off")
    refused = "m1: its clipboard is off (hypercore set m1 clipboard=sync to change)"
    assert one_line_error(hc_env.run("clip", "pull", "m1"), 1) == refused
    assert one_line_error(hc_env.run("clip", "push", "m1", "--text", "x"), 1) == refused
    # Named with another VM: nothing is pushed at all.
    create(hc_env, "m2")
    assert one_line_error(hc_env.run("clip", "push", "m2", "m1", "--text", "x"), 1) == refused


def test_push_only_is_written_never_read(hc_env: HcEnv) -> None:
    create(hc_env, "m1", "--clipboard", "push-only")
    assert one_line_error(hc_env.run("clip", "pull", "m1"), 1) == (
        "m1: its clipboard is push-only: it is written, never read")
    # A push goes ahead (and fails only because the VM is stopped).
    assert one_line_error(hc_env.run("clip", "push", "m1", "--text", "x"), 1) == (
        "m1 is not running (stopped)")


def test_sync_is_read_and_written(hc_env: HcEnv) -> None:
    create(hc_env, "m1")
    assert one_line_error(hc_env.run("clip", "pull", "m1"), 1) == "m1 is not running (stopped)"


def test_push_all_skips_off_vms(hc_env: HcEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, mode in (("a1", "sync"), ("a2", "off"), ("a3", "push-only")):
        create(hc_env, name, "--clipboard", mode)
    monkeypatch.setattr(clipboard, "running_vms", lambda ctx: ["a1", "a2", "a3"])
    assert clipboard.push_targets(hc_env.ctx) == (["a1", "a3"], ["a2"])


def test_the_dashboards_backend_gets_the_same_refusals(hc_env: HcEnv) -> None:
    """What the dashboard's y and i keys (and its mode picker) call: ui.backend's live
    clipboard and settings, on stopped VMs."""
    create(hc_env, "m1")
    backend = LiveBackend(hc_env.ctx)
    live = backend.clipboard
    assert live is not None
    assert backend.set_clipboard_mode("m1", ClipboardMode.OFF) == "m1: clipboard=off (was sync)"
    assert backend.set_clipboard_mode("m1", ClipboardMode.OFF) == "m1: clipboard is already off"
    assert definition(hc_env, "m1")["clipboard"] == "off"
    refused = "m1: its clipboard is off (hypercore set m1 clipboard=sync to change)"
    for call in (lambda: live.pull("m1"), lambda: live.push("m1", "x")):
        with pytest.raises(HypercoreError) as caught:
            call()
        assert str(caught.value) == refused
    backend.set_clipboard_mode("m1", ClipboardMode.PUSH_ONLY)
    with pytest.raises(HypercoreError, match="it is written, never read"):
        live.pull("m1")
    with pytest.raises(HypercoreError, match="m1 is not running"):
        live.push("m1", "x")


def test_the_monitor_shows_a_definition_written_again(hc_env: HcEnv) -> None:
    """The dashboard's view follows `hypercore set` (the rescan reads vm.json again when
    it was replaced), and only then."""
    create(hc_env, "m1")
    notices: list[MonitorNotice] = []
    monitor = Monitor(hc_env.ctx, notices.append)
    asyncio.run(monitor.rescan())
    view = monitor.view("m1")
    assert view is not None and view.clipboard is ClipboardMode.SYNC
    asyncio.run(monitor.rescan())
    assert not [n for n in notices if isinstance(n, VmDefinitionChanged)]
    hc_env.run("set", "m1", "clipboard=push-only", check=True)
    asyncio.run(monitor.rescan())
    assert view.clipboard is ClipboardMode.PUSH_ONLY
    assert [n for n in notices if isinstance(n, VmDefinitionChanged)] == [
        VmDefinitionChanged("m1")]
    hc_env.run("set", "m1", "clipboard=push-only", check=True)  # nothing written
    asyncio.run(monitor.rescan())
    assert len([n for n in notices if isinstance(n, VmDefinitionChanged)]) == 1
