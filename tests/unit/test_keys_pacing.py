"""How services.keys paces key presses: batches that fit QEMU's PS/2 queue, and when the
guest has taken a batch (read from QEMU's threads)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from hypercore_tui.adapters.procstats import ThreadActivity
from hypercore_tui.core.keyboard import Chord, layout, text_strokes
from hypercore_tui.services.keys import BATCH_BYTES, BUSY_NS, batch_taken, batches, qmp_events

SLEEPING = ThreadActivity(run_ns=1_000, slices=10, sleeping=True)


def thread(run_ns: int, slices: int, sleeping: bool) -> ThreadActivity:
    return ThreadActivity(run_ns=run_ns, slices=slices, sleeping=sleeping)


def test_a_vcpu_that_woke_and_halted_took_the_batch() -> None:
    woke = thread(1_050, 11, True)
    assert batch_taken([SLEEPING, SLEEPING], [SLEEPING, woke], [SLEEPING, woke])


def test_a_vcpu_that_has_not_run_since_has_not() -> None:
    assert not batch_taken([SLEEPING, SLEEPING], [SLEEPING, SLEEPING], [SLEEPING, SLEEPING])


def test_a_vcpu_that_ran_between_the_looks_is_looked_at_again() -> None:
    woke, again = thread(1_050, 11, True), thread(1_080, 12, True)
    assert not batch_taken([SLEEPING, SLEEPING], [SLEEPING, woke], [SLEEPING, again])


def test_a_runnable_vcpu_has_not_taken_it_yet() -> None:
    waiting = thread(1_050, 11, False)
    assert not batch_taken([SLEEPING, SLEEPING], [SLEEPING, waiting], [SLEEPING, waiting])


def test_while_the_main_thread_runs_a_sleeping_vcpu_may_wait_for_its_lock() -> None:
    main_busy = thread(5_000, 3, False)
    woke = thread(1_050, 11, True)
    assert not batch_taken([SLEEPING, SLEEPING], [main_busy, woke], [main_busy, woke])
    assert not batch_taken([SLEEPING, SLEEPING], [main_busy, woke], [SLEEPING, woke])


def test_a_busy_vcpu_took_it_once_it_ran_long_enough() -> None:
    busy = thread(1_000 + BUSY_NS, 12, False)
    assert batch_taken([SLEEPING, SLEEPING], [SLEEPING, busy], [SLEEPING, busy])
    short = thread(1_000 + BUSY_NS // 2, 12, False)
    assert not batch_taken([SLEEPING, SLEEPING], [SLEEPING, short], [SLEEPING, short])


def test_every_vcpu_must_be_done() -> None:
    woke, running = thread(1_050, 11, True), thread(1_300, 11, False)
    before = [SLEEPING, SLEEPING, SLEEPING]
    assert not batch_taken(before, [SLEEPING, woke, running], [SLEEPING, woke, running])
    assert batch_taken(before, [SLEEPING, woke, SLEEPING], [SLEEPING, woke, SLEEPING])


def test_batches_fit_the_queue_and_keep_the_order() -> None:
    strokes = text_strokes("Hello, Wörld! ^é\n", layout("de"))
    cut = batches(strokes)
    assert [c for b in cut for c in b.chords] == [c for s in strokes for c in s]
    assert all(b.size == sum(c.ps2_bytes for c in b.chords) <= BATCH_BYTES for b in cut)
    assert cut[-1].complete == len(strokes)
    assert [b.before for b in cut[1:]] == [b.complete for b in cut[:-1]]


@given(st.lists(st.sampled_from([
    (Chord(("a",)),), (Chord(("shift", "a")),), (Chord(("ctrl", "alt", "delete")),),
    (Chord(("grave_accent",)), Chord(("spc",))), (Chord(("shift", "alt_r", "q")),),
]), max_size=60))
def test_batches_progress_counts_whole_strokes(strokes: list[tuple[Chord, ...]]) -> None:
    cut = batches(strokes)
    assert sum(len(b.chords) for b in cut) == sum(len(s) for s in strokes)
    counts = [b.complete for b in cut]
    assert counts == sorted(counts) and (not strokes or counts[-1] == len(strokes))
    for batch in cut:  # the strokes counted complete have all their chords sent
        sent = sum(len(b.chords) for b in cut[:cut.index(batch) + 1])
        assert sum(len(s) for s in strokes[:batch.complete]) <= sent


def test_events_press_in_order_and_release_in_reverse() -> None:
    events = qmp_events([Chord(("shift", "a"))])
    assert [(e["data"]["key"]["data"], e["data"]["down"]) for e in events] == [
        ("shift", True), ("a", True), ("a", False), ("shift", False)]
    assert events[0] == {"type": "key", "data": {"down": True,
                                                 "key": {"type": "qcode", "data": "shift"}}}
