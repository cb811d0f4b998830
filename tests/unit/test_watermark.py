"""worker.core.watermark: the event-time watermark over a worker's sources."""
from __future__ import annotations

from worker.core.watermark import IDLE, Idle, Watermark, reading, to_confirm

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
    assert reading(w, 2.0) == {A: 100.0}  # B has delivered nothing and is not idle: left out
    assert reading(w, 5.5) == {A: 100.0, B: IDLE}  # B silent for 5 s
    assert reading(w, 5.5, {A: 0, B: 3}.get) == {A: 100.0}  # B has records to read: not idle
    assert reading(w, 10.0) == {A: Idle(None, 100.0), B: IDLE}


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


def test_an_idle_mark_lets_the_watermark_pass_only_while_the_broker_confirms_the_partition_empty():
    """The stream starts after every partition went idle: the other worker's last mark says
    B is idle at offset 0, but B has records now that it has not fetched yet. Trusting that
    mark would carry the watermark with A's events past B's (their copies come through R
    later): B holds it until the broker's end of B is where the mark says B's reader stands."""
    w = Watermark(idle_s=5.0, next_offset=lambda source: None)
    w.reset([A, R], at=0.0, merged=[R], upstream=[A, B])
    w.confirm({})  # confirming (the event clock)
    w.marked(R, {A: IDLE, B: Idle(0, None)})
    w.marked(R, {A: 100.0}, own=True)
    w.saw(A, 100.0, at=1.0)
    assert to_confirm(w, 1.0) == {B}
    w.confirm({B: 40})  # 40 records in B, its reader at 0
    assert w.current(1.0) == 0.0  # nothing known of B's times: nothing passes
    w.marked(R, {B: Idle(40, 60.0)})  # its reader read them (newest at 60) and went idle again
    w.confirm({B: 45})  # and five more came
    assert w.current(1.0) == 60.0  # held at the newest read there
    w.marked(R, {B: Idle(45, 80.0)})
    w.confirm({B: 45})
    assert w.current(1.0) == 100.0


def test_an_idle_source_read_here_counts_as_idle_only_at_the_end_the_broker_gives():
    positions = {A: 10, B: 0}
    w = Watermark(idle_s=5.0, next_offset=positions.get)
    w.reset([A, B], at=0.0)
    w.confirm({})
    w.saw(A, 200.0, at=1.0)
    w.saw(B, 100.0, at=1.0)
    positions[B] = 3
    assert to_confirm(w, 6.0) == {A, B}  # both silent for 5 s
    w.confirm({A: 10, B: 5})  # B has two records its fetch has not brought yet
    assert w.current(6.0) == 100.0  # A idle; B holds it at the newest it delivered
    w.confirm({A: 10, B: 3})
    assert w.current(6.0) == 200.0  # both confirmed idle: the newest delivered


def test_idleness_is_taken_as_it_stands_where_nothing_is_confirmed():
    """The wall clock does not confirm, and a mark of an older version carries no offset."""
    w = Watermark(idle_s=5.0)
    w.reset([A, R], at=0.0, merged=[R], upstream=[A, B])
    w.marked(R, {A: 100.0, B: IDLE}, own=True)
    w.saw(A, 100.0, at=1.0)
    assert to_confirm(w, 1.0) == set() and w.current(1.0) == 100.0
    w.confirm({})
    assert w.current(1.0) == 100.0  # an older mark's IDLE (no offset) is trusted as before
