"""The faust agent under faust's own test_context(): no broker, a fake sink.

Covers the shell around the pure core: batching, dead letters with source
headers, the repartition hop for unkeyed messages, table writes and triggers.
"""
from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from worker.config import load_policy, load_settings
from worker.core.codec import decode_state
from worker.core.events import format_time
from worker.model.artifact import load_artifact
from worker.shell.app import KIND_HEADER, TICK, ChurnApp, partition_of
from worker.shell.metrics import Metrics

ROOT = Path(__file__).resolve().parents[2]
T0 = 1767571200.0
DAY = 86400.0


class FakeChangelog:
    """Records the changelog batches the app writes; acknowledged at once."""

    def __init__(self, journal: list) -> None:
        self.batches: list[dict] = []
        self.journal = journal

    async def __call__(self, partitioned):
        self.batches.append(partitioned)
        self.journal.append("changelog")
        return []


class FakeSink:
    """Collects what the app sends; every send is acknowledged at once."""

    def __init__(self, journal: list) -> None:
        self.sent: list[tuple[str, bytes | None, bytes, list | None]] = []
        self.journal = journal

    async def __call__(self, topic, key, value, headers):
        self.sent.append((topic, key, value, headers))
        fut = asyncio.get_running_loop().create_future()
        fut.add_done_callback(lambda _: self.journal.append(f"acked {topic}"))
        asyncio.get_running_loop().call_later(0.01, fut.set_result, None)  # the broker answers later
        return fut

    def on(self, topic: str) -> list:
        return [m for m in self.sent if m[0] == topic]


@pytest.fixture()
def churn(tmp_path):
    settings = load_settings(kafka_bootstrap="127.0.0.1:1", clock="event", data_dir=tmp_path, input_mode="stream",
                             batch_size=50, batch_within_s=0.05, model_dir=ROOT / "models" / "churn-v1")
    journal: list[str] = []
    sink = FakeSink(journal)
    app = ChurnApp(settings, load_artifact(settings.model_dir), load_policy(settings.policy_path),
                   Metrics(), broker="kafka://127.0.0.1:1", sink=sink, changelog=FakeChangelog(journal))
    app.app.finalize()
    app.app.conf.store = "memory://"
    app.app.flow_control.resume()
    return app, sink


def event(n: int, kind: str, customer: str, day: float, **extra) -> bytes:
    return json.dumps({"schema_version": 1, "event_id": f"a-{n}", "type": kind, "customer_id": customer,
                       "occurred_at": format_time(T0 + day * DAY), **extra}).encode()


async def put_keyed(agent, churn_app, value: bytes, customer: str, headers=None):
    """As a producer keying by customer id would: the key's own partition. test_context
    numbers offsets from 0 in put order."""
    key = customer.encode()
    part = partition_of(key, churn_app.settings.topic_partitions)
    await agent.put(value, key=key, partition=part, headers=headers or [], wait=False)


def run(coro):
    return asyncio.run(coro)


def test_events_fold_into_the_table_and_a_bad_rating_fires_service_recovery(churn):
    app, sink = churn
    agent = app.app.agents["customer-events"]

    async def scenario():
        async with agent.test_context() as a:
            await put_keyed(a, app, event(1, "login", "c1", 1), "c1")
            await put_keyed(a, app, event(2, "purchase", "c1", 1.1, order_id="o", amount=30, currency="EUR"),
                            "c1")
            await put_keyed(a, app, event(3, "support", "c1", 2, ticket_id="t", action="resolved", csat=1),
                            "c1")
            await put_keyed(a, app, event(2, "purchase", "c1", 1.1, order_id="o", amount=30, currency="EUR"),
                            "c1")  # redelivered
            await asyncio.sleep(0.3)  # let the take_events window close

    run(scenario())
    state = decode_state(app.table[b"c1"])
    assert (state.logins, state.orders, state.revenue, state.last_csat) == (1, 1, 30.0, 1)
    written = [(p, k, v) for batch in app.write_changelog.batches for p, recs in batch.items() for k, v in recs]
    assert written[-1] == (partition_of(b"c1", 4), b"c1", app.table[b"c1"])  # the changelog has the state
    # the trigger is acknowledged before the state that marks it sent is written
    journal = sink.journal
    assert journal.index(f"acked {app.settings.service_recovery_topic}") < journal.index("changelog")
    recovery = [json.loads(v) for _, _, v, _ in sink.on(app.settings.service_recovery_topic)]
    assert [(t["customer_id"], t["rule"]) for t in recovery] == [("c1", "bad_rating")]
    registry = app.metrics.registry
    assert registry.get_sample_value("churn_events_consumed_total", {"type": "purchase", "outcome": "duplicate"}) == 1


def test_malformed_message_is_dead_lettered_with_its_source_and_the_rest_of_the_batch_survives(churn):
    app, sink = churn
    agent = app.app.agents["customer-events"]

    async def scenario():
        async with agent.test_context() as a:
            await put_keyed(a, app, b'{"schema_version":1,"type":"login"', "c2")
            await put_keyed(a, app, event(4, "login", "c2", 1), "c2")
            await asyncio.sleep(0.3)

    run(scenario())
    (topic, _, value, headers), = sink.on(app.settings.dead_letter_topic)
    header = dict(headers)
    assert value == b'{"schema_version":1,"type":"login"'
    assert header["dlq.reason"] == b"bad_json" and header["dlq.source.offset"] == b"0"
    assert decode_state(app.table[b"c2"]).logins == 1


def test_unkeyed_event_is_forwarded_to_the_repartition_topic_not_applied(churn):
    app, sink = churn
    agent = app.app.agents["customer-events"]

    async def scenario():
        async with agent.test_context() as a:
            await a.put(event(5, "login", "c3", 1), key=None, partition=0, wait=False)
            await asyncio.sleep(0.3)

    run(scenario())
    forwarded = sink.on(app.settings.repartition_topic)
    assert [(k, json.loads(v)["event_id"]) for _, k, v, _ in forwarded] == [(b"c3", "a-5")]
    assert app.table.get(b"c3") is None


def test_a_silence_tick_fires_the_win_back_at_its_deadline(churn):
    app, sink = churn
    agent = app.app.agents["customer-events"]

    async def scenario():
        async with agent.test_context() as a:
            for i in range(5):
                await put_keyed(a, app, event(10 + i, "login", "c4", 1 + i), "c4")
            await asyncio.sleep(0.3)
            key = b"c4"
            deadline = app.index.pop_due(T0 + 100 * DAY, limit=10)
            assert [k for k, _ in deadline] == [key]
            await a.put(json.dumps({"deadline": T0 + 100 * DAY}).encode(), key=key,
                        partition=partition_of(key, app.settings.topic_partitions),
                        headers=[(KIND_HEADER, TICK)], wait=False)
            await asyncio.sleep(0.3)

    run(scenario())
    win_back = [json.loads(v) for _, _, v, _ in sink.on(app.settings.win_back_topic)]
    assert [t["rule"] for t in win_back] == ["lapsed"]
    assert win_back[0]["event_time"] < format_time(T0 + 100 * DAY)


def _ready_with(app, partitions):
    """What the first assignment does, without a broker: the worker is ready and holds
    `partitions`."""
    app.assigned_once = True
    app.active_partitions = lambda: set(partitions)


def test_a_deadline_due_by_a_batch_is_checked_in_that_batch_not_sent_as_a_tick(churn):
    app, sink = churn
    agent = app.app.agents["customer-events"]
    _ready_with(app, range(app.settings.topic_partitions))
    quiet, busy = "c4", "c4x"
    assert partition_of(quiet.encode(), 4) == partition_of(busy.encode(), 4)  # one partition: one watermark

    async def scenario():
        async with agent.test_context() as a:
            for i in range(5):
                await put_keyed(a, app, event(30 + i, "login", quiet, 1 + i), quiet)
            await asyncio.sleep(0.3)
            assert len(app.index) == 1  # its deadlines wait; event time is still at day 5
            await put_keyed(a, app, event(40, "login", busy, 100), busy)  # event time moves 95 days on
            await asyncio.sleep(0.3)

    run(scenario())
    win_back = [json.loads(v) for _, k, v, _ in sink.on(app.settings.win_back_topic) if k == quiet.encode()]
    assert [t["rule"] for t in win_back] == ["lapsed"]
    assert win_back[0]["event_time"] < format_time(T0 + 100 * DAY)  # decided at its own deadline
    assert sink.on(app.settings.repartition_topic) == []  # no tick went round through Kafka
    checks = app.metrics.registry.get_sample_value("churn_silence_checks_total", {"path": "batch"})
    assert checks >= 1
    assert decode_state(app.table[quiet.encode()]).fired["checked_until"] >= T0 + 5 * DAY


def test_a_due_deadline_of_a_partition_no_longer_held_is_not_checked(churn):
    app, sink = churn
    agent = app.app.agents["customer-events"]
    quiet, busy = "c4", "c4x"
    part = partition_of(quiet.encode(), 4)

    async def scenario():
        async with agent.test_context() as a:
            for i in range(5):
                await put_keyed(a, app, event(50 + i, "login", quiet, 1 + i), quiet)
            await asyncio.sleep(0.3)
            _ready_with(app, set(range(4)) - {part})  # revoked; the index not yet rebuilt
            await put_keyed(a, app, event(60, "login", busy, 100), busy)
            await asyncio.sleep(0.3)

    run(scenario())
    assert not [k for _, k, _, _ in sink.on(app.settings.win_back_topic) if k == quiet.encode()]
    assert "checked_until" not in decode_state(app.table[quiet.encode()]).fired


def test_a_batch_that_changes_no_state_writes_no_changelog(churn):
    app, sink = churn
    agent = app.app.agents["customer-events"]

    async def scenario():
        async with agent.test_context() as a:
            await put_keyed(a, app, event(20, "login", "c5", 1), "c5")
            await asyncio.sleep(0.3)
            written = len(app.write_changelog.batches)
            await put_keyed(a, app, event(20, "login", "c5", 1), "c5")  # redelivered
            await asyncio.sleep(0.3)
            return written

    written = run(scenario())
    assert written == 1 and len(app.write_changelog.batches) == 1
    assert app.metrics.registry.get_sample_value(
        "churn_events_consumed_total", {"type": "login", "outcome": "duplicate"}) == 1


def test_an_event_the_worker_fails_on_is_dead_lettered_and_the_rest_of_the_batch_is_applied(churn, monkeypatch):
    """One valid event that the pipeline cannot handle (a bug, simulated here) must not stop
    the worker on every restart: it goes to the dead-letter topic, the others are applied."""
    import worker.core.pipeline as pipeline

    real_apply = pipeline.apply_event

    def apply_or_fail(state, ev):
        if ev.customer_id == "poison":
            raise ZeroDivisionError("simulated bug")
        return real_apply(state, ev)

    monkeypatch.setattr(pipeline, "apply_event", apply_or_fail)
    app, sink = churn
    agent = app.app.agents["customer-events"]

    async def scenario():
        async with agent.test_context() as a:
            await put_keyed(a, app, event(30, "login", "c6", 1), "c6")
            await put_keyed(a, app, event(31, "login", "poison", 1), "poison")
            await put_keyed(a, app, event(32, "support", "c6", 2, ticket_id="t", action="resolved", csat=1), "c6")
            await asyncio.sleep(0.3)

    run(scenario())
    (_, key, value, headers), = sink.on(app.settings.dead_letter_topic)
    assert key == b"poison" and json.loads(value)["event_id"] == "a-31"
    header = dict(headers)
    assert header["dlq.reason"] == b"processing_failed" and b"ZeroDivisionError" in header["dlq.detail"]
    assert app.table.get(b"poison") is None
    state = decode_state(app.table[b"c6"])
    assert (state.logins, state.last_csat) == (1, 1)  # both of c6's events, in order
    recovery = [json.loads(v) for _, _, v, _ in sink.on(app.settings.service_recovery_topic)]
    assert [t["customer_id"] for t in recovery] == ["c6"]
    assert app.metrics.registry.get_sample_value(
        "churn_events_dead_lettered_total", {"reason": "processing_failed"}) == 1


def test_a_silence_check_the_worker_fails_on_is_dropped_and_the_batch_is_applied(churn, monkeypatch, caplog):
    """A due check has no message to dead-letter: it is logged and dropped (the customer's
    state stays as it was; its next event re-arms the deadline), the rest goes on."""
    import worker.core.pipeline as pipeline

    real_advance = pipeline._advance

    def advance_or_fail(item, state, ctx, points, result):
        if item.event is None and item.customer_id == "c4":
            raise ZeroDivisionError("simulated bug")
        return real_advance(item, state, ctx, points, result)

    monkeypatch.setattr(pipeline, "_advance", advance_or_fail)
    app, sink = churn
    agent = app.app.agents["customer-events"]
    _ready_with(app, range(app.settings.topic_partitions))

    async def scenario():
        async with agent.test_context() as a:
            for i in range(5):
                await put_keyed(a, app, event(70 + i, "login", "c4", 1 + i), "c4")
            await asyncio.sleep(0.3)
            before = app.table[b"c4"]
            await put_keyed(a, app, event(80, "login", "c4x", 100), "c4x")  # makes c4's deadlines due
            await asyncio.sleep(0.3)
            return before

    before = run(scenario())
    assert app.table[b"c4"] == before
    assert decode_state(app.table[b"c4x"]).logins == 1
    assert sink.on(app.settings.dead_letter_topic) == [] and sink.on(app.settings.win_back_topic) == []
    assert "a silence check failed and is dropped" in caplog.text


def test_a_batch_failing_in_most_items_stops_the_worker_instead(churn, monkeypatch):
    """A fault in the worker itself (every event fails) is not quarantined event by event."""
    import worker.core.pipeline as pipeline
    import worker.shell.app as app_module

    def always_fail(state, ev):
        raise ZeroDivisionError("simulated bug")

    monkeypatch.setattr(pipeline, "apply_event", always_fail)
    exits: list[int] = []
    monkeypatch.setattr(app_module.os, "_exit", lambda code: exits.append(code))
    monkeypatch.setattr(app_module.logging, "shutdown", lambda: None)  # pytest's own handlers stay open
    app, sink = churn
    agent = app.app.agents["customer-events"]

    async def scenario():
        async with agent.test_context() as a:
            for i in range(12):
                await put_keyed(a, app, event(40 + i, "login", f"d{i}", 1), f"d{i}")
            await asyncio.sleep(0.3)

    run(scenario())
    assert exits and exits[0] == 70
    assert sink.on(app.settings.dead_letter_topic) == []  # nothing quarantined: it is redelivered


def test_the_first_assignment_moves_the_startup_heap_out_of_the_collectors_reach(churn, monkeypatch):
    import gc

    app, _ = churn
    monkeypatch.setattr(app, "active_partitions", lambda: set(range(app.settings.topic_partitions)))
    gc.unfreeze()
    try:
        run(app._on_rebalance_complete())
        frozen = gc.get_freeze_count()
        assert frozen > 0 and app.assigned_once
        later = [[] for _ in range(1000)]  # noqa: F841  objects made after start-up stay collectable
        run(app._on_rebalance_complete())
        assert gc.get_freeze_count() == frozen
    finally:
        gc.unfreeze()
