"""scripts/bench.py clipsync: the clipboard sync between two real TCG guests.

Two VMs of the chosen guest (``--guest test``: the busybox test guest, whose clipboard is
the fallback file, polled; ``--guest real``: the Debian guest with an X session, whose
watcher signals each copy), one :class:`SyncEngine` in this process. Measured:

* guest→guest latency: from the copy command's return in guest A (an ``xclip -i`` as the
  desktop user, or the fallback file written) to the sync having written the entry into
  guest B (its ``push`` event), p50/p95 over ``--rounds`` copies (at least 10);
* idle cost over 30 s with nothing copied: the sync's own CPU (% of one core, per VM) and
  the processes started in each guest a second (``processes`` in the guest's /proc/stat,
  read through the agent's file commands, which start none);
* (``--guest real`` only) a 1 MiB PNG image copied as ``image/png`` and a 20 MiB file
  copied as a file manager does (``x-special/gnome-copied-files``), guest→guest the same
  way; the file against the shared folder's own speed: a plain ``cp`` of the same file
  into ``/shared`` in the source guest.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import statistics
import sys
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, ExitStack
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
COPY_AS_USER = ("exec setpriv --reuid=1000 --regid=1000 --init-groups env DISPLAY=:0 "
                "HOME=/home/hcuser sh -c 'printf %s \"$0\" | xclip -selection clipboard -i "
                ">/dev/null 2>&1' \"$1\"")
COPY_IMAGE = ("exec setpriv --reuid=1000 --regid=1000 --init-groups env DISPLAY=:0 "
              "HOME=/home/hcuser xclip -selection clipboard -t image/png -i \"$1\" "
              ">/dev/null 2>&1")
COPY_FILES = ("exec setpriv --reuid=1000 --regid=1000 --init-groups env DISPLAY=:0 "
              "HOME=/home/hcuser sh -c 'printf %s \"$0\" | xclip -selection clipboard "
              "-t x-special/gnome-copied-files -i >/dev/null 2>&1' \"$1\"")
#: hcuser's file of $1 MiB at $2 (random bytes).
MAKE_FILE = ("exec setpriv --reuid=1000 --regid=1000 --init-groups sh -c "
             "'head -c $(($0 * 1048576)) /dev/urandom > \"$1\"' \"$1\" \"$2\"")
IMAGE_SIDE = 600  # random RGB noise: a PNG of ~1.05 MiB
FILE_MIB = 20
COPY_FALLBACK = ("mkdir -p /var/lib/hypercore && printf %s \"$1\" > /var/lib/hypercore/.c && "
                 "mv /var/lib/hypercore/.c /var/lib/hypercore/clipboard")


def bench_clipsync(args: argparse.Namespace, private_home: Callable[[], Any],
                   vm_of: Callable[[Any, str], AbstractContextManager[None]],
                   pcts: Callable[[list[float]], dict[str, float]],
                   load: Callable[[], str]) -> dict[str, Any]:
    sys.path.insert(0, str(ROOT))
    from hypercore_tui.adapters import guest_files
    from hypercore_tui.adapters.qga import agent_session
    from hypercore_tui.core.clip import KIND_FILES
    from hypercore_tui.services.clipsync.engine import SyncEngine, SyncEvent
    from hypercore_tui.services.context import Context

    real = args.guest == "real"
    rounds = max(args.rounds, 10)
    count = max(2, args.sync_vms)
    names = ["sync-a", "sync-b"] if count == 2 else [f"sync-{i}" for i in range(count)]
    results: dict[str, Any] = {"guest": args.guest, "rounds": rounds, "vms": len(names)}
    with private_home() as home, ExitStack() as stack:
        for name in names:
            stack.enter_context(vm_of(home, name))
        ctx = Context.from_environ(home.environ)

        async def guest_processes(name: str) -> int:
            paths = ctx.vm_paths(name)
            async with agent_session(paths.qga_socket, vm_name=name) as agent:
                data = await guest_files.read_file(agent, "/proc/stat")
            for line in data.decode().splitlines():
                if line.startswith("processes "):
                    return int(line.split()[1])
            raise RuntimeError("no processes line in /proc/stat")

        split: list[float] = []  # when each big copy was taken (its change event)
        taken_at: dict[int, float] = {}

        async def until_pushed(pushed: dict[tuple[str, int], float], dst: str, kind: str,
                               since: int, what: str) -> float:
            limit = time.monotonic() + 120
            while True:
                item = engine_of[0].history.current
                if (item is not None and item.kind == kind and item.id > since
                        and (dst, item.id) in pushed):
                    split.append(taken_at[item.id])
                    return pushed[(dst, item.id)]
                if time.monotonic() > limit:
                    raise RuntimeError(f"{what}: {dst} never got it: {engine_of[0].status()}")
                await asyncio.sleep(0.01)

        def last_id() -> int:
            item = engine_of[0].history.current
            return item.id if item is not None else 0

        async def big_rounds(pushed: dict[tuple[str, int], float]) -> dict[str, Any]:
            from PIL import Image

            big: dict[str, Any] = {}
            n = max(3, rounds // 4)
            images = []
            for i in range(n):  # a new image each round (the same one is no new copy)
                path = home.base / f"bench-{i}.png"
                Image.frombytes("RGB", (IMAGE_SIDE, IMAGE_SIDE),
                                os.urandom(IMAGE_SIDE * IMAGE_SIDE * 3)).save(path)
                images.append(path)
                for name in names:
                    await asyncio.to_thread(home.run, "cp", str(path), f"{name}:/tmp/")
            big["image_bytes"] = images[0].stat().st_size
            times: list[float] = []
            reads: list[float] = []
            writes: list[float] = []
            for i in range(n):
                src, dst = names[i % count], names[(i + 1) % count]
                since = last_id()
                await asyncio.to_thread(home.run, "exec", src, "--", "/bin/sh", "-c",
                                        COPY_IMAGE, "sh", f"/tmp/{images[i].name}")
                copied = time.monotonic()
                written = await until_pushed(pushed, dst, "image/png", since,
                                             f"image round {i}")
                times.append(written - copied)
                reads.append(split[-1] - copied)
                writes.append(written - split[-1])
                await asyncio.sleep(1.0)
            big["guest_to_guest_image"] = pcts(times)
            big["image_copy_to_taken"], big["image_taken_to_written"] = pcts(reads), pcts(writes)
            reads, writes = [], []
            times, plain = [], []
            for i in range(n):
                src, dst = names[i % count], names[(i + 1) % count]
                path = f"/home/hcuser/bench-{i}.bin"
                await asyncio.to_thread(home.run, "exec", src, "--", "/bin/sh", "-c",
                                        MAKE_FILE, "sh", str(FILE_MIB), path)
                # the shared folder's own speed: the same file copied there plainly
                started = time.monotonic()
                await asyncio.to_thread(home.run, "exec", src, "--", "/bin/cp", path,
                                        f"/shared/bench-plain-{i}.bin")
                plain.append(time.monotonic() - started)
                await asyncio.to_thread(home.run, "exec", src, "--", "/bin/rm", "-f",
                                        f"/shared/bench-plain-{i}.bin")
                since = last_id()
                await asyncio.to_thread(home.run, "exec", src, "--", "/bin/sh", "-c",
                                        COPY_FILES, "sh", f"copy\nfile://{path}")
                copied = time.monotonic()
                written = await until_pushed(pushed, dst, KIND_FILES, since,
                                             f"file round {i}")
                times.append(written - copied)
                reads.append(split[-1] - copied)
                writes.append(written - split[-1])
                await asyncio.sleep(1.0)
            big["guest_to_guest_file"] = pcts(times)
            big["file_copy_to_taken"], big["file_taken_to_written"] = pcts(reads), pcts(writes)
            big["share_plain_copy"] = pcts(plain)
            big["file_speed_vs_share"] = round(statistics.median(plain)
                                               / statistics.median(times), 2)
            return big

        engine_of: list[SyncEngine] = []

        async def run() -> dict[str, Any]:
            pushed: dict[tuple[str, int], float] = {}
            taken: dict[int, float] = {}
            states: dict[str, str] = {}

            def on_event(event: SyncEvent) -> None:
                if event.kind == "push" and event.item is not None and event.vm:
                    pushed[(event.vm, event.item.id)] = time.monotonic()
                if event.kind == "change" and event.item is not None:
                    taken[event.item.id] = taken_at[event.item.id] = time.monotonic()

            engine = SyncEngine(ctx, names, on_event=on_event)
            engine_of.append(engine)
            task = asyncio.create_task(engine.run())
            out: dict[str, Any] = {}
            try:
                deadline = time.monotonic() + 240
                want = {"watching"} if real else {"polling"}
                while {vm.state.value for vm in engine.vms.values()} != want or \
                        len(engine.vms) != len(names):
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"the VMs were not followed: {engine.status()}")
                    await asyncio.sleep(0.5)
                states.update({n: v.state.value for n, v in engine.vms.items()})
                out["states"] = states
                out["load_before"] = load()
                # idle cost
                before = {n: await guest_processes(n) for n in names}
                cpu0 = resource.getrusage(resource.RUSAGE_SELF)
                t0 = time.monotonic()
                await asyncio.sleep(30)
                cpu1 = resource.getrusage(resource.RUSAGE_SELF)
                span = time.monotonic() - t0
                after = {n: await guest_processes(n) for n in names}
                used = (cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime)
                out["idle_host_cpu_pct_per_vm"] = round(100 * used / span / len(names), 3)
                # (two reads of /proc/stat start none; the agent itself forks nothing)
                out["idle_guest_processes_per_s"] = {
                    n: round((after[n] - before[n]) / span, 2) for n in names}
                # guest -> guest
                times, reads, writes, everywhere = [], [], [], []
                for i in range(rounds):
                    src, dst = names[i % count], names[(i + 1) % count]
                    text = f"round {i} {time.time()} " + "x" * 4000
                    script = COPY_AS_USER if real else COPY_FALLBACK
                    await asyncio.to_thread(home.run, "exec", src, "--", "/bin/sh", "-c",
                                            script, "sh", text)
                    copied = time.monotonic()
                    limit = copied + 30
                    while True:
                        item = engine.history.current
                        others = [n for n in names if n != src]
                        if item is not None and item.text == text and all(
                                (n, item.id) in pushed for n in others):
                            times.append(pushed[(dst, item.id)] - copied)
                            reads.append(taken[item.id] - copied)
                            writes.append(pushed[(dst, item.id)] - taken[item.id])
                            everywhere.append(max(pushed[(n, item.id)] for n in others)
                                              - copied)
                            break
                        if time.monotonic() > limit:
                            raise RuntimeError(f"round {i}: {dst} never got the copy: "
                                               f"{engine.status()}")
                        await asyncio.sleep(0.01)
                    await asyncio.sleep(0.5)
                out["guest_to_guest_4k"] = pcts(times)
                out["guest_to_all_others_4k"] = pcts(everywhere)
                out["copy_to_taken"] = pcts(reads)  # the signal and the read in the source
                out["taken_to_written"] = pcts(writes)  # the write into the target
                if real:
                    out.update(await big_rounds(pushed))
                out["load_after"] = load()
            finally:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
            return out

        results.update(asyncio.run(run()))
    if not args.json:
        print(f"clipsync: {count} {args.guest} guests ({results['states']}), "
              f"{os.environ.get('HYPERCORE_ACCEL', 'tcg')}, 4 KiB text")
        r = results["guest_to_guest_4k"]
        print(f"  guest->guest, copy returned -> written in the other: p50 {r['p50_ms']} ms, "
              f"p95 {r['p95_ms']} ms (n={r['n']})")
        if count > 2:
            r = results["guest_to_all_others_4k"]
            print(f"  guest->all {count - 1} others: p50 {r['p50_ms']} ms, p95 {r['p95_ms']} ms")
        r, w = results["copy_to_taken"], results["taken_to_written"]
        print(f"    of which copy -> taken (signal + read in the source): p50 {r['p50_ms']} ms; "
              f"taken -> written in the target: p50 {w['p50_ms']} ms")
        if real:
            r, f = results["guest_to_guest_image"], results["guest_to_guest_file"]
            print(f"  guest->guest, a {results['image_bytes'] / 1048576:.2f} MiB PNG image: "
                  f"p50 {r['p50_ms']} ms, p95 {r['p95_ms']} ms (n={r['n']})")
            print(f"    of which copy -> taken p50 {results['image_copy_to_taken']['p50_ms']} ms, "
                  f"taken -> written {results['image_taken_to_written']['p50_ms']} ms")
            print(f"  guest->guest, a {FILE_MIB} MiB file (gnome-copied-files): p50 "
                  f"{f['p50_ms']} ms, p95 {f['p95_ms']} ms; a plain cp into /shared: p50 "
                  f"{results['share_plain_copy']['p50_ms']} ms; speed "
                  f"{results['file_speed_vs_share']:.0%} of the share's")
            print(f"    of which copy -> taken (the copy into the share included) p50 "
                  f"{results['file_copy_to_taken']['p50_ms']} ms, taken -> written "
                  f"{results['file_taken_to_written']['p50_ms']} ms")
        print(f"  idle: sync CPU {results['idle_host_cpu_pct_per_vm']} % of a core per VM; "
              f"guest processes/s {results['idle_guest_processes_per_s']}")
        print(f"  load average before / after: {results['load_before']} / "
              f"{results['load_after']}")
    return results

