"""Name validation, sizes, layout and VM definition round trips."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hypercore_tui.core.errors import InvalidInput
from hypercore_tui.core.layout import MAX_SOCKET_PATH, Layout
from hypercore_tui.core.models import (
    ClipboardMode,
    DiskKind,
    DiskSpec,
    NetMode,
    NetSpec,
    SharedMode,
    VmSpec,
    mac_from_bytes,
    parse_rbd_disk,
)
from hypercore_tui.core.names import validate_snapshot_tag, validate_vm_name
from hypercore_tui.core.sizes import format_bytes, parse_size


@pytest.mark.parametrize("name", ["a", "web-1", "db_2.prod", "X" * 64, "9lives"])
def test_valid_vm_names(name: str) -> None:
    assert validate_vm_name(name) == name


@pytest.mark.parametrize("name", [
    "", "-rf", ".hidden", "..", "../etc", "a/b", "a b", "x" * 65, "naïve", "a;rm -rf /",
    "$(reboot)", "a\x00b", "tab\tname", "_under", "dot.", "ｗｅｂ",  # fullwidth look-alike
])
def test_invalid_vm_names(name: str) -> None:
    with pytest.raises(InvalidInput) as err:
        validate_vm_name(name)
    assert "invalid VM name" in str(err.value)
    assert "\x00" not in str(err.value) and "\t" not in str(err.value)


@given(st.text(max_size=80))
def test_accepted_names_are_safe_path_components(name: str) -> None:
    try:
        validate_vm_name(name)
    except InvalidInput:
        return
    assert "/" not in name and not name.startswith(("-", ".")) and name not in (".", "..")
    assert name.isascii() and 1 <= len(name) <= 64


@pytest.mark.parametrize("tag", ["before-upgrade", "s1", "2026-01-01T10:00"])
def test_valid_snapshot_tags(tag: str) -> None:
    assert validate_snapshot_tag(tag) == tag


@pytest.mark.parametrize("tag", ["", "-d", "123", "a b", "a/b", "x" * 65])
def test_invalid_snapshot_tags(tag: str) -> None:
    with pytest.raises(InvalidInput):
        validate_snapshot_tag(tag)


@pytest.mark.parametrize("text,expected", [
    ("20G", 20 << 30), ("512M", 512 << 20), ("1.5G", 3 << 29), ("4096", 4096), ("1T", 1 << 40),
    ("10GiB", 10 << 30), ("64k", 64 << 10),
])
def test_parse_size(text: str, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "G", "-1G", "0", "12X", "1e9"])
def test_parse_size_rejects(text: str) -> None:
    with pytest.raises(InvalidInput):
        parse_size(text)


def test_format_bytes() -> None:
    assert format_bytes(None) == "—"
    assert format_bytes(512) == "512 B"
    assert format_bytes(1536) == "1.5 KiB"
    assert format_bytes(3 << 30) == "3.0 GiB"


def full_spec() -> VmSpec:
    return VmSpec(
        name="db1", ram_mb=2048, cpus=4,
        disk=DiskSpec(kind=DiskKind.RBD, pool="vm-pool", image="db1", conf="/etc/ceph/c.conf"),
        mac="52:54:00:01:02:03", iso="/isos/x.iso", kernel="/k", initrd="/i", append="quiet",
        net=NetSpec(NetMode.BRIDGE, "br0"), shared=False, shared_mode=SharedMode.VIRTIOFS,
        machine="pc", cpu_model="host", hugepages=True, extra_args=("-S",), display="none",
        created="2026-11-26T00:00:00+00:00", base_of=("clone1",),
        clipboard=ClipboardMode.PUSH_ONLY,
    )


def test_definition_round_trip() -> None:
    spec = full_spec()
    assert VmSpec.from_dict(spec.to_dict()) == spec
    local = spec.with_changes(disk=DiskSpec(kind=DiskKind.QCOW2, path="/x/disk.qcow2"))
    assert VmSpec.from_dict(local.to_dict()) == local


@pytest.mark.parametrize("mode", list(ClipboardMode))
def test_clipboard_mode_round_trip(mode: ClipboardMode) -> None:
    spec = full_spec().with_changes(clipboard=mode)
    data = spec.to_dict()
    assert data["clipboard"] == mode.value
    assert VmSpec.from_dict(data) == spec


def test_vm_json_without_a_clipboard_mode_syncs() -> None:
    """A vm.json written before the mode existed: the clipboard follows the shared one."""
    data = full_spec().to_dict()
    del data["clipboard"]
    assert VmSpec.from_dict(data).clipboard is ClipboardMode.SYNC


def test_clipboard_mode_says_what_may_be_read_and_written() -> None:
    assert [(m.readable, m.writable) for m in ClipboardMode] == [
        (True, True), (False, True), (False, False)]


@pytest.mark.parametrize("mutate", [
    lambda d: d.pop("name"),
    lambda d: d.update(ram_mb="lots"),
    lambda d: d.update(ram_mb=True),
    lambda d: d.update(cpus=0),
    lambda d: d.update(disk={"kind": "floppy"}),
    lambda d: d.update(version=99),
    lambda d: d.update(name="../../etc"),
    lambda d: d.update(mac="ff:ff:ff:ff:ff:ff"),
    lambda d: d.update(clipboard="both-ways"),
    lambda d: d.update(clipboard=None),
])
def test_definition_rejects_bad_fields(mutate: object) -> None:
    data = full_spec().to_dict()
    mutate(data)  # type: ignore[operator]
    with pytest.raises(InvalidInput):
        VmSpec.from_dict(data)


def test_resources_range() -> None:
    with pytest.raises(InvalidInput, match="RAM"):
        full_spec().with_changes(ram_mb=8)
    with pytest.raises(InvalidInput, match="CPU"):
        full_spec().with_changes(cpus=1000)


def test_rbd_disk_syntax() -> None:
    disk = parse_rbd_disk("rbd:vm-pool/ubuntu-vm:conf=/home/dev/ceph.conf")
    assert (disk.pool, disk.image, disk.conf) == ("vm-pool", "ubuntu-vm", "/home/dev/ceph.conf")
    assert parse_rbd_disk("rbd:p/i").conf is None
    for bad in ("rbd:pool", "rbd:/img", "rbd:p/-rf", "rbd:p/i/j"):
        with pytest.raises(InvalidInput):
            parse_rbd_disk(bad)


def test_net_parse() -> None:
    assert str(NetSpec.parse("user")) == "user"
    assert str(NetSpec.parse("bridge=br0")) == "bridge=br0"
    for bad in ("nat", "bridge=", "bridge=a;b"):
        with pytest.raises(InvalidInput):
            NetSpec.parse(bad)


def test_mac_is_local_unicast() -> None:
    mac = mac_from_bytes(b"\x01\x02\xff")
    assert mac == "52:54:00:01:02:ff"


def test_layout_paths_and_socket_length() -> None:
    layout = Layout(home=Path("/home/u/.hypercore"), runtime_base=Path("/run/user/1000/hypercore"))
    paths = layout.vm("web")
    assert paths.definition == Path("/home/u/.hypercore/vms/web/vm.json")
    assert paths.qmp_socket.parent == layout.runtime_dir / "web"
    long = layout.vm("v" * 64)
    assert len(str(long.qmp_monitor_socket)) <= MAX_SOCKET_PATH
    other = Layout(home=Path("/other"), runtime_base=layout.runtime_base)
    assert other.runtime_dir != layout.runtime_dir


def test_layout_from_environ() -> None:
    env = {"HYPERCORE_HOME": "/data/hc", "XDG_RUNTIME_DIR": "/run/user/5"}
    layout = Layout.from_environ(env, uid=5, user_home=Path("/home/x"))
    assert layout.home == Path("/data/hc") and layout.runtime_base == Path("/run/user/5/hypercore")
    layout = Layout.from_environ({}, uid=7, user_home=Path("/home/x"))
    assert layout.home == Path("/home/x/.hypercore")
    assert layout.runtime_base == Path("/tmp/hypercore-7")


def test_layout_rejects_runtime_dir_too_long() -> None:
    layout = Layout(home=Path("/h"), runtime_base=Path("/" + "d" * 100))
    with pytest.raises(InvalidInput, match="HYPERCORE_RUNTIME_DIR"):
        layout.vm("web")
