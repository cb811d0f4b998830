"""Batch input beneath faust's stream (the default) against the faust agent (CHURN_INPUT_MODE=stream):
the same input gives the same triggers, dead letters and state, and the batch path commits
its offsets, so a restarted worker carries on where it stopped instead of reading again."""
from __future__ import annotations

import json

import pytest

from worker.config import load_settings
from worker.harness.conditions import read_to_end
from worker.harness.process import WorkerProcess, consumed
from worker.tools.generate import corrupt, generate
from worker.tools.kafka_io import create_topics, produce

from .conftest import run, topic_env

pytestmark = pytest.mark.integration
START = "2026-01-05T00:00:00+00:00"


def outputs(broker, settings) -> dict[str, list[tuple[bytes, bytes]]]:
    topics = {**settings.trigger_topics, "dead_letter": settings.dead_letter_topic}
    return {kind: sorted((r.key or b"", r.value) for r in run(read_to_end(broker.bootstrap, t)))
            for kind, t in topics.items()}


@pytest.fixture(scope="module")
def modes(broker, tmp_path_factory):
    """One input topic, read by two workers of different groups, one per input mode."""
    events = generate(customers=200, days=75, seed=5, start=START)
    keyed = corrupt(events, 0.01, seed=2)  # with malformed messages and redeliveries
    # unkeyed: the worker forwards them to their customers' partitions first (one event per
    # customer: the order forwarded events arrive in depends on timing). Sent after the
    # stream, they are dated at its end: days behind it, whether they count as late would
    # depend on how far the watermark had come when they arrived
    unkeyed = [json.dumps({"schema_version": 1, "event_id": f"u-{n}", "type": "login", "customer_id": f"u-{n}",
                           "occurred_at": f"2026-03-{20 + n % 3:02d}T08:00:00+00:00"}).encode() for n in range(30)]
    shared = topic_env("modes")
    inputs = shared["CHURN_INPUT_TOPICS"]
    run(create_topics(broker.bootstrap, [inputs], 4))
    run(produce(broker.bootstrap, inputs, keyed))
    run(produce(broker.bootstrap, inputs, unkeyed, keyed=False))
    total = len(keyed) + len(unkeyed)
    out = {}
    for mode in ("batch", "stream"):
        env = {**topic_env(f"modes-{mode}"), "CHURN_INPUT_TOPICS": inputs, "CHURN_INPUT_MODE": mode,
               "CHURN_BATCH_SIZE": "300"}
        settings = load_settings(**{k[6:].lower(): v for k, v in env.items()})
        worker = WorkerProcess(broker.bootstrap, env, tmp_path_factory.mktemp(mode) / "worker.log").start()
        try:
            samples = worker.wait_consumed(total)
            out[mode] = {"env": env, "settings": settings, "samples": samples, "worker": worker,
                         "outputs": outputs(broker, settings),
                         "customers": {c: json.loads(worker.get(f"/customers/{c}")[1])
                                       for c in sorted({e["customer_id"] for e in events})[:25]}}
        finally:
            worker.stop()
    out["total"] = total
    return out


def test_both_modes_emit_the_same_triggers_and_dead_letters(modes):
    batch, stream = modes["batch"]["outputs"], modes["stream"]["outputs"]
    assert sum(len(batch[k]) for k in ("follow_up", "win_back", "service_recovery")) > 20
    assert len(batch["dead_letter"]) >= 10
    # at least once: a redelivery after a rebalance may send a copy; the sets must be equal
    for kind in batch:
        if kind == "dead_letter":
            assert set(batch[kind]) == set(stream[kind])
            continue
        by_b = {json.loads(v)["trigger_id"]: json.loads(v) for _, v in batch[kind]}
        by_s = {json.loads(v)["trigger_id"]: json.loads(v) for _, v in stream[kind]}
        assert set(by_b) == set(by_s), (kind, [by_b[i] for i in set(by_b) - set(by_s)][:2],
                                        [by_s[i] for i in set(by_s) - set(by_b)][:2])


def test_both_modes_hold_the_same_state(modes):
    def comparable(view):
        return {k: view[k] for k in ("known", "orders", "logins", "next_deadline", "features")}
    batch, stream = modes["batch"]["customers"], modes["stream"]["customers"]
    assert all(v["known"] for v in batch.values())
    assert {c: comparable(v) for c, v in batch.items()} == {c: comparable(v) for c, v in stream.items()}


def test_a_restarted_batch_worker_reads_on_from_its_committed_offsets(modes, broker, tmp_path):
    first = modes["batch"]
    env = dict(first["env"])
    again = WorkerProcess(broker.bootstrap, env, tmp_path / "again.log").start()
    try:
        fresh = {"schema_version": 1, "event_id": "modes-fresh-1", "type": "login", "customer_id": "c-fresh",
                 "occurred_at": "2026-03-25T10:00:00+00:00"}
        run(produce(broker.bootstrap, env["CHURN_INPUT_TOPICS"], [json.dumps(fresh).encode()]))
        # settled: the group's offsets are committed to the end of the input, so anything the
        # restarted worker read again is counted by now
        samples = again.wait_consumed(1)
        assert consumed(samples) == 1, "only the new event: the first run's offsets were committed"
        assert json.loads(again.get("/customers/c-fresh")[1])["known"]
    finally:
        again.stop()
