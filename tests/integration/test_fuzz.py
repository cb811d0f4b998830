"""100,000 malformed messages mixed into valid traffic: the worker does not stop, every bad
message reaches the dead-letter topic with its reason, and every valid event is applied.

The malformed ones are made from the valid events of the stream, three ways, each of which
always breaks the message: cut short (a proper prefix of a JSON object is not JSON), one
byte's high bit flipped (the events are ASCII, so that byte is invalid UTF-8), or a
required field given a value of another type. The pure parser is the oracle for each
message's reason; the test checks that the running worker agrees, message for message.
"""
from __future__ import annotations

import json
import random
from collections import Counter

import pytest

from worker.core.events import Event, InvalidEvent, parse_event
from worker.harness.conditions import read_to_end
from worker.harness.process import WorkerProcess, wait_settled
from worker.tools.generate import generate
from worker.tools.kafka_io import create_topics, produce

from .conftest import run, topic_env

pytestmark = pytest.mark.integration
MALFORMED = 100_000
CONFUSED = {"schema_version": "1", "event_id": 7, "type": ["login"], "customer_id": None,
            "occurred_at": 1767571200, "amount": "lots", "ticket_id": {"id": 1}, "action": 3}


def malform(raw: bytes, rng: random.Random) -> bytes:
    how = rng.randrange(3)
    if how == 0:
        return raw[:rng.randrange(len(raw) - 1)]
    if how == 1:
        data = bytearray(raw)
        data[rng.randrange(len(data))] |= 0x80
        return bytes(data)
    obj = json.loads(raw)
    field = rng.choice([f for f in CONFUSED if f in obj])
    obj[field] = CONFUSED[field]
    return json.dumps(obj).encode()


def interleave(a: list[bytes], b: list[bytes], rng: random.Random) -> list[bytes]:
    """a and b merged at random, each keeping its own order."""
    out, i, j = [], 0, 0
    while i < len(a) or j < len(b):
        if j == len(b) or (i < len(a) and rng.random() < (len(a) - i) / (len(a) - i + len(b) - j)):
            out.append(a[i])
            i += 1
        else:
            out.append(b[j])
            j += 1
    return out


def test_malformed_messages_are_dead_lettered_and_valid_ones_applied(broker, tmp_path):
    rng = random.Random(20261202)
    events = [json.dumps(e, separators=(",", ":")).encode()
              for e in generate(customers=200, days=60, seed=13, start="2026-01-05T00:00:00+00:00")]
    bad = [malform(rng.choice(events), rng) for _ in range(MALFORMED)]
    verdicts = [parse_event(raw) for raw in bad]
    assert all(isinstance(v, InvalidEvent) for v in verdicts)  # each way always breaks the message
    stream = interleave(events, bad, rng)  # the valid events stay in time order
    env = {**topic_env("fuzz"), "CHURN_CLOCK": "event"}
    run(create_topics(broker.bootstrap, [env["CHURN_INPUT_TOPICS"]], 4))
    run(produce(broker.bootstrap, env["CHURN_INPUT_TOPICS"], stream))

    worker = WorkerProcess(broker.bootstrap, env, tmp_path / "worker.log").start()
    try:
        samples = wait_settled([worker], total=len(stream))[0]
        assert worker.process is not None and worker.process.poll() is None  # still the first process
        dead = run(read_to_end(broker.bootstrap, env["CHURN_DEAD_LETTER_TOPIC"]))
        reasons = Counter(dict(r.headers)["dlq.reason"].decode() for r in dead)
        assert len(dead) == MALFORMED and reasons == Counter(v.reason for v in verdicts)
        assert Counter(r.value for r in dead) == Counter(bad)  # the original bytes, each once
        valid = [e for e in map(parse_event, events) if isinstance(e, Event)]
        per_customer = Counter((e.customer_id, e.type) for e in valid)
        for customer in sorted({e.customer_id for e in valid}):
            state = json.loads(worker.get(f"/customers/{customer}")[1])
            assert (state["logins"], state["orders"]) == (per_customer[(customer, "login")],
                                                          per_customer[(customer, "purchase")]), customer
        applied = sum(v for k, v in samples.items() if k[0] == "churn_events_consumed_total"
                      and dict(k[1:]).get("outcome") == "applied")
        assert applied == len(valid)
    finally:
        worker.stop()
