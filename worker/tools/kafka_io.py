"""Small aiokafka helpers for the CLI, the demo and the tests: create topics,
produce a file of events, read a topic back. Plain Kafka APIs only."""
from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable, Iterator

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError


async def create_topics(bootstrap: str, names: Iterable[str], partitions: int, replication: int = 1) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        new = [NewTopic(n, partitions, replication) for n in names if n not in existing]
        if new:
            try:
                await admin.create_topics(new)
            except TopicAlreadyExistsError:
                pass
    finally:
        await admin.close()


def customer_key(value: bytes) -> bytes | None:
    """The customer id of a JSON event, as the message key (None if it has none)."""
    try:
        cid = json.loads(value).get("customer_id")
    except (ValueError, AttributeError):
        return None
    return cid.encode() if isinstance(cid, str) else None


async def produce(bootstrap: str, topic: str, values: Iterable[bytes], *, keyed: bool = True,
                  progress: object = None, rate: float | None = None) -> int:
    """Send every value; key by customer id when `keyed`. `rate` caps events/s."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, acks="all")
    await producer.start()
    sent = 0
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        for value in values:
            await producer.send(topic, value=value, key=customer_key(value) if keyed else None)
            sent += 1
            if progress is not None:
                progress.update(1)  # type: ignore[attr-defined]
            if rate and sent % 100 == 0:
                ahead = sent / rate - (loop.time() - started)
                if ahead > 0:
                    await asyncio.sleep(ahead)
        await producer.flush()
    finally:
        await producer.stop()
    return sent


async def read_topic(bootstrap: str, topic: str, idle_s: float = 2.0, timeout_s: float = 60.0) -> list:
    """Every record currently in `topic`, from the beginning, until `idle_s` with nothing new."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                auto_offset_reset="earliest")
    await consumer.start()
    records = []
    try:
        await consumer.topics()  # refreshes metadata, so a topic created a moment ago is seen
        parts = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        if not tps:
            return []
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        end = await consumer.end_offsets(tps)
        deadline = asyncio.get_running_loop().time() + timeout_s
        while asyncio.get_running_loop().time() < deadline:
            batch = await consumer.getmany(timeout_ms=int(idle_s * 1000))
            for msgs in batch.values():
                records.extend(msgs)
            done = all([await consumer.position(tp) >= end[tp] for tp in tps])
            if done and not batch:
                break
    finally:
        await consumer.stop()
    return records


def lines(path: str) -> Iterator[bytes]:
    with open(path, "rb") as handle:
        for line in handle:
            line = line.rstrip(b"\r\n")
            if line:
                yield line
