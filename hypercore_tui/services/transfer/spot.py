"""The guest's cheap check of a copy through the shared folder: the size, and the sha256
of a few 64 KiB blocks ("spot check"), where the full sha256 is the host's.

A TCG guest hashes at ~60 MiB/s (sha256sum of 64 MiB: ~1.1 s, about twice the copy
itself), so a copy through the share no longer has the guest hash the whole file. The
host (sha256 at ~1.3 GiB/s) hashes every byte that crosses, and the guest checks its side
against the host's at a few places:

* the blocks are chosen by the host, at random for each copy, always with the first and
  the last block; a file of at most :data:`BLOCKS` blocks (512 KiB) is checked whole;
* the guest reads them with ``dd bs=65536 skip=N count=1``, one block each, and hashes
  them in the given order with ``sha256sum``; the host hashes the same blocks
  (:class:`Spot`) of the file it staged (a few preads) or of the bytes it receives, as
  they stream past.

What each side checks beside it is in :mod:`.directions` (the staged file unchanged
while the guest read it, the source unchanged while it was copied, the size).
"""

from __future__ import annotations

import hashlib
import secrets

#: The spot check's block size (the guest's ``dd bs=``).
BLOCK = 64 * 1024
#: How many blocks are checked (one ``dd`` each in the guest: ~3 ms under TCG).
BLOCKS = 8


def choose_blocks(size: int, count: int = BLOCKS, rand: secrets.SystemRandom | None = None
                  ) -> list[int]:
    """The block numbers to check for a file of ``size`` bytes, in ascending order: every
    block of a small file; else the first, the last and ``count - 2`` others at random."""
    total = (size + BLOCK - 1) // BLOCK
    if total <= count:
        return list(range(total))
    pick = rand or secrets.SystemRandom()
    chosen = {0, total - 1}
    chosen.update(pick.sample(range(1, total - 1), count - 2))
    return sorted(chosen)


class Spot:
    """The sha256 of the chosen blocks of a stream, fed as it passes (:meth:`feed`)."""

    def __init__(self, blocks: list[int]) -> None:
        self.blocks = blocks
        self._parts: dict[int, bytearray] = {b: bytearray() for b in blocks}

    @property
    def argv(self) -> str:
        """The block numbers as the guest script takes them: one word each."""
        return " ".join(str(b) for b in self.blocks)

    def feed(self, offset: int, chunk: bytes | memoryview) -> None:
        """``chunk`` is the stream's bytes from ``offset`` on."""
        end = offset + len(chunk)
        for block in range(offset // BLOCK, (end + BLOCK - 1) // BLOCK):
            part = self._parts.get(block)
            if part is None:
                continue
            start = max(block * BLOCK, offset)
            stop = min((block + 1) * BLOCK, end)
            if start == block * BLOCK + len(part):  # (a block is fed in order, once)
                part += chunk[start - offset:stop - offset]

    def hexdigest(self) -> str:
        hasher = hashlib.sha256()
        for block in self.blocks:
            hasher.update(self._parts[block])
        return hasher.hexdigest()


def file_spot(path: str, blocks: list[int]) -> str:
    """The spot digest of a file (what the guest computes): for tests and checks."""
    spot = Spot(blocks)
    with open(path, "rb") as fh:
        for block in blocks:
            fh.seek(block * BLOCK)
            spot.feed(block * BLOCK, fh.read(BLOCK))
    return spot.hexdigest()
