"""Two workers in one group: a second worker joining takes over partitions, with their state
recovered from the changelog, and no event is lost across the handover (the batch input
path acks only what it processed; a redelivered event is de-duplicated by its id). Either
worker then answers /customers/<id> for every customer (forwarding to the owner), and only
with the bearer token.

And a worker stopped in the middle of a stream: the batch under way finishes before the
offsets are committed, so a new worker carries on without repeating any trigger."""
from __future__ import annotations

import json
import threading

import pytest

from worker.config import load_settings
from worker.core.events import format_time
from worker.core.partitioner import partition_of
from worker.harness.conditions import read_to_end
from worker.harness.process import WorkerProcess, wait_settled, wait_until
from worker.shell.http import FORWARDED
from worker.tools.bench import bench_stream
from worker.tools.kafka_io import create_topics, produce

from .conftest import run, topic_env

pytestmark = pytest.mark.integration
T0 = 1767571200.0
CUSTOMERS = 120
ORDERS = 6  # per customer: three before the second worker joins, three while it joins
TOKEN = "rebalance-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def purchases(round_: int) -> list[bytes]:
    out = []
    for n in range(3):
        k = round_ * 3 + n
        for c in range(CUSTOMERS):
            out.append(json.dumps({
                "schema_version": 1, "event_id": f"rb-{c}-{k}", "type": "purchase", "customer_id": f"rb-{c:04d}",
                "occurred_at": format_time(T0 + k * 86400 + c), "order_id": f"rbo-{c}-{k}", "amount": "10.00",
                "currency": "EUR"}).encode())
    return out


def owned(worker: WorkerProcess, settings) -> set[int]:
    """Partitions this worker holds: asked as a forwarded request, it answers only for those
    (421 for the others)."""
    parts = set()
    for c in range(CUSTOMERS):
        cid = f"rb-{c:04d}"
        if worker.get(f"/customers/{cid}", {**AUTH, FORWARDED: "test"})[0] == 200:
            parts.add(partition_of(cid.encode(), settings.topic_partitions))
    return parts


def test_a_joining_worker_takes_over_partitions_without_losing_or_repeating_events(broker, tmp_path):
    # bound beyond loopback (requests still go to 127.0.0.1): customer data needs the token
    env = {**topic_env("rebal"), "CHURN_WEB_HOST": "0.0.0.0", "CHURN_WEB_ADVERTISED_HOST": "127.0.0.1",
           "CHURN_HTTP_TOKEN": TOKEN}
    settings = load_settings(**{k[6:].lower(): v for k, v in env.items()})
    run(create_topics(broker.bootstrap, [*settings.input_topics, *settings.trigger_topics.values(),
                                         settings.dead_letter_topic], settings.topic_partitions))
    first = WorkerProcess(broker.bootstrap, {**env, "CHURN_DATA_DIR": str(tmp_path / "a")}, tmp_path / "a.log").start()
    second = None
    try:
        run(produce(broker.bootstrap, settings.input_topics[0], purchases(0)))
        wait_until(lambda: first.consumed() >= CUSTOMERS * 3, "the first worker to apply the first round", 120)
        assert owned(first, settings) == set(range(settings.topic_partitions))

        # the second round arrives while the second worker joins: the group rebalances under input
        feeder = threading.Thread(target=lambda: run(produce(broker.bootstrap, settings.input_topics[0],
                                                             purchases(1), rate=40)))
        feeder.start()
        second = WorkerProcess(broker.bootstrap, {**env, "CHURN_DATA_DIR": str(tmp_path / "b")}, tmp_path / "b.log")
        second.start(timeout=240)  # ready: assigned, recovered from the changelog, not rebalancing
        wait_until(lambda: first.get("/ready")[0] == 200 and owned(second, settings), "the rebalance to settle", 120)
        mine, theirs = owned(first, settings), owned(second, settings)
        assert mine and theirs and not mine & theirs and mine | theirs == set(range(settings.topic_partitions))
        feeder.join()

        def orders(worker: WorkerProcess) -> dict[str, int]:
            """Every customer's orders, as `worker` answers (itself or forwarded to the owner)."""
            seen = {}
            for c in range(CUSTOMERS):
                status, body = worker.get(f"/customers/rb-{c:04d}")
                assert status == 200, body
                seen[f"rb-{c:04d}"] = json.loads(body)["orders"]
            return seen

        # settled: the group has committed every event (and every redelivery after the handover)
        # on its input and repartition topics, so anything applied twice shows by now
        wait_settled([first, second], CUSTOMERS * ORDERS, timeout=180)
        by_partition: dict[int, list[int]] = {}
        answers = orders(first)
        assert answers == orders(second)  # either worker answers for every customer
        for cid, n in answers.items():
            by_partition.setdefault(partition_of(cid.encode(), settings.topic_partitions), []).append(n)
        summary = {p: sorted(set(ns)) for p, ns in sorted(by_partition.items())}
        assert summary == {p: [ORDERS] for p in range(settings.topic_partitions)}, \
            f"orders per customer by partition {summary}; first owns {mine}, second {theirs}"
        assert_customer_data_needs_the_token(first, second)
    finally:
        first.stop()
        if second is not None:
            second.stop()


def assert_customer_data_needs_the_token(*workers: WorkerProcess) -> None:
    for worker in workers:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
            status, body = worker.get("/customers/rb-0001", headers)
            assert status == 401 and b"orders" not in body, (headers, status, body)
        assert worker.get("/metrics", {})[0] == 200 and worker.get("/ready", {})[0] == 200
        assert worker.get("/router/", {})[0] == 404 and worker.get("/table/customer_state/", AUTH)[0] == 404


def test_a_worker_stopped_mid_stream_finishes_its_batch_and_its_successor_repeats_nothing(broker, tmp_path):
    env = {**topic_env("stop"), "CHURN_BATCH_SIZE": "400", "CHURN_MAX_POLL_RECORDS": "2000"}
    settings = load_settings(**{k[6:].lower(): v for k, v in env.items()})
    stream = bench_stream(24_000, 3_000, seed=4)
    run(create_topics(broker.bootstrap, [*settings.input_topics, *settings.trigger_topics.values(),
                                         settings.dead_letter_topic], settings.topic_partitions))
    run(produce(broker.bootstrap, settings.input_topics[0], stream))
    first = WorkerProcess(broker.bootstrap, {**env, "CHURN_DATA_DIR": str(tmp_path / "a")}, tmp_path / "a.log").start()
    try:
        wait_until(lambda: first.consumed() >= 4_000, "the first worker to get going", 60)
    finally:
        first.stop()  # SIGTERM, most likely in the middle of a batch
    second = WorkerProcess(broker.bootstrap, {**env, "CHURN_DATA_DIR": str(tmp_path / "b")}, tmp_path / "b.log")
    second.start()
    try:
        def applied() -> int:
            return sum(json.loads(second.get(f"/customers/b-{c:07d}")[1]).get("orders", 0) for c in range(0, 3000, 97))
        expected = sum(1 for raw in stream for c in range(0, 3000, 97)
                       if json.loads(raw)["customer_id"] == f"b-{c:07d}" and json.loads(raw)["type"] == "purchase")
        # settled: every message is committed, so the rest is applied and nothing more will be
        second.wait_consumed(0, timeout=180)
        assert applied() == expected
        ids = [json.loads(r.value)["trigger_id"] for t in settings.trigger_topics.values()
               for r in run(read_to_end(broker.bootstrap, t))]
        assert len(ids) > 100
        assert len(ids) == len(set(ids)), f"{len(ids) - len(set(ids))} triggers were sent twice"
    finally:
        second.stop()
