"""The faust app, wired: topics of raw bytes, the state table, and the shell's parts.

Data flow:
    input topics --admit--> valid, keyed by customer? -----------------------> handler
                   |             \\-- not keyed by customer id --> <app>-events-by-customer --/
                   \\-- invalid --> dead-letter topic (original bytes, reason, source in headers)
    handler: batch (+ the silence deadlines due by now) -> worker.core pipeline
             -> state table (changelog) + trigger topics            (worker.shell.handler)
    timer, when no batch ran since its last tick (an idle worker's silence checks):
             deadline index --due--> tick on <app>-events-by-customer --> handler  (worker.shell.silence)

The handler is fed, by default (CHURN_INPUT_MODE=batch), a fetch at a time from beneath
faust's stream (worker.shell.batching); CHURN_INPUT_MODE=stream runs it in a faust agent
over `take_events` instead. Everything it decides comes from the pure core; the shell
moves bytes and offsets. One module per job: handler, silence, output, http, metrics.
"""
from __future__ import annotations

import gc
import logging
import os
from functools import partial
from typing import Any

import faust
from faust.types import TP

from worker.config import Settings
from worker.core.partitioner import partition_of
from worker.core.policy import Policy
from worker.kafka_security import KafkaAuth, kafka_auth
from worker.model.artifact import ModelArtifact
from worker.shell import kafka_client
from worker.shell.batching import BatchApp
from worker.shell.handler import BatchHandler
from worker.shell.http import add_routes
from worker.shell.live_model import ModelSwitch
from worker.shell.live_policy import PolicySwitch
from worker.shell.liveness import Progress
from worker.shell.metrics import Metrics, show_model
from worker.shell.narrowing import handle_narrowing
from worker.shell.output import ChangelogSink, Headers, OutputProducer, Sink
from worker.shell.silence import Silence, unread_total
from worker.shell.topology import TABLE

log = logging.getLogger("churn_worker")
EXIT_BATCH_FAILED = 70  # EX_SOFTWARE: the batch is redelivered after a restart


class ChurnApp:
    """The worker: a faust app and the parts that handle its input. `sink` and
    `changelog` replace the output producer's sends (tests)."""

    def __init__(self, settings: Settings, artifact: ModelArtifact, policy: Policy,
                 metrics: Metrics | None = None, *, broker: str | None = None, sink: Sink | None = None,
                 changelog: ChangelogSink | None = None, auth: KafkaAuth | None = None) -> None:
        kafka_client.install()  # producers keep the metadata of every topic they send to
        self.settings, self.artifact, self.policy = settings, artifact, policy
        self.auth = auth or kafka_auth(settings)  # TLS and SASL: every Kafka client alike
        self.metrics = metrics or Metrics()
        self.assigned_once = False  # a worker with no partitions (spare replica) is still ready
        self.app = make_app(settings, broker or broker_url(settings), self.auth)
        raw: dict[str, Any] = dict(key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")
        self.source = self.app.topic(*settings.input_topics, settings.repartition_topic,
                                     partitions=settings.topic_partitions, **raw)
        # Values are worker.core.codec bytes; the handler writes the store and the changelog
        # itself, in batches (worker.shell.output).
        self.table = self.app.Table(TABLE, default=None, key_type=bytes, value_type=bytes,
                                    partitions=settings.topic_partitions, options=store_options(settings))
        self.producer = OutputProducer(
            settings.kafka_bootstrap or "", self.table.changelog_topic.get_topic_name(),
            exact_end_offsets=settings.changelog_exact_end_offsets, timeout_s=settings.produce_timeout_s,
            options=self.auth.options)
        self.send: Sink = sink or self._send_to_topic
        self.silence = Silence(settings, policy, self.metrics, self.send, ready=self.is_ready,
                               active=lambda: self.active_partitions(), highwater=self.highwater,
                               start_offset=self.start_offset, send_mark=mark_sender(self.producer, sink),
                               end_offsets=partial(end_offsets, self.app) if sink is None else None)
        self.progress = Progress(settings.stall_s)  # for /health
        self.handler = BatchHandler(settings, artifact, policy, self.metrics, self.table, self.silence, self.send,
                                    changelog or self.producer.write_changelog)
        self.policies = PolicySwitch(self, enabled=sink is None)  # the policy and model topics (no test sink)
        self.models = ModelSwitch(self, enabled=sink is None)
        self._wire()
        show_model(self.metrics, artifact)
        self.metrics.policy_info.labels(policy.version).set(1)

    def _wire(self) -> None:
        s, app = self.settings, self.app
        if self.policies.enabled:
            app.task(self.policies.run)
            app.task(self.models.run)
        app.fetch_max_wait_ms = s.fetch_max_wait_ms
        app.batch_source = self.source  # either way read only from positions the assignment's seek set
        if s.input_mode == "batch":
            app.batch_handler, app.batch_size = self.handle_or_exit, s.batch_size
        else:
            app.agent(self.source, name="customer-events", concurrency=1)(self._agent)
        app.timer(s.timer_interval_s, name="inactivity-timer")(self._tick)
        app.on_rebalance_complete.connect(self.on_rebalance_complete)
        app.on_before_shutdown.connect(self.on_before_shutdown)
        add_routes(self)

    async def _send_to_topic(self, topic: str, key: bytes | None, value: bytes, headers: Headers | None) -> Any:
        """Send one message; returns a future that resolves once the broker has it.
        Customer-keyed messages to our own topic get the key's partition explicitly."""
        partition = None
        if topic == self.settings.repartition_topic and key is not None:
            partition = partition_of(key, self.settings.topic_partitions)
        return await self.producer.send(topic, key, value, headers, partition)

    async def _agent(self, stream: Any) -> None:
        s = self.settings
        async for batch in stream.take_events(s.batch_size, within=s.batch_within_s):
            await self.handle_or_exit([ev.message for ev in batch])

    async def handle_batch(self, batch: list[Any]) -> None:
        await self.handler.handle(batch)

    async def _boundary(self) -> None:
        """Between batches: a new policy or model version takes over."""
        await self.policies.apply()
        await self.models.apply()

    async def _tick(self) -> None:
        await self._boundary()
        await self.silence.tick()

    async def handle_or_exit(self, batch: list[Any]) -> None:
        try:
            await self._boundary()
            await handle_narrowing(self.handler, batch)
            self.progress.consumed()
        except Exception:
            # faust acks a batch whose handler raised, and a restarted worker would skip it.
            # Exit without committing instead: the batch is redelivered after restart
            # (duplicates are harmless: event ids de-duplicate state, trigger ids are stable).
            first, last = batch[0], batch[-1]
            log.critical("batch %s[%d]@%d..%s[%d]@%d failed; exiting so it is redelivered",
                         first.topic, first.partition, first.offset, last.topic, last.partition,
                         last.offset, exc_info=True)
            logging.shutdown()
            os._exit(EXIT_BATCH_FAILED)

    async def on_rebalance_complete(self, *args: Any, **kwargs: Any) -> None:
        """Rebuild the silence index from the recovered table (in memory, active partitions)."""
        self.metrics.rebalances.inc()
        self.progress.consumed()  # a fresh assignment: the stall clock starts again
        self.handler.tracked = await self.silence.rebuild(list(self.table.data.items()))
        if not self.assigned_once:
            settle_heap()
        self.assigned_once = True
        self.metrics.customers.set(self.handler.tracked)

    async def on_before_shutdown(self, *args: Any, **kwargs: Any) -> None:
        """faust has stopped the consumer and waited for the batch under way: flush and close
        the output producer. Closed, it makes the worker unready, so the timer sends no more."""
        await self.producer.stop()
        self.is_ready()
        log.info("output producer flushed and closed")

    def active_partitions(self) -> set[int]:
        topic = self.settings.repartition_topic
        return {tp.partition for tp in self.app.consumer.assignment() if tp.topic == topic}

    def highwater(self, topic: str, partition: int) -> int | None:
        """A partition's end as the consumer's last fetch reported it (None: not fetched yet)."""
        try:
            return self.app.consumer.highwater(TP(topic, partition))
        except Exception:  # no consumer yet, or a partition it does not hold
            return None

    def start_offset(self, topic: str, partition: int) -> int | None:
        """Where the consumer started reading a partition of this assignment: the group's
        committed offset; with none, the beginning when it resets to the earliest (the log
        start is taken as 0: a partition whose every record has expired counts as not yet
        read); None when unknown."""
        try:
            committed = self.app.consumer._committed_offset.get(TP(topic, partition))  # type: ignore[attr-defined]
        except Exception:
            return None
        if committed is not None:
            return int(committed)
        return 0 if self.settings.offset_reset == "earliest" else None

    def is_ready(self) -> bool:
        app = self.app
        ready = (self.assigned_once and not self.producer.closed and not app.rebalancing
                 and not app.tables.recovery.in_recovery  # type: ignore[attr-defined]  # faust's TableManager has it
                 and broker_connected(app))
        self.metrics.ready.set(1 if ready else 0)
        return ready

    def stalled(self) -> str:
        """Why /health fails ('' while the worker makes progress or is not ready)."""
        return self.progress.stalled(self.is_ready(), unread_total(self.silence))


async def end_offsets(app: Any, partitions: list[tuple[str, int]]) -> dict[tuple[str, int], int]:
    """The partitions' ends, asked of the broker now."""
    ends = await app.consumer.highwaters(*(TP(topic, partition) for topic, partition in partitions))
    return {(tp.topic, tp.partition): int(end) for tp, end in ends.items()}


def mark_sender(producer: OutputProducer, sink: Sink | None) -> Any:
    """Marks go to one partition each (a test's sink gets them with no key)."""
    if sink is not None:
        return lambda topic, partition, value, headers: sink(topic, None, value, headers)
    return lambda topic, partition, value, headers: producer.send(topic, None, value, headers, partition)


def broker_connected(app: Any) -> bool:
    """The consumer holds at least one open broker connection (it always has one while it
    fetches: a broker that went away, or a network cut, closes them all). True when it
    cannot be told (no consumer yet)."""
    try:
        client = app.consumer._thread._ensure_consumer()._client  # type: ignore[attr-defined]
        conns = list(client._conns.values())
    except Exception:
        return True
    return any(conn.connected() for conn in conns)


def make_app(settings: Settings, broker: str, auth: KafkaAuth | None = None) -> BatchApp:
    """The faust app, configured from the worker's settings only. `env={}`: faust would
    otherwise read about 80 unprefixed environment variables over these (`WEB_PORT`, which
    Kubernetes injects for a Service named `web`, `TOPIC_PARTITIONS`, `PRODUCER_ACKS`...)."""
    s = settings
    return BatchApp(
        s.app_id, env={}, broker=broker, store=f"{s.store}://", autodiscover=False,
        broker_credentials=faust_credentials(auth or KafkaAuth()),
        topic_partitions=s.topic_partitions, topic_replication_factor=s.topic_replication,
        processing_guarantee="at_least_once", consumer_auto_offset_reset=s.offset_reset,
        broker_max_poll_records=s.max_poll_records, table_standby_replicas=1,
        broker_session_timeout=s.session_timeout_s, broker_rebalance_timeout=s.rebalance_timeout_s,
        broker_heartbeat_interval=min(3.0, s.session_timeout_s / 3),
        web_bind=s.web_host, web_host=s.advertised_host, web_port=s.web_port, datadir=str(s.data_dir),
        web_router_enabled=False, web_tables_enabled=False,  # faust's /router, /table: no unauthenticated data
        producer_acks=-1, producer_request_timeout=s.produce_timeout_s,
        consumer_max_fetch_size=s.max_partition_fetch_bytes,
    )


def store_options(settings: Settings) -> dict[str, Any] | None:
    """The table's store options: RocksDB's block cache, bounded (per partition)."""
    if settings.store != "rocksdb":
        return None
    return {"block_cache_size": settings.rocksdb_block_cache_bytes}


def faust_credentials(auth: KafkaAuth) -> Any:
    """The worker's Kafka security as faust's `broker_credentials` (None: plaintext)."""
    if auth.mechanism is not None:
        return faust.SASLCredentials(username=auth.username, password=auth.password, mechanism=auth.mechanism,
                                     ssl_context=auth.ssl_context)
    if auth.ssl_context is not None:
        return faust.SSLCredentials(auth.ssl_context)
    return None


def broker_url(settings: Settings) -> str:
    hosts = [h.strip() for h in (settings.kafka_bootstrap or "").split(",") if h.strip()]
    return ";".join(f"kafka://{h}" for h in hosts)


def settle_heap() -> None:
    """Move everything alive once the worker is up (modules, the model, faust's services) out
    of the cyclic collector's reach. A full collection otherwise walks those ~150k objects
    each time, a pause of ~90 ms on the event loop that lands in the latency tail; objects
    created later are collected as before."""
    gc.collect()
    gc.freeze()
