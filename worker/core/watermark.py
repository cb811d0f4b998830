"""The event-time watermark: how far in event time every input of this worker has come.

As stream processors define it (Flink, Beam): the watermark is the minimum, over the
sources a worker reads, of the newest event time each has delivered, so an event at or
before it should not arrive any more. A source is a topic-partition: each assigned
partition of every input topic, and of the repartition topic that carries the events
forwarded to their customer's partition. Pure: the caller passes the monotonic clock.

Three things keep it honest:
- An event this worker forwarded to a repartition partition it holds is *in flight* until
  it is read back: the watermark stays at or below its time, so the hop through the
  repartition topic never makes it late.
- A source that has delivered no event for `idle_s` (wall seconds, since the last one or
  since it was assigned) is idle and does not hold the watermark back: a partition with
  no traffic must not stop event time. Flink calls this source idleness. When every source
  is idle, nothing is arriving anywhere, and the watermark moves to the newest event time
  delivered. Where the caller can say how many records a source has left to read (`unread`:
  the partition's high watermark less the next offset), a source with some left is never
  idle, and an empty partition that has delivered nothing is idle at once.
- It never goes back between rebalances (a source that wakes from idleness with older
  events does not undo what was decided). `reset` starts again from nothing after a
  rebalance: until each new source has delivered or gone idle, the watermark stays where
  it is.
"""
from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable

Unread = Callable[[Hashable], "int | None"]  # records a source has left to read; None: not known


class _Source:
    __slots__ = ("newest", "active_at")

    def __init__(self, at: float) -> None:
        self.newest: float | None = None  # newest event time delivered; None: nothing yet
        self.active_at = at               # monotonic time of the last event (or of the assignment)


class Watermark:
    def __init__(self, idle_s: float) -> None:
        self.idle_s = idle_s
        self.sources: dict[Hashable, _Source] = {}
        self.in_flight: dict[bytes, float] = {}  # forwarded, not yet read back: origin -> event time
        self.value = 0.0

    def reset(self, sources: Iterable[Hashable], at: float) -> None:
        """A new assignment: these sources, none delivered yet; nothing in flight."""
        self.sources = {s: _Source(at) for s in sources}
        self.in_flight.clear()
        self.value = 0.0

    def saw(self, source: Hashable, event_time: float, at: float) -> None:
        """An event delivered by `source` (a source that delivers is one, assigned or not)."""
        s = self.sources.get(source)
        if s is None:
            s = self.sources[source] = _Source(at)
        s.active_at = at
        if s.newest is None or event_time > s.newest:
            s.newest = event_time

    def forwarded(self, origin: bytes, event_time: float) -> None:
        """An event sent to a repartition partition this worker holds, to be read back."""
        self.in_flight[origin] = event_time

    def arrived(self, origin: bytes) -> None:
        self.in_flight.pop(origin, None)

    def newest(self) -> float:
        """The newest event time any source has delivered (0 before any)."""
        return max((s.newest for s in self.sources.values() if s.newest is not None), default=0.0)

    def current(self, at: float, unread: Unread | None = None) -> float:
        """The watermark at monotonic time `at`."""
        held: float | None = None
        for source, s in self.sources.items():
            if self._holds(source, s, at, unread):  # it holds the watermark at what it delivered
                if s.newest is None:
                    return self.value  # not delivered yet: nothing is known about it
                held = s.newest if held is None or s.newest < held else held
        flight = self.in_flight_min()
        if held is None:  # every source idle
            held = self.newest() if flight is None else flight
        elif flight is not None and flight < held:
            held = flight
        return self._hold(held)

    def _holds(self, source: Hashable, s: _Source, at: float, unread: Unread | None) -> bool:
        left = unread(source) if unread is not None else None
        if left is not None and (left > 0 or s.newest is None):
            return left > 0  # records to read: it holds; an empty partition never delivered: idle
        return at - s.active_at < self.idle_s

    def in_flight_min(self) -> float | None:
        return min(self.in_flight.values(), default=None)

    def _hold(self, candidate: float | None) -> float:
        if candidate is not None and candidate > self.value:
            self.value = candidate
        return self.value
