"""Integration fixtures: the embedded Kafka-protocol broker and real worker processes.

The broker is started by the test run itself; these tests never skip. Each test
module uses its own topic names and consumer group, so modules do not interfere.
"""
from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

from worker.demo import scrape
from worker.embedded import EmbeddedBroker, free_port, stop_process

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def broker(tmp_path_factory):
    log = tmp_path_factory.mktemp("broker") / "broker.log"
    with EmbeddedBroker(log_path=log) as b:
        yield b


class WorkerProcess:
    """`python -m worker run` against the test broker, with the event-time clock."""

    def __init__(self, bootstrap: str, env: dict[str, str], log_path: Path) -> None:
        self.port = free_port()
        self.env = {**os.environ, **env, "CHURN_KAFKA_BOOTSTRAP": bootstrap, "CHURN_WEB_PORT": str(self.port),
                    "CHURN_MODEL_DIR": str(ROOT / "models" / "churn-v1")}
        self.log_path = log_path
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 120.0) -> WorkerProcess:
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen([sys.executable, "-m", "worker", "run"], env=self.env, cwd=ROOT,
                                        stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"worker exited: {self.log_path.read_text()[-3000:]}"
            if self.get("/ready")[0] == 200:
                return self
            time.sleep(0.3)
        raise AssertionError(f"worker not ready in {timeout} s: {self.log_path.read_text()[-3000:]}")

    def get(self, path: str) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as err:
            return err.code, err.read()
        except OSError:
            return 0, b""

    def metrics(self) -> dict:
        return scrape(self.port)

    def wait_consumed(self, total: int, settle_s: float = 4.0, timeout: float = 180.0) -> dict:
        """Wait until `total` messages are accounted for and nothing changed for settle_s."""
        from worker.demo import consumed, triggers

        last, since = None, time.monotonic()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            samples = self.metrics()
            state = (consumed(samples), tuple(sorted(triggers(samples).items())))
            if state != last:
                last, since = state, time.monotonic()
            elif state[0] >= total and time.monotonic() - since > settle_s:
                return samples
            time.sleep(0.3)
        raise AssertionError(f"consumed {last} of {total} within {timeout} s")

    def stop(self) -> None:
        stop_process(self.process, 30)


def topic_env(prefix: str) -> dict[str, str]:
    """Unique topics and group per module, with fast group timeouts for a single test worker."""
    tag = f"{prefix}-{uuid.uuid4().hex[:6]}"
    return {
        "CHURN_APP_ID": tag, "CHURN_INPUT_TOPICS": f"{tag}-events", "CHURN_DEAD_LETTER_TOPIC": f"{tag}-dlq",
        "CHURN_FOLLOW_UP_TOPIC": f"{tag}-follow-up", "CHURN_WIN_BACK_TOPIC": f"{tag}-win-back",
        "CHURN_SERVICE_RECOVERY_TOPIC": f"{tag}-service-recovery", "CHURN_CLOCK": "event",
        "CHURN_SESSION_TIMEOUT_S": "6", "CHURN_REBALANCE_TIMEOUT_S": "6", "CHURN_TIMER_INTERVAL_S": "0.2",
    }


def run(coro):
    return asyncio.run(coro)
