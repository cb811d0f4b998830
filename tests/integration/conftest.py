"""Integration fixtures: the embedded Kafka-protocol broker and real worker processes.

The broker is started by the test run itself; these tests never skip. Each test
module uses its own topic names and consumer group, so modules do not interfere.
"""
from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest

from worker.harness.broker import EmbeddedBroker
from worker.tools.kafka_io import send_one

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def broker(tmp_path_factory):
    log = tmp_path_factory.mktemp("broker") / "broker.log"
    with EmbeddedBroker(log_path=log) as b:
        yield b


def topic_env(prefix: str) -> dict[str, str]:
    """Unique topics and group per module, with fast group timeouts for a single test worker."""
    tag = f"{prefix}-{uuid.uuid4().hex[:6]}"
    return {
        "CHURN_APP_ID": tag, "CHURN_INPUT_TOPICS": f"{tag}-events", "CHURN_DEAD_LETTER_TOPIC": f"{tag}-dlq",
        "CHURN_FOLLOW_UP_TOPIC": f"{tag}-follow-up", "CHURN_WIN_BACK_TOPIC": f"{tag}-win-back",
        "CHURN_SERVICE_RECOVERY_TOPIC": f"{tag}-service-recovery", "CHURN_CLOCK": "event",
        "CHURN_SESSION_TIMEOUT_S": "6", "CHURN_REBALANCE_TIMEOUT_S": "6", "CHURN_TIMER_INTERVAL_S": "0.2",
        "CHURN_IDLE_SOURCE_S": "3",
    }


def run(coro):
    return asyncio.run(coro)


async def write_raw(bootstrap: str, topic: str, key: bytes, value: bytes) -> None:
    """One record written past the CLI's checks, as another tool might."""
    await send_one(bootstrap, topic, key, value)
