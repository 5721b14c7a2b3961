"""The QEMU argv builder: a pure function of the definition and the launch plan."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hypercore_tui.core.argv import LaunchPlan, build_qemu_argv, qemu_opt
from hypercore_tui.core.errors import InvalidInput
from hypercore_tui.core.layout import Layout
from hypercore_tui.core.models import (
    DiskKind,
    DiskSpec,
    DisplayKind,
    NetSpec,
    SharedMode,
    VmSpec,
)

LAYOUT = Layout(home=Path("/home/u/.hypercore"), runtime_base=Path("/run/user/1000/hypercore"))


def make_spec(**changes: object) -> VmSpec:
    spec = VmSpec(
        name="web1", ram_mb=512, cpus=2,
        disk=DiskSpec(kind=DiskKind.QCOW2, path="/home/u/.hypercore/vms/web1/disk.qcow2"),
        mac="52:54:00:aa:bb:cc",
    )
    return spec.with_changes(**changes) if changes else spec


def plan(**changes: object) -> LaunchPlan:
    base = {"qemu_binary": "/usr/bin/qemu-system-x86_64", "accel": "tcg",
            "shared_dir": "/home/u/.hypercore/shared_folder"}
    base.update(changes)
    return LaunchPlan(**base)  # type: ignore[arg-type]


def values(argv: list[str], option: str) -> list[str]:
    return [argv[i + 1] for i, a in enumerate(argv) if a == option]


def json_values(argv: list[str], option: str) -> list[dict[str, object]]:
    return [json.loads(v) for v in values(argv, option) if v.startswith("{")]


def test_basic_shape() -> None:
    spec = make_spec()
    paths = LAYOUT.vm("web1")
    argv = build_qemu_argv(spec, paths, plan())
    assert argv[0] == "/usr/bin/qemu-system-x86_64"
    assert values(argv, "-accel") == ["tcg"]
    assert values(argv, "-cpu") == ["max"]
    assert values(argv, "-m") == ["512M"]
    assert values(argv, "-smp") == ["2"]
    assert "-daemonize" in argv
    assert values(argv, "-pidfile") == [str(paths.pidfile)]
    assert "-nodefaults" in argv


def test_kvm_uses_host_cpu_unless_model_given() -> None:
    argv = build_qemu_argv(make_spec(), LAYOUT.vm("web1"), plan(accel="kvm"))
    assert values(argv, "-accel") == ["kvm"] and values(argv, "-cpu") == ["host"]
    argv = build_qemu_argv(make_spec(cpu_model="Skylake-Server"), LAYOUT.vm("web1"),
                           plan(accel="kvm"))
    assert values(argv, "-cpu") == ["Skylake-Server"]


def test_unknown_accel_refused() -> None:
    with pytest.raises(ValueError):
        build_qemu_argv(make_spec(), LAYOUT.vm("web1"), plan(accel="hvf"))


def test_disk_is_virtio_with_writeback_cache() -> None:
    argv = build_qemu_argv(make_spec(), LAYOUT.vm("web1"), plan())
    blockdevs = json_values(argv, "-blockdev")
    proto, fmt = blockdevs[0], blockdevs[1]
    assert proto["driver"] == "file"
    assert proto["filename"] == "/home/u/.hypercore/vms/web1/disk.qcow2"
    assert proto["cache"] == {"direct": False, "no-flush": False}
    assert fmt["driver"] == "qcow2" and fmt["file"] == proto["node-name"]
    devices = json_values(argv, "-device")
    blk = [d for d in devices if d["driver"] == "virtio-blk-pci"]
    assert blk == [{"driver": "virtio-blk-pci", "drive": fmt["node-name"], "id": "disk0dev",
                    "write-cache": "on"}]


def test_raw_disk_format() -> None:
    spec = make_spec(disk=DiskSpec(kind=DiskKind.RAW, path="/data/img.raw", owned=False))
    argv = build_qemu_argv(spec, LAYOUT.vm("web1"), plan())
    assert json_values(argv, "-blockdev")[1]["driver"] == "raw"


def test_rbd_disk_uses_rbd_driver_and_conf() -> None:
    spec = make_spec(disk=DiskSpec(kind=DiskKind.RBD, pool="vm-pool", image="web1"))
    argv = build_qemu_argv(spec, LAYOUT.vm("web1"), plan(rbd_conf="/etc/ceph/ceph.conf"))
    proto = json_values(argv, "-blockdev")[0]
    assert proto["driver"] == "rbd"
    assert (proto["pool"], proto["image"], proto["conf"]) == ("vm-pool", "web1",
                                                              "/etc/ceph/ceph.conf")


def test_control_sockets_agent_channel_balloon() -> None:
    paths = LAYOUT.vm("web1")
    argv = build_qemu_argv(make_spec(), paths, plan())
    chardevs = values(argv, "-chardev")
    assert f"socket,id=qmp,path={paths.qmp_socket},server=on,wait=off" in chardevs
    assert f"socket,id=qga0,path={paths.qga_socket},server=on,wait=off" in chardevs
    assert values(argv, "-mon") == ["chardev=qmp,mode=control", "chardev=qmpmon,mode=control"]
    devices = json_values(argv, "-device")
    port = [d for d in devices if d["driver"] == "virtserialport"][0]
    assert port["name"] == "org.qemu.guest_agent.0" and port["chardev"] == "qga0"
    assert any(d["driver"] == "virtio-balloon-pci" and d["id"] == "balloon0" for d in devices)
    serial = [c for c in chardevs if c.startswith("socket,id=serial0")][0]
    assert f"logfile={paths.serial_log}" in serial


def test_user_network_with_mac() -> None:
    argv = build_qemu_argv(make_spec(), LAYOUT.vm("web1"), plan())
    assert json_values(argv, "-netdev") == [{"type": "user", "id": "net0"}]
    nic = [d for d in json_values(argv, "-device") if d["driver"] == "virtio-net-pci"][0]
    assert nic["mac"] == "52:54:00:aa:bb:cc"


def test_no_network_and_bridge() -> None:
    argv = build_qemu_argv(make_spec(net=NetSpec.parse("none")), LAYOUT.vm("web1"), plan())
    assert values(argv, "-nic") == ["none"] and "-netdev" not in argv
    argv = build_qemu_argv(make_spec(net=NetSpec.parse("bridge=br0")), LAYOUT.vm("web1"), plan())
    assert json_values(argv, "-netdev") == [{"type": "bridge", "id": "net0", "br": "br0"}]


def test_shared_folder_9p_with_tag() -> None:
    argv = build_qemu_argv(make_spec(), LAYOUT.vm("web1"), plan())
    assert values(argv, "-fsdev") == [
        "local,id=fs0,path=/home/u/.hypercore/shared_folder,security_model=mapped-xattr"]
    dev = [d for d in json_values(argv, "-device") if d["driver"] == "virtio-9p-pci"][0]
    assert dev["mount_tag"] == "hypercore_share"


def test_no_shared_folder() -> None:
    argv = build_qemu_argv(make_spec(shared=False), LAYOUT.vm("web1"), plan())
    assert "-fsdev" not in argv
    assert not any(d["driver"] in ("virtio-9p-pci", "vhost-user-fs-pci")
                   for d in json_values(argv, "-device"))


def test_virtiofs_needs_shared_memory() -> None:
    spec = make_spec(shared_mode=SharedMode.VIRTIOFS)
    argv = build_qemu_argv(spec, LAYOUT.vm("web1"), plan())
    assert values(argv, "-machine") == ["q35,memory-backend=mem0"]
    backend = json_values(argv, "-object")[0]
    assert backend["qom-type"] == "memory-backend-memfd" and backend["share"] is True
    assert backend["size"] == 512 * 1024 * 1024
    dev = [d for d in json_values(argv, "-device") if d["driver"] == "vhost-user-fs-pci"][0]
    assert dev["tag"] == "hypercore_share"


def test_commas_in_paths_are_escaped() -> None:
    layout = Layout(home=Path("/srv/a,b"), runtime_base=Path("/tmp/x,y"))
    argv = build_qemu_argv(make_spec(), layout.vm("web1"), plan(shared_dir="/srv/a,b/share"))
    assert values(argv, "-fsdev")[0].startswith("local,id=fs0,path=/srv/a,,b/share,")
    assert all(",path=/tmp/x,,y/" in c for c in values(argv, "-chardev"))
    assert values(argv, "-vnc")[0].startswith("unix:/tmp/x,,y/")
    assert qemu_opt("a,b,,c") == "a,,b,,,,c"


def test_iso_boots_from_cdrom_only_until_installed() -> None:
    spec = make_spec(iso="/isos/debian.iso")
    argv = build_qemu_argv(spec, LAYOUT.vm("web1"), plan(boot_from_cdrom=True))
    cd = [d for d in json_values(argv, "-device") if d["driver"] == "ide-cd"]
    assert cd == [{"driver": "ide-cd", "drive": "cd0", "bootindex": 0}]
    assert any(b.get("filename") == "/isos/debian.iso" for b in json_values(argv, "-blockdev"))
    argv = build_qemu_argv(spec, LAYOUT.vm("web1"), plan(boot_from_cdrom=False))
    assert not any(d["driver"] == "ide-cd" for d in json_values(argv, "-device"))


def test_kernel_boot_and_extra_args_last() -> None:
    spec = make_spec(kernel="/k/vmlinuz", initrd="/k/initrd.img", append="console=ttyS0 quiet",
                     extra_args=("-device", "virtio-rng-pci,id=extra"))
    argv = build_qemu_argv(spec, LAYOUT.vm("web1"), plan())
    assert values(argv, "-kernel") == ["/k/vmlinuz"]
    assert values(argv, "-initrd") == ["/k/initrd.img"]
    assert values(argv, "-append") == ["console=ttyS0 quiet"]
    assert argv[-2:] == ["-device", "virtio-rng-pci,id=extra"]


def test_display_on_unix_socket_only() -> None:
    paths = LAYOUT.vm("web1")
    argv = build_qemu_argv(make_spec(), paths, plan())
    assert values(argv, "-vnc") == [f"unix:{paths.vnc_socket}"]
    assert not any("0.0.0.0" in a for a in argv)


def test_vnc_display_is_vga_without_spice() -> None:
    argv = build_qemu_argv(make_spec(), LAYOUT.vm("web1"), plan())
    assert values(argv, "-display") == ["none"]
    video = [d for d in json_values(argv, "-device") if d.get("id") == "video0"]
    assert video == [{"driver": "VGA", "id": "video0"}]
    assert "-spice" not in argv


def test_no_display_has_no_device_and_no_server() -> None:
    argv = build_qemu_argv(make_spec(display=DisplayKind.NONE), LAYOUT.vm("web1"), plan())
    assert values(argv, "-display") == ["none"]
    assert "-vnc" not in argv and "-spice" not in argv
    assert not [d for d in json_values(argv, "-device") if d.get("id") == "video0"]


def test_spice_display_on_a_unix_socket_with_agent_channel_and_usb() -> None:
    paths = LAYOUT.vm("web1")
    argv = build_qemu_argv(make_spec(display=DisplayKind.SPICE), paths, plan())
    assert values(argv, "-spice") == [f"unix=on,addr={paths.spice_socket},disable-ticketing=on"]
    assert paths.spice_socket.parent == paths.run_dir
    assert "-vnc" not in argv and values(argv, "-display") == ["none"]
    devices = json_values(argv, "-device")
    assert {"driver": "qxl-vga", "id": "video0"} in devices
    assert "spicevmc,id=vdagent,name=vdagent" in values(argv, "-chardev")
    assert {"driver": "virtserialport", "bus": "vser0.0", "chardev": "vdagent",
            "name": "com.redhat.spice.0"} in devices
    # The port sits on the VM's one virtio-serial bus, created before it.
    buses = [i for i, d in enumerate(devices) if d.get("id") == "vser0"]
    agent = devices.index({"driver": "virtserialport", "bus": "vser0.0", "chardev": "vdagent",
                           "name": "com.redhat.spice.0"})
    assert buses and buses[0] < agent
    assert {"driver": "qemu-xhci", "id": "usb0"} in devices
    redirs = [d for d in devices if d["driver"] == "usb-redir"]
    assert [r["chardev"] for r in redirs] == ["usbredir0", "usbredir1"]
    assert all(r["bus"] == "usb0.0" for r in redirs)
    for slot in (0, 1):
        assert f"spicevmc,id=usbredir{slot},name=usbredir" in values(argv, "-chardev")
    assert not any("0.0.0.0" in a or "port=" in a for a in argv)


def test_spice_without_usb_redirection_where_qemu_lacks_it() -> None:
    argv = build_qemu_argv(make_spec(display=DisplayKind.SPICE), LAYOUT.vm("web1"),
                           plan(usb_redirect=False))
    devices = json_values(argv, "-device")
    assert not [d for d in devices if d["driver"] in ("usb-redir", "qemu-xhci")]
    assert not [c for c in values(argv, "-chardev") if "usbredir" in c]
    assert "spicevmc,id=vdagent,name=vdagent" in values(argv, "-chardev")


def test_spice_socket_path_with_a_comma_is_escaped() -> None:
    layout = Layout(home=Path("/h"), runtime_base=Path("/run/a,b"))
    paths = layout.vm("web1")
    argv = build_qemu_argv(make_spec(display=DisplayKind.SPICE), paths, plan())
    assert values(argv, "-spice") == [
        f"unix=on,addr={qemu_opt(str(paths.spice_socket))},disable-ticketing=on"]
    assert ",," in values(argv, "-spice")[0]


def test_display_kind_from_a_definition() -> None:
    spec = make_spec(display="spice")  # a plain string is checked and converted
    assert spec.display is DisplayKind.SPICE
    assert VmSpec.from_dict(spec.to_dict()).display is DisplayKind.SPICE
    with pytest.raises(InvalidInput, match="invalid display 'sdl': use vnc, spice, none"):
        make_spec(display="sdl")
    data = spec.to_dict()
    del data["display"]
    assert VmSpec.from_dict(data).display is DisplayKind.VNC  # older definitions


def test_hugepages_backend() -> None:
    argv = build_qemu_argv(make_spec(hugepages=True), LAYOUT.vm("web1"), plan())
    backend = json_values(argv, "-object")[0]
    assert backend["qom-type"] == "memory-backend-file"
    assert backend["mem-path"] == "/dev/hugepages"
