"""Nobody let in: private sockets and directories, no public listeners, and a shared
folder that cannot plant set-uid files or symlinks on the host.

Checked with real stat() calls, real connection attempts and the real test guest.
"""

from __future__ import annotations

import os
import socket
import stat
import subprocess
from pathlib import Path

import pytest

from ..conftest import GuestImage, HcEnv, create_guest_vm

pytestmark = pytest.mark.qemu


def listening_inet_sockets(pid: int) -> list[str]:
    """TCP/UDP sockets the process listens on (from `ss`, filtered by pid)."""
    out = subprocess.run(["ss", "-H", "-ltunp"], capture_output=True, text=True, check=True)
    return [line for line in out.stdout.splitlines() if f"pid={pid}," in line]


def test_runtime_files_private_and_no_public_listener(hc_env: HcEnv,
                                                      test_guest: GuestImage) -> None:
    create_guest_vm(hc_env, test_guest, "sec1")
    hc_env.run("boot-vm", "sec1", check=True)
    paths = hc_env.ctx.vm_paths("sec1")
    checked = 0
    for directory in (hc_env.runtime, hc_env.ctx.layout.runtime_dir, paths.run_dir):
        info = os.stat(directory)
        assert stat.S_IMODE(info.st_mode) == 0o700, directory
        checked += 1
    for sock in (paths.qmp_socket, paths.qmp_monitor_socket, paths.qga_socket,
                 paths.clip_socket, paths.serial_socket, paths.vnc_socket):
        info = os.stat(sock)
        assert stat.S_ISSOCK(info.st_mode)
        assert stat.S_IMODE(info.st_mode) & 0o077 == 0, f"{sock} is {oct(info.st_mode)}"
        checked += 1
    assert stat.S_IMODE(os.stat(hc_env.home).st_mode) == 0o700
    pid = int(paths.pidfile.read_text())
    assert listening_inet_sockets(pid) == []
    # The display answers on its unix socket only: a VNC handshake comes back from there.
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        client.settimeout(5)
        client.connect(str(paths.vnc_socket))
        assert client.recv(12).startswith(b"RFB ")
    # ...and not on the usual TCP ports.
    for port in (5900, 5901, 5930):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.settimeout(1)
            assert probe.connect_ex(("127.0.0.1", port)) != 0
    print(f"security: {checked} directories/sockets checked private, 0 inet listeners")
    hc_env.run("stop-vm", "sec1", "--force", check=True)


def test_guest_cannot_plant_setuid_files_or_symlinks(hc_env: HcEnv,
                                                     test_guest: GuestImage) -> None:
    create_guest_vm(hc_env, test_guest, "sec2")
    hc_env.run("boot-vm", "sec2", "--wait-agent", "60", check=True)
    script = (
        "set -e; grep -q ' /shared ' /proc/mounts; cd /shared;"
        "cp /bin/busybox suid-shell; chmod 4755 suid-shell;"
        "ln -s /etc/passwd escape-link; ln -s ../../../../.. escape-dir;"
        "stat -c '%a %F' suid-shell escape-link"
    )
    proc = hc_env.run("exec", "sec2", "--", "/bin/sh", "-c", script)
    assert proc.returncode == 0, proc.stderr
    # Inside the guest the files look as the guest asked...
    assert proc.stdout.decode().split("\n")[:2] == ["4755 regular file", "777 symbolic link"]
    share = hc_env.home / "shared_folder"
    # ...but on the host, mapped-xattr keeps those as plain data: no set-uid bit, no link.
    suid = os.lstat(share / "suid-shell")
    assert stat.S_ISREG(suid.st_mode)
    assert not suid.st_mode & (stat.S_ISUID | stat.S_ISGID)
    for name in ("escape-link", "escape-dir"):
        info = os.lstat(share / name)
        assert not stat.S_ISLNK(info.st_mode), f"{name} became a real symlink on the host"
        assert stat.S_ISREG(info.st_mode)
    assert (share / "escape-link").read_bytes() == b"/etc/passwd"  # the target is just data
    hc_env.run("stop-vm", "sec2", "--force", check=True)


def test_foreign_runtime_dir_is_refused(hc_env: HcEnv, test_guest: GuestImage,
                                        tmp_path: Path) -> None:
    """A runtime directory planted by someone else (wrong owner) is never used."""
    create_guest_vm(hc_env, test_guest, "sec3")
    hc_env.runtime.mkdir(parents=True)
    os.chown(hc_env.runtime, 65534, 65534)
    proc = hc_env.run("boot-vm", "sec3")
    assert proc.returncode == 1
    assert b"belongs to another user" in proc.stderr
    assert proc.stderr.count(b"\n") == 1
