"""The real worker process on the embedded broker: events in, triggers and dead letters out,
silence firing a win-back, and a restart recovering state from the changelog."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import jsonschema
import pytest

from worker.config import load_policy, load_settings
from worker.core.events import Event, format_time, parse_event
from worker.core.partitioner import partition_of
from worker.core.state import DAY, EMPTY, apply_event
from worker.core.triggers import lapse_days
from worker.harness.conditions import read_to_end
from worker.harness.process import WorkerProcess, consumed
from worker.tools.generate import generate
from worker.tools.kafka_io import create_topics, produce

from .conftest import run, topic_env

pytestmark = pytest.mark.integration
SCHEMAS = Path(__file__).resolve().parents[2] / "worker" / "schemas"
START = "2026-01-05T00:00:00+00:00"
T0 = 1767571200.0  # START as epoch seconds
QUIET = "c-quiet"       # buys daily for 10 days, then never again
GRUMPY = "c-grumpy"     # rates support 1/5
WAITING = "c-waiting"   # opens a ticket nobody resolves
LATECOMER = "c-late"    # an event sent after the whole stream, 19 days behind its newest: late
RESTARTED = "c-restart"  # buys daily until day 88; lapses only after the first worker has stopped

MALFORMED = [
    b'{"schema_version":1,"event_id":"x1","type":"login"',                       # cut off
    b'{"schema_version":1,"event_id":"x2","type":"refund","customer_id":"c","occurred_at":"2026-01-06T10:00:00Z"}',
    b'{"schema_version":1,"event_id":"x3","type":"login","customer_id":42,"occurred_at":"2026-01-06T10:00:00Z"}',
    b'{"schema_version":1,"event_id":"x4","type":"login","customer_id":"c","occurred_at":"2026-01-06 10:00"}',
    b"\xff\xfe not utf-8",
]


def ev(n: int, kind: str, customer: str, day: float, **extra) -> dict:
    return {"schema_version": 1, "event_id": f"it-{customer}-{n}", "type": kind, "customer_id": customer,
            "occurred_at": format_time(T0 + day * DAY), **extra}


def crafted_keyed() -> list[dict]:
    out = [ev(i, "purchase", QUIET, 1 + i + 0.3, order_id=f"o{i}", amount=20 + i, currency="EUR")
           for i in range(10)]
    out += [ev(400 + i, "purchase", RESTARTED, 80 + i + 0.3, order_id=f"r{i}", amount=15, currency="EUR")
            for i in range(9)]
    return out + [ev(300, "login", LATECOMER, 20), ev(301, "login", LATECOMER, 1)]


def crafted_unkeyed() -> list[dict]:
    """Sent without keys, so the worker must repartition them (each spans < the lateness)."""
    out = [ev(100, "login", GRUMPY, 5), ev(101, "support", GRUMPY, 6, ticket_id="t1", action="opened"),
           ev(102, "support", GRUMPY, 6.1, ticket_id="t1", action="resolved", csat=1, nps=2)]
    return out + [ev(200, "login", WAITING, 5), ev(201, "support", WAITING, 7, ticket_id="t9", action="opened")]


def unkeyed_from() -> str:
    return min(e["occurred_at"] for e in crafted_unkeyed())


@pytest.fixture(scope="module")
def env():
    return topic_env("e2e")


@pytest.fixture(scope="module")
def stream(broker, env, tmp_path_factory):
    """Run one worker over a generated stream plus crafted customers; keep what came out."""
    settings = load_settings(**{k[6:].lower(): v for k, v in env.items() if k != "CHURN_CLOCK"})
    background = generate(customers=300, days=90, seed=11, start=START)
    special = crafted_keyed() + crafted_unkeyed()
    # the crafted customers' events in time order among the others, but the latecomer's last:
    # sent after the whole stream, days behind the watermark
    in_time = sorted(background + crafted_keyed()[:-1], key=lambda e: e["occurred_at"])
    keyed = [json.dumps(e).encode() for e in [*in_time, crafted_keyed()[-1]]]
    middle = len(keyed) // 2
    keyed.insert(middle + 5, keyed[middle])  # a redelivery, a few messages after the original
    unkeyed = [json.dumps(e).encode() for e in crafted_unkeyed()] + MALFORMED
    log = tmp_path_factory.mktemp("worker") / "worker.log"
    worker = WorkerProcess(broker.bootstrap, env, log)
    topics = [*settings.input_topics, settings.dead_letter_topic, *settings.trigger_topics.values()]
    run(create_topics(broker.bootstrap, topics, settings.topic_partitions))
    worker.start()
    try:
        # in time order, as a live stream: the unkeyed events (days 5 to 7) after the keyed
        # ones before them (sent first, they would move event time days ahead of the rest)
        split = next(i for i, raw in enumerate(keyed) if json.loads(raw)["occurred_at"] >= unkeyed_from())
        run(produce(broker.bootstrap, settings.input_topics[0], keyed[:split]))
        run(produce(broker.bootstrap, settings.input_topics[0], unkeyed, keyed=False))
        run(produce(broker.bootstrap, settings.input_topics[0], keyed[split:]))
        samples = worker.wait_consumed(len(keyed) + len(unkeyed))
        out = {kind: run(read_to_end(broker.bootstrap, t)) for kind, t in settings.trigger_topics.items()}
        out["dead_letter"] = run(read_to_end(broker.bootstrap, settings.dead_letter_topic))
        quiet_before = json.loads(worker.get(f"/customers/{QUIET}")[1])
        yield {"samples": samples, "out": out, "worker": worker, "settings": settings, "special": special,
               "quiet_before": quiet_before, "log": log}
    finally:
        worker.stop()


def triggers_of(stream, customer: str) -> list[dict]:
    return [json.loads(r.value) for kind in ("follow_up", "win_back", "service_recovery")
            for r in stream["out"][kind] if json.loads(r.value)["customer_id"] == customer]


def test_all_three_trigger_types_are_emitted_and_match_the_published_schema(stream):
    validator = jsonschema.Draft202012Validator(json.loads((SCHEMAS / "trigger.v1.json").read_text()))
    ids = []
    for kind in ("follow_up", "win_back", "service_recovery"):
        records = stream["out"][kind]
        assert records, f"no {kind} triggers"
        for record in records:
            payload = json.loads(record.value)
            validator.validate(payload)
            assert payload["type"] == kind and record.key == payload["customer_id"].encode()
            ids.append(payload["trigger_id"])
    assert len(ids) == len(set(ids)), "a trigger id was emitted twice within one run"


def test_silence_alone_fires_a_win_back_at_the_lapse_deadline(stream):
    policy = load_policy(stream["settings"].policy_path)
    state = EMPTY
    for e in stream["special"]:
        if e["customer_id"] == QUIET:
            parsed = parse_event(json.dumps(e).encode())
            assert isinstance(parsed, Event)
            state = apply_event(state, parsed)
    deadline = state.last_activity + lapse_days(policy, state) * DAY
    win_backs = [t for t in triggers_of(stream, QUIET) if t["type"] == "win_back"]
    assert [(t["rule"], t["event_time"]) for t in win_backs] == [("lapsed", format_time(deadline))]


def test_bad_rating_and_breached_sla_fire_service_recovery(stream):
    grumpy = [t for t in triggers_of(stream, GRUMPY) if t["type"] == "service_recovery"]
    assert [t["rule"] for t in grumpy] == ["bad_rating"]
    waiting = [t for t in triggers_of(stream, WAITING) if t["type"] == "service_recovery"]
    assert [(t["rule"], t["event_time"]) for t in waiting] == [("sla_breach", format_time(T0 + 8 * DAY))]


def test_malformed_and_late_messages_go_to_the_dead_letter_topic_with_reason_and_source(stream, broker):
    dead = stream["out"]["dead_letter"]
    source = {(r.partition, r.offset): r.value
              for r in run(read_to_end(broker.bootstrap, stream["settings"].input_topics[0]))}
    too_late = [json.dumps(crafted_keyed()[-1]).encode()]
    assert sorted(r.value for r in dead) == sorted([*MALFORMED, *too_late])
    for record in dead:
        headers = dict(record.headers)
        assert headers["dlq.reason"].decode() in {"bad_json", "unknown_event_type", "bad_field_type",
                                                   "bad_timestamp", "not_utf8", "late"}
        assert (headers["dlq.reason"] == b"late") == (record.value in too_late)
        assert headers["dlq.source.topic"] == stream["settings"].input_topics[0].encode()
        # the headers lead back to the very message that was refused
        where = (int(headers["dlq.source.partition"]), int(headers["dlq.source.offset"]))
        assert source[where] == record.value
    reasons = Counter(dict(r.headers)["dlq.reason"].decode() for r in dead)
    samples = stream["samples"]
    for reason, n in reasons.items():
        assert samples[("churn_events_dead_lettered_total", ("reason", reason))] == n


def test_metrics_count_what_happened(stream):
    s = stream["samples"]
    applied = sum(v for k, v in s.items() if k[0] == "churn_events_consumed_total" and ("outcome", "applied") in k)
    duplicates = sum(v for k, v in s.items()
                     if k[0] == "churn_events_consumed_total" and ("outcome", "duplicate") in k)
    repartitioned = sum(v for k, v in s.items() if k[0] == "churn_events_repartitioned_total")
    assert duplicates >= 1
    assert repartitioned == len(crafted_unkeyed())
    assert applied > 5000
    for kind in ("follow_up", "win_back", "service_recovery"):
        assert s[("churn_triggers_emitted_total", ("type", kind))] == len(stream["out"][kind])
    assert s[("churn_customers_tracked",)] >= 300
    assert s[("churn_model_info", ("churn_on", "activity"), ("horizon_days", "30.0"), ("kind", "logistic_regression"),
              ("version", "churn-v1"))] == 1
    assert s[("churn_model_expected_churn_rate", ("model_version", "churn-v1"))] == pytest.approx(0.3239)
    assert s[("churn_risk_score_count", ("model_version", "churn-v1"))] > 0
    assert s[("churn_scoring_batch_size_count",)] > 0
    settings = stream["settings"]
    for p in range(settings.topic_partitions):  # it holds every partition, and has read them to the end
        assert s[("churn_consumer_lag_records", ("partition", str(p)), ("topic", settings.input_topics[0]))] == 0
        assert ("churn_consumer_lag_records", ("partition", str(p)), ("topic", settings.repartition_topic)) in s
    assert s[("churn_rebalances_total",)] >= 1
    assert s[("process_resident_memory_bytes",)] > 0
    # recovered: nothing left to read from the changelog, for its own partitions or standbys
    assert s[("churn_table_recovery_remaining_records", ("kind", "active"))] == 0
    assert stream["worker"].get("/health")[0] == 200  # read to the end: not stalled
    kinds = ("follow_up", "win_back", "service_recovery")
    triggers = [json.loads(r.value) for kind in kinds for r in stream["out"][kind]]
    buyers = [t for t in triggers if t.get("expected_purchases_90d") is not None]
    assert buyers and all(0 <= t["p_alive"] <= 1 and t["predicted_clv"] >= 0 for t in buyers)
    served = json.loads(stream["worker"].get(f"/customers/{buyers[0]['customer_id']}")[1])
    assert served["p_alive"] is not None and served["next_order_expected_at"] is None or \
        served["next_order_expected_at"].endswith("Z")
    ready = json.loads(stream["worker"].get("/ready")[1])
    assert ready["model_label"] == {"churn_on": "activity", "horizon_days": 30.0}


def test_training_computes_the_same_features_as_the_running_worker(stream):
    """No training/serving skew: snapshots built by worker.tools.training for the same events,
    with the value features the shipped model appends from its card's value model, equal the
    features the live worker reports, for customers the watermark has passed."""
    from worker.model import shipped_model_dir
    from worker.model.artifact import load_artifact
    from worker.tools.training import build_snapshots

    worker, samples = stream["worker"], stream["samples"]
    watermark = samples[("churn_event_time_watermark_seconds",)]
    events = sorted((parse_event(json.dumps(e).encode()) for e in generate(300, 90, seed=11, start=START)),
                    key=lambda e: e.occurred_at)
    last_seen: dict[str, float] = {}
    for e in events:
        last_seen[e.customer_id] = e.occurred_at
    done = sorted(c for c, t in last_seen.items() if t <= watermark)[:40]
    assert len(done) >= 20
    snaps = build_snapshots([e for e in events if e.customer_id in done], [watermark], 30 * DAY)
    trained = sorted(map(tuple, load_artifact(shipped_model_dir()).model_rows(snaps.X).tolist()))
    served = sorted(tuple(json.loads(worker.get(f"/customers/{c}")[1])["features"].values()) for c in done)
    assert served == trained


def test_restart_recovers_state_from_the_changelog(stream, broker, tmp_path):
    before = stream["quiet_before"]
    assert before["known"] and before["orders"] == 10
    stream["worker"].stop()
    assert "output producer flushed and closed" in stream["worker"].log_tail()  # a clean stop, on SIGTERM
    again = WorkerProcess(broker.bootstrap, {k: v for k, v in stream["worker"].env.items() if k.startswith("CHURN_")
                                             and k not in ("CHURN_WEB_PORT",)}, tmp_path / "worker2.log")
    again.start()
    try:
        recovered = json.loads(again.get(f"/customers/{QUIET}")[1])
        assert (recovered["orders"], recovered["next_deadline"]) == (10, before["next_deadline"])
        extra = ev(999, "purchase", QUIET, 95, order_id="o-late", amount=5, currency="EUR")
        run(produce(broker.bootstrap, stream["settings"].input_topics[0], [json.dumps(extra).encode()]))
        assert consumed(again.wait_consumed(1)) == 1, "only the new purchase: the offsets were committed"
        after = json.loads(again.get(f"/customers/{QUIET}")[1])
        assert after["orders"] == 11, "the new purchase should add to the recovered state, not start afresh"
        # silence across the restart: the rebuilt deadline index fires the recovered customer's win-back
        # once events on every partition move the watermark past its lapse deadline
        settings = stream["settings"]
        assert not [t for t in triggers_of(stream, RESTARTED) if t["type"] == "win_back"]
        pacers, covered = [], set()
        for n in range(1000):
            cid = f"c-pacer-{n}"
            part = partition_of(cid.encode(), settings.topic_partitions)
            if part not in covered:
                covered.add(part)
                pacers.append(json.dumps(ev(2000 + n, "login", cid, 100)).encode())
            if len(covered) == settings.topic_partitions:
                break
        run(produce(broker.bootstrap, settings.input_topics[0], pacers))
        state = EMPTY
        for e in crafted_keyed():
            if e["customer_id"] == RESTARTED:
                state = apply_event(state, parse_event(json.dumps(e).encode()))
        deadline = state.last_activity + lapse_days(load_policy(settings.policy_path), state) * DAY
        # settled: the pacers are handled and every silence check up to the new watermark is taken
        samples = again.wait_consumed(1 + len(pacers))
        assert samples[("churn_event_time_watermark_seconds",)] > deadline
        records = run(read_to_end(broker.bootstrap, settings.win_back_topic))
        fired = [json.loads(r.value) for r in records if r.key == RESTARTED.encode()]
        assert [(t["rule"], t["event_time"]) for t in fired] == [("lapsed", format_time(deadline))]
    finally:
        again.stop()
