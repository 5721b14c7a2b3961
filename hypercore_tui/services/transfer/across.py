"""Copies to or from a guest of another host (``HOST:VM:/path``): this host's side.

The bytes go over the host's shared SSH connection, through ``hypercore cp-stream
send|receive VM PATH`` run there (:mod:`.far_end`; arguments as argv, each one argv element
there), as :mod:`~hypercore_tui.core.cpwire` messages. A copy has up to three legs, each
the ordinary copy of its host:

1. a guest file fetched into a staging file on its host (a guest here, or there by
   ``send``), checked as ``cp`` checks it (:mod:`.directions`);
2. the file over SSH, its sum compared by the receiver with the source's;
3. the file placed: a host path here (temporary name, renamed once the sum matched), or
   into a guest (here, or there by ``receive``), as ``cp`` places files in guests.

Nothing appears under the final name unless every check passed. A connection cut or an end
killed midway leaves nothing under it on either side: a receiving end there whose stdin
ends cancels its copy into the guest and removes its temporary file.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import secrets
import stat
import subprocess
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Protocol

from hypercore_tui.adapters import ssh
from hypercore_tui.adapters.fs import write_all
from hypercore_tui.core import cpwire
from hypercore_tui.core.errors import (
    HostUnreachable,
    HypercoreError,
    InvalidInput,
    OperationFailed,
    ProtocolError,
)
from hypercore_tui.core.hosts import Host
from hypercore_tui.core.progress import Progress
from hypercore_tui.core.text import printable
from hypercore_tui.services.context import Context
from hypercore_tui.services.hosts import registry, remote
from hypercore_tui.services.hosts.connection import HostConnection
from hypercore_tui.services.transfer.directions import from_guest, to_guest
from hypercore_tui.services.transfer.errors import TransferError, host_writes
from hypercore_tui.services.transfer.guest_side import Guest, guest_session
from hypercore_tui.services.transfer.host_files import (
    host_destination,
    host_source,
    open_host_temp,
    staging_dir,
)
from hypercore_tui.services.transfer.locations import Location
from hypercore_tui.services.transfer.wire_io import read_message

CHANNEL_SSH = "SSH"
#: Seconds a far end may take to exit once its part is done (or its stream ended).
EXIT_WAIT = 10.0
_ERROR_PREFIX = "hypercore: error: "


async def copy_across(ctx: Context, source: Location, target: Location, *, channel: str,
                      verify: bool, progress: Progress | None
                      ) -> tuple[int, str, str, str]:
    """Copy between this host and a guest of another (or between guests of two hosts).
    Returns (bytes, channels used, the final destination as ``cp`` shows it, sha256)."""
    hosts = {loc.host: _remote_host(ctx, loc.host) for loc in (source, target) if loc.host}
    legs = iter(_legs(progress, 1 + source.is_guest + target.is_guest))
    source_leg = next(legs) if source.is_guest else None
    stream_leg = next(legs)
    sink_leg = next(legs) if target.is_guest else None
    what = str(target)
    async with contextlib.AsyncExitStack() as stack:
        # The destination first: a guest not running there is said before any byte moves.
        # (Within one guest of one host the source goes first: the guest's agent session
        # is one at a time, and ``send`` has closed its own before the file goes.)
        source_first = source.host == target.host and source.vm == target.vm
        if source_first:
            incoming = await stack.enter_async_context(
                _source(ctx, source, hosts, channel, verify, source_leg, what))
        far_sink: _FarEnd | None = None
        local_guest: Guest | None = None
        if target.host is not None:
            assert target.vm is not None
            far_sink = await stack.enter_async_context(_far_end(
                ctx, hosts[target.host], ["receive", target.vm, target.path], channel,
                verify, what))
            if not isinstance(await far_sink.message(), cpwire.Ready):
                raise await far_sink.failure()
        elif target.vm is not None:
            local_guest = await stack.enter_async_context(
                guest_session(ctx, target.vm, channel))
        if not source_first:
            incoming = await stack.enter_async_context(
                _source(ctx, source, hosts, channel, verify, source_leg, what))
        if far_sink is not None:
            final, sink_used, digest = await _into_far_guest(far_sink, incoming, stream_leg,
                                                             sink_leg)
            shown = f"{target.host}:{target.vm}:{final}"
        elif local_guest is not None:
            final, sink_used, digest = await _into_local_guest(
                ctx, incoming, local_guest, target.path, channel, verify, stream_leg,
                sink_leg)
            shown = f"{target.vm}:{final}"
        else:
            shown, digest = await _into_host_path(incoming, target.path, stream_leg)
            sink_used = ""
    used = " + ".join(part for part in (incoming.header.channel, CHANNEL_SSH, sink_used)
                      if part)
    return incoming.header.size, used, shown, digest


def _remote_host(ctx: Context, name: str) -> Host:
    host = registry.get_host(ctx, name)
    if host.is_local:  # (parse_location reads ``local:`` as this host)
        raise InvalidInput(f"{name} is this host")
    return host


def _legs(progress: Progress | None, count: int) -> list[Progress | None]:
    """Progress callbacks for ``count`` legs of one copy, reported as one."""
    if progress is None:
        return [None] * count
    report = progress

    def leg(index: int) -> Progress:
        def step(stage: str, done: float | None, total: float) -> None:
            report(stage, None if done is None else index * total + done, count * total)
        return step

    return [leg(index) for index in range(count)]


# -- the far end's process ----------------------------------------------------------------


class _FarEnd:
    """One ``cp-stream`` running on another host: its ssh process here."""

    def __init__(self, ctx: Context, host: Host, proc: asyncio.subprocess.Process,
                 what: str) -> None:
        assert proc.stdout is not None and proc.stderr is not None
        self.ctx = ctx
        self.host = host
        self.proc = proc
        self.what = what
        self.stdout: asyncio.StreamReader = proc.stdout
        self._stderr = asyncio.ensure_future(_read_tail(proc.stderr))

    async def message(self) -> cpwire.Message | None:
        try:
            return await read_message(self.stdout)
        except ProtocolError as exc:
            raise ProtocolError(f"{self.host.name}: {exc}") from None

    async def write(self, data: bytes) -> None:
        stdin = self.proc.stdin
        assert stdin is not None
        try:
            stdin.write(data)
            await stdin.drain()
        except (BrokenPipeError, ConnectionResetError):
            raise await self.failure() from None

    async def failure(self) -> HypercoreError:
        """Why the far end stopped early, in one line naming its host."""
        try:
            code = await asyncio.wait_for(self.proc.wait(), EXIT_WAIT)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            code = await self.proc.wait()
        try:
            said = await asyncio.wait_for(asyncio.shield(self._stderr), 2.0)
        except TimeoutError:
            said = b""
        return _ended(self.host, code, said, self.what, master_alive=(
            code == ssh.SSH_FAILED and await asyncio.to_thread(
                ssh.master_pid, HostConnection(self.ctx, self.host).target) is not None))

    async def close(self, *, ok: bool) -> None:
        if self.proc.stdin is not None:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
        if not ok and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
        try:
            await asyncio.wait_for(self.proc.wait(), EXIT_WAIT)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            await self.proc.wait()
        self._stderr.cancel()


@contextlib.asynccontextmanager
async def _far_end(ctx: Context, host: Host, args: Sequence[str], channel: str, verify: bool,
                   what: str) -> AsyncIterator[_FarEnd]:
    argv = ["cp-stream", *args, "--via", channel, *(() if verify else ("--no-verify",))]
    proc = await remote.start(ctx, host, argv, stdin=subprocess.PIPE, own_session=True)
    end = _FarEnd(ctx, host, proc, what)
    ok = False
    try:
        yield end
        ok = True
    finally:
        await end.close(ok=ok)


def _ended(host: Host, code: int, stderr: bytes, what: str, *, master_alive: bool
           ) -> HypercoreError:
    """The far end's own error line (its exit code kept: 2 for bad input), or why it
    stopped without one."""
    lines = [line for line in stderr.decode(errors="replace").splitlines() if line.strip()]
    said = next((line for line in reversed(lines) if line.startswith(_ERROR_PREFIX)), None)
    if said is not None and code != 0:
        text = said.removeprefix(_ERROR_PREFIX)
        return (InvalidInput if code == 2 else OperationFailed)(f"{host.name}: {text}")
    nothing = f"nothing was placed at {what}"
    if code == ssh.SSH_FAILED and not master_alive:
        return HostUnreachable(f"{host.name}: the SSH connection to {host.destination} was "
                               f"lost during the copy; {nothing}")
    if code == ssh.SSH_FAILED:
        return OperationFailed(f"{host.name}: the copy's end there was stopped (killed?); "
                               f"{nothing}")
    last = f": {printable(lines[-1], limit=300)}" if lines else ""
    return OperationFailed(f"{host.name}: the copy's end there ended unexpectedly (exit "
                           f"code {code}){last}; {nothing}")


async def _read_tail(stream: asyncio.StreamReader, keep: int = 8192) -> bytes:
    tail = b""
    while chunk := await stream.read(65536):
        tail = (tail + chunk)[-keep:]
    return tail


# -- sources: a file arriving ------------------------------------------------------------


class _Incoming(Protocol):
    header: cpwire.FileHeader

    def chunks(self) -> AsyncIterator[bytes]: ...

    async def sha256(self) -> str:
        """The source's sum (after all chunks)."""
        ...


class _LocalFile:
    """A file on this host (a host path, or a guest file fetched here)."""

    def __init__(self, path: Path, header: cpwire.FileHeader, digest: str | None) -> None:
        self.path = path
        self.header = header
        self._digest = digest
        self._hasher = hashlib.sha256()

    async def chunks(self) -> AsyncIterator[bytes]:
        remaining = self.header.size
        with open(self.path, "rb") as fh:
            while remaining:
                chunk = await asyncio.to_thread(fh.read, min(cpwire.CHUNK, remaining))
                if not chunk:
                    raise TransferError(f"{self.path} shrank while it was copied")
                self._hasher.update(chunk)
                remaining -= len(chunk)
                yield chunk

    async def sha256(self) -> str:
        return self._digest or self._hasher.hexdigest()


class _FarFile:
    """A guest file of another host, arriving from its ``cp-stream send``."""

    def __init__(self, end: _FarEnd, header: cpwire.FileHeader) -> None:
        self.end = end
        self.header = header

    async def chunks(self) -> AsyncIterator[bytes]:
        remaining = self.header.size
        while remaining:
            chunk = await self.end.stdout.read(min(cpwire.CHUNK, remaining))
            if not chunk:
                raise await self.end.failure()
            remaining -= len(chunk)
            yield chunk

    async def sha256(self) -> str:
        end = await self.end.message()
        if not isinstance(end, cpwire.End):
            raise await self.end.failure()
        return end.sha256


@contextlib.asynccontextmanager
async def _source(ctx: Context, source: Location, hosts: dict[str, Host], channel: str,
                  verify: bool, leg: Progress | None, what: str) -> AsyncIterator[_Incoming]:
    if source.host is not None:
        assert source.vm is not None
        async with _far_end(ctx, hosts[source.host], ["send", source.vm, source.path],
                            channel, verify, what) as end:
            while True:
                message = await end.message()
                if isinstance(message, cpwire.Progress):
                    if leg is not None:
                        leg(message.stage, message.done, message.total)
                    continue
                if not isinstance(message, cpwire.FileHeader):
                    raise await end.failure()
                break
            yield _FarFile(end, message)
        return
    if source.vm is None:
        path, info = host_source(source.path)
        yield _LocalFile(path, cpwire.FileHeader(cpwire.file_name(path.name), info.st_size,
                                                 stat.S_IMODE(info.st_mode)), None)
        return
    staged = staging_dir(ctx) / f"send-{secrets.token_hex(8)}"
    try:
        async with guest_session(ctx, source.vm, channel) as guest:
            _, used, digest, size, mode = await from_guest(
                ctx, guest, source.path, None, channel, verify, leg, final_host=staged)
        name = cpwire.file_name(source.path.rstrip("/").rsplit("/", 1)[-1])
        yield _LocalFile(staged, cpwire.FileHeader(name, size, mode & 0o7777, used), digest)
    finally:
        with contextlib.suppress(OSError):
            staged.unlink()


# -- sinks: where it goes ----------------------------------------------------------------


async def _receive_into(incoming: _Incoming, fd: int, leg: Progress | None, shown: str,
                        full: Callable[[], contextlib.AbstractContextManager[None]]) -> str:
    """All of ``incoming`` into ``fd``; its sum, compared with the source's."""
    hasher = hashlib.sha256()
    done, total = 0, incoming.header.size
    async for chunk in incoming.chunks():
        hasher.update(chunk)
        with full():
            await asyncio.to_thread(write_all, fd, chunk)
        done += len(chunk)
        if leg is not None:
            leg("copying over SSH", done, total)
    expected = await incoming.sha256()
    if hasher.hexdigest() != expected:
        raise TransferError(f"checksum mismatch: the source has sha256 {expected}, "
                            f"{hasher.hexdigest()} arrived; nothing was placed at {shown}")
    return expected


async def _into_host_path(incoming: _Incoming, dst: str, leg: Progress | None
                          ) -> tuple[str, str]:
    final = host_destination(dst, incoming.header.name)
    tmp, fd = open_host_temp(final)
    try:
        digest = await _receive_into(incoming, fd, leg, str(final),
                                     lambda: host_writes(final))
        await asyncio.to_thread(os.fsync, fd)
        os.fchmod(fd, incoming.header.mode & 0o7777)
        os.close(fd)
        fd = -1
        os.replace(tmp, final)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    return str(final), digest


async def _into_local_guest(ctx: Context, incoming: _Incoming, guest: Guest, path: str,
                            channel: str, verify: bool, stream_leg: Progress | None,
                            leg: Progress | None) -> tuple[str, str, str]:
    staged = staging_dir(ctx) / f"receive-{secrets.token_hex(8)}"
    fd = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                 0o600)
    try:
        try:
            await _receive_into(incoming, fd, stream_leg, f"{guest.name}:{path}",
                                lambda: host_writes(staged))
            os.fchmod(fd, incoming.header.mode & 0o777)
        finally:
            os.close(fd)
        return await to_guest(ctx, staged, staged.stat(), guest, path, incoming.header.name,
                              channel, verify, leg)
    finally:
        with contextlib.suppress(OSError):
            staged.unlink()


async def _into_far_guest(end: _FarEnd, incoming: _Incoming, stream_leg: Progress | None,
                          leg: Progress | None) -> tuple[str, str, str]:
    await end.write(cpwire.encode(incoming.header))
    hasher = hashlib.sha256()
    done, total = 0, incoming.header.size
    async for chunk in incoming.chunks():
        hasher.update(chunk)
        await end.write(chunk)
        done += len(chunk)
        if stream_leg is not None:
            stream_leg("copying over SSH", done, total)
    expected = await incoming.sha256()
    if hasher.hexdigest() != expected:
        # (no end message: the far end discards what it got when its stdin ends)
        raise TransferError(f"checksum mismatch: the source has sha256 {expected}, "
                            f"{hasher.hexdigest()} was read; nothing was placed at "
                            f"{end.what}")
    await end.write(cpwire.encode(cpwire.End(expected)))
    while True:
        message = await end.message()
        if isinstance(message, cpwire.Progress):
            if leg is not None:
                leg(message.stage, message.done, message.total)
        elif isinstance(message, cpwire.Done):
            if message.sha256 != expected:
                raise TransferError(f"{end.host.name}: checksum mismatch in the guest: "
                                    f"{message.sha256}, sent {expected}")
            return message.final, message.channel, message.sha256
        else:
            raise await end.failure()
