"""Batch input beneath faust's per-event stream.

faust hands every fetched record to its streams one at a time: a task per record to race
the flow-control signal, a decode into an Event, a queue put, a queue get, sensors, the
current-event bookkeeping and an ack. For this worker that machinery costs more than the
work itself: in one bench run (docs/performance.md) the worker ran 14,958 events/s this way
and 7,444 through a faust agent's `take_events`, and 1.46x a bare faust agent that only
parses. `BatchApp` keeps everything faust does
for the app (group membership, partition assignment, the changelog table and its
recovery, standbys, rebalancing, offset commits) and changes one thing: records of the
topics it is told about go from the fetch straight to one handler, as a list of faust
`Message`s, while every other topic (the table's changelog during recovery and on
standbys) still goes through faust's conductor, record by record.

The messages are tracked and acked through faust's own consumer, so its commit
bookkeeping, gap handling and `wait_empty` on rebalance see them exactly as they would see
a stream's. Input records of a fetch that straddles a rebalance (fetched in one
generation, taken in another, or a rebalance that ran while the conductor had one of the
fetch's changelog records) are dropped before they are tracked, and fetched again from
the committed offsets: no read offset is moved past a record that was not delivered,
which would leave faust's commit stuck behind the hole for good. Changelog records always
go to the conductor (recovery keeps its own offsets: one dropped would never come again).
No input record fetched before the assignment's seek to the committed offsets is
delivered either (faust lets new partitions be fetched at the end of table recovery, a
moment before that seek): from a position that seek had not set, later records would
raise the source offset each state keeps, and the earlier ones, fetched after the seek,
would be taken for redeliveries and lost. A fetch dropped within one assignment is
first sought back to its first record per partition, since the seek to the committed
offsets leaves a partition with none where it is. In the stream input mode (no batch
handler) the same loop hands the input records to the conductor, which feeds the agent,
so that mode waits for the seek too.

`fetch_max_wait_ms` is Kafka's `fetch.max.wait.ms`, which faust fixes at 1500 ms. A broker
holds a fetch up to that long when it has less than `fetch.min.bytes` (1 byte) to return;
a broker that holds it the full time whenever the partition is idle at request time adds
the wait to every event's latency, so the worker sets it (CHURN_FETCH_MAX_WAIT_MS).
"""
from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from time import monotonic
from typing import Any

import faust
from faust.transport.drivers import aiokafka as faust_aiokafka

BatchHandler = Callable[[list[Any]], Awaitable[None]]


class BatchApp(faust.App):
    """A faust app whose consumer delivers `batch_topics` to `batch_handler` in batches
    (without a handler, to the agents that iterate them, through faust's conductor as faust
    would); either way only from positions the assignment's seek set."""

    batch_source: Any = None  # a faust Topic: the worker's input topics
    batch_handler: BatchHandler | None = None  # None: an agent iterates batch_source
    batch_size: int = 2000
    fetch_max_wait_ms: int | None = None

    @property
    def batch_topics(self) -> frozenset[str]:
        return frozenset(self.batch_source.topics) if self.batch_source is not None else frozenset()

    def _new_transport(self) -> Any:
        return BatchTransport(self.conf.broker_consumer, self)

    async def on_start(self) -> None:
        await super().on_start()
        if self.batch_source is not None and self.batch_handler is not None:
            # what iterating the topic in an agent would do: the consumer subscribes to it
            self.topics.add(self.batch_source)


class BatchConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        wait_ms = getattr(self.app, "fetch_max_wait_ms", None)
        if wait_ms is not None:
            consumer._fetch_max_wait_ms = int(wait_ms)  # read when the consumer starts its fetcher
        return consumer


class BatchConsumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> BatchConsumerThread:
        return BatchConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def _drain_messages(self, fetcher: Any) -> None:
        """faust's fetch loop (faust.transport.consumer.Consumer._drain_messages), with the
        batch topics' records handed over a fetch at a time (without a handler, to faust's
        conductor, as faust would), none fetched before the assignment's seek."""
        app = self.app
        handler = getattr(app, "batch_handler", None)
        batch_topics: frozenset[str] = getattr(app, "batch_topics", frozenset())
        if not batch_topics:
            return await super()._drain_messages(fetcher)
        size = max(1, int(getattr(app, "batch_size", 2000)))
        stopping = lambda: self._stopped.is_set() or fetcher._stopped.is_set()  # noqa: E731
        stopped_errors: tuple[type[BaseException], ...] = (*self.consumer_stopped_errors, asyncio.CancelledError)
        try:
            while not stopping():
                # the assignment of the fetch, and whether its seek to the committed offsets had run
                generation, seeked = app.consumer_generation_id, not app.rebalancing
                records, active = await self._wait_next_records(1.0)
                await self.sleep(0)
                if not records or self.should_stop:
                    continue
                if not self.flow_active:
                    await self._refetch(0)  # as faust's getmany: fetch again from the committed offsets
                    continue
                batch, stale = await self._take_batch(records, active, batch_topics, generation, seeked,
                                                      batched=handler is not None)
                if stale:  # the assignment changed since the fetch, or its seek had not run: fetch again
                    same = app.consumer_generation_id == generation  # else the new assignment set positions
                    await self._refetch(len(batch) + sum(n for _, n in stale.values()),
                                        _first_offsets(batch, stale) if same else {})
                    continue
                if handler is None:
                    await self._commit_if_due()  # as faust's loop does (its streams ack the records)
                elif batch:
                    await app.flow_control.acquire()
                    if app.consumer_generation_id != generation or not app.flow_control.is_active():
                        # a rebalance began: its own seek to the committed offsets follows
                        self.log.info("dropped %d records fetched before a rebalance", len(batch))
                        continue
                    await self._deliver_shielded(batch, handler, size, generation)
        except stopped_errors:
            if self.transport.app.should_stop:
                return  # stopping anyway
            raise

    async def _refetch(self, dropped: int, rewind: Mapping[Any, int] | None = None) -> None:
        """Back to the committed offsets, leaving `dropped` fetched records undelivered.
        `rewind`: the first offset dropped per partition, sought first: the seek to the
        committed offsets leaves a partition with none where it is, which would skip them."""
        rewind = rewind or {}
        if dropped:
            self.log.info("dropped %d records fetched across a rebalance; fetching from the committed offsets",
                          dropped)
        for tp, offset in rewind.items():
            try:
                await self.seek(tp, offset)
            except Exception as exc:  # no longer assigned: its new owner reads from the committed offset
                self.log.warning("seek of %s back to %d failed: %r", tp, offset, exc)
        try:
            await self.perform_seek()
        except Exception as exc:  # a rebalance under way can refuse it; its own seek follows
            self.log.warning("seek to the committed offsets failed: %r", exc)
        if past := _past_committed(rewind, self._committed_offset):
            self.log.warning("a dropped fetch began past the committed offset (read again from it): %s", past)

    async def _take_batch(self, records: Mapping[Any, list[Any]], active: set | None,
                          batch_topics: frozenset[str], generation: int, seeked: bool = True,
                          batched: bool = True) -> tuple[list[Any], dict[Any, tuple[int, int]]]:
        """The batch topics' records of one fetch, as faust Messages; every other topic's
        records (changelog recovery, standbys), and the batch topics' when not `batched`
        (an agent iterates them), go through faust's conductor, one by one, as faust's loop
        hands them over. Also, per partition, the first offset and number of the batch
        topics' records left out, untouched (no read offset set past them: faust's commit
        would never pass that hole), because the assignment changed since `generation`
        (before or during this fetch: a rebalance can run to its end while the conductor
        has a record) or its seek had not run (`seeked` false, or faust still rebalancing:
        a position that seek has not set can lie past records never applied, which would
        then be taken for redeliveries)."""
        app, callback, to_message, read_offset = self.app, self.callback, self._to_message, self._read_offset
        acks_enabled_for = app.topics.acks_enabled_for
        batch: list[Any] = []
        stale: dict[Any, tuple[int, int]] = {}
        for tp, tp_records in records.items():
            if active is not None and tp not in active and tp not in self._buffered_partitions:
                continue
            app.monitor.track_tp_end_offset(tp, self.highwater(tp))
            source = tp.topic in batch_topics
            mine = source and batched
            for record in tp_records:
                if source and (app.consumer_generation_id != generation or not seeked or app.rebalancing):
                    first, left_out = stale.get(tp, (record.offset, 0))
                    stale[tp] = (min(first, record.offset), left_out + 1)
                    continue
                offset, last = record.offset, read_offset[tp]
                if last is not None and offset < last:
                    continue  # already delivered (faust drops these too)
                if last and offset - last > 1 and acks_enabled_for(tp.topic):
                    await self._add_gap(tp, last + 1, offset)
                message = to_message(tp, record)
                if mine:
                    batch.append(message)
                else:
                    await self.wait_first(callback(message), self.suspend_flow.wait())
                read_offset[tp] = offset
        return batch, stale

    async def _deliver_shielded(self, batch: list[Any], handler: BatchHandler, size: int, generation: int) -> None:
        """Stopping the worker cancels this loop; a batch under way finishes first (bounded by
        the rebalance timeout), so its outputs, state and offsets stay together. faust's own
        loop only queues records, and its streams finish their batch the same way."""
        delivery = asyncio.ensure_future(self._deliver(batch, handler, size, generation))
        try:
            await asyncio.shield(delivery)
        except asyncio.CancelledError:
            if not delivery.done():
                self.log.info("stopping: finishing the batch under way first")
                await asyncio.wait([delivery], timeout=self.app.conf.broker_rebalance_timeout)
            raise

    async def _deliver(self, batch: list[Any], handler: BatchHandler, size: int, generation: int) -> None:
        app = self.app
        track, ack, on_out = self.track_message, self.ack, app.sensors.on_message_out
        inbound = app.monitor.stream_inbound_time
        for start in range(0, len(batch), size):
            if not self.flow_active or app.consumer_generation_id != generation:
                # a rebalance or shutdown began: the rest is fetched again from the committed offsets
                self.log.info("flow stopped: leaving %d fetched records for the next assignment", len(batch) - start)
                return
            chunk = batch[start:start + size]
            for message in chunk:
                message.tracked = True
                track(message)
            now = monotonic()
            for tp in {message.tp for message in chunk}:
                inbound[tp] = now  # what faust's streams record, read by its stalled-partition check
            await handler(chunk)
            for message in chunk:
                ack(message)
                on_out(message.tp, message.offset, message)
        await self._commit_if_due()

    async def _commit_if_due(self) -> None:
        """faust's commit after every `broker_commit_every` acks (beside its commit timer)."""
        commit_every = self._commit_every
        if commit_every is not None and self._n_acked >= commit_every:
            self._n_acked = 0
            await self.commit()


class BatchTransport(faust_aiokafka.Transport):
    Consumer = BatchConsumer


def _first_offsets(batch: list[Any], stale: Mapping[Any, tuple[int, int]]) -> dict[Any, int]:
    """The first offset per partition among the records of a fetch that is dropped."""
    first = {tp: offset for tp, (offset, _) in stale.items()}
    for message in batch:
        first[message.tp] = min(message.offset, first.get(message.tp, message.offset))
    return first


def _past_committed(first: Mapping[Any, int], committed: Mapping[Any, int | None]) -> str:
    """The partitions whose dropped fetch began past their committed offset, as
    `topic[partition] from F, committed C`: records the seek saved from being skipped."""
    return ", ".join(f"{tp.topic}[{tp.partition}] from {offset}, committed {at}" for tp, offset in first.items()
                     if (at := committed.get(tp)) is not None and offset > at)
