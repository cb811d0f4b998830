"""The faust shell: topics (raw bytes), the state table, the batch handler, the timer, HTTP.

With worker.shell.batching, the only module that imports faust. Everything it decides comes from the pure
core (events, state, triggers, pipeline); this module moves bytes and offsets.

Data flow:
    input topics --parse--> valid, keyed by customer? ---------------------> agent
                   |             \\-- not keyed by customer id --> <app>-events-by-customer --/
                   \\-- invalid --> dead-letter topic (original bytes, reason, source in headers)
    agent: batch (+ the silence deadlines due by now) -> pipeline.process
           -> state table (changelog) + trigger topics
    timer, when no batch ran since its last tick (an idle worker's silence checks):
           deadline index --due--> tick message on <app>-events-by-customer --> agent

"agent" is, by default (CHURN_INPUT_MODE=batch), a handler fed a fetch at a time from
beneath faust's stream (worker.shell.batching); CHURN_INPUT_MODE=stream runs the same handler
in a faust agent over `take_events` instead.
"""
from __future__ import annotations

import asyncio
import gc
import logging
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any, NamedTuple

import numpy as np
import orjson
from prometheus_client import generate_latest

from worker.config import Settings
from worker.core.codec import decode_state, encode_state
from worker.core.deadlines import DeadlineIndex
from worker.core.events import Event, InvalidEvent, parse_event
from worker.core.features import FEATURE_NAMES, features
from worker.core.messages import dead_letter_headers, encode
from worker.core.partitioner import partition_of
from worker.core.pipeline import Context, Item, Result, merge, process
from worker.core.policy import Policy
from worker.core.state import CustomerState
from worker.core.triggers import pending_deadline
from worker.model.artifact import ModelArtifact, score_batch
from worker.shell import kafka_client
from worker.shell.batching import BatchApp
from worker.shell.metrics import Metrics, observe_many

log = logging.getLogger("churn_worker")
TICK = b"tick"
KIND_HEADER = "churn.kind"
# (topic, key, value, headers) -> awaitable future of the broker's acknowledgement
Sink = Callable[[str, "bytes | None", bytes, "list[tuple[str, bytes]] | None"], Awaitable[Any]]
# a batch that fails item by item in at least this many items, and in most of them, is the
# worker's fault rather than the input's (see ChurnApp._isolate)
ISOLATE_MIN_FAILURES = 10
REBUILD_YIELD_EVERY = 5000  # keys scanned between event-loop yields when rebuilding the index
# aiohttp refuses a charset inside content_type; Prometheus reads text 0.0.4 as UTF-8 anyway.
PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4"


class OutputProducer:
    """Everything the worker writes to Kafka goes out on this one aiokafka producer.

    `write_changelog` writes one batch's state changes to the table's changelog topic as
    record batches per partition (aiokafka's batch API), instead of one buffered faust
    message per customer: at 100,000 customers that per-message path cost a quarter of the
    worker. The table's in-memory store is updated directly; faust recovers it from this
    same compacted changelog topic after a restart or rebalance. The handler awaits these
    sends before its batch is acked, so state is durable before offsets are committed.

    `send` sends the worker's other messages (triggers, ticks, dead letters, forwarded
    events) one at a time, without faust's per-message machinery in the way.
    """

    def __init__(self, bootstrap: str, topic: str, acks: int | str = "all", *, exact_end_offsets: bool = True,
                 timeout_s: float = 120.0) -> None:
        self.bootstrap, self.topic, self.acks, self.timeout_s = bootstrap, topic, acks, timeout_s
        self.exact_end_offsets = exact_end_offsets
        self.kafka: Any = None
        self.closed = False
        self._starting = asyncio.Lock()

    async def started(self) -> Any:
        """The aiokafka producer, started on first use. The handler and the timer can both
        be first; they share one producer."""
        if self.kafka is None:
            async with self._starting:
                if self.closed:
                    raise RuntimeError("the output producer is closed: the worker is shutting down")
                if self.kafka is None:
                    from aiokafka import AIOKafkaProducer
                    producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks=self.acks, linger_ms=0,
                                                request_timeout_ms=int(self.timeout_s * 1000))
                    await producer.start()
                    self.kafka = producer
        return self.kafka

    async def stop(self) -> None:
        """Send what is still buffered, then close (worker shutdown). For good: a later send
        fails rather than open a producer that nothing would close."""
        async with self._starting:
            producer, self.kafka, self.closed = self.kafka, None, True
        if producer is not None:
            await producer.stop()

    async def send(self, topic: str, key: bytes | None, value: bytes, headers: list[tuple[str, bytes]] | None,
                   partition: int | None = None) -> Any:
        """One of the worker's other messages (triggers, ticks, dead letters) on the same
        producer: aiokafka's send, without faust's per-message machinery (a channel, a
        pending message and sensors per send), which cost more than building the trigger.
        Keyed messages go where Kafka's default partitioner puts them, as through faust."""
        producer = await self.started()
        return await producer.send(topic, value, key=key, partition=partition, headers=headers or None)

    async def write_changelog(self, partitioned: dict[int, list[tuple[bytes, bytes]]]) -> list[Any]:
        await self.started()
        futures = []
        for partition, records in partitioned.items():
            if not self.exact_end_offsets or len(records) == 1:
                futures += await self._send(partition, records)
                continue
            # The last record goes in a batch of its own (sent in a second produce request):
            # some Kafka-protocol brokers (Tansu) report a partition's end offset as its last
            # batch's base offset + 1, and faust's recovery reads the changelog only up to
            # that end offset. Kafka's is exact either way (CHURN_CHANGELOG_EXACT_END_OFFSETS).
            futures += await self._send(partition, records[:-1])
            futures += await self._send(partition, records[-1:])
        return futures

    async def _send(self, partition: int, records: list[tuple[bytes, bytes]]) -> list[Any]:
        futures = []
        batch = self.kafka.create_batch()
        for key, value in records:
            if batch.append(key=key, value=value, timestamp=None) is None:  # full: send it, start another
                futures.append(await self.kafka.send_batch(batch, self.topic, partition=partition))
                batch = self.kafka.create_batch()
                batch.append(key=key, value=value, timestamp=None)
        futures.append(await self.kafka.send_batch(batch, self.topic, partition=partition))
        return futures


class DueCheck(NamedTuple):
    """The source of a silence check taken from the deadline index into a batch: no
    message, only the partition its customer's state lives on."""

    partition: int


# (partition -> [(key, value)]) -> futures of the broker's acknowledgements
ChangelogSink = Callable[[dict[int, list[tuple[bytes, bytes]]]], Awaitable[list[Any]]]


class ChurnApp:
    """Builds the faust app and holds the worker's in-memory indexes."""

    def __init__(self, settings: Settings, artifact: ModelArtifact, policy: Policy,
                 metrics: Metrics | None = None, *, broker: str | None = None, sink: Sink | None = None,
                 changelog: ChangelogSink | None = None) -> None:
        kafka_client.install()  # producers keep the metadata of every topic they send to
        self.settings = settings
        self.artifact = artifact
        self.policy = policy
        self.metrics = metrics or Metrics()
        self.index = DeadlineIndex()
        self.partition_time: dict[int, float] = {}  # partition -> max event time seen
        self.tracked = 0
        self.assigned_once = False  # a worker with no partitions (spare replica) is still ready
        self.batch_since_tick = False  # a batch ran since the timer's last tick: it takes the due deadlines
        self.app = self._make_app(broker or _broker_url(settings))
        self._declare()
        self.send = sink or self._send_to_topic
        self.producer = OutputProducer(
            settings.kafka_bootstrap or "", self.table.changelog_topic.get_topic_name(),
            exact_end_offsets=settings.changelog_exact_end_offsets, timeout_s=settings.produce_timeout_s)
        self.write_changelog = changelog or self.producer.write_changelog
        self.metrics.model_info.labels(artifact.version, artifact.kind).set(1)
        self.metrics.policy_info.labels(policy.version).set(1)

    # ---- wiring ---------------------------------------------------------------------------
    def _make_app(self, broker: str) -> BatchApp:
        s = self.settings
        return BatchApp(
            s.app_id, broker=broker, store="memory://", autodiscover=False,
            topic_partitions=s.topic_partitions, topic_replication_factor=s.topic_replication,
            processing_guarantee="at_least_once", consumer_auto_offset_reset=s.offset_reset,
            broker_max_poll_records=s.max_poll_records, table_standby_replicas=1,
            broker_session_timeout=s.session_timeout_s, broker_rebalance_timeout=s.rebalance_timeout_s,
            broker_heartbeat_interval=min(3.0, s.session_timeout_s / 3),
            web_bind=s.web_host, web_host=s.web_host, web_port=s.web_port, datadir=str(s.data_dir),
            producer_acks=-1, producer_request_timeout=s.produce_timeout_s,
        )

    def _declare(self) -> None:
        s, app = self.settings, self.app
        raw: dict[str, Any] = dict(key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")
        self.source = app.topic(*s.input_topics, s.repartition_topic, partitions=s.topic_partitions, **raw)
        # Values are worker.core.codec bytes: compact in memory and on the changelog. The agent
        # writes the store and the changelog itself, in batches (OutputProducer).
        self.table = app.Table("customer_state", default=None, key_type=bytes, value_type=bytes,
                               partitions=s.topic_partitions)
        app.fetch_max_wait_ms = s.fetch_max_wait_ms
        if s.input_mode == "batch":
            app.batch_source, app.batch_handler, app.batch_size = self.source, self._handle_or_exit, s.batch_size
        else:
            app.agent(self.source, name="customer-events", concurrency=1)(self._agent)
        app.timer(s.timer_interval_s, name="inactivity-timer")(self._tick)
        app.on_rebalance_complete.connect(self._on_rebalance_complete)
        app.on_before_shutdown.connect(self._on_before_shutdown)
        self._routes()

    async def _send_to_topic(self, topic: str, key: bytes | None, value: bytes,
                             headers: list[tuple[str, bytes]] | None) -> Any:
        """Send one message; returns a future that resolves once the broker has it.
        Customer-keyed messages to our own topic get the key's partition explicitly."""
        partition = None
        if topic == self.settings.repartition_topic and key is not None:
            partition = partition_of(key, self.settings.topic_partitions)
        return await self.producer.send(topic, key, value, headers, partition)

    # ---- the agent -------------------------------------------------------------------------
    async def _agent(self, stream: Any) -> None:
        s = self.settings
        async for batch in stream.take_events(s.batch_size, within=s.batch_within_s):
            await self._handle_or_exit([ev.message for ev in batch])

    async def _handle_or_exit(self, batch: list[Any]) -> None:
        try:
            await self.handle_batch(batch)
        except Exception:
            # faust acks a batch whose handler raised, and a restarted worker would skip it.
            # Exit without committing instead: the batch is redelivered after restart
            # (duplicates are harmless: event ids de-duplicate state, trigger ids are stable).
            first, last = batch[0], batch[-1]
            log.critical("batch %s[%d]@%d..%s[%d]@%d failed; exiting so it is redelivered",
                         first.topic, first.partition, first.offset, last.topic, last.partition,
                         last.offset, exc_info=True)
            logging.shutdown()
            os._exit(70)

    async def handle_batch(self, batch: list[Any]) -> None:
        """One batch of faust messages (topic, partition, offset, key, value, headers, timestamp)."""
        started = time.monotonic()
        wall = time.time()
        outbox: list[tuple[str, bytes | None, bytes, list[tuple[str, bytes]] | None]] = []
        items = [item for msg in batch if (item := self._admit(msg, wall, outbox)) is not None]
        items += self._due_checks()
        self.batch_since_tick = True
        pending = [await self.send(*out) for out in outbox]
        changes: dict[int, list[tuple[bytes, bytes]]] = {}
        if items:
            changes = await self._process(items, wall, pending)
        # Triggers, dead letters and forwarded events first, then the state that records
        # them as done: a crash in between redelivers the batch and re-sends the same
        # trigger ids, instead of finding the episode already marked fired.
        if pending:
            await asyncio.gather(*pending)
        if changes:
            await asyncio.gather(*await self.write_changelog(changes))
        m = self.metrics
        now = time.time()
        observe_many(m.latency, [max(now - msg.timestamp, 0.0) for msg in batch])
        m.batch_seconds.observe(time.monotonic() - started)

    def _admit(self, msg: Any, wall: float, outbox: list) -> Item | None:
        """The message as an Item for the pipeline, or None with what to send instead
        (a dead letter, or the event forwarded to its customer's partition) in `outbox`."""
        s = self.settings
        # ticks come from this app's own topic; a producer cannot inject one on an input topic
        if msg.topic not in s.input_topics and _header(msg, KIND_HEADER) == TICK:
            tick = _parse_tick(msg.key, msg.value)
            if tick is not None:
                return Item(tick[0], None, tick[1], ref=msg)
        parsed = parse_event(msg.value, s.max_event_bytes)
        if isinstance(parsed, Event) and s.clock == "wall" and parsed.occurred_at > wall + s.max_future_s:
            parsed = InvalidEvent("timestamp_out_of_range",
                                  f"occurred_at is {parsed.occurred_at - wall:.0f} s in the future",
                                  msg.value, parsed.customer_id)
        if isinstance(parsed, InvalidEvent):
            outbox.append(self._dead_letter(parsed, msg))
            return None
        key = parsed.customer_id.encode()
        if msg.key != key or msg.partition != partition_of(key, s.topic_partitions):
            self.metrics.events.labels(parsed.type, "repartitioned").inc()
            outbox.append((s.repartition_topic, key, msg.value, None))
            return None
        self.partition_time[msg.partition] = max(self.partition_time.get(msg.partition, 0.0),
                                                 parsed.occurred_at)
        return Item(parsed.customer_id, parsed, ref=msg)

    def _due_checks(self) -> list[Item]:
        """Silence deadlines due by now, checked in this batch after its events rather than
        sent round through Kafka as ticks: a busy worker's timer then finds little left.

        Safe to do here: the handler runs while faust tracks its messages, and a rebalance
        waits for those (`wait_empty`) before it revokes a partition, so these customers'
        partitions stay assigned until their state is written. The index holds only the
        active partitions' customers; a key of another partition (an index not yet rebuilt
        after a rebalance) is left to the rebuild."""
        if not len(self.index) or not self.is_ready():
            return []
        now = self.clock_now()
        due = self.index.pop_due(now, limit=self.settings.batch_size)
        if not due:
            return []
        active, n = self.active_partitions(), self.settings.topic_partitions
        # up to now: every deadline due by now, each decided at its own time (as a tick would one by one)
        items = [Item(key.decode(), None, now, ref=DueCheck(part)) for key, _ in due
                 if (part := partition_of(key, n)) in active]
        self.metrics.silence_checks.labels("batch").inc(len(items))
        return items

    def _dead_letter(self, bad: InvalidEvent, msg: Any) -> tuple[str, bytes | None, bytes, list[tuple[str, bytes]]]:
        """Count and log a refused message; return the dead letter to send."""
        self.metrics.dead_letters.labels(bad.reason).inc()
        if bad.reason != "late":  # late events are counted under their own type and outcome
            self.metrics.events.labels("unknown", "dead_lettered").inc()
        log.warning("dead-lettered %s[%d]@%d: %s (%s)", msg.topic, msg.partition, msg.offset,
                    bad.reason, bad.detail)
        return (self.settings.dead_letter_topic, msg.key, bad.raw or msg.value or b"",
                dead_letter_headers(bad, msg.topic, msg.partition, msg.offset))

    async def _process(self, items: list[Item], wall: float, pending: list) -> dict[int, list[tuple[bytes, bytes]]]:
        """Run the pure pipeline; send its outputs; return the state records for the changelog."""
        s, m = self.settings, self.metrics
        # an item's message sits on its customer's partition (admitted above, or a tick sent there)
        keys = {i.customer_id: (i.customer_id.encode(), i.ref.partition) for i in items}
        store: Any = self.table.data
        # the memory store's own dict: its Mapping methods cost a call each on every key
        stored = store.data if isinstance(getattr(store, "data", None), dict) else store
        ctx = Context(self.artifact, self.policy, s.lateness_s, emitted_at=wall,
                      event_clock=s.clock == "event", emit_max_age_s=s.emit_max_age_s)
        try:
            states = {cid: decode_state(raw) for cid, (k, _) in keys.items() if (raw := stored.get(k)) is not None}
            result, encoded = _decide(items, states, ctx)
        except Exception:
            states, result, encoded = await self._isolate(items, keys, ctx, pending)
        changes: dict[int, list[tuple[bytes, bytes]]] = {}
        for cid in result.states:
            key, partition = keys[cid]
            self.index.set(key, result.deadlines[cid])  # a tick popped it; set it again even if unchanged
            value = encoded.get(cid)
            if value is None:
                continue
            if cid not in states:
                self.tracked += 1
            stored[key] = value
            changes.setdefault(partition, []).append((key, value))
        for trigger in result.triggers:
            pending.append(await self.send(self.settings.trigger_topics[trigger["type"]],
                                           trigger["customer_id"].encode(), encode(trigger), None))
            m.triggers.labels(trigger["type"]).inc()
        for item in result.late:
            bad = InvalidEvent("late", f"older than the customer's newest event by more than {s.lateness_s:.0f} s",
                               item.ref.value, item.customer_id)
            pending.append(await self.send(*self._dead_letter(bad, item.ref)))
        self._record(result)
        return changes

    async def _isolate(self, items: list[Item], keys: dict[str, tuple[bytes, int]], ctx: Context,
                       pending: list) -> tuple[dict[str, CustomerState], Result, dict[str, bytes]]:
        """The batch failed in the pipeline or the state codec: run it again item by item,
        in order, and dead-letter the items that fail (`processing_failed`; their customer's
        state stays as it was), so that one input the code cannot handle does not stop the
        worker on every restart. When most of a sizeable batch fails, the fault is the
        worker's, not the input's: it raises, and the worker exits as for any failed batch."""
        log.error("a batch of %d items failed; running it item by item", len(items), exc_info=True)
        store = self.table.data
        stored: dict[str, CustomerState] = {}
        current: dict[str, CustomerState] = {}
        merged, encoded = Result(), {}
        failures: list[tuple[Item, Exception]] = []
        for item in items:
            cid = item.customer_id
            try:
                if cid not in current and (raw := store.get(keys[cid][0])) is not None:
                    stored[cid] = current[cid] = decode_state(raw)
                one, values = _decide([item], {cid: current[cid]} if cid in current else {}, ctx)
            except Exception as exc:
                failures.append((item, exc))
                continue
            merge(merged, one)
            current.update(one.states)
            encoded.update(values)
        if len(failures) >= ISOLATE_MIN_FAILURES and len(failures) * 2 > len(items):
            raise RuntimeError(f"{len(failures)} of {len(items)} items failed one by one") from failures[0][1]
        for item, error in failures:
            if isinstance(item.ref, DueCheck):  # no message to dead-letter: its next event re-arms it
                log.error("a silence check failed and is dropped (customer's partition %d)", item.ref.partition,
                          exc_info=error)
                continue
            log.error("dead-lettering an item the worker failed on: %s", item.ref, exc_info=error)
            bad = InvalidEvent("processing_failed", f"{type(error).__name__}: {error}"[:500], item.ref.value,
                               item.customer_id)
            pending.append(await self.send(*self._dead_letter(bad, item.ref)))
        return stored, merged, encoded

    def _record(self, result: Any) -> None:
        m = self.metrics
        for (etype, outcome), n in result.outcomes.items():
            m.events.labels(etype, outcome).inc(n)
        for (kind, reason), n in result.suppressed.items():
            m.suppressed.labels(kind, reason).inc(n)
        for kind, n in result.holdouts.items():
            m.holdout.labels(kind).inc(n)
        for kind, n in result.quiet.items():
            m.suppressed.labels(kind, "history").inc(n)
        m.batch_size.observe(len(result.scores))
        observe_many(m.risk, result.scores)
        m.customers.set(self.tracked)
        self._gauge_deadlines()
        if self.partition_time:
            m.watermark.set(self.watermark())

    def _gauge_deadlines(self) -> None:
        self.metrics.deadlines.set(len(self.index))
        self.metrics.next_deadline.set(self.index.earliest() or 0.0)

    # ---- silence: the inactivity timer ---------------------------------------------------
    def watermark(self) -> float:
        """Event time every active partition has reached (0 before any event)."""
        return min(self.partition_time.values(), default=0.0)

    def clock_now(self) -> float:
        return self.watermark() if self.settings.clock == "event" else time.time()

    async def _tick(self) -> None:
        """Send a tick for each due deadline, when no batch has run since the last tick: a
        busy worker checks them in its batches (`_due_checks`), an idle one gets them here."""
        if not self.is_ready() or not len(self.index):
            return
        if self.batch_since_tick:
            self.batch_since_tick = False
            return
        started = time.monotonic()
        due = self.index.pop_due(self.clock_now(), limit=10_000)
        sent = [await self.send(self.settings.repartition_topic, key, orjson.dumps({"deadline": deadline}),
                                [(KIND_HEADER, TICK)]) for key, deadline in due]
        self.metrics.silence_checks.labels("timer").inc(len(due))
        for (key, deadline), outcome in zip(due, await asyncio.gather(*sent, return_exceptions=True)):
            if isinstance(outcome, BaseException):  # not sent: keep the deadline for the next tick
                log.warning("tick for a customer was not sent (%r); retrying on the next tick", outcome)
                self.index.set(key, deadline)
        self.metrics.tick_seconds.observe(time.monotonic() - started)
        self._gauge_deadlines()

    async def _on_rebalance_complete(self, *args: Any, **kwargs: Any) -> None:
        """Rebuild the deadline index (in-memory) from the recovered table, active partitions
        only, and seed each partition's event time from its recovered customers, so a
        partition that has not delivered since the rebalance still holds the watermark back."""
        active = self.active_partitions()
        self.index.clear()
        seen = {p: t for p, t in self.partition_time.items() if p in active}
        count = 0
        for n, (key, raw) in enumerate(list(self.table.data.items())):
            part = partition_of(key, self.settings.topic_partitions)
            if part in active:
                count += 1
                state = decode_state(raw)
                self.index.set(key, pending_deadline(self.policy, state))
                seen[part] = max(seen.get(part, 0.0), state.last_seen)
            if n % REBUILD_YIELD_EVERY == 0:
                await asyncio.sleep(0)
        self.partition_time = seen
        self.tracked = count
        if not self.assigned_once:
            settle_heap()
        self.assigned_once = True
        self.metrics.customers.set(count)
        self._gauge_deadlines()
        log.info("deadline index rebuilt: %d customers, %d pending, partitions %s",
                 count, len(self.index), sorted(active))

    def active_partitions(self) -> set[int]:
        topic = self.settings.repartition_topic
        return {tp.partition for tp in self.app.consumer.assignment() if tp.topic == topic}

    async def _on_before_shutdown(self, *args: Any, **kwargs: Any) -> None:
        """faust has stopped the consumer and waited for the batch under way: flush and close
        the output producer. Closed, it makes the worker unready, so the timer sends no more."""
        await self.producer.stop()
        self.is_ready()
        log.info("output producer flushed and closed")

    def is_ready(self) -> bool:
        app = self.app
        ready = (self.assigned_once and not self.producer.closed and not app.rebalancing
                 and not app.tables.recovery.in_recovery)  # type: ignore[attr-defined]  # faust's TableManager has it
        self.metrics.ready.set(1 if ready else 0)
        return ready

    # ---- HTTP --------------------------------------------------------------------------------
    def _routes(self) -> None:
        app, owner = self.app, self

        @app.page("/metrics")
        async def metrics_view(web: Any, request: Any) -> Any:
            owner.is_ready()
            return web.bytes(generate_latest(owner.metrics.registry), content_type=PROMETHEUS_CONTENT_TYPE)

        @app.page("/health")
        async def health(web: Any, request: Any) -> Any:
            return web.json({"status": "ok"})

        @app.page("/ready")
        async def ready(web: Any, request: Any) -> Any:
            ok = owner.is_ready()
            return web.json({"ready": ok, "model_version": owner.artifact.version,
                             "policy_version": owner.policy.version}, status=200 if ok else 503)

        @app.page("/customers/{customer_id}")
        async def customer(web: Any, request: Any, customer_id: str) -> Any:
            # Answered by the worker that owns the customer's partition; another worker says
            # which partition to look for (faust's table routing needs producer metadata for
            # the changelog topic, which this worker writes with its own batch producer).
            part = partition_of(customer_id.encode(), owner.settings.topic_partitions)
            if part not in owner.active_partitions():
                return web.json({"customer_id": customer_id, "partition": part,
                                 "error": "partition not assigned to this worker"}, status=421)
            return web.json(owner.describe(customer_id))

    def describe(self, customer_id: str) -> dict[str, Any]:
        """State, features and score of one customer as this worker sees it now."""
        raw = self.table.get(customer_id.encode())
        if raw is None:
            return {"customer_id": customer_id, "known": False}
        state = decode_state(raw)
        now = max(self.clock_now(), state.last_seen)
        row = features(state, now)
        score = float(score_batch(self.artifact, np.array([row]))[0])
        return {"customer_id": customer_id, "known": True, "orders": state.orders,
                "logins": state.logins, "risk_score": round(score, 4),
                "next_deadline": pending_deadline(self.policy, state),
                "features": dict(zip(FEATURE_NAMES, row))}


def settle_heap() -> None:
    """Move everything alive once the worker is up (modules, the model, faust's services) out
    of the cyclic collector's reach. A full collection otherwise walks those ~150k objects
    each time, a pause of ~90 ms on the event loop that lands in the latency tail; objects
    created later are collected as before."""
    gc.collect()
    gc.freeze()


def _decide(items: list[Item], states: dict[str, CustomerState], ctx: Context) -> tuple[Result, dict[str, bytes]]:
    """The pipeline's result, and the encoded states it changed (only duplicates, late
    events or early ticks leave a state as it was: nothing to store)."""
    result = process(items, states, ctx)
    return result, {cid: encode_state(st) for cid, st in result.states.items() if st is not states.get(cid)}


def _parse_tick(key: bytes | None, value: bytes | None) -> tuple[str, float] | None:
    """(customer id, deadline) of a tick this app sent; None for anything else (which is
    then parsed as an event, and dead-lettered if it is not one)."""
    try:
        deadline = float(orjson.loads(value or b"")["deadline"])
        return (key or b"").decode(), deadline
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        return None


def _header(msg: Any, name: str) -> bytes | None:
    for key, value in msg.headers or ():
        if key == name:
            return value
    return None


def _broker_url(settings: Settings) -> str:
    hosts = [h.strip() for h in (settings.kafka_bootstrap or "").split(",") if h.strip()]
    return ";".join(f"kafka://{h}" for h in hosts)
