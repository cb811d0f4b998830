"""worker.core.watermark: the event-time watermark over a worker's sources."""
from __future__ import annotations

from worker.core.watermark import IDLE, Watermark

A, B, R = ("in", 0), ("in", 1), ("re", 0)


def clock(*sources, idle_s: float = 10.0) -> Watermark:
    w = Watermark(idle_s)
    w.reset(sources, at=0.0)
    return w


def test_the_slowest_source_sets_it_and_it_never_goes_back():
    w = clock(A, B)
    w.saw(A, 100.0, at=1.0)
    assert w.current(1.0) == 0.0  # B has delivered nothing: nothing is known about it
    w.saw(B, 50.0, at=1.0)
    assert w.current(1.0) == 50.0
    w.saw(B, 120.0, at=2.0)
    assert w.current(2.0) == 100.0
    w.saw(A, 90.0, at=3.0)  # an older event does not move a source back
    assert w.current(3.0) == 100.0


def test_an_idle_source_stops_holding_it_and_when_all_are_idle_it_reaches_the_newest():
    w = clock(A, B, R, idle_s=5.0)
    w.saw(A, 100.0, at=1.0)
    w.saw(B, 200.0, at=1.0)
    assert w.current(4.0) == 0.0  # R: assigned at 0, silent for less than 5 s
    assert w.current(5.5) == 100.0  # R idle: A holds it
    w.saw(B, 300.0, at=6.0)
    assert w.current(6.5) == 300.0  # A idle too (last event at 1): only B is active
    assert w.current(20.0) == 300.0  # everything idle: the newest event delivered
    assert w.newest() == 300.0


def test_a_forwarded_event_holds_it_until_it_is_read_back():
    w = clock(A, R, idle_s=5.0)
    w.saw(A, 100.0, at=1.0)
    w.forwarded(b"in:0:7", 40.0)
    assert w.current(9.0) == 40.0  # A and R idle, but the forwarded event is still on its way
    w.saw(R, 40.0, at=9.5)
    w.arrived(b"in:0:7")
    assert w.current(9.5) == 40.0 and w.current(20.0) == 100.0


def test_what_is_left_to_read_overrules_the_timeout():
    left = {A: 5, B: 0, R: 0}
    w = clock(A, B, R, idle_s=5.0)
    w.saw(A, 100.0, at=1.0)
    w.saw(B, 200.0, at=1.0)
    # R is an empty partition that delivered nothing: idle at once; A has records left to
    # read, so it holds the watermark however long it has been silent
    assert w.current(1.0, left.get) == 100.0
    assert w.current(60.0, left.get) == 100.0
    left[A] = 0
    assert w.current(60.0, left.get) == 200.0
    assert w.current(3.0, lambda source: None) == 200.0  # never back


def test_a_reset_starts_again_from_nothing():
    w = clock(A)
    w.saw(A, 100.0, at=1.0)
    w.forwarded(b"x", 10.0)
    w.reset([B], at=2.0)
    assert w.current(2.0) == 0.0 and w.in_flight == {}
    w.saw(B, 50.0, at=3.0)
    assert w.current(3.0) == 50.0


def test_a_repartition_partition_holds_it_at_the_oldest_mark_of_the_input_partitions():
    """Another worker forwards to R what it reads of B; this worker reads A. R holds the
    watermark at what every input partition's marks say, not at the events it carried."""
    w = Watermark(idle_s=5.0)
    w.reset([A, R], at=0.0, merged=[R], upstream=[A, B])
    w.saw(A, 100.0, at=1.0)
    w.saw(R, 90.0, at=1.0)  # an event forwarded by this worker, read back
    assert w.current(1.0) == 0.0  # no mark read from R yet: nothing is known
    w.marked(R, {A: 100.0})
    assert w.current(1.0) == 0.0  # still none for B
    w.marked(R, {B: 20.0})  # the other worker is far behind on B (restarted, say)
    assert w.current(1.0) == 20.0
    assert w.current(60.0) == 20.0  # R's marks hold however long it is silent
    w.marked(R, {B: IDLE})  # B idle where it is read: it holds nothing
    assert w.current(60.0, {A: 1}.get) == 100.0
    w.marked(R, {B: 50.0})
    assert w.current(61.0) == 100.0  # never back
    w.marked(("elsewhere", 9), {B: 0.0})  # marks of a partition not held change nothing
    assert w.current(62.0) == 100.0


def test_what_a_worker_marks_is_each_partition_it_reads_newest_event_or_idle():
    w = Watermark(idle_s=5.0)
    w.reset([A, B, R], at=0.0, merged=[R], upstream=[A, B])
    w.saw(A, 100.0, at=1.0)
    assert w.reading(2.0) == {A: 100.0}  # B has delivered nothing and is not idle: left out
    assert w.reading(5.5) == {A: 100.0, B: IDLE}  # B silent for 5 s
    assert w.reading(5.5, {A: 0, B: 3}.get) == {A: 100.0}  # B has records to read: not idle
    assert w.reading(10.0) == {A: IDLE, B: IDLE}


def test_an_input_partition_read_here_is_held_by_others_marks_until_this_workers_own_come_back():
    """After a rebalance this worker reads A, which another worker read before (and forwarded
    from, to R): that worker's last mark for A holds the watermark until this worker's own
    first mark is read back from R (everything forwarded before lies ahead of it); from then
    A's own source holds it, with no wait for marks."""
    w = Watermark(idle_s=5.0)
    w.reset([A, R], at=0.0, merged=[R], upstream=[A])
    w.saw(A, 100.0, at=1.0)
    assert w.current(1.0) == 0.0  # nothing read from R yet: copies from before may lie there
    w.marked(R, {A: 30.0})  # the earlier reader's last word on A
    assert w.current(1.0) == 30.0
    w.marked(R, {A: 100.0}, own=True)
    w.saw(A, 200.0, at=2.0)
    assert w.current(2.0) == 200.0  # A's own source now, not the marks (no wait for the next)


def test_a_repartition_partition_read_to_its_end_needs_no_mark_for_what_is_read_here():
    w = Watermark(idle_s=5.0)
    w.reset([A, R], at=0.0, merged=[R], upstream=[A])
    w.saw(A, 100.0, at=1.0)
    ends = {R: False}
    assert w.current(1.0, {A: 0}.get, ends.get) == 0.0  # R has records left: copies from before may lie there
    ends[R] = True
    assert w.current(1.0, {A: 0}.get, ends.get) == 100.0  # read to its end
    ends[R] = False
    assert w.current(2.0, {A: 0}.get, ends.get) == 100.0  # and once is enough: what comes now comes after


def test_an_event_waiting_in_a_recovered_state_is_passed_once_every_source_is_idle():
    """Its offset was committed before the restart: no source delivers it again. Were it the
    newest of the stream, a watermark made of what the sources deliver would never pass it."""
    w = clock(A, idle_s=5.0)
    w.waiting(300.0)
    w.saw(A, 100.0, at=1.0)
    assert w.current(2.0) == 100.0  # A is still active: it holds the watermark
    assert w.current(10.0) == 300.0  # everything idle: past the recovered event too


def test_an_event_in_flight_to_a_partition_still_held_after_a_rebalance_still_holds_it():
    """The rebalance starts the sources again, but an event forwarded to a repartition
    partition this worker keeps is still on its way there: the watermark must wait for it."""
    w = clock(A, R, idle_s=5.0)
    w.saw(A, 100.0, at=1.0)
    w.forwarded(b"in:0:7", 40.0, to=R)
    w.forwarded(b"in:0:8", 45.0, to=("re", 1))
    w.reset([A, R], at=2.0)  # ("re", 1) went to another worker: its reader waits for it by marks
    w.saw(A, 100.0, at=2.5)
    assert w.current(20.0) == 40.0
    w.arrived(b"in:0:7")
    assert w.current(20.0) == 100.0
