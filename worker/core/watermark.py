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
  delivered. Where the caller can say how many records a source has left to read (`reading`:
  the partition's high watermark less the next offset), a source with some left is never
  idle, and an empty partition that has delivered nothing is idle at once.
- After an assignment, the repartition partitions are *replayed* first: each is read to the
  end it had when assigned before the watermark moves. What lies there was forwarded by
  an earlier owner (a worker that crashed, or gave the partition up) whose in-flight
  holds died with it, and it lies in forwarding order, not time order: a fetch of it can
  deliver an event days ahead of a copy still unread behind it. Moving the watermark on
  that event would make the copy arrive behind the lateness horizon, where the ids of
  events it may duplicate are forgotten. A replayed source that stops delivering for
  `idle_s` with nothing known left to read stops holding it, as an idle source does.
- It never goes back between rebalances (a source that wakes from idleness with older
  events does not undo what was decided). `reset` starts again from nothing after a
  rebalance: until each new source has delivered or gone idle, the watermark stays where
  it is.
"""
from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable

# where the reading of a source stands: the next offset to read and the partition's end, as
# the last fetch reported it (None where not known)
Reading = Callable[[Hashable], "tuple[int | None, int | None]"]


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
        # sources to read to their end at the assignment before it moves: source -> that end
        # (the end the first fetch after the assignment reported; None until known)
        self.replay: dict[Hashable, int | None] = {}
        self.value = 0.0
        self.recovered = 0.0  # the newest event waiting in a state recovered at the assignment

    def reset(self, sources: Iterable[Hashable], at: float, replay: Iterable[Hashable] = ()) -> None:
        """A new assignment: these sources, none delivered yet; nothing in flight; the
        `replay` sources (of these) to be read to their end before the watermark moves."""
        self.sources = {s: _Source(at) for s in sources}
        self.in_flight.clear()
        self.replay = {s: None for s in replay if s in self.sources}
        self.value = self.recovered = 0.0

    def waiting(self, event_time: float) -> None:
        """An event delivered before the assignment waits in a recovered state: delivered,
        though no source delivers it again (its offset was committed). When every source is
        idle the watermark moves past it as past any event delivered."""
        if event_time > self.recovered:
            self.recovered = event_time

    def _replaying(self, at: float, reading: Reading | None) -> bool:
        """Some source is still being replayed: not read to the end the first fetch after the
        assignment reported, and not quiet (as an idle source) either."""
        for source in list(self.replay):
            position, end = reading(source) if reading is not None else (None, None)
            target = self.replay[source]
            if target is None:
                target = self.replay[source] = end
            done = target is not None and position is not None and position >= target
            if done or not self._holds(source, self.sources[source], at, reading):
                del self.replay[source]
        return bool(self.replay)

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
        """The newest event time delivered (0 before any): by any source, or before the
        assignment and waiting in a state."""
        delivered = max((s.newest for s in self.sources.values() if s.newest is not None), default=0.0)
        return delivered if delivered > self.recovered else self.recovered

    def current(self, at: float, reading: Reading | None = None) -> float:
        """The watermark at monotonic time `at`."""
        if self.replay and self._replaying(at, reading):
            return self.value
        held: float | None = None
        for source, s in self.sources.items():
            if self._holds(source, s, at, reading):  # it holds the watermark at what it delivered
                if s.newest is None:
                    return self.value  # not delivered yet: nothing is known about it
                held = s.newest if held is None or s.newest < held else held
        flight = self.in_flight_min()
        if held is None:  # every source idle
            held = self.newest() if flight is None else flight
        elif flight is not None and flight < held:
            held = flight
        return self._hold(held)

    def _holds(self, source: Hashable, s: _Source, at: float, reading: Reading | None) -> bool:
        left = _unread(*reading(source)) if reading is not None else None
        if left is not None and (left > 0 or s.newest is None):
            return left > 0  # records to read: it holds; an empty partition never delivered: idle
        return at - s.active_at < self.idle_s

    def in_flight_min(self) -> float | None:
        return min(self.in_flight.values(), default=None)

    def _hold(self, candidate: float | None) -> float:
        if candidate is not None and candidate > self.value:
            self.value = candidate
        return self.value


def _unread(position: int | None, end: int | None) -> int | None:
    """Records left to read (None: not known). Nothing read and nowhere to start from: an
    empty partition has nothing left, any other is not known."""
    if end is None:
        return None
    if position is None:
        return 0 if end == 0 else None
    return max(end - position, 0)
