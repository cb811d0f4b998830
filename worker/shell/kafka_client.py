"""Producers keep the metadata of every topic they send to.

aiokafka (0.14) refreshes a client's cluster metadata for the topics it tracks and
replaces what it knew with the answer. A producer starts by reading the metadata of every
topic in the cluster, and a send to a topic found there is not added to the tracked
topics. So when a send to a topic it did not know (the first tick, the first trigger of a
kind) refreshes the metadata for the tracked topics alone, the others drop out of it; a
batch still waiting for one of them then has no leader, and every refresh it asks for
leaves that topic out again. The send never completes and nothing is logged: the worker
stopped on a batch now and then, always early in its life.

`install()` makes every send track its topic first (`AIOKafkaClient.add_topic`, the call
aiokafka makes itself for a topic it does not know), so the refreshes keep asking for it.
It changes aiokafka's client class for the whole process and is idempotent; the worker
installs it before it starts any Kafka client.
"""
from __future__ import annotations

from typing import Any

from aiokafka.client import AIOKafkaClient

_original_wait_on_metadata = AIOKafkaClient._wait_on_metadata


async def _wait_on_metadata(self: AIOKafkaClient, topic: str) -> Any:
    self.add_topic(topic)  # no-op for a tracked topic; otherwise tracked from now on
    return await _original_wait_on_metadata(self, topic)


def install() -> None:
    """Make every aiokafka client in this process track the topics it sends to."""
    AIOKafkaClient._wait_on_metadata = _wait_on_metadata  # type: ignore[method-assign]


def installed() -> bool:
    return AIOKafkaClient._wait_on_metadata is _wait_on_metadata
