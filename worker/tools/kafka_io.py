"""Small aiokafka helpers for the CLI and the demo: create topics, produce a file of
events. Plain Kafka APIs only. (Reading a topic back to its end: worker.harness.conditions.)"""
from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Iterable, Iterator
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError


async def create_topics(bootstrap: str, names: Iterable[str], partitions: int, replication: int = 1,
                        options: dict[str, Any] | None = None, configs: dict[str, str] | None = None) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **(options or {}))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        new = [NewTopic(n, partitions, replication, topic_configs=configs or {}) for n in names if n not in existing]
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
                  progress: object = None, rate: float | None = None, unkeyed_share: float = 0.0,
                  seed: int = 0, options: dict[str, Any] | None = None) -> int:
    """Send every value; key by customer id when `keyed`, but for a random `unkeyed_share` of
    them (as a producer that sends some events without a key would). `rate` caps events/s.
    `options`: TLS and SASL (worker.kafka_security)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, acks="all", **(options or {}))
    await producer.start()
    sent = 0
    rng = random.Random(seed)
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        for value in values:
            key = customer_key(value) if keyed and (not unkeyed_share or rng.random() >= unkeyed_share) else None
            await producer.send(topic, value=value, key=key)
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


def lines(path: str) -> Iterator[bytes]:
    with open(path, "rb") as handle:
        for line in handle:
            line = line.rstrip(b"\r\n")
            if line:
                yield line


async def send_one(bootstrap: str, topic: str, key: bytes, value: bytes,
                   options: dict[str, Any] | None = None) -> int:
    """One record, acknowledged by every in-sync replica; its offset."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", **(options or {}))
    await producer.start()
    try:
        return (await producer.send_and_wait(topic, value, key=key)).offset
    finally:
        await producer.stop()
