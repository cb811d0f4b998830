"""worker.core.watermark: the event-time watermark over a worker's sources."""
from __future__ import annotations

from worker.core.watermark import Watermark

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


def reading(left: dict):
    """(next offset, end) of sources with `left` records left to read."""
    return lambda source: (100, 100 + left[source]) if source in left else (None, None)


def test_what_is_left_to_read_overrules_the_timeout():
    left = {A: 5, B: 0, R: 0}
    w = clock(A, B, R, idle_s=5.0)
    w.saw(A, 100.0, at=1.0)
    w.saw(B, 200.0, at=1.0)
    # R is an empty partition that delivered nothing: idle at once; A has records left to
    # read, so it holds the watermark however long it has been silent
    assert w.current(1.0, reading(left)) == 100.0
    assert w.current(60.0, reading(left)) == 100.0
    left[A] = 0
    assert w.current(60.0, reading(left)) == 200.0
    assert w.current(3.0, lambda source: (None, None)) == 200.0  # never back


def test_a_reset_starts_again_from_nothing():
    w = clock(A)
    w.saw(A, 100.0, at=1.0)
    w.forwarded(b"x", 10.0)
    w.reset([B], at=2.0)
    assert w.current(2.0) == 0.0 and w.in_flight == {}
    w.saw(B, 50.0, at=3.0)
    assert w.current(3.0) == 50.0


def test_a_replayed_source_holds_it_until_read_to_its_end():
    """After an assignment the repartition partition may hold copies an earlier owner
    forwarded, in forwarding order: an event days ahead of one still unread must not move
    the watermark before the partition has been read to its end."""
    w = Watermark(idle_s=5.0)
    w.reset([A, R], at=0.0, replay=[R])
    w.saw(A, 100.0, at=1.0)
    w.saw(R, 500.0, at=1.0)  # the first copy read is far ahead of those behind it
    at = {A: (10, 10), R: (5, 8)}  # (next offset, end): the end the first fetch after the assignment reported
    assert w.current(1.0, at.get) == 0.0
    at[R] = (7, 9)  # what was appended since (forwarded by this worker, held as such) is not waited for
    assert w.current(2.0, at.get) == 0.0
    at[R] = (8, 9)
    assert w.current(2.0, at.get) == 100.0


def test_a_replayed_source_that_goes_quiet_stops_holding_it():
    """An empty repartition partition has nothing to replay; one that stops delivering with
    nothing known left to read is let go after the idle timeout, so nothing stalls for good."""
    w = Watermark(idle_s=5.0)
    w.reset([A, R], at=0.0, replay=[R])
    w.saw(A, 100.0, at=1.0)
    assert w.current(1.0, reading({A: 0, R: 0})) == 100.0  # empty and never delivered: nothing to replay
    w.reset([A, R], at=10.0, replay=[R])
    w.saw(A, 200.0, at=11.0)
    w.saw(R, 150.0, at=11.0)
    assert w.current(12.0) == 0.0  # nothing known about what R has left: it holds
    assert w.current(16.5) == 200.0  # quiet for 5 s: let go (and R, idle, holds nothing)


def test_events_waiting_in_recovered_states_count_as_delivered():
    """After a restart the newest events may wait in the recovered states, their offsets
    committed: no source delivers them again. When everything is idle the watermark must
    still move past them, as it would have in the life that read them."""
    w = clock(A, R, idle_s=5.0)
    w.waiting(300.0)
    w.saw(A, 100.0, at=1.0)
    assert w.current(2.0) == 0.0  # R holds it (assigned, silent for less than 5 s)
    assert w.newest() == 300.0
    assert w.current(7.0) == 300.0  # every source idle: the newest event known, waiting or delivered
    w.reset([A], at=8.0)
    assert w.newest() == 0.0
