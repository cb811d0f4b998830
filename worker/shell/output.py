"""The worker's one producer, and the shapes of what it sends.

Everything the worker writes to Kafka goes out on one aiokafka producer: the table's
changelog, written per batch as record batches per partition, and every other message
(triggers, ticks, dead letters, forwarded events) one at a time. Both skip faust's
per-message send path, which cost more than the work it carried (docs/performance.md).
"""
from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, NamedTuple

Headers = list[tuple[str, bytes]]


class Outgoing(NamedTuple):
    """One message to send."""

    topic: str
    key: bytes | None
    value: bytes
    headers: Headers | None = None


# (topic, key, value, headers) -> awaitable future of the broker's acknowledgement
Sink = Callable[[str, "bytes | None", bytes, "Headers | None"], Awaitable[Any]]
# (partition -> [(key, value)]) -> futures of the broker's acknowledgements
ChangelogSink = Callable[[dict[int, list[tuple[bytes, bytes | None]]]], Awaitable[list[Any]]]  # None: a tombstone


class OutputProducer:
    """Everything the worker writes to Kafka goes out on this one aiokafka producer.

    `write_changelog` writes one batch's state changes to the table's changelog topic as
    record batches per partition (aiokafka's batch API), instead of one buffered faust
    message per customer: at 100,000 customers that per-message path cost a quarter of the
    worker. The handler updates the table's in-memory store itself, once these writes are
    acknowledged, and before its batch is acked: state is durable before offsets are
    committed, and a batch that fails before that leaves the store as it was. faust recovers
    the store from this same compacted changelog topic after a restart or rebalance.

    `send` sends the worker's other messages (triggers, ticks, dead letters, forwarded
    events) one at a time, without faust's per-message machinery in the way.
    """

    def __init__(self, bootstrap: str, topic: str, acks: int | str = "all", *, exact_end_offsets: bool = True,
                 timeout_s: float = 120.0, options: dict[str, Any] | None = None) -> None:
        self.bootstrap, self.topic, self.acks, self.timeout_s = bootstrap, topic, acks, timeout_s
        self.options = options or {}  # TLS and SASL (worker.kafka_security)
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
                                                request_timeout_ms=int(self.timeout_s * 1000), **self.options)
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

    async def write_changelog(self, partitioned: dict[int, list[tuple[bytes, bytes | None]]]) -> list[Any]:
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

    async def _send(self, partition: int, records: list[tuple[bytes, bytes | None]]) -> list[Any]:
        futures = []
        batch = self.kafka.create_batch()
        for key, value in records:
            if batch.append(key=key, value=value, timestamp=None) is None:  # full: send it, start another
                futures.append(await self.kafka.send_batch(batch, self.topic, partition=partition))
                batch = self.kafka.create_batch()
                batch.append(key=key, value=value, timestamp=None)
        futures.append(await self.kafka.send_batch(batch, self.topic, partition=partition))
        return futures
