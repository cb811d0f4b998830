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
