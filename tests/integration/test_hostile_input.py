"""Names, tags, paths and clipboard text built to break things, end to end through the
real `hypercore` command, real qemu-img, real QEMU (QMP), real Ceph, the real test guest
and real qemu-ga.

Every hostile value is either refused with exit 2 and one clear line, or carried
byte-exact (checked with qemu-img, the ``rbd`` command, the guest's own tools and
sha256), and never interpreted: the canary files a shell or an option injection would
create never appear, and a logging ``qemu-img`` on PATH shows exactly which argv
qemu-img received.

The snapshot tag rule, the same for qcow2 (offline and live) and RBD: 1-64 ASCII
letters, digits and ``- _ . : +``, starting with a letter or digit, not all digits
(``core.names.validate_snapshot_tag``, checked in the service before any back end).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from hypercore_tui.adapters.qga import agent_session
from hypercore_tui.core.errors import InvalidInput
from hypercore_tui.core.text import printable
from hypercore_tui.services import snapshots
from hypercore_tui.services.clipboard import FALLBACK_FILE
from hypercore_tui.services.transfer import guest_side, host_files
from hypercore_tui.services.transfer.errors import TransferError

from ..conftest import HYPERCORE, GuestImage, HcEnv, create_guest_vm
from ..helpers import QemuImgRecorder
from .conftest import POOL, CephCluster, unique
from .storage_env import guest_sh, guests_env, host_qemu_ga

pytestmark = [pytest.mark.qemu, pytest.mark.timeout(900)]

QEMU_IMG = shutil.which("qemu-img") or "/usr/bin/qemu-img"
OSC52_BEL = "\x1b]52;c;cHduZWQ=\x07"
OSC52_ST = "\x1b]52;c;cHduZWQ=\x1b\\"


# -- helpers ---------------------------------------------------------------------------


def one_error_line(proc: subprocess.CompletedProcess[bytes], code: int = 2) -> str:
    """The single ``hypercore: error:`` line, itself free of raw control characters."""
    err = proc.stderr.decode("utf-8", errors="replace")
    assert proc.returncode == code, (proc.returncode, err, proc.stdout[-300:])
    assert err.startswith("hypercore: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err and "internal error" not in err, err
    assert_terminal_safe(err)
    return err


def assert_terminal_safe(text: str) -> None:
    """No ESC, BEL, C1, bidi or zero-width character: every line is already printable."""
    for line in text.split("\n"):
        assert printable(line, limit=None) == line, f"raw control/format character in {line!r}"


def canary_tags(canary: Path) -> list[str]:
    return [f"$(touch {canary})", f"`touch {canary}`", f"x;touch {canary}",
            f"x|touch {canary}", f"x&touch {canary}", f"x&&touch {canary}"]


def rejected_tags(canary: Path) -> list[str]:
    """Hostile tags no back end may see (NUL cannot travel in argv: see the service test)."""
    return [
        "-l", "--help", "-d x", "-c", "-", "../x", "/abs", "a/b", ".hidden", "_x", ":x",
        *canary_tags(canary),
        "a\nb", "a\tb", "a\rb", OSC52_BEL, OSC52_ST, "\x1b[2J", "a\x7fb", "a\x85b",
        "a\u202eb", "\u2066a\u2069", "a\u200fb",
        "x" * 65, "y" * 1000,
        "sn\u0430p",  # Cyrillic a
        "\uff53\uff4e\uff41\uff50",  # fullwidth "snap"
        "sn\u200dap", "sn\u200bap", "\ufeffsnap",  # zero-width joiner/space, BOM
        "", " ", "   ", " a", "a ", "123", "0",
    ]


#: One of each kind, for restore and delete (the same check runs first for every verb).
def sample_rejected(canary: Path) -> list[str]:
    return ["-l", "--help", "-d x", "../x", "/abs", f"$(touch {canary})", "a\nb", OSC52_BEL,
            "a\u202eb", "y" * 1000, "sn\u0430p", ""]


#: Tags every back end accepts and carries byte-exact (one of them 64 characters long,
#: every allowed punctuation character, a digit first, case-only differences).
ACCEPTED = ["Rz9-_.:+" * 8, "v1.0-rc+2:final", "9a", "Snap", "snap"]


def assert_rejected(env: HcEnv, verb: str, vm: str, tag: str) -> None:
    proc = env.run("snapshot", verb, vm, "--", tag)
    err = one_error_line(proc, 2)
    assert "invalid snapshot tag" in err, (tag, err)
    assert len(err) < 300, err  # a 1000-character tag is cut in the message


def no_canary(canary: Path) -> None:
    assert not canary.exists(), f"{canary} was created: a tag was interpreted by a shell"


def qemu_img_snapshot_names(disk: Path) -> list[str]:
    """Snapshot names straight from qemu-img (``-U``: read-only, also while QEMU runs)."""
    proc = subprocess.run([QEMU_IMG, "info", "-U", "--output=json", "-f", "qcow2", str(disk)],
                          capture_output=True, text=True, timeout=60, check=True)
    return [s["name"] for s in json.loads(proc.stdout).get("snapshots", [])]


def qemu_io(disk: Path, command: str, *, force_share: bool = False) -> str:
    argv = ["qemu-io", "-f", "qcow2", *(["-U", "-r"] if force_share else []), "-c", command,
            str(disk)]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=True)
    return proc.stdout + proc.stderr


def disk_has_pattern(disk: Path, pattern: int, *, force_share: bool = False) -> bool:
    out = qemu_io(disk, f"read -P {pattern:#x} 0 64k", force_share=force_share)
    return "Pattern verification failed" not in out and "read 65536/65536" in out


def hypercore_tags(env: HcEnv, vm: str) -> list[str]:
    proc = env.run("snapshot", "list", vm, "--json", check=True)
    return [row["tag"] for row in json.loads(proc.stdout)]


def disk_path(env: HcEnv, vm: str) -> Path:
    return Path(json.loads((env.home / "vms" / vm / "vm.json").read_text())["disk"]["path"])


@pytest.fixture
def canary(tmp_path: Path) -> Path:
    return tmp_path / f"pwned-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def qemu_img_log(hc_env: HcEnv, tmp_path: Path) -> Callable[[], list[list[str]]]:
    """A ``qemu-img`` first on PATH that records its exact argv, then runs the real one;
    the fixture's value returns every call so far."""
    recorder = QemuImgRecorder(tmp_path, QEMU_IMG)
    hc_env.environ["PATH"] = recorder.path_for(hc_env.environ)
    return recorder.calls


# -- snapshot tags ---------------------------------------------------------------------


def test_tags_on_a_stopped_qcow2_vm_through_qemu_img(
        hc_env: HcEnv, test_guest: GuestImage, canary: Path,
        qemu_img_log: Callable[[], list[list[str]]]) -> None:
    """Offline qcow2 (qemu-img argv): 42 rejected tags for create + 12 for restore and
    delete, 5 accepted tags created/listed/restored/deleted, 1 hostile tag made outside
    Hypercore listed escaped and refused by name."""
    create_guest_vm(hc_env, test_guest, "tagq", "--no-shared")
    disk = disk_path(hc_env, "tagq")
    for tag in rejected_tags(canary):
        assert_rejected(hc_env, "create", "tagq", tag)
    for tag in sample_rejected(canary):
        assert_rejected(hc_env, "restore", "tagq", tag)
        assert_rejected(hc_env, "delete", "tagq", tag)
    no_canary(canary)
    assert qemu_img_snapshot_names(disk) == []

    for index, tag in enumerate(ACCEPTED):
        qemu_io(disk, f"write -P {0x10 + index:#x} 0 64k")
        made = hc_env.run("snapshot", "create", "tagq", "--", tag)
        assert made.returncode == 0, (tag, made.stderr)
        assert_terminal_safe(made.stdout.decode())
    assert qemu_img_snapshot_names(disk) == ACCEPTED  # byte-exact, in qemu-img's own view
    assert hypercore_tags(hc_env, "tagq") == ACCEPTED
    plain = subprocess.run([QEMU_IMG, "snapshot", "-l", "-U", str(disk)], capture_output=True,
                           text=True, check=True).stdout
    assert all(tag in plain for tag in ACCEPTED)
    for index, tag in reversed(list(enumerate(ACCEPTED))):
        restored = hc_env.run("snapshot", "restore", "tagq", "--", tag)
        assert restored.returncode == 0, (tag, restored.stderr)
        assert disk_has_pattern(disk, 0x10 + index), tag
    for tag in ACCEPTED:
        gone = hc_env.run("snapshot", "delete", "tagq", "--", tag)
        assert gone.returncode == 0, (tag, gone.stderr)
    assert qemu_img_snapshot_names(disk) == []

    # What qemu-img was given: exactly the accepted tags, each one whole argv element
    # right after its flag, the image as a json: filename (never option-like).
    snaps = [argv for argv in qemu_img_log() if argv[:1] == ["snapshot"]]
    assert sorted((a[2], a[3]) for a in snaps) == sorted(
        (flag, tag) for tag in ACCEPTED for flag in ("-c", "-a", "-d"))
    assert all(len(a) == 5 and a[1] == "-q" and a[4].startswith("json:") for a in snaps)
    no_canary(canary)

    # A hostile tag made behind Hypercore's back is listed escaped, and cannot be named.
    hostile = OSC52_BEL + "\u202eX[bold red]x[/]"
    subprocess.run([QEMU_IMG, "snapshot", "-c", hostile, str(disk)], check=True)
    listing = hc_env.run("snapshot", "list", "tagq", check=True).stdout.decode()
    assert_terminal_safe(listing)
    assert printable(hostile, limit=None) in listing
    assert hypercore_tags(hc_env, "tagq") == [hostile]  # --json: exact (JSON-escaped)
    assert_rejected(hc_env, "delete", "tagq", hostile)
    assert qemu_img_snapshot_names(disk) == [hostile]  # nothing lost


def test_tags_on_a_running_vm_through_qmp(hc_env: HcEnv, test_guest: GuestImage,
                                          canary: Path) -> None:
    """Live (QMP): 42 rejected tags for create + 5 for restore and delete; 5 accepted
    tags created live (1 RAM + 4 disk-only), byte-exact in the image, the RAM one
    restored and deleted live, the disk-only ones restored and deleted offline after
    the VM stops."""
    create_guest_vm(hc_env, test_guest, "tagl", "--no-shared")
    hc_env.run("boot-vm", "tagl", "--wait-agent", "90", check=True, timeout=180)
    disk = disk_path(hc_env, "tagl")
    try:
        for tag in rejected_tags(canary):
            assert_rejected(hc_env, "create", "tagl", tag)
        for tag in ("-l", "../x", OSC52_BEL, "y" * 1000, "sn\u0430p"):
            assert_rejected(hc_env, "restore", "tagl", tag)
            assert_rejected(hc_env, "delete", "tagl", tag)
        no_canary(canary)
        assert hypercore_tags(hc_env, "tagl") == []

        ram_tag, disk_tags = ACCEPTED[0], ACCEPTED[1:]
        guest_sh(hc_env, "tagl", "echo before > /tmp/marker")
        made = hc_env.run("snapshot", "create", "tagl", ram_tag, "--json", timeout=600)
        assert made.returncode == 0, made.stderr
        assert json.loads(made.stdout)["has_ram"] is True
        for index, tag in enumerate(disk_tags):
            # What the guest wrote (and synced) to its disk is what the snapshot holds.
            guest_sh(hc_env, "tagl", 'printf "$1" | dd of=/dev/vda bs=65536 count=1 '
                     'conv=sync 2>/dev/null; sync', f"\\{0o20 + index:o}")
            made = hc_env.run("snapshot", "create", "--disk-only", "tagl", "--", tag)
            assert made.returncode == 0, (tag, made.stderr)
        assert qemu_img_snapshot_names(disk) == ACCEPTED
        assert hypercore_tags(hc_env, "tagl") == ACCEPTED

        guest_sh(hc_env, "tagl", "echo after > /tmp/marker")
        back = hc_env.run("snapshot", "restore", "tagl", "--", ram_tag, timeout=600)
        assert back.returncode == 0, back.stderr
        assert guest_sh(hc_env, "tagl", "cat /tmp/marker").stdout == b"before\n"
        gone = hc_env.run("snapshot", "delete", "tagl", "--", ram_tag, timeout=600)
        assert gone.returncode == 0, gone.stderr
        assert qemu_img_snapshot_names(disk) == disk_tags
    finally:
        hc_env.run("stop-vm", "tagl", "--force", timeout=120)
    no_canary(canary)

    for index, tag in enumerate(disk_tags):
        restored = hc_env.run("snapshot", "restore", "tagl", "--", tag)
        assert restored.returncode == 0, (tag, restored.stderr)
        # The guest wrote one byte 0x10+i followed by zeros (conv=sync pads the block).
        out = qemu_io(disk, f"read -P {0x10 + index:#x} 0 1")
        assert "Pattern verification failed" not in out and "read 1/1" in out, (tag, out)
        gone = hc_env.run("snapshot", "delete", "tagl", "--", tag)
        assert gone.returncode == 0, (tag, gone.stderr)
    assert qemu_img_snapshot_names(disk) == []
    no_canary(canary)


def rbd_snap_names(cluster: CephCluster, image: str) -> list[str]:
    """Snapshot names from the ``rbd`` command itself (not Hypercore's listing)."""
    proc = subprocess.run(["rbd", "-c", cluster.conf, "--format", "json", "snap", "ls",
                           f"{cluster.pool}/{image}"], capture_output=True, text=True,
                          timeout=60, check=True)
    return [s["name"] for s in json.loads(proc.stdout)]


@pytest.mark.ceph
def test_tags_on_an_rbd_vm(rbd_env: HcEnv, ceph_cluster: CephCluster,
                           image_names: list[str], canary: Path) -> None:
    """Offline RBD: 42 rejected tags for create + 5 for restore and delete, 5 accepted tags
    created/listed by `rbd`/rolled back/deleted, 1 hostile snapshot made with librbd
    listed escaped (and no qemu-img ever runs: the rbd_env tripwire)."""
    image = unique("tags")
    image_names.append(image)
    rbd_env.run("create-vm", "tagr", "64", "1", f"rbd:{POOL}/{image}", "--disk-size", "16M",
                check=True)
    for tag in rejected_tags(canary):
        assert_rejected(rbd_env, "create", "tagr", tag)
    for tag in ("-l", "../x", OSC52_BEL, "y" * 1000, "sn\u0430p"):
        assert_rejected(rbd_env, "restore", "tagr", tag)
        assert_rejected(rbd_env, "delete", "tagr", tag)
    no_canary(canary)
    assert rbd_snap_names(ceph_cluster, image) == []

    for index, tag in enumerate(ACCEPTED):
        ceph_cluster.write(image, bytes([0x10 + index]) * 4096)
        made = rbd_env.run("snapshot", "create", "tagr", "--", tag)
        assert made.returncode == 0, (tag, made.stderr)
    assert rbd_snap_names(ceph_cluster, image) == ACCEPTED
    assert hypercore_tags(rbd_env, "tagr") == ACCEPTED
    for index, tag in enumerate(ACCEPTED):
        restored = rbd_env.run("snapshot", "restore", "tagr", "--", tag)
        assert restored.returncode == 0, (tag, restored.stderr)
        assert ceph_cluster.read(image, 4096) == bytes([0x10 + index]) * 4096, tag
    for tag in ACCEPTED:
        gone = rbd_env.run("snapshot", "delete", "tagr", "--", tag)
        assert gone.returncode == 0, (tag, gone.stderr)
    assert rbd_snap_names(ceph_cluster, image) == []
    no_canary(canary)

    hostile = OSC52_ST + "\u202eX\x9b2J"
    with ceph_cluster.session() as s:
        s.create_snapshot(POOL, image, hostile)
    listing = rbd_env.run("snapshot", "list", "tagr", check=True).stdout.decode()
    assert_terminal_safe(listing)
    assert printable(hostile, limit=None) in listing
    assert hypercore_tags(rbd_env, "tagr") == [hostile]
    assert_rejected(rbd_env, "delete", "tagr", hostile)
    blocked = rbd_env.run("delete-vm", "tagr", "--yes", "--remove-image")
    assert "has snapshots" in one_error_line(blocked, 1)  # named escaped, one line
    assert rbd_snap_names(ceph_cluster, image) == [hostile]


def test_nul_and_control_tags_refused_by_the_service(hc_env: HcEnv) -> None:
    """NUL cannot travel in argv; the service (what the UI calls) refuses it and 3 other
    controls for each of create/restore/delete before any lookup: 12 cases."""
    ctx = hc_env.ctx
    for tag in ("a\x00b", "\x00", "snap\x00-rf", "a\x1b[2Jb"):
        for call in (snapshots.create_snapshot(ctx, "ghost", tag),
                     snapshots.restore_snapshot(ctx, "ghost", tag),
                     snapshots.delete_snapshot(ctx, "ghost", tag)):
            with pytest.raises(InvalidInput, match="invalid snapshot tag") as caught:
                asyncio.run(call)
            assert "\x00" not in str(caught.value) and "\x1b" not in str(caught.value)


# -- VM names --------------------------------------------------------------------------


def test_hostile_vm_names_refused(hc_env: HcEnv, canary: Path) -> None:
    """35 hostile names for create-vm (look-alikes, bidi, zero-width, option injection,
    traversal, shell metacharacters, 1000 characters), 5 for other commands."""
    names = [
        "-x", "--help", "-rf", "--qemu-arg=-x", "-d x", "../etc", "..", ".", ".hidden", "a/b",
        "/abs", "name.", "v\u0430m",  # Cyrillic a
        "\uff56\uff4d",  # fullwidth "vm"
        "v\u200dm", "v\u200bm", "\ufeffvm", "v\u202em", "\u2066vm\u2069", "v\u200fm",
        *canary_tags(canary), "a b", "a\nb", "a\tb", OSC52_BEL, "\x1b[2J",
        "n" * 65, "n" * 1000, "", " ",
    ]
    for name in names:
        proc = hc_env.run("create-vm", "--", name, "64", "1", "--disk-size", "16M")
        assert "invalid VM name" in one_error_line(proc, 2), name
    for args in (["boot-vm", "--", "-x"], ["delete-vm", "--yes", "--", "../etc"],
                 ["snapshot", "list", "--", "-l"], ["stats", "--", OSC52_BEL],
                 ["clip", "pull", "--", "v\u0430m"]):
        one_error_line(hc_env.run(*args), 2)
    vms = hc_env.home / "vms"
    assert not vms.exists() or list(vms.iterdir()) == []
    no_canary(canary)
    # Unquoted, argparse takes a leading dash for an option: refused too, nothing made.
    assert "required" in one_error_line(hc_env.run("create-vm", "-x", "64", "1"), 2)


# -- cp: hostile file names and destinations ----------------------------------------------


@pytest.fixture(scope="module")
def guest(test_guest: GuestImage) -> Iterator[HcEnv]:
    with guests_env(test_guest, ["hx1"]) as env:
        yield env


def host_file_names(token: str) -> list[str]:
    return [
        "new\nline.txt", "-rf", "--help", "sp ace 'q' \"dq\".txt", f"$(touch {token})",
        f"`touch {token}`;x|y&z", "\u00fcn\u00ef\u00a9\u00f8d\u00e9 \U0001f600.txt",
        "\u202eevil\u202c.txt", "back\\slash", OSC52_BEL + ".txt", "tab\there", " lead",
        "*?[glob]", "n" * 255,
    ]


def guest_listing(env: HcEnv, directory: str) -> dict[str, str]:
    """{exact file name: sha256} of a guest directory, from the guest's own tools."""
    script = ('cd "$1" || exit 1; for f in * .[!.]*; do [ -f "$f" ] || continue; '
              'printf "%s\\0" "$f"; sha256sum < "$f" | cut -d" " -f1; done')
    out = guest_sh(env, "hx1", script, directory).stdout
    listing: dict[str, str] = {}
    parts = out.split(b"\0")
    name = parts[0]
    for part in parts[1:]:
        digest, _, following = part.partition(b"\n")
        listing[name.decode()] = digest.decode()
        name = following
    return listing


def host_listing(directory: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in directory.iterdir() if p.is_file()}


def run_in(env: HcEnv, cwd: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([*HYPERCORE, *args], env=env.environ, cwd=cwd, capture_output=True,
                          timeout=300, stdin=subprocess.DEVNULL)


def test_cp_hostile_host_file_names(guest: HcEnv, tmp_path: Path) -> None:
    """14 hostile host file names, each copied 5 ways (agent up, share up, into the share,
    back via the share, back via the agent): names and sha256 byte-exact everywhere;
    2 names also given as relative paths with a leading dash."""
    token = f"hc-pwned-{uuid.uuid4().hex[:8]}"
    src_dir, back_share, back_agent = (tmp_path / d for d in ("src", "back1", "back2"))
    for d in (src_dir, back_share, back_agent):
        d.mkdir()
    names = host_file_names(token)
    expected: dict[str, str] = {}
    for index, name in enumerate(names):
        data = os.urandom(1000 + index * 4099)
        (src_dir / name).write_bytes(data)
        expected[name] = hashlib.sha256(data).hexdigest()
    guest_sh(guest, "hx1", "rm -rf /tmp/t /tmp/s /shared/hx; mkdir -p /tmp/t /tmp/s /shared/hx")
    share = guest.home / "shared_folder"

    for name in names:
        src = str(src_dir / name)
        for via, dst in (("agent", "hx1:/tmp/t/"), ("share", "hx1:/tmp/s/"),
                         ("auto", "hx1:/shared/hx/")):
            proc = guest.run("cp", "--via", via, "--", src, dst)
            assert proc.returncode == 0, (name, via, proc.stderr)
            assert_terminal_safe(proc.stdout.decode())
    assert guest_listing(guest, "/tmp/t") == expected
    assert guest_listing(guest, "/tmp/s") == expected
    assert host_listing(share / "hx") == expected  # placed directly, names exact on the host

    for name in names:
        for via, out in (("auto", back_share), ("agent", back_agent)):
            proc = guest.run("cp", "--via", via, "--", f"hx1:/tmp/t/{name}", f"{out}/")
            assert proc.returncode == 0, (name, via, proc.stderr)
    assert host_listing(back_share) == expected
    assert host_listing(back_agent) == expected

    # Relative host paths that look like options, after `--`.
    for name in ("-rf", "--help"):
        proc = run_in(guest, src_dir, "cp", "--", name, "hx1:/tmp/t/rel" + name)
        assert proc.returncode == 0, (name, proc.stderr)
        proc = run_in(guest, back_share, "cp", "--", f"hx1:/tmp/t/rel{name}", name)
        assert proc.returncode == 0, (name, proc.stderr)
        assert hashlib.sha256((back_share / name).read_bytes()).hexdigest() == expected[name]

    # Nothing was run by a shell, neither in the guest nor on the host.
    found = guest_sh(guest, "hx1", 'find / -xdev -name "$1" 2>/dev/null; true', token).stdout
    assert found == b""
    assert not (Path.cwd() / token).exists() and not (src_dir / token).exists()
    assert list((share / ".hypercore-transfer").iterdir()) == []


def test_cp_hostile_guest_destinations(guest: HcEnv, tmp_path: Path) -> None:
    """7 malformed guest paths refused with exit 2 and one line, nothing written."""
    src = tmp_path / "x.txt"
    src.write_text("x")
    guest_sh(guest, "hx1", "rm -rf /tmp/t; mkdir -p /tmp/t")
    for dst in ("hx1:../../etc/x", "hx1:-rf", "hx1:--help", "hx1:rel/x", "hx1:",
                "hx1:~/x", "hx1:$(touch /tmp/t/pwned)"):
        err = one_error_line(guest.run("cp", "--", str(src), dst), 2)
        assert "guest paths must be absolute" in err, (dst, err)
    for src_arg in ("hx1:-rf", "hx1:../../etc/passwd"):
        one_error_line(guest.run("cp", "--", src_arg, str(tmp_path) + "/"), 2)
    assert guest_listing(guest, "/tmp/t") == {}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.txt"]
    # A traversal inside an absolute guest path stays in the guest (normalised there).
    proc = guest.run("cp", str(src), "hx1:/tmp/t/../t/./y.txt")
    assert proc.returncode == 0, proc.stderr
    assert list(guest_listing(guest, "/tmp/t")) == ["y.txt"]


def test_cp_never_follows_symlinks_planted_in_the_share(guest: HcEnv, tmp_path: Path) -> None:
    """Host symlinks planted in the shared folder (to a file, to a directory, as the
    staging directory, a file in its place): 3 copies through the links, 4 share paths a
    lying guest could report, 2 staging cases; nothing read or written outside the share."""
    share = guest.home / "shared_folder"
    outside = tmp_path / "outside"
    outside.mkdir()
    secret = outside / "secret.txt"
    secret.write_text("host secret\n")
    target_dir = outside / "dir"
    target_dir.mkdir()
    payload = tmp_path / "payload.txt"
    payload.write_text("payload\n")
    (share / "esc-file").symlink_to(secret)
    (share / "esc-dir").symlink_to(target_dir)
    got = tmp_path / "got"
    got.mkdir()

    def untouched() -> None:
        assert secret.read_text() == "host secret\n"
        assert list(target_dir.iterdir()) == []
        for f in got.iterdir():
            assert b"host secret" not in f.read_bytes(), f

    try:
        # The guest cannot resolve host links (9p mapped-xattr: ELOOP), and the host
        # refuses to write through one.
        for args in (["cp", str(payload), "hx1:/shared/esc-dir/x.txt"],
                     ["cp", str(payload), "hx1:/shared/esc-file"],
                     ["cp", "hx1:/shared/esc-file", f"{got}/"]):
            proc = guest.run(*args)
            one_error_line(proc, proc.returncode)
            untouched()
        assert (share / "esc-file").is_symlink() and (share / "esc-dir").is_symlink()
        # A guest's tools are its own and may lie: the host checks every share path a
        # guest reports before it reads or writes there.
        for rel in ("/esc-file", "/esc-dir/y.txt", "/../outside/secret.txt", "/a/../../x"):
            with pytest.raises(TransferError):
                host_files.share_host_path(guest.ctx, rel)
    finally:
        for link in ("esc-file", "esc-dir"):
            (share / link).unlink(missing_ok=True)
    untouched()

    # The staging directory replaced by a symlink (host side) or a file (guest side).
    staging = share / ".hypercore-transfer"
    shutil.rmtree(staging, ignore_errors=True)
    staging.symlink_to(target_dir)
    before = target_dir.stat().st_mtime_ns
    try:
        proc = guest.run("cp", "--via", "share", str(payload), "hx1:/tmp/")
        assert "staging directory" in one_error_line(proc, 1)
        assert target_dir.stat().st_mtime_ns == before, "a file was created outside the share"
        untouched()
    finally:
        staging.unlink()
    guest_sh(guest, "hx1", "touch /shared/.hypercore-transfer")
    try:
        err = one_error_line(guest.run("cp", "--via", "share", str(payload), "hx1:/tmp/"), 1)
        assert "staging directory" in err
    finally:
        (share / ".hypercore-transfer").unlink(missing_ok=True)
    proc = guest.run("cp", "--via", "share", str(payload), "hx1:/tmp/")
    assert proc.returncode == 0, proc.stderr  # and it works again once the share is sane


async def test_guest_sha256_of_odd_names_with_coreutils(tmp_path: Path) -> None:
    """GNU sha256sum escapes names with a backslash or newline (a leading '\\'): real
    qemu-ga on the host (coreutils, like most real guests), 3 names x 2 scripts."""
    data = os.urandom(5000)
    digest = hashlib.sha256(data).hexdigest()
    with host_qemu_ga() as sock:
        async with agent_session(sock, vm_name="host") as agent:
            for name in ("back\\slash", "new\nline", "plain.txt"):
                path = tmp_path / name
                path.write_bytes(data)
                assert await guest_side.guest_sha256(agent, str(path)) == digest, name
                staged = tmp_path / "staged.bin"
                # (5000 bytes: the spot check's one block is the whole file)
                result = await guest_side.run_script(agent, guest_side.TO_SHARE, str(path),
                                                     str(staged), "5000", "1", "0")
                assert result.shell_status == 0, result.stderr
                assert result.stdout.decode().split(" ", 1)[0].strip() == digest, name
                assert staged.read_bytes() == data
                staged.unlink()


# -- clipboard ------------------------------------------------------------------------


def clipboard_cases() -> list[str]:
    controls = "".join(chr(c) for c in range(1, 32)) + "\x7f"
    c1 = "".join(chr(c) for c in range(0x80, 0xA0))
    mixed = "a\u00e9\u05e9\u0645\u4e2d\U0001f600\u202e\u200d\r\n\t\x1b[31m"
    big = (mixed * (1024 * 1024 // len(mixed.encode()) + 1)).encode()[:1024 * 1024]
    big_text = big.decode("utf-8", errors="ignore")
    return [
        OSC52_BEL + "after osc 52 (BEL)", OSC52_ST + "after osc 52 (ST)",
        "\x1b[2J\x1b[H\x1b]0;title\x07\x1bP+q\x1b\\ csi, title, dcs",
        controls, c1, "crlf\r\nline\r\n\r\n", "\u202eRLO \u2066isolate\u2069 \u200f",
        "zw\u200b\u200c\u200d\ufeff joiners", "\U0010fffd\ufffe\uffff\U0001f468\u200d\U0001f469",
        "[bold red]x[/] [link=https://evil.example]l[/link]", big_text,
    ]


def test_clipboard_round_trip_of_hostile_text(guest: HcEnv) -> None:
    """11 hostile texts (OSC 52, CSI, every C0/C1 control, bidi, CRLF, zero-width,
    astral and non-characters, markup, 1 MiB) pushed and pulled byte-exact through the
    real guest; NUL refused with one line and the guest's clipboard left as it was."""
    for text in clipboard_cases():
        data = text.encode("utf-8")
        pushed = guest.run("clip", "push", "hx1", stdin=data)
        assert pushed.returncode == 0, pushed.stderr
        assert_terminal_safe(pushed.stdout.decode())
        pulled = guest.run("clip", "pull", "hx1")
        assert pulled.returncode == 0, pulled.stderr
        assert pulled.stdout == data, (text[:40], pulled.stdout[:80])
    last = clipboard_cases()[-1].encode()
    inside = guest_sh(guest, "hx1", 'cat "$1"', FALLBACK_FILE)  # no desktop: the fallback file
    assert inside.stdout == last
    for bad in (b"a\x00b", b"\x00", b"text then nul\x00"):
        err = one_error_line(guest.run("clip", "push", "hx1", stdin=bad), 2)
        assert "NUL" in err
    one_error_line(guest.run("clip", "push", "hx1", "--text", "a\x1b]52;c;x\x07", "--",
                             "v\u0430m"), 2)
    assert guest.run("clip", "pull", "hx1", check=True).stdout == last  # nothing lost
