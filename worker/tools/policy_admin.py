"""`churn-worker policy publish FILE` and `policy show`: the policy topic from outside.

publish validates the file (a PolicyError names the field), reads the topic, refuses a
version already published there (versions are names, not numbers: a version is new when
the topic has never carried it since its last compaction), and writes the file's text
under the key `policy`. show prints the version in force on the topic and, from the status
topic, what each worker runs and what it last refused.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from aiokafka import AIOKafkaProducer

from worker.config import Settings, load_policy
from worker.core.policy import parse_policy
from worker.errors import PolicyError
from worker.harness.conditions import read_to_end
from worker.kafka_security import kafka_auth
from worker.shell.live_policy import COMPACTED, KEY, policy_topic, status_topic
from worker.tools.kafka_io import create_topics


async def published(settings: Settings) -> list[tuple[int, str | None]]:
    """(offset, version or None if unreadable) of every policy record on the topic."""
    options = kafka_auth(settings).options
    out: list[tuple[int, str | None]] = []
    for record in await read_to_end(settings.kafka_bootstrap or "", policy_topic(settings.app_id), options=options):
        if record.key != KEY:
            continue
        try:
            out.append((record.offset, parse_policy((record.value or b"").decode("utf-8", "replace")).version))
        except PolicyError:
            out.append((record.offset, None))
    return out


async def publish(settings: Settings, path: Path) -> str:
    policy = load_policy(path)
    history = await published(settings)
    if any(version == policy.version for _, version in history):
        raise PolicyError(f"{path}: version: {policy.version!r} is not new (already on "
                          f"{policy_topic(settings.app_id)}); bump it")
    auth, bootstrap, topic = kafka_auth(settings), settings.kafka_bootstrap or "", policy_topic(settings.app_id)
    await create_topics(bootstrap, [topic, status_topic(settings.app_id)], 1, settings.topic_replication,
                        options=auth.options, configs=COMPACTED)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", **auth.options)
    await producer.start()
    try:
        meta = await producer.send_and_wait(topic, path.read_bytes(), key=KEY)
    finally:
        await producer.stop()
    return f"published policy version {policy.version} to {topic} (offset {meta.offset})"


async def show(settings: Settings) -> str:
    history = await published(settings)
    topic = policy_topic(settings.app_id)
    lines = [f"{topic}: " + (f"version {history[-1][1] or '(unreadable)'} (offset {history[-1][0]})" if history
                             else "no policy published (workers use their file)")]
    statuses = {}
    options = kafka_auth(settings).options
    for record in await read_to_end(settings.kafka_bootstrap or "", status_topic(settings.app_id), options=options):
        try:
            statuses[record.key] = json.loads(record.value)
        except (TypeError, ValueError):
            continue
    for status in sorted(statuses.values(), key=lambda s: str(s.get("worker"))):
        age = time.time() - float(status.get("at", 0))
        refused = f"; last refused: {status['refused']}" if status.get("refused") else ""
        lines.append(f"  {status.get('worker')}: version {status.get('version')} (reported {age:.0f} s ago){refused}")
    if not statuses:
        lines.append("  no worker has reported yet")
    return "\n".join(lines)
