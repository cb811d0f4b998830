"""Erasure end to end: a `customer_erased` event deletes the customer's state from the table
and, with a tombstone, from the changelog; subscribers get an `erased` record; a worker
restarted from the changelog does not bring the customer back; a later event starts from
nothing. The other customers are untouched. The erasure is sent by `churn-worker erase`."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime

import pytest

from worker.harness.conditions import read_to_end
from worker.harness.process import WorkerProcess
from worker.tools.kafka_io import create_topics, produce

from .conftest import run, topic_env

pytestmark = pytest.mark.integration
DAY = "2026-01-{:02d}T10:00:00Z"


def event(kind: str, customer: str, day: int, n: int = 0) -> bytes:
    body = {"schema_version": 1, "event_id": f"{customer}-{kind}-{day}-{n}", "type": kind,
            "customer_id": customer, "occurred_at": DAY.format(day)}
    if kind == "purchase":
        body.update(order_id=f"o-{customer}-{day}", amount="20.00", currency="EUR")
    return json.dumps(body).encode()


def state(worker: WorkerProcess, customer: str) -> dict:
    status, body = worker.get(f"/customers/{customer}")
    assert status == 200, body
    return json.loads(body)


def test_an_erased_customer_is_gone_from_table_and_changelog_across_a_restart(broker, tmp_path):
    env = topic_env("erase")
    env["CHURN_ERASED_TOPIC"] = f"{env['CHURN_APP_ID']}-erased"
    topic = env["CHURN_INPUT_TOPICS"]
    history = [event(k, c, d) for d in range(1, 11) for c in ("e-1", "e-2") for k in ("login", "purchase")]
    run(create_topics(broker.bootstrap, [topic], 4))
    run(produce(broker.bootstrap, topic, history))
    worker = WorkerProcess(broker.bootstrap, env, tmp_path / "a.log").start()
    try:
        worker.wait_consumed(len(history))
        assert (state(worker, "e-1")["orders"], state(worker, "e-2")["orders"]) == (10, 10)
        erase = subprocess.run([sys.executable, "-m", "worker", "erase", "e-1"], capture_output=True, text=True,
                               env={**os.environ, **env, "CHURN_KAFKA_BOOTSTRAP": broker.bootstrap}, timeout=60)
        assert erase.returncode == 0, erase.stderr
        worker.wait_consumed(len(history) + 1)
        assert state(worker, "e-1") == {"customer_id": "e-1", "known": False}
        kept = state(worker, "e-2")
        assert kept["orders"] == 10
    finally:
        worker.stop()

    changelog = [r for r in run(read_to_end(broker.bootstrap, f"{env['CHURN_APP_ID']}-customer_state-changelog"))
                 if r.key == b"e-1"]
    assert changelog and changelog[-1].value is None  # the last word on e-1 is a tombstone
    erased = [json.loads(r.value) for r in run(read_to_end(broker.bootstrap, env["CHURN_ERASED_TOPIC"]))]
    assert [(e["type"], e["customer_id"]) for e in erased] == [("customer_erased", "e-1")]

    again = WorkerProcess(broker.bootstrap, env, tmp_path / "b.log").start()  # recovers from the changelog
    try:
        again.wait_consumed(0)
        assert state(again, "e-1") == {"customer_id": "e-1", "known": False}
        back = state(again, "e-2")  # (its features depend on the clock, which starts again)
        assert (back["orders"], back["logins"], back["events_waiting"]) == (kept["orders"], kept["logins"], 0)
        later = json.loads(event("purchase", "e-1", 14))  # after the erasure, which the CLI dates now
        later["occurred_at"] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        run(produce(broker.bootstrap, topic, [json.dumps(later).encode()]))
        again.wait_consumed(1)
        fresh = state(again, "e-1")
        assert (fresh["known"], fresh["orders"], fresh["logins"]) == (True, 1, 0)
    finally:
        again.stop()
