"""Start-up check that the topics the worker reads and writes are co-partitioned.

A customer's state lives on table partition `murmur2(customer id) % CHURN_TOPIC_PARTITIONS`,
and faust assigns partition p of every input topic together with partition p of the table.
An input topic with another partition count breaks that silently: a customer's events
would arrive on a partition whose table partition another worker owns, and its state
could live on two workers. faust does not validate it (robinhood/faust#137), so the
worker refuses to start, naming the topic and both counts. Topics that do not exist yet
are left to be created with the configured count.
"""
from __future__ import annotations

import asyncio
from typing import Any

from aiokafka.client import AIOKafkaClient
from aiokafka.errors import KafkaError

from worker.config import Settings
from worker.errors import ConfigError
from worker.kafka_security import kafka_auth

RETRY_EVERY_S = 2.0
TABLE = "customer_state"  # the table's name: its changelog topic is <app_id>-customer_state-changelog


def checked_topics(settings: Settings) -> list[str]:
    return [*settings.input_topics, settings.repartition_topic, f"{settings.app_id}-{TABLE}-changelog"]


async def check_co_partitioning(settings: Settings, timeout_s: float = 60.0) -> None:
    """Raise ConfigError when a topic exists with another partition count; a cluster that
    does not answer within `timeout_s` (retried meanwhile) also stops start-up."""
    auth = kafka_auth(settings)
    await auth.check(settings.kafka_bootstrap or "")  # a wrong CA or password, said plainly
    counts = await _partition_counts(settings, checked_topics(settings), timeout_s, auth.options)
    wrong = {t: n for t, n in counts.items() if n != settings.topic_partitions}
    if wrong:
        found = ", ".join(f"{t} has {n}" for t, n in sorted(wrong.items()))
        raise ConfigError(f"CHURN_TOPIC_PARTITIONS: {settings.topic_partitions} partitions expected on every input, "
                          f"repartition and changelog topic (co-partitioned with the state table), but {found}; "
                          "repartition the topic or set CHURN_TOPIC_PARTITIONS to match")


async def _partition_counts(settings: Settings, topics: list[str], timeout_s: float,
                            options: dict[str, Any]) -> dict[str, int]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        client = AIOKafkaClient(bootstrap_servers=settings.kafka_bootstrap or "", request_timeout_ms=10_000,
                                **options)
        try:
            await client.bootstrap()
            await client.fetch_all_metadata()
            return {t: len(p) for t in topics if (p := client.cluster.partitions_for_topic(t))}
        except KafkaError as exc:
            if loop.time() >= deadline:
                raise ConfigError(f"CHURN_KAFKA_BOOTSTRAP: no answer from {settings.kafka_bootstrap} within "
                                  f"{timeout_s:.0f} s: {exc!r}") from None
        finally:
            await client.close()
        await asyncio.sleep(RETRY_EVERY_S)
