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
- With several workers, the events another worker forwards to a repartition partition this
  worker reads can be far behind the ones it forwards there itself (that worker restarted,
  or its partitions waited for a new owner). So each worker writes *marks* to every
  repartition partition, after its forwards: for each input partition it reads, the newest
  event time it has read there (or that it is idle). For each input partition another
  worker reads, a repartition partition holds the watermark at the last mark it carried
  for it (none yet: nothing is known), as Flink takes the minimum watermark over the
  channels of a shuffle. Marks come after the forwards they cover, in one partition's
  order, so an event read from there is not behind its mark's time (given each input
  partition in time order). For an input partition this worker reads itself, its own
  reading and the in-flight rule cover it; the marks of its earlier reader (a worker that
  crashed, say) hold the watermark only until this worker's first mark since the
  assignment comes back from the repartition partition, or it has been read to its end:
  everything that earlier reader forwarded there lies before either.
- Idleness is confirmed (on the event clock) before it lets the watermark pass: a source
  that looks empty may have records its reader has not fetched yet (the stream starting
  up after every partition went idle, or a fetch older than the batch). So an idle input
  partition counts as idle only while the partition's end, asked of the broker after the
  batch's records were fetched (`confirm`), is where its reader stands: its own reading
  for a partition read here, the offset an idle mark carries for one read elsewhere.
  Otherwise it holds the watermark at the newest event time read there (none: nothing is
  known). A mark of an older version carries no offset and is taken as it stands.
- It never goes back between rebalances (a source that wakes from idleness with older
  events does not undo what was decided). `reset` starts again from nothing after a
  rebalance: until each new source has delivered or gone idle, the watermark stays where
  it is.
"""
from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Mapping
from typing import NamedTuple

Unread = Callable[[Hashable], "int | None"]  # records a source has left to read; None: not known
Offset = Callable[[Hashable], "int | None"]  # the next offset this worker reads of a source; None: not known


class Idle(NamedTuple):
    """A mark's value for an input partition idle where it is read: the offset its reader
    stood at there (the partition's end, as that reader saw it) and the newest event time it
    read there; None where not known (`end` None: a mark of an older version)."""

    end: int | None = None
    newest: float | None = None


IDLE = Idle()


class _Source:
    __slots__ = ("newest", "active_at")

    def __init__(self, at: float) -> None:
        self.newest: float | None = None  # newest event time delivered; None: nothing yet
        self.active_at = at               # monotonic time of the last event (or of the assignment)


class Watermark:
    def __init__(self, idle_s: float, next_offset: Offset | None = None) -> None:
        self.idle_s = idle_s
        self.next_offset = next_offset  # where this worker reads on in each source it reads
        self.ends: Mapping[Hashable, int] | None = None  # input partitions' ends as last asked; None: not asked
        self.sources: dict[Hashable, _Source] = {}
        # forwarded, not yet read back: origin -> (event time, the partition it was sent to)
        self.in_flight: dict[bytes, tuple[float, Hashable]] = {}
        self.upstream: tuple[Hashable, ...] = ()  # the input partitions every merged source carries marks of
        self.marks: dict[Hashable, dict[Hashable, float | Idle]] = {}  # merged source -> input partition -> mark
        self.caught_up: set[Hashable] = set()  # merged sources this worker's own mark has come back from
        self.read_here: frozenset[Hashable] = frozenset()  # the input partitions of the assignment
        self.value = 0.0
        self.recovered = 0.0  # the newest event waiting in a state recovered at the assignment

    def reset(self, sources: Iterable[Hashable], at: float, merged: Iterable[Hashable] = (),
              upstream: Iterable[Hashable] = ()) -> None:
        """A new assignment: these sources, none delivered yet; in flight only what was sent
        to a partition still held (the partition is read on from where it stood). The
        `merged` ones (repartition partitions) hold it by the marks they carry, one for each
        of the `upstream` sources (every partition of every input topic)."""
        self.sources = {s: _Source(at) for s in sources}
        # a partition still held is still to be read back here
        self.in_flight = {origin: sent for origin, sent in self.in_flight.items() if sent[1] in self.sources}
        self.upstream = tuple(upstream)
        self.marks = {s: {} for s in merged}
        self.caught_up = set()
        self.read_here = frozenset(self.sources) - frozenset(self.marks)
        self.value = self.recovered = 0.0

    def waiting(self, event_time: float) -> None:
        """An event delivered before the assignment waits in a recovered state: delivered,
        though no source delivers it again (its offset was committed). When every source is
        idle the watermark moves past it as past any event delivered."""
        if event_time > self.recovered:
            self.recovered = event_time

    def marked(self, source: Hashable, marks: dict[Hashable, float | Idle], own: bool = False) -> None:
        """Marks read from a merged source: per input partition, the newest event time read
        there by the worker that wrote them (Idle: idle there). `own`: written by this
        worker since the assignment."""
        held = self.marks.get(source)
        if held is not None:
            held.update(marks)
            if own:
                self.caught_up.add(source)

    def saw(self, source: Hashable, event_time: float, at: float) -> None:
        """An event delivered by `source` (a source that delivers is one, assigned or not)."""
        s = self.sources.get(source)
        if s is None:
            s = self.sources[source] = _Source(at)
        s.active_at = at
        if s.newest is None or event_time > s.newest:
            s.newest = event_time

    def forwarded(self, origin: bytes, event_time: float, to: Hashable = None) -> None:
        """An event sent to a repartition partition this worker holds (`to`), to be read back."""
        self.in_flight[origin] = (event_time, to)

    def arrived(self, origin: bytes) -> None:
        self.in_flight.pop(origin, None)

    def newest(self) -> float:
        """The newest event time delivered (0 before any): by any source, or before the
        assignment and waiting in a recovered state."""
        delivered = max((s.newest for s in self.sources.values() if s.newest is not None), default=0.0)
        return delivered if delivered > self.recovered else self.recovered

    def current(self, at: float, unread: Unread | None = None,
                read_to_end: Callable[[Hashable], bool] | None = None) -> float:
        """The watermark at monotonic time `at`. `read_to_end(source)`: a merged source has
        been read to its end as a fetch since the assignment reported it."""
        held: float | None = None
        for source, s in self.sources.items():
            if source in self.marks:
                continue
            if self.holds(source, s, at, unread) or not self._empty(source, self.next_of(source)):
                if s.newest is None:  # it holds the watermark at what it delivered
                    return self.value  # not delivered yet: nothing is known about it
                held = s.newest if held is None or s.newest < held else held
        for merged, marks in self.marks.items():
            caught_up = merged in self.caught_up
            if not caught_up and read_to_end is not None and read_to_end(merged):
                self.caught_up.add(merged)  # read to its end: whatever an earlier reader forwarded lay before
                caught_up = True
            for upstream in self.upstream:
                if caught_up and upstream in self.read_here:
                    continue  # read here: its own source holds it
                mark = marks.get(upstream)
                if mark is None:
                    return self.value  # no mark yet for an input partition: nothing is known
                if isinstance(mark, Idle):
                    if self._empty(upstream, mark.end):
                        continue
                    if mark.newest is None:  # records came after its reader went idle
                        return self.value
                    mark = mark.newest
                if held is None or mark < held:
                    held = mark
        flight = self.in_flight_min()
        if held is None:  # every source idle
            held = self.newest() if flight is None else flight
        elif flight is not None and flight < held:
            held = flight
        return self._hold(held)

    def confirm(self, ends: Mapping[Hashable, int] | None) -> None:
        """The input partitions' ends, asked of the broker after the records delivered so far
        were fetched (None: idleness is taken as it stands)."""
        self.ends = ends

    def next_of(self, source: Hashable) -> int | None:
        return self.next_offset(source) if self.next_offset is not None else None

    def _empty(self, source: Hashable, reader_at: int | None) -> bool:
        """Idle counts as idle: not asked, the reader's position not known (an older mark), or
        the partition's end as last asked is where its reader stands."""
        if self.ends is None or reader_at is None:
            return True
        end = self.ends.get(source)
        return end is not None and end <= reader_at

    def holds(self, source: Hashable, s: _Source, at: float, unread: Unread | None) -> bool:
        left = unread(source) if unread is not None else None
        if left is not None and (left > 0 or s.newest is None):
            return left > 0  # records to read: it holds; an empty partition never delivered: idle
        return at - s.active_at < self.idle_s

    def in_flight_min(self) -> float | None:
        return min((t for t, _ in self.in_flight.values()), default=None)

    def _hold(self, candidate: float | None) -> float:
        if candidate is not None and candidate > self.value:
            self.value = candidate
        return self.value


def reading(clock: Watermark, at: float, unread: Unread | None = None) -> dict[Hashable, float | Idle]:
    """The marks this worker writes: for each source it reads that is not a merged one,
    the newest event time delivered, or Idle (with where it reads on); a source that has
    delivered nothing yet and is not idle is left out (nothing is known about it)."""
    out: dict[Hashable, float | Idle] = {}
    for source, s in clock.sources.items():
        if source in clock.marks:
            continue
        if not clock.holds(source, s, at, unread):
            out[source] = Idle(clock.next_of(source), s.newest)
        elif s.newest is not None:
            out[source] = s.newest
    return out


def to_confirm(clock: Watermark, at: float, unread: Unread | None = None) -> set[Hashable]:
    """The partitions whose ends `Watermark.confirm` must bring before an idle one lets the watermark
    pass: the idle sources read here and the input partitions of idle marks."""
    if clock.ends is None:
        return set()
    out = {source for source, s in clock.sources.items()
           if source not in clock.marks and not clock.holds(source, s, at, unread)}
    out.update(upstream for marks in clock.marks.values() for upstream, m in marks.items()
               if isinstance(m, Idle) and m.end is not None)
    return out
