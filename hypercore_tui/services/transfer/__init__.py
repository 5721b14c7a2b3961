"""File transfer between the host and guests: ``hypercore cp SRC DST``.

Either side may be ``NAME:/path`` (a guest) or a host path; guest→guest works too.
Each copy picks the fastest channel by itself:

* **shared folder, direct**: the guest path lies inside the guest's mount of the share,
  so the host reads or writes the file in ``$HYPERCORE_HOME/shared_folder`` itself;
* **shared folder, staged**: the share is mounted in the guest (Hypercore mounts it if
  it is attached but not mounted): the host stages the file in the share
  (``.hypercore-transfer/``) and the guest copies it with ``dd bs=1M`` (or the other
  way round);
* **agent**: guest-file-open/read/write/close in 1 MiB chunks
  (:mod:`hypercore_tui.adapters.guest_files`, which says why 1 MiB).

Every copy is checked and placed atomically: written to a temporary name in the
destination directory (created 0600 with O_EXCL), then renamed (``mv`` argv in the
guest, ``os.replace`` on the host). On any error the temporary file is removed (best
effort when the agent is gone) and nothing appears under the final name. The check:
the agent channel compares the guest's sha256 (``sha256sum`` via guest-exec) with the
host's (hashlib); through the shared folder the host hashes every byte and the guest
checks the size and a few random blocks (:mod:`.spot`), the host refusing a staged file
or a source that changed while it was read (:mod:`.directions` says what is checked
where).

Guest-side work runs as the fixed shell scripts ``hypercore_tui/guest/cp-*.sh``
(through :mod:`~hypercore_tui.services.guest_exec`) whose only inputs are argv: no file
name, VM name or guest-reported value is ever part of a command string.

* :mod:`.locations`: ``NAME:/path`` or a host path (:func:`parse_location`);
* :mod:`.host_files`: the host side (checks, temporary files, sha256, staging);
* :mod:`.spot`: the guest's cheap check of a copy through the shared folder;
* :mod:`.guest_side`: the guest side (the scripts, the agent session, clean-up);
* :mod:`.directions`: host to guest and guest to host, channel by channel;
* :mod:`.errors`: :class:`TransferError` and one line for each failure;
* :mod:`.across`, :mod:`.far_end`, :mod:`.wire_io`: ``HOST:NAME:/path``, a guest of another
  configured host: this host's side, the other host's (``cp-stream``), the stream between.
"""

from __future__ import annotations

import contextlib
import secrets
import time
from dataclasses import dataclass

from hypercore_tui.core.errors import InvalidInput
from hypercore_tui.core.progress import Progress
from hypercore_tui.services import guest_exec
from hypercore_tui.services.context import Context
from hypercore_tui.services.transfer.across import copy_across
from hypercore_tui.services.transfer.directions import from_guest, to_guest
from hypercore_tui.services.transfer.errors import translate
from hypercore_tui.services.transfer.guest_side import (
    FINALIZE,
    PREPARE_DST,
    PREPARE_SRC,
    check_free,
    checked,
    guest_session,
    guest_sha256,
    remove_guest_file,
)
from hypercore_tui.services.transfer.host_files import host_source, staging_dir
from hypercore_tui.services.transfer.locations import Location, basename, parse_location

CHANNEL_GUEST = "inside the guest"
CHANNELS = ("auto", "agent", "share")


# -- results ----------------------------------------------------------------------------


@dataclass(frozen=True)
class TransferResult:
    bytes: int
    seconds: float
    channel: str
    source: str
    destination: str
    sha256: str

    @property
    def mib_per_second(self) -> float:
        return self.bytes / (1024 * 1024) / self.seconds if self.seconds > 0 else 0.0


# -- the service ----------------------------------------------------------------------------------


async def copy(ctx: Context, src: str, dst: str, *, progress: Progress | None = None,
               channel: str = "auto", verify: bool = True) -> TransferResult:
    """Copy ``src`` to ``dst`` (either may be ``NAME:/path``); see the module docstring.

    ``channel``: ``auto`` (fastest available), ``agent`` or ``share``.
    ``verify``: compare sha256 sums at both ends (on by default).
    """
    if channel not in CHANNELS:
        raise InvalidInput(f"unknown channel {channel!r}: use {', '.join(CHANNELS)}")
    source, target = parse_location(src), parse_location(dst)
    started = time.monotonic()
    if not source.is_guest and not target.is_guest:
        raise InvalidInput("both paths are on the host; name a guest side as NAME:/path")
    if source.is_remote or target.is_remote:
        size, used, shown, digest = await copy_across(ctx, source, target, channel=channel,
                                                      verify=verify, progress=progress)
        return TransferResult(size, time.monotonic() - started, used, str(source), shown,
                              digest)

    if not source.is_guest:
        assert target.vm is not None
        host_src, info = host_source(source.path)
        async with guest_session(ctx, target.vm, channel) as guest:
            final, used, digest = await to_guest(ctx, host_src, info, guest, target.path,
                                                 host_src.name, channel, verify, progress)
        return TransferResult(info.st_size, time.monotonic() - started, used, str(host_src),
                              f"{target.vm}:{final}", digest)

    assert source.vm is not None
    if not target.is_guest:
        async with guest_session(ctx, source.vm, channel) as guest:
            final_host, used, digest, size, _ = await from_guest(
                ctx, guest, source.path, target.path, channel, verify, progress)
        return TransferResult(size, time.monotonic() - started, used, str(source),
                              str(final_host), digest)

    assert target.vm is not None
    if source.vm == target.vm:
        return await _within_guest(ctx, source, target, channel, verify, progress, started)
    # Guest to guest: into the host's staging area (inside the shared folder), then out.
    staging = staging_dir(ctx)
    holder = staging / f"g2g-{secrets.token_hex(8)}"
    holder.mkdir(mode=0o700)
    name = basename(source.path)
    try:
        # Sessions opened in name order: two opposite copies cannot hold one lock each.
        first, second = sorted((source.vm, target.vm))
        async with (guest_session(ctx, first, channel) as g1,
                    guest_session(ctx, second, channel) as g2):
            a, b = (g1, g2) if first == source.vm else (g2, g1)
            half = _halves(progress)
            fetched, used_a, _, size, mode = await from_guest(
                ctx, a, source.path, None, channel, verify, half[0], final_host=holder / name)
            info = fetched.stat()
            final, used_b, digest = await to_guest(ctx, fetched, info, b, target.path, name,
                                                   channel, verify, half[1])
    finally:
        with contextlib.suppress(OSError):
            for entry in holder.iterdir():
                entry.unlink()
            holder.rmdir()
    used = used_a if used_a == used_b else f"{used_a} + {used_b}"
    return TransferResult(size, time.monotonic() - started, used, str(source),
                          f"{target.vm}:{final}", digest)


def _halves(progress: Progress | None) -> tuple[Progress | None, Progress | None]:
    """Two progress callbacks reporting the two legs of a guest-to-guest copy as one."""
    if progress is None:
        return None, None
    report = progress

    def first(stage: str, done: float | None, total: float) -> None:
        report(stage, done, 2 * total)

    def second(stage: str, done: float | None, total: float) -> None:
        report(stage, None if done is None else total + done, 2 * total)

    return first, second


async def _within_guest(ctx: Context, source: Location, target: Location, channel: str,
                        verify: bool, progress: Progress | None, started: float
                        ) -> TransferResult:
    assert source.vm is not None
    async with guest_session(ctx, source.vm, "agent") as guest:
        prep = await checked(guest.agent, PREPARE_SRC, source.path, "")
        values = guest_exec.parse_out(prep.stdout)
        size = int(values.get("size", "0"))
        digest = await guest_sha256(guest.agent, source.path) if verify else ""
        token = secrets.token_hex(8)
        dprep = await checked(guest.agent, PREPARE_DST, target.path, basename(source.path),
                              token, "", "0")
        dvalues = guest_exec.parse_out(dprep.stdout)
        final, tmp = dvalues["final"], dvalues["tmp"]
        try:
            check_free(guest, dvalues, size, final)
            await checked(guest.agent, FINALIZE, tmp, final, digest, values.get("mode", "644"),
                          source.path, what=final)
        except BaseException as exc:
            await remove_guest_file(ctx, guest, tmp)
            raise translate(guest.name, exc, final) from None
    if progress is not None:
        progress("copying", size, size)
    return TransferResult(size, time.monotonic() - started, CHANNEL_GUEST, str(source),
                          f"{target.vm}:{final}", digest)
