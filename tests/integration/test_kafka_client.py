"""A producer keeps the metadata of a topic it knew only from its bootstrap.

aiokafka reads every topic's metadata when a producer starts, but tracks only the topics
it had to look up; a send to a new topic refreshes the metadata for those alone. A batch
for a topic known only from the bootstrap then waited for a leader forever. The worker
stalled on this now and then (worker/kafka_client.py).
"""
from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaProducer

from tests.integration.conftest import run
from worker.shell import kafka_client
from worker.tools.kafka_io import create_topics


async def _send_known_then_new(bootstrap: str, known: str, new: str) -> list:
    await create_topics(bootstrap, [known], 2)
    # linger: the first send waits in its batch while the second one refreshes the metadata
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=1000, request_timeout_ms=60_000)
    await producer.start()
    try:
        await create_topics(bootstrap, [new], 2)  # exists, but the producer has not seen it
        first = await producer.send(known, b"known from the bootstrap metadata", partition=0)
        second = await producer.send(new, b"needs a metadata refresh", partition=0)
        return await asyncio.wait_for(asyncio.gather(first, second), timeout=15)
    finally:
        await producer.stop()


def test_a_send_to_a_topic_known_from_the_bootstrap_survives_a_refresh_for_another(broker):
    kafka_client.install()
    assert kafka_client.installed()
    first, second = run(_send_known_then_new(broker.bootstrap, "kc-known", "kc-new"))
    assert (first.topic, second.topic) == ("kc-known", "kc-new")
