"""The control topics from outside (`policy publish/show`, `model ...`): a compacted
one-partition topic whose latest record under one key is in force, and its status topic,
where each worker reports what it runs (worker.shell.live_policy, worker.shell.live_model)."""
from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from worker.config import Settings
from worker.harness.conditions import read_to_end
from worker.kafka_security import kafka_auth
from worker.shell.live_policy import COMPACTED
from worker.tools.kafka_io import create_topics, send_one


async def records(settings: Settings, topic: str, key: bytes) -> list[Any]:
    """Every record of `topic` under `key`, in offset order."""
    found = await read_to_end(settings.kafka_bootstrap or "", topic, options=kafka_auth(settings).options)
    return [r for r in found if r.key == key]


async def write(settings: Settings, topic: str, status: str, key: bytes, value: bytes) -> int:
    """Make both topics (compacted, one partition) if need be and write one record; its offset."""
    options = kafka_auth(settings).options
    await create_topics(settings.kafka_bootstrap or "", [topic, status], 1, settings.topic_replication,
                        options=options, configs=COMPACTED)
    return await send_one(settings.kafka_bootstrap or "", topic, key, value, options)


async def reports(settings: Settings, status: str, describe: Callable[[dict[str, Any]], str]) -> list[str]:
    """One line per worker from the status topic (`describe` says what it runs)."""
    latest: dict[bytes, dict[str, Any]] = {}
    for record in await read_to_end(settings.kafka_bootstrap or "", status, options=kafka_auth(settings).options):
        try:
            latest[record.key] = json.loads(record.value)
        except (TypeError, ValueError):
            continue
    lines = []
    for s in sorted(latest.values(), key=lambda s: str(s.get("worker"))):
        refused = f"; last refused: {s['refused']}" if s.get("refused") else ""
        lines.append(f"  {s.get('worker')}: {describe(s)} (reported {time.time() - float(s.get('at', 0)):.0f} s ago)"
                     f"{refused}")
    return lines or ["  no worker has reported yet"]
