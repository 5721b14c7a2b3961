#!/usr/bin/env python3
"""Boot the Hypercore test guest under QEMU/TCG and check it end to end.

Not part of the guest build (not hashed into the cache key); a reference for
the Python side and a tool to measure boot-to-agent time.

    python3 scripts/test-guest/smoke.py                 # full check, 1 boot
    python3 scripts/test-guest/smoke.py --bench 5       # time to first guest-ping
    python3 scripts/test-guest/smoke.py --powerdown     # QMP system_powerdown
    python3 scripts/test-guest/smoke.py --dir DIR --machine pc --cpu max

Plain sockets only: the guest agent is reached through a QEMU chardev socket
(virtserialport name org.qemu.guest_agent.0), QMP through a unix socket.
"""
from __future__ import annotations

import argparse
import base64
import json
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


class Agent:
    """Minimal qemu-ga client over the chardev unix socket."""

    def __init__(self, path: str, timeout: float = 30.0):
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self.sock.connect(path)
                break
            except OSError:
                self.sock.close()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.01)
        self.buf = b""
        self.sync_id = int(time.time() * 1000) % 1_000_000

    def _readline(self, deadline: float) -> bytes | None:
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                return None
            if not chunk:
                raise ConnectionError("agent socket closed")
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\n")
        return line

    def sync(self, timeout: float = 60.0, retry: float = 1.0) -> float:
        """guest-sync-delimited until answered; returns monotonic time of answer."""
        deadline = time.monotonic() + timeout
        sent: set[int] = set()
        while time.monotonic() < deadline:
            self.sync_id += 1
            sent.add(self.sync_id)
            msg = {"execute": "guest-sync-delimited", "arguments": {"id": self.sync_id}}
            self.sock.sendall(b"\xff" + json.dumps(msg).encode() + b"\n")
            step = min(deadline, time.monotonic() + retry)
            while True:
                line = self._readline(step)
                if line is None:
                    break
                i = line.rfind(b"\xff")
                if i >= 0:
                    line = line[i + 1 :]
                try:
                    resp = json.loads(line)
                except ValueError:
                    continue
                if resp.get("return") == self.sync_id:
                    return time.monotonic()
        raise TimeoutError("guest agent did not answer guest-sync-delimited")

    def cmd(self, execute: str, timeout: float = 30.0, **arguments):
        msg: dict = {"execute": execute}
        if arguments:
            msg["arguments"] = arguments
        self.sock.sendall(json.dumps(msg).encode() + b"\n")
        deadline = time.monotonic() + timeout
        while True:
            line = self._readline(deadline)
            if line is None:
                raise TimeoutError(f"no answer to {execute}")
            line = line.lstrip(b"\xff").strip()
            if not line:
                continue
            resp = json.loads(line)
            if "error" in resp:
                raise RuntimeError(f"{execute}: {resp['error']}")
            if "return" in resp:
                return resp["return"]

    def send_only(self, execute: str, **arguments):
        msg: dict = {"execute": execute}
        if arguments:
            msg["arguments"] = arguments
        self.sock.sendall(json.dumps(msg).encode() + b"\n")

    def exec(self, path: str, args: list[str], stdin: bytes | None = None, timeout: float = 30.0):
        a: dict = {"path": path, "arg": args, "capture-output": True}
        if stdin is not None:
            a["input-data"] = base64.b64encode(stdin).decode()
        pid = self.cmd("guest-exec", **a)["pid"]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            st = self.cmd("guest-exec-status", pid=pid)
            if st.get("exited"):
                out = base64.b64decode(st.get("out-data", ""))
                err = base64.b64decode(st.get("err-data", ""))
                return st.get("exitcode"), out, err, st
            time.sleep(0.05)
        raise TimeoutError(f"guest-exec {path} {args} did not finish")


class QMP:
    def __init__(self, path: str, timeout: float = 10.0):
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self.sock.connect(path)
                break
            except OSError:
                self.sock.close()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.01)
        self.f = self.sock.makefile("rwb")
        self.events: list[dict] = []
        json.loads(self.f.readline())  # greeting
        self.cmd("qmp_capabilities")

    def cmd(self, execute: str, **arguments):
        msg: dict = {"execute": execute}
        if arguments:
            msg["arguments"] = arguments
        self.f.write(json.dumps(msg).encode() + b"\n")
        self.f.flush()
        while True:
            line = self.f.readline()
            if not line:
                raise ConnectionError("QMP closed")
            resp = json.loads(line)
            if "event" in resp:
                self.events.append(resp)
                continue
            if "error" in resp:
                raise RuntimeError(f"{execute}: {resp['error']}")
            return resp.get("return")

    def wait_event(self, name: str, timeout: float) -> dict:
        for ev in self.events:
            if ev["event"] == name:
                return ev
        self.sock.settimeout(timeout)
        while True:
            line = self.f.readline()
            if not line:
                raise ConnectionError(f"QMP closed before {name}")
            resp = json.loads(line)
            if "event" in resp:
                self.events.append(resp)
                if resp["event"] == name:
                    return resp


def build_dir() -> str:
    out = subprocess.run([str(REPO / "scripts/build-test-guest.sh")], check=True,
                         stdout=subprocess.PIPE, text=True).stdout
    return out.strip().splitlines()[-1]


def default_kernel(gdir: str) -> str:
    """vmlinux (PVH entry, no decompression: ~3 s faster under TCG) if built."""
    pvh = Path(gdir, "vmlinux")
    return str(pvh) if pvh.exists() else f"{gdir}/vmlinuz"


class VM:
    def __init__(self, gdir: str, tmp: Path, machine: str, cpu: str | None,
                 append: str, extra: list[str], share: bool = True, net: bool = True,
                 kernel: str | None = None):
        self.tmp = tmp
        self.serial = tmp / "serial.log"
        self.serial_path = str(tmp / "serial.sock")
        self.qga_path = str(tmp / "qga.sock")
        self.qmp_path = str(tmp / "qmp.sock")
        self.share = tmp / "share"
        self.share.mkdir(exist_ok=True)
        disk = tmp / "disk.qcow2"
        if not disk.exists():
            subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), "64M"], check=True)
        argv = ["qemu-system-x86_64", "-accel", "tcg", "-machine", machine,
                "-m", "256", "-smp", "1", "-nodefaults", "-nographic", "-no-user-config",
                "-kernel", kernel or default_kernel(gdir), "-initrd", f"{gdir}/initrd.img",
                "-append", append,
                "-chardev", f"socket,id=ser0,path={tmp}/serial.sock,server=on,wait=off,logfile={self.serial}",
                "-serial", "chardev:ser0",
                "-device", "virtio-serial-pci,id=vser0",
                "-chardev", f"socket,id=qga0,path={self.qga_path},server=on,wait=off",
                "-device", "virtserialport,chardev=qga0,name=org.qemu.guest_agent.0",
                "-device", "virtio-balloon-pci,id=balloon0",
                "-drive", f"file={disk},if=none,id=d0,format=qcow2",
                "-device", "virtio-blk-pci,drive=d0",
                "-qmp", f"unix:{self.qmp_path},server=on,wait=off"]
        if cpu:
            argv += ["-cpu", cpu]
        if share:
            argv += ["-fsdev", f"local,id=fs0,path={self.share},security_model=mapped-xattr",
                     "-device", "virtio-9p-pci,fsdev=fs0,mount_tag=hypercore_share"]
        if net:
            argv += ["-netdev", "user,id=n0", "-device", "virtio-net-pci,netdev=n0"]
        argv += extra
        self.argv = argv
        self.t0 = time.monotonic()
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def wait_exit(self, timeout: float) -> int:
        return self.proc.wait(timeout)

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def check(name: str, cond: bool, detail=""):
    print(f"  {'ok  ' if cond else 'FAIL'} {name}{(': ' + str(detail)) if detail else ''}")
    if not cond:
        check.failed += 1


check.failed = 0


def full(args, gdir: str, tmp: Path):
    append = args.append or Path(gdir, "cmdline").read_text().strip()
    vm = VM(gdir, tmp, args.machine, args.cpu, append, args.extra, kernel=args.kernel)
    try:
        qga = Agent(vm.qga_path)
        qmp = QMP(vm.qmp_path)
        qga.sync()
        qga.cmd("guest-ping")
        print(f"first guest-ping after {time.monotonic() - vm.t0:.2f}s")
        check("serial READY", "HYPERCORE-TEST-GUEST READY" in vm.serial.read_text(errors="replace"))
        info = qga.cmd("guest-info")
        cmds = {c["name"]: c["enabled"] for c in info["supported_commands"]}
        check("guest-info", bool(info.get("version")), info.get("version"))
        check("guest-exec enabled", cmds.get("guest-exec") is True)
        rc, out, _, _ = qga.exec("/bin/sh", ["-c", "echo hi; exit 3"])
        check("guest-exec exitcode/out", rc == 3 and out == b"hi\n", (rc, out))
        rc, out, _, _ = qga.exec("/bin/cat", [], stdin=b"stdin data\n")
        check("guest-exec input-data", rc == 0 and out == b"stdin data\n", (rc, out))
        osinfo = qga.cmd("guest-get-osinfo")
        check("guest-get-osinfo", osinfo.get("id") == "hypercore-testguest", osinfo)
        host = qga.cmd("guest-get-host-name")
        check("guest-get-host-name", host.get("host-name") == "hc-testguest", host)
        ifaces = qga.cmd("guest-network-get-interfaces")
        addrs = [a["ip-address"] for i in ifaces for a in i.get("ip-addresses", [])]
        check("guest-network-get-interfaces", "10.0.2.15" in addrs, addrs)
        h = qga.cmd("guest-file-open", path="/tmp/qga-file", mode="w")
        qga.cmd("guest-file-write", handle=h, **{"buf-b64": base64.b64encode(b"file via qga\n").decode()})
        qga.cmd("guest-file-close", handle=h)
        h = qga.cmd("guest-file-open", path="/tmp/qga-file", mode="r")
        rd = qga.cmd("guest-file-read", handle=h, count=4096)
        qga.cmd("guest-file-close", handle=h)
        check("guest-file-*", base64.b64decode(rd["buf-b64"]) == b"file via qga\n", rd)
        (vm.share / "from-host").write_text("hello from host\n")
        rc, out, _, _ = qga.exec("/bin/cat", ["/shared/from-host"])
        check("9p host->guest", out == b"hello from host\n", (rc, out))
        rc, _, err, _ = qga.exec("/bin/sh", ["-c", "echo hello from guest > /shared/from-guest"])
        p = vm.share / "from-guest"
        check("9p guest->host", p.exists() and p.read_text() == "hello from guest\n", (rc, err))
        rc, out, _, _ = qga.exec("/bin/sh", ["-c", "id; ls -ld /home/hcuser; mount; lsmod | wc -l; ls -l /dev/virtio-ports"])
        print("    " + out.decode().replace("\n", "\n    "))
        # interactive root shell on the serial console
        ser = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        ser.connect(vm.serial_path)
        ser.settimeout(10)
        ser.sendall(b"\necho SERIAL-$((6*7)) $(id -u)\n")
        got = b""
        deadline = time.monotonic() + 10
        while b"SERIAL-42 0" not in got and time.monotonic() < deadline:
            try:
                got += ser.recv(4096)
            except socket.timeout:
                break
        check("serial console root shell", b"SERIAL-42 0" in got, got[-80:])
        ser.close()
        # balloon statistics
        bpath = "/machine/peripheral/balloon0"
        qmp.cmd("qom-set", path=bpath, property="guest-stats-polling-interval", value=1)
        stats = {}
        for _ in range(50):
            st = qmp.cmd("qom-get", path=bpath, property="guest-stats")
            stats = st.get("stats", {})
            if st.get("last-update") and stats.get("stat-total-memory", -1) > 0:
                break
            time.sleep(0.1)
        check("balloon guest-stats", stats.get("stat-total-memory", -1) > 0, stats)
        # qemu-ga respawn
        old = qga.exec("/bin/cat", ["/run/qemu-ga.pid"])[1].strip()
        qga.send_only("guest-exec", path="/bin/sh",
                      arg=["-c", "sleep 0.2; kill $(cat /run/qemu-ga.pid)"])
        time.sleep(0.3)
        t = time.monotonic()
        time.sleep(0.05)
        qga.sync(timeout=20, retry=0.25)
        new = qga.exec("/bin/cat", ["/run/qemu-ga.pid"])[1].strip()
        check("qemu-ga respawn", old != new and new != b"", f"{old!r} -> {new!r}, back after {time.monotonic() - t:.2f}s")
        # guest-shutdown
        qga.send_only("guest-shutdown")
        t = time.monotonic()
        rc = vm.wait_exit(30)
        ev = qmp.wait_event("SHUTDOWN", 1)
        check("guest-shutdown", rc == 0 and ev is not None,
              f"qemu exited rc={rc} after {time.monotonic() - t:.2f}s, event {ev.get('data')}")
    finally:
        vm.kill()


def powerdown(args, gdir: str, tmp: Path):
    append = args.append or Path(gdir, "cmdline").read_text().strip()
    vm = VM(gdir, tmp, args.machine, args.cpu, append, args.extra, kernel=args.kernel)
    try:
        qga = Agent(vm.qga_path)
        qmp = QMP(vm.qmp_path)
        qga.sync()
        qmp.cmd("system_powerdown")
        t = time.monotonic()
        rc = vm.wait_exit(30)
        ev = qmp.wait_event("SHUTDOWN", 1)
        check("system_powerdown", rc == 0, f"qemu exited rc={rc} after {time.monotonic() - t:.2f}s, event {ev.get('data')}")
    finally:
        vm.kill()


def bench(args, gdir: str, tmp: Path) -> list[float]:
    append = args.append or Path(gdir, "cmdline").read_text().strip()
    times = []
    for _ in range(args.bench):
        vm = VM(gdir, tmp, args.machine, args.cpu, append, args.extra, kernel=args.kernel)
        try:
            qga = Agent(vm.qga_path)
            qga.sync(retry=5)
            qga.cmd("guest-ping")
            times.append(time.monotonic() - vm.t0)
        finally:
            vm.kill()
    print(f"machine={args.machine} cpu={args.cpu} kernel={args.kernel or default_kernel(gdir)} append={append!r} extra={args.extra}")
    print("  times: " + " ".join(f"{t:.2f}" for t in times) +
          f"  min={min(times):.2f} median={statistics.median(times):.2f}")
    return times


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", help="guest directory (default: run build-test-guest.sh)")
    ap.add_argument("--machine", default="q35")
    ap.add_argument("--cpu", default="max")
    ap.add_argument("--kernel", help="kernel image (default: DIR/vmlinux, else DIR/vmlinuz)")
    ap.add_argument("--append", help="kernel command line (default: DIR/cmdline)")
    ap.add_argument("--bench", type=int, metavar="N", help="only time N boots to first guest-ping")
    ap.add_argument("--powerdown", action="store_true", help="test QMP system_powerdown")
    ap.add_argument("extra", nargs="*", help="extra QEMU arguments (after --)")
    args = ap.parse_args()
    gdir = args.dir or build_dir()
    tmp = Path(tempfile.mkdtemp(prefix="hc-smoke-"))
    try:
        if args.bench:
            bench(args, gdir, tmp)
        elif args.powerdown:
            powerdown(args, gdir, tmp)
        else:
            full(args, gdir, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if check.failed:
        print(f"{check.failed} check(s) failed")
        sys.exit(1)


if __name__ == "__main__":
    main()
