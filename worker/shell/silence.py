"""Silence: the deadline index, the event-time watermark, and the checks they bring.

A silent customer produces no message, so the worker keeps, for each customer of its
active partitions, the next moment silence must be looked at (worker.core.deadlines) and
takes those that come due:
- in a batch, after its events (`due_checks`): a busy worker checks them there;
- from the timer, when no batch ran since its last tick (`tick`): an idle worker sends a
  tick per due customer to its own repartition topic, which a batch then takes.
After every rebalance the index is rebuilt from the recovered table (`rebuild`).

"Now" is the wall clock in production and the event-time watermark for replays
(CHURN_CLOCK=event): the event time every source this worker reads (each assigned
partition of the input topics and of the repartition topic) has reached, kept by
worker.core.watermark. On either clock the watermark is what lateness is judged against.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, NamedTuple

from worker.config import Settings
from worker.core.admission import KIND_HEADER, TICK, tick_value
from worker.core.codec import decode_state
from worker.core.deadlines import DeadlineIndex
from worker.core.partitioner import partition_of
from worker.core.pipeline import Item, next_due
from worker.core.policy import Policy
from worker.core.state import CustomerState
from worker.core.watermark import Watermark, to_confirm
from worker.shell.marks import MarkSink, MarkWriter
from worker.shell.metrics import Metrics
from worker.shell.output import Sink

log = logging.getLogger("churn_worker")
REBUILD_YIELD_EVERY = 5000  # keys scanned between event-loop yields when rebuilding the index
TICK_LIMIT = 10_000  # ticks one timer run sends at most
EndOffsets = Callable[[list[tuple[str, int]]], Awaitable[dict[tuple[str, int], int]]]  # partitions -> their ends


class DueCheck(NamedTuple):
    """The source of a silence check taken from the index into a batch: no message, only
    the partition its customer's state lives on."""

    partition: int


class Positions:
    """Where this worker's reading of each source partition stands, as far as the consumer's
    last fetch tells."""

    def __init__(self, highwater: Callable[[str, int], int | None],
                 start_offset: Callable[[str, int], int | None], end_offsets: EndOffsets | None = None) -> None:
        self.highwater, self.start_offset, self.end_offsets = highwater, start_offset, end_offsets
        self.last_offset: dict[tuple[str, int], int] = {}  # per source, the last offset delivered
        self.ends_at_assignment: dict[tuple[str, int], int | None] = {}

    def reset(self, watched: Iterable[tuple[str, int]]) -> None:
        """A new assignment; the `watched` partitions' ends as the consumer knows them now."""
        self.last_offset.clear()
        self.ends_at_assignment = {source: self.highwater(*source) for source in watched}

    def read(self, topic: str, partition: int, offset: int) -> None:
        """A message was delivered (an event or not): where its source's reading stands."""
        self.last_offset[(topic, partition)] = offset

    def unread(self, source: Any) -> int | None:
        """Records a source has left to read, as far as the last fetch told (None: not known)."""
        end = self.highwater(*source)
        if end is None:
            return None
        last = self.last_offset.get(source)
        if last is not None:
            return max(end - last - 1, 0)
        start = self.start_offset(*source)  # nothing delivered since the assignment
        return max(end - start, 0) if start is not None else (0 if end == 0 else None)

    async def confirm(self, clock: Watermark, metrics: Metrics) -> None:
        """Ask the broker for the ends of the partitions that look idle, once this worker's
        records up to now are fetched: idleness is confirmed (worker.core.watermark). A
        failed ask confirms nothing: those partitions hold the watermark until the next."""
        if self.end_offsets is None or not (wanted := to_confirm(clock, time.monotonic(), self.unread)):
            return
        try:
            ends = await self.end_offsets(sorted(wanted))  # type: ignore[arg-type]  # input partitions
        except Exception as exc:
            log.warning("partition ends not known (%r): idle partitions hold the watermark", exc)
            ends = {}
        clock.confirm(ends)  # type: ignore[arg-type]
        metrics.idle_confirmations.inc()

    def next_offset(self, source: Any) -> int | None:
        """The offset this worker reads on from in a source (None: not known)."""
        last = self.last_offset.get(source)
        return last + 1 if last is not None else self.start_offset(*source)

    def read_to_end(self, source: Any) -> bool:
        """A watched source read to its end, as a fetch since the assignment reports it: the
        consumer's end of a partition it held before is the last fetch's until the next,
        which can predate the assignment (and miss what was forwarded there just before)."""
        if source not in self.last_offset and self.highwater(*source) == self.ends_at_assignment.get(source):
            return False
        return self.unread(source) == 0


class Silence:
    def __init__(self, settings: Settings, policy: Policy, metrics: Metrics, send: Sink,
                 ready: Callable[[], bool], active: Callable[[], set[int]],
                 highwater: Callable[[str, int], int | None] = lambda topic, partition: None,
                 start_offset: Callable[[str, int], int | None] = lambda topic, partition: None,
                 send_mark: MarkSink | None = None, end_offsets: EndOffsets | None = None) -> None:
        self.settings, self.policy, self.metrics, self.send = settings, policy, metrics, send
        self.ready, self.active = ready, active
        self.positions = Positions(highwater, start_offset, end_offsets)
        self.read, self.unread = self.positions.read, self.positions.unread
        self.index = DeadlineIndex()
        self.clock = Watermark(settings.idle_source_s, self.positions.next_offset)
        if end_offsets is not None and settings.clock == "event":
            self.clock.confirm({})  # idleness confirmed by the broker before it moves event time
        self.marks = MarkWriter(settings, metrics, self.clock, send_mark, self.unread, ready)
        self.held: set[int] = set()  # the partitions of the last assignment
        self.waiting = 0  # events held in states until the watermark passes them
        self.batch_since_tick = False  # a batch ran since the timer's last tick: it took the due deadlines

    def saw(self, topic: str, partition: int, event_time: float) -> None:
        self.clock.saw((topic, partition), event_time, time.monotonic())

    def forwarded(self, key: bytes, origin: bytes, event_time: float) -> None:
        """An event forwarded to its customer's repartition partition: in flight until read
        back, if this worker holds that partition (another worker's is its own business)."""
        if (part := partition_of(key, self.settings.topic_partitions)) in self.held:
            self.clock.forwarded(origin, event_time, (self.settings.repartition_topic, part))

    def arrived(self, origin: bytes) -> None:
        self.clock.arrived(origin)

    def marked(self, partition: int, marks: dict, writer: str) -> None:
        """Marks read from a repartition partition (worker.core.watermark)."""
        self.clock.marked((self.settings.repartition_topic, partition), marks, own=writer == self.marks.writer)

    async def confirm(self) -> None:
        """The ends of the partitions that look idle, asked now (worker.core.watermark)."""
        await self.positions.confirm(self.clock, self.metrics)

    def watermark(self) -> float:
        """The event-time watermark of this worker's sources (0 until they have delivered)."""
        return self.clock.current(time.monotonic(), self.unread, self.positions.read_to_end)

    def now(self) -> float:
        return self.watermark() if self.settings.clock == "event" else time.time()

    def due_checks(self) -> list[Item]:
        """Silence deadlines due by now, to check in this batch after its events.

        Safe here: the handler runs while faust tracks its messages, and a rebalance waits
        for those (`wait_empty`) before it revokes a partition, so these customers'
        partitions stay assigned until their state is written. A key of a partition not
        held (an index not yet rebuilt after a rebalance) is left to the rebuild. Called
        once per batch: the timer's next run then leaves the due deadlines to batches."""
        self.batch_since_tick = True
        if not len(self.index) or not self.ready():
            return []
        now = self.now()
        due = self.index.pop_due(now, limit=self.settings.batch_size)
        if not due:
            return []
        active, n = self.active(), self.settings.topic_partitions
        # every deadline due by now, each decided at its own time (as ticks would, one by one)
        items = [Item(key.decode(), None, now, ref=DueCheck(part)) for key, _ in due
                 if (part := partition_of(key, n)) in active]
        self.metrics.silence_checks.labels("batch").inc(len(items))
        return items

    def rearm(self, checks: list[Item]) -> None:
        """Due checks a failed batch took: due again now (a check that finds nothing due
        decides nothing)."""
        for item in checks:
            self.index.set(item.customer_id.encode(), item.deadline)

    def reschedule(self, deadlines: dict[str, float | None]) -> None:
        """The customers a batch decided: their next deadlines (set even if unchanged: a
        due check popped it)."""
        for cid, deadline in deadlines.items():
            self.index.set(cid.encode(), deadline)

    async def tick(self) -> None:
        """A tick for each due deadline, when no batch has run since the last tick."""
        self.gauge()  # the watermark moves with time too (idle sources), batch or not
        await self.marks.write()  # an idle worker's marks say so
        if not self.ready() or not len(self.index):
            return
        if self.batch_since_tick:
            self.batch_since_tick = False
            return
        started = time.monotonic()
        await self.confirm()
        due = self.index.pop_due(self.now(), limit=TICK_LIMIT)
        topic, headers = self.settings.repartition_topic, [(KIND_HEADER, TICK)]
        sent = [await self.send(topic, key, tick_value(deadline), headers) for key, deadline in due]
        self.metrics.silence_checks.labels("timer").inc(len(due))
        for (key, deadline), outcome in zip(due, await asyncio.gather(*sent, return_exceptions=True)):
            if isinstance(outcome, BaseException):  # not sent: keep the deadline for the next tick
                log.warning("tick for a customer was not sent (%r); retrying on the next tick", outcome)
                self.index.set(key, deadline)
        self.metrics.tick_seconds.observe(time.monotonic() - started)
        self.gauge()

    async def rebuild(self, records: Iterable[tuple[bytes, bytes]]) -> int:
        """The index from the recovered table, active partitions only, and the watermark
        started again over the new sources (until each has delivered or gone idle, and each
        repartition partition has carried a mark of every input partition, it stays at 0:
        nothing is decided on the event clock, nothing is late). Returns the customers held."""
        active = self.active()
        s = self.settings
        self.held = active
        merged = [(s.repartition_topic, p) for p in active] if self.marks.send is not None else []
        self.clock.reset([(t, p) for t in (*s.input_topics, s.repartition_topic) for p in active], time.monotonic(),
                         merged=merged, upstream=[(t, p) for t in s.input_topics for p in range(s.topic_partitions)])
        self.marks.reset()
        self.positions.reset([(s.repartition_topic, p) for p in active])
        return await self.reindex(records, self.policy, recovering=True)

    async def reindex(self, records: Iterable[tuple[bytes, bytes]], policy: Policy, recovering: bool = False) -> int:
        """Every held customer's next deadline under `policy` (a rebalance, or a new policy
        version: its lapse windows and SLA move the deadlines). Returns the customers held."""
        s, active = self.settings, self.held
        self.policy = policy
        self.index.clear()
        count = waiting = 0
        for n, (key, raw) in enumerate(records):
            part = partition_of(key, s.topic_partitions)
            if part in active and (state := recovered(key, raw, part, self.metrics)) is not None:
                count += 1
                waiting += len(state.pending)
                if recovering and state.pending:  # in time order: the last is the newest
                    self.clock.waiting(state.pending[-1].occurred_at)
                self.index.set(key, next_due(policy, state))
            if n % REBUILD_YIELD_EVERY == 0:
                await asyncio.sleep(0)
        self.waiting = waiting
        self.gauge()
        log.info("deadline index %s: %d customers, %d pending, partitions %s, policy %s",
                 "rebuilt" if recovering else "recomputed", count, len(self.index), sorted(active), policy.version)
        return count

    def gauge(self) -> None:
        m = self.metrics
        m.deadlines.set(len(self.index))
        m.next_deadline.set(self.index.earliest() or 0.0)
        m.watermark.set(self.watermark())
        m.newest.set(self.clock.newest())
        m.waiting.set(self.waiting)
        s = self.settings
        m.set_lag({(t, p): self.unread((t, p)) for t in (*s.input_topics, s.repartition_topic) for p in self.held})


def unread_total(silence: Silence) -> int:
    """Records left to read on the partitions held, as far as known."""
    s = silence.settings
    return sum(u for t in (*s.input_topics, s.repartition_topic) for p in silence.held
               if (u := silence.unread((t, p))) is not None)


def recovered(key: bytes, raw: bytes, partition: int, metrics: Metrics) -> CustomerState | None:
    """The recovered state, or None for a record this worker cannot read (corrupt, or
    written by a newer codec): counted and logged, kept out of the index, left in the
    store as it is (an event of that customer is then dead-lettered rather than let
    overwrite it), so one record never stops the worker from starting."""
    try:
        return decode_state(raw)
    except Exception as exc:
        metrics.state_quarantined.inc()
        log.error("customer state on changelog partition %d cannot be read and is left out (key %r, %d bytes): "
                  "%s", partition, key[:64], len(raw or b""), exc)
        return None
