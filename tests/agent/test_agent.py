"""The worker's shell under faust, without a broker, in the default (batch) input mode.

Each `feed.deliver(...)` is one fetch: records go through the batch consumer's own fetch
loop (worker.shell.batching) into the worker's batch handler, which sends to a fake sink
and writes a fake changelog, both acknowledged by the test. A delivery returns once the
handler is done and the records are acked, so every assertion follows a finished batch:
nothing waits for time to pass. One test runs the stream input mode (a faust agent under
`test_context()`), waiting on the metric that counts what it consumed.

Covers the shell around the pure core: batching, dead letters with source headers, the
repartition hop for unkeyed messages, table writes and triggers, silence checks, the
quarantine of an input the pipeline fails on.
"""
from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from aiokafka.structs import ConsumerRecord
from faust.types import TP

from worker.config import load_policy, load_settings
from worker.core.admission import KIND_HEADER, TICK
from worker.core.codec import decode_state
from worker.core.events import format_time
from worker.core.partitioner import partition_of
from worker.model.artifact import load_artifact
from worker.shell.app import ChurnApp
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
    """Collects what the app sends; every send is acknowledged a little later, as a broker's."""

    def __init__(self, journal: list) -> None:
        self.sent: list[tuple[str, bytes | None, bytes, list | None]] = []
        self.journal = journal

    async def __call__(self, topic, key, value, headers):
        self.sent.append((topic, key, value, headers))
        fut = asyncio.get_running_loop().create_future()
        fut.add_done_callback(lambda _: self.journal.append(f"acked {topic}"))
        asyncio.get_running_loop().call_soon(fut.set_result, None)  # after the send returns, not at once
        return fut

    def on(self, topic: str) -> list:
        return [m for m in self.sent if m[0] == topic]


class Feed:
    """Fetches for the batch consumer's fetch loop: `deliver` runs one fetch through it."""

    def __init__(self, churn: ChurnApp) -> None:
        self.churn = churn
        self.offsets: dict[TP, int] = {}
        self.acked: list = []  # messages the fetch loop acked, in order
        consumer = churn.app.consumer
        consumer.highwater = lambda tp: self.offsets.get(tp, 0)
        real_ack = consumer.ack

        def ack(message):
            self.acked.append(message)
            return real_ack(message)

        consumer.ack = ack
        churn.app.flow_control.resume()

    def keyed(self, value: bytes, customer: str, headers=()) -> ConsumerRecord:
        """As a producer keying by customer id would: the key's own partition."""
        key = customer.encode()
        return self.record(self.churn.settings.input_topics[0], partition_of(key, 4), key, value, headers)

    def tick(self, customer: str, deadline: float) -> ConsumerRecord:
        key = customer.encode()
        return self.record(self.churn.settings.repartition_topic, partition_of(key, 4), key,
                           json.dumps({"deadline": deadline}).encode(), [(KIND_HEADER, TICK)])

    def record(self, topic: str, partition: int, key: bytes | None, value: bytes, headers=()) -> ConsumerRecord:
        tp = TP(topic, partition)
        offset = self.offsets.get(tp, 0)
        self.offsets[tp] = offset + 1
        return ConsumerRecord(topic, partition, offset, int(time.time() * 1000), 0, key, value, None,
                              len(key or b""), len(value), list(headers))

    async def deliver(self, *records: ConsumerRecord) -> None:
        """One fetch of `records`, through BatchConsumer._drain_messages to the handler; returns
        when the loop has handled and acked them and asks for the next fetch."""
        consumer = self.churn.app.consumer
        fetch: dict[TP, list] = {}
        for r in records:
            fetch.setdefault(TP(r.topic, r.partition), []).append(r)
        fetcher = SimpleNamespace(_stopped=asyncio.Event())
        fetches = [fetch]

        async def wait_next_records(timeout):
            if fetches:
                got = fetches.pop(0)
                return got, set(got)
            fetcher._stopped.set()  # the loop asks again: the fetch is done
            return {}, None

        consumer._wait_next_records = wait_next_records
        await consumer._drain_messages(fetcher)


def make_churn(tmp_path, **overrides) -> tuple[ChurnApp, FakeSink]:
    settings = load_settings(kafka_bootstrap="127.0.0.1:1", clock="event", data_dir=tmp_path, batch_size=50,
                             model_dir=ROOT / "models" / "churn-v1", **overrides)
    journal: list[str] = []
    sink = FakeSink(journal)
    app = ChurnApp(settings, load_artifact(settings.model_dir), load_policy(settings.policy_path),
                   Metrics(), broker="kafka://127.0.0.1:1", sink=sink, changelog=FakeChangelog(journal))
    app.app.finalize()
    app.app.conf.store = "memory://"
    app.app.flow_control.resume()
    return app, sink


@pytest.fixture()
def churn(tmp_path):
    app, sink = make_churn(tmp_path)
    assert app.settings.input_mode == "batch"  # the default, as in production
    return app, sink, Feed(app)


def event(n: int, kind: str, customer: str, day: float, **extra) -> bytes:
    return json.dumps({"schema_version": 1, "event_id": f"a-{n}", "type": kind, "customer_id": customer,
                       "occurred_at": format_time(T0 + day * DAY), **extra}).encode()


def run(coro):
    return asyncio.run(coro)


def consumed(app, kind: str, outcome: str) -> float:
    return app.metrics.registry.get_sample_value("churn_events_consumed_total", {"type": kind, "outcome": outcome})


def repartitioned(app, kind: str) -> float:
    return app.metrics.registry.get_sample_value("churn_events_repartitioned_total", {"type": kind})


def test_events_fold_into_the_table_and_a_bad_rating_fires_service_recovery(churn):
    app, sink, feed = churn

    async def scenario():
        await feed.deliver(
            feed.keyed(event(1, "login", "c1", 1), "c1"),
            feed.keyed(event(2, "purchase", "c1", 1.1, order_id="o", amount=30, currency="EUR"), "c1"),
            feed.keyed(event(3, "support", "c1", 2, ticket_id="t", action="resolved", csat=1), "c1"),
            feed.keyed(event(2, "purchase", "c1", 1.1, order_id="o", amount=30, currency="EUR"), "c1"))  # again

    run(scenario())
    state = decode_state(app.table[b"c1"])
    assert (state.logins, state.orders, state.revenue, state.last_csat) == (1, 1, 30.0, 1)
    written = [(p, k, v) for batch in app.handler.write_changelog.batches for p, recs in batch.items() for k, v in recs]
    assert written[-1] == (partition_of(b"c1", 4), b"c1", app.table[b"c1"])  # the changelog has the state
    # the trigger is acknowledged before the state that marks it sent is written
    journal = sink.journal
    assert journal.index(f"acked {app.settings.service_recovery_topic}") < journal.index("changelog")
    recovery = [json.loads(v) for _, _, v, _ in sink.on(app.settings.service_recovery_topic)]
    assert [(t["customer_id"], t["rule"]) for t in recovery] == [("c1", "bad_rating")]
    assert consumed(app, "purchase", "duplicate") == 1


def test_the_stream_input_mode_runs_the_same_handler_in_a_faust_agent(tmp_path):
    app, sink = make_churn(tmp_path, input_mode="stream", batch_within_s=0.05)
    agent = app.app.agents["customer-events"]

    async def scenario():
        async with agent.test_context() as a:
            for n, (kind, day) in enumerate((("login", 1), ("support", 2))):
                key = b"c1"
                await a.put(event(n, kind, "c1", day, ticket_id="t", action="resolved", csat=1), key=key,
                            partition=partition_of(key, 4), wait=False)
            while (consumed(app, "login", "applied") or 0) + (consumed(app, "support", "applied") or 0) < 2:
                await asyncio.sleep(0.01)  # poll: the agent's take_events window closes in its own time

    run(scenario())
    assert decode_state(app.table[b"c1"]).logins == 1
    recovery = [json.loads(v) for _, _, v, _ in sink.on(app.settings.service_recovery_topic)]
    assert [(t["customer_id"], t["rule"]) for t in recovery] == [("c1", "bad_rating")]


def test_malformed_message_is_dead_lettered_with_its_source_and_the_rest_of_the_batch_survives(churn):
    app, sink, feed = churn
    run(feed.deliver(feed.keyed(b'{"schema_version":1,"type":"login"', "c2"),
                     feed.keyed(event(4, "login", "c2", 1), "c2")))
    (topic, _, value, headers), = sink.on(app.settings.dead_letter_topic)
    header = dict(headers)
    assert value == b'{"schema_version":1,"type":"login"'
    assert header["dlq.reason"] == b"bad_json" and header["dlq.source.offset"] == b"0"
    assert decode_state(app.table[b"c2"]).logins == 1


def test_unkeyed_event_is_forwarded_to_the_repartition_topic_not_applied(churn):
    app, sink, feed = churn
    run(feed.deliver(feed.record(app.settings.input_topics[0], 0, None, event(5, "login", "c3", 1))))
    forwarded = sink.on(app.settings.repartition_topic)
    assert [(k, json.loads(v)["event_id"]) for _, k, v, _ in forwarded] == [(b"c3", "a-5")]
    assert app.table.get(b"c3") is None
    assert repartitioned(app, "login") == 1 and consumed(app, "login", "applied") == 0


def test_a_silence_tick_fires_the_win_back_at_its_deadline(churn):
    app, sink, feed = churn

    async def scenario():
        await feed.deliver(*[feed.keyed(event(10 + i, "login", "c4", 1 + i), "c4") for i in range(5)])
        due = app.silence.index.pop_due(T0 + 100 * DAY, limit=10)  # what the timer takes
        assert [k for k, _ in due] == [b"c4"]
        await feed.deliver(feed.tick("c4", T0 + 100 * DAY))

    run(scenario())
    win_back = [json.loads(v) for _, _, v, _ in sink.on(app.settings.win_back_topic)]
    assert [t["rule"] for t in win_back] == ["lapsed"]
    assert win_back[0]["event_time"] < format_time(T0 + 100 * DAY)


def test_a_tick_on_an_input_topic_is_not_taken_for_one(churn):
    """Only this worker's own topic carries ticks: a producer cannot inject one."""
    app, sink, feed = churn
    forged = feed.record(app.settings.input_topics[0], partition_of(b"c4", 4), b"c4",
                         json.dumps({"deadline": T0}).encode(), [(KIND_HEADER, TICK)])
    run(feed.deliver(forged))
    (_, _, _, headers), = sink.on(app.settings.dead_letter_topic)
    assert dict(headers)["dlq.reason"] == b"bad_schema_version"  # parsed as an event, and not one
    assert app.metrics.registry.get_sample_value("churn_silence_checks_total", {"path": "batch"}) == 0


def _ready_with(app, partitions):
    """What the first assignment does, without a broker: the worker is ready and holds
    `partitions`."""
    app.assigned_once = True
    app.active_partitions = lambda: set(partitions)


def test_a_deadline_due_by_a_batch_is_checked_in_that_batch_not_sent_as_a_tick(churn):
    app, sink, feed = churn
    _ready_with(app, range(app.settings.topic_partitions))
    quiet, busy = "c4", "c4x"
    assert partition_of(quiet.encode(), 4) == partition_of(busy.encode(), 4)  # one partition: one watermark

    async def scenario():
        await feed.deliver(*[feed.keyed(event(30 + i, "login", quiet, 1 + i), quiet) for i in range(5)])
        assert len(app.silence.index) == 1  # its deadlines wait; event time is still at day 5
        await feed.deliver(feed.keyed(event(40, "login", busy, 100), busy))  # event time moves 95 days on

    run(scenario())
    win_back = [json.loads(v) for _, k, v, _ in sink.on(app.settings.win_back_topic) if k == quiet.encode()]
    assert [t["rule"] for t in win_back] == ["lapsed"]
    assert win_back[0]["event_time"] < format_time(T0 + 100 * DAY)  # decided at its own deadline
    assert sink.on(app.settings.repartition_topic) == []  # no tick went round through Kafka
    checks = app.metrics.registry.get_sample_value("churn_silence_checks_total", {"path": "batch"})
    assert checks >= 1
    assert decode_state(app.table[quiet.encode()]).fired["checked_until"] >= T0 + 5 * DAY


def test_a_due_deadline_of_a_partition_no_longer_held_is_not_checked(churn):
    app, sink, feed = churn
    quiet, busy = "c4", "c4x"
    part = partition_of(quiet.encode(), 4)

    async def scenario():
        await feed.deliver(*[feed.keyed(event(50 + i, "login", quiet, 1 + i), quiet) for i in range(5)])
        _ready_with(app, set(range(4)) - {part})  # revoked; the index not yet rebuilt
        await feed.deliver(feed.keyed(event(60, "login", busy, 100), busy))

    run(scenario())
    assert not [k for _, k, _, _ in sink.on(app.settings.win_back_topic) if k == quiet.encode()]
    assert "checked_until" not in decode_state(app.table[quiet.encode()]).fired
    assert decode_state(app.table[busy.encode()]).logins == 1  # the batch itself went through


def test_the_timer_sends_a_tick_per_due_deadline_only_when_no_batch_took_them(churn):
    """An idle worker's silence checks go round through its own topic as ticks, one
    deadline at a time, until none is due: the follow-up check, then the lapse."""
    app, sink, feed = churn
    _ready_with(app, range(app.settings.topic_partitions))
    now = T0 + 100 * DAY

    async def scenario():
        await feed.deliver(*[feed.keyed(event(90 + i, "login", "c7", 1 + i), "c7") for i in range(5)])
        for p in range(4):  # every partition at day 100, no batch since
            app.silence.saw(app.settings.input_topics[0], p, now)
        await app.silence.tick()  # a batch ran since the last tick: it leaves the due deadlines to batches
        assert sink.on(app.settings.repartition_topic) == []
        deadlines = []
        while (due := app.silence.index.earliest()) is not None and due <= now:
            await app.silence.tick()  # idle since the last tick: a tick per due customer
            topic, key, value, headers = sink.on(app.settings.repartition_topic)[-1]
            deadlines.append(json.loads(value)["deadline"])
            await feed.deliver(feed.record(topic, partition_of(key, 4), key, value, headers))
            await app.silence.tick()  # the batch took the ticks: this one sends nothing
        return deadlines

    deadlines = run(scenario())
    assert len(deadlines) == len(set(deadlines)) >= 2 and deadlines == sorted(deadlines)
    assert len(sink.on(app.settings.repartition_topic)) == len(deadlines)
    assert [json.loads(v)["rule"] for _, _, v, _ in sink.on(app.settings.win_back_topic)] == ["lapsed"]
    assert app.metrics.registry.get_sample_value("churn_silence_checks_total", {"path": "timer"}) == len(deadlines)


def test_a_batch_that_changes_no_state_writes_no_changelog(churn):
    app, sink, feed = churn

    async def scenario():
        record = feed.keyed(event(20, "login", "c5", 1), "c5")
        await feed.deliver(record)
        written = len(app.handler.write_changelog.batches)
        await feed.deliver(record)  # redelivered: the same record again
        return written

    written = run(scenario())
    assert written == 1 and len(app.handler.write_changelog.batches) == 1
    assert consumed(app, "login", "duplicate") == 1


def test_an_event_the_worker_fails_on_is_dead_lettered_and_the_rest_of_the_batch_is_applied(churn, monkeypatch):
    """One valid event that the pipeline cannot handle (a bug, simulated here) must not stop
    the worker on every restart: it goes to the dead-letter topic, the others are applied."""
    import worker.core.pipeline as pipeline

    real_apply = pipeline.fold

    def apply_or_fail(state, ev, *args):
        if ev.customer_id == "poison":
            raise ZeroDivisionError("simulated bug")
        return real_apply(state, ev, *args)

    monkeypatch.setattr(pipeline, "fold", apply_or_fail)
    app, sink, feed = churn
    run(feed.deliver(feed.keyed(event(30, "login", "c6", 1), "c6"),
                     feed.keyed(event(31, "login", "poison", 2), "poison"),
                     feed.keyed(event(32, "support", "c6", 2, ticket_id="t", action="resolved", csat=1), "c6")))
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

    def advance_or_fail(item, *args):
        if item.event is None and item.customer_id == "c4":
            raise ZeroDivisionError("simulated bug")
        return real_advance(item, *args)

    monkeypatch.setattr(pipeline, "_advance", advance_or_fail)
    app, sink, feed = churn
    _ready_with(app, range(app.settings.topic_partitions))

    async def scenario():
        await feed.deliver(*[feed.keyed(event(70 + i, "login", "c4", 1 + i), "c4") for i in range(5)])
        before = app.table[b"c4"]
        await feed.deliver(feed.keyed(event(80, "login", "c4x", 100), "c4x"))  # makes c4's deadlines due
        return before

    before = run(scenario())
    assert app.table[b"c4"] == before
    assert decode_state(app.table[b"c4x"]).logins == 1
    assert sink.on(app.settings.dead_letter_topic) == [] and sink.on(app.settings.win_back_topic) == []
    assert "a silence check failed and is dropped" in caplog.text


def test_a_batch_failing_in_most_items_stops_the_worker_instead(churn, monkeypatch):
    """A fault in the worker itself (every event fails) is not quarantined event by event:
    the worker exits before the batch is acked, so it is redelivered after a restart."""
    import worker.core.pipeline as pipeline
    import worker.shell.app as app_module

    def always_fail(state, ev, *args):
        raise ZeroDivisionError("simulated bug")

    class Exited(Exception):
        pass

    def exit_(code):
        exits.append(code)
        raise Exited  # os._exit does not return

    monkeypatch.setattr(pipeline, "fold", always_fail)
    exits: list[int] = []
    monkeypatch.setattr(app_module.os, "_exit", exit_)
    monkeypatch.setattr(app_module.logging, "shutdown", lambda: None)  # pytest's own handlers stay open
    app, sink, feed = churn
    records = [feed.keyed(event(40 + i, "login", f"d{i}", 1), f"d{i}") for i in range(12)]
    with pytest.raises(Exited):
        run(feed.deliver(*records))
    assert exits == [app_module.EXIT_BATCH_FAILED] == [70]
    assert sink.on(app.settings.dead_letter_topic) == []  # nothing quarantined: it is redelivered
    assert feed.acked == []  # nothing acked, so nothing committed


def test_the_first_assignment_moves_the_startup_heap_out_of_the_collectors_reach(churn, monkeypatch):
    import gc

    app, _, _ = churn
    monkeypatch.setattr(app, "active_partitions", lambda: set(range(app.settings.topic_partitions)))
    gc.unfreeze()
    try:
        run(app.on_rebalance_complete())
        frozen = gc.get_freeze_count()
        assert frozen > 0 and app.assigned_once
        later = [[] for _ in range(1000)]  # noqa: F841  objects made after start-up stay collectable
        run(app.on_rebalance_complete())
        assert gc.get_freeze_count() <= frozen  # not frozen again (frozen objects may be freed)
    finally:
        gc.unfreeze()


def test_the_index_rebuild_after_a_rebalance_keeps_only_the_partitions_held(churn):
    app, _, feed = churn
    customers = [f"r{i}" for i in range(20)]

    async def scenario():
        await feed.deliver(*[feed.keyed(event(200 + i, "login", c, 1), c) for i, c in enumerate(customers)])
        app.active_partitions = lambda: {0, 1}
        await app.on_rebalance_complete()

    run(scenario())
    held = {c.encode() for c in customers if partition_of(c.encode(), 4) in {0, 1}}
    assert 0 < len(held) < len(customers)
    assert app.handler.tracked == len(held) == len(app.silence.index)
    assert app.metrics.registry.get_sample_value("churn_customers_tracked") == len(held)


def test_a_recovered_state_that_cannot_be_read_is_left_out_and_the_worker_starts(churn):
    """One corrupt changelog record (or one written by a newer codec) must not stop start-up:
    it is counted and kept out of the index; that customer's events are dead-lettered
    rather than overwrite it, and everyone else goes on."""
    app, sink, feed = churn
    future_format = bytes([99]) + b"\x00" * 40

    async def scenario():
        await feed.deliver(feed.keyed(event(300, "login", "good", 1), "good"))
        app.table.data[b"broken"] = future_format  # as recovery would leave it
        app.active_partitions = lambda: set(range(4))
        await app.on_rebalance_complete()
        assert app.assigned_once and app.handler.tracked == 1 and len(app.silence.index) == 1
        await feed.deliver(feed.keyed(event(301, "login", "broken", 2), "broken"),
                           feed.keyed(event(302, "login", "good", 2), "good"))

    run(scenario())
    assert app.metrics.registry.get_sample_value("churn_state_records_quarantined_total") == 1
    assert app.table.data[b"broken"] == future_format  # not overwritten
    (_, key, _, headers), = sink.on(app.settings.dead_letter_topic)
    assert key == b"broken" and dict(headers)["dlq.reason"] == b"processing_failed"
    good = decode_state(app.table[b"good"])
    # counted in; after the rebalance the new sources have not all delivered, so the watermark
    # has not passed day 2 yet and the second login waits in the state to be folded
    assert good.logins + len(good.pending) == 2


def test_a_forwarded_event_forwarded_again_after_a_crash_is_recognised_by_its_origin(churn):
    """A worker that crashed after forwarding an unkeyed event, before committing it, forwards
    it again: a second copy at a new offset of the repartition topic. Its origin header
    names the same input record, so it is not applied twice, even with another event id."""
    app, sink, feed = churn
    value = event(400, "purchase", "fw", 1, order_id="o", amount=30, currency="EUR")
    unkeyed = feed.record(app.settings.input_topics[0], 0, None, value)

    async def scenario():
        await feed.deliver(unkeyed)
        await feed.deliver(unkeyed)  # redelivered after the crash: forwarded a second time
        first, second = sink.on(app.settings.repartition_topic)
        assert first[3] == second[3] and first[3][0][0] == "churn.origin"
        part = partition_of(b"fw", 4)
        await feed.deliver(*(feed.record(t, part, k, v, h) for t, k, v, h in (first, second)))
        # a producer-side copy of the same record with another event id: the origin still tells
        other_id = json.dumps({**json.loads(value), "event_id": "a-400-copy"}).encode()
        await feed.deliver(feed.record(app.settings.repartition_topic, part, b"fw", other_id, first[3]))

    run(scenario())
    assert decode_state(app.table[b"fw"]).orders == 1
    assert consumed(app, "purchase", "applied") == 1 and consumed(app, "purchase", "duplicate") == 2


def test_an_event_whose_state_another_worker_holds_is_sent_on_not_written(churn):
    """Ownership: the handler never writes a customer whose table partition it does not hold.
    Were an input partition assigned without its table partition (topics not co-partitioned),
    its events go to the holder through the repartition topic instead."""
    app, sink, feed = churn
    part = partition_of(b"own", 4)
    app.silence.held = set(range(4)) - {part}
    run(feed.deliver(feed.keyed(event(450, "login", "own", 1), "own")))
    assert app.table.get(b"own") is None
    (topic, key, _, headers), = sink.on(app.settings.repartition_topic)
    assert key == b"own" and headers[0][0] == "churn.origin"
    assert repartitioned(app, "login") == 1 and consumed(app, "login", "applied") == 0


def test_a_batch_whose_state_write_fails_leaves_the_store_as_it_was(churn):
    """The store takes a batch's states only once the changelog has them: run again after a
    failed write, the batch applies cleanly instead of finding its events already counted."""
    app, sink, feed = churn
    records = [feed.keyed(event(500 + i, "purchase", "w", 1 + i / 10, order_id=f"o{i}", amount=10, currency="EUR"),
                          "w") for i in range(3)]
    messages = [app.app.consumer._to_message(TP(r.topic, r.partition), r) for r in records]
    changelog = app.handler.write_changelog

    async def failing(partitioned):
        raise ConnectionError("the broker went away")

    async def scenario():
        app.handler.write_changelog = failing
        with pytest.raises(ConnectionError):
            await app.handler.handle(messages)
        assert app.table.get(b"w") is None and app.handler.tracked == 0
        app.handler.write_changelog = changelog
        await app.handler.handle(messages)  # redelivered after the restart

    run(scenario())
    assert decode_state(app.table[b"w"]).orders == 3 and app.handler.tracked == 1


def test_a_batch_failing_outside_the_pipeline_is_narrowed_down_not_crash_looped(churn, monkeypatch, caplog):
    """A failure after the pipeline (here: encoding one customer's trigger) used to stop the
    worker, and the restarted worker failed on the same batch again. The batch is now run
    again in parts: the message that fails alone is dead-lettered, the rest applied."""
    import worker.shell.handler as handler_module

    real_encode = handler_module.encode

    def encode_or_fail(payload):
        if payload.get("customer_id") == "n-bad":
            raise ValueError("simulated bug in trigger encoding")
        return real_encode(payload)

    monkeypatch.setattr(handler_module, "encode", encode_or_fail)
    app, sink, feed = churn
    rated = {"ticket_id": "t", "action": "resolved", "csat": 1}
    records = [feed.keyed(event(600, "login", "n-1", 1), "n-1"),
               feed.keyed(event(601, "support", "n-bad", 1, **rated), "n-bad"),
               feed.keyed(event(602, "support", "n-2", 1, **rated), "n-2"),
               feed.keyed(event(603, "login", "n-3", 1), "n-3")]
    run(feed.deliver(*records))
    (_, key, value, headers), = sink.on(app.settings.dead_letter_topic)
    assert key == b"n-bad" and json.loads(value)["event_id"] == "a-601"
    assert dict(headers)["dlq.reason"] == b"processing_failed" and b"simulated bug" in dict(headers)["dlq.detail"]
    assert app.table.get(b"n-bad") is None  # its state was never stored
    assert [decode_state(app.table[k]).activities + decode_state(app.table[k]).last_csat
            for k in (b"n-1", b"n-2", b"n-3")] == [1, 1, 1]
    assert [json.loads(v)["customer_id"] for _, _, v, _ in sink.on(app.settings.service_recovery_topic)] == ["n-2"]
    assert app.metrics.registry.get_sample_value("churn_batches_narrowed_total") == 1
    assert sorted((m.partition, m.offset) for m in feed.acked) == sorted((r.partition, r.offset) for r in records)


def test_a_batchs_marks_follow_its_forwards_to_every_repartition_partition(churn):
    """After a batch, what the worker has read of each input partition goes to every
    repartition partition, after the events the batch forwarded there; a batch that changes
    nothing of it sends none."""
    app, sink, feed = churn
    _ready_with(app, range(4))
    topic, repartition = app.settings.input_topics[0], app.settings.repartition_topic
    app.settings = app.silence.settings = app.silence.marks.settings = app.settings.model_copy(
        update={"mark_interval_s": 0.001})

    async def scenario():
        await app.on_rebalance_complete()
        await feed.deliver(feed.record(topic, 0, None, event(500, "login", "mk", 3)))
        sent = [(dict(h or ()).get(KIND_HEADER), v) for t, _, v, h in sink.on(repartition)]
        assert [kind for kind, _ in sent] == [None] + [b"mark"] * 4  # the forward first, then a mark each
        # partition 0 has come to day 3; the others are empty, so idle at once
        mark = json.loads(sent[-1][1])
        assert mark["marks"] == [[topic, 0, T0 + 3 * DAY]] + [[topic, p, None] for p in (1, 2, 3)]
        assert mark["writer"] == app.silence.marks.writer
        await feed.deliver(feed.record(topic, 0, None, event(500, "login", "mk", 3)))  # the same again
        assert len(sink.on(repartition)) == 5 + 1  # its forward; the marks say nothing new

    run(scenario())
    assert app.metrics.registry.get_sample_value("churn_watermark_marks_sent_total") == 4


def test_a_held_out_decision_is_recorded_on_the_holdout_topic_not_sent(tmp_path):
    policy = tmp_path / "everyone-held-out.toml"
    policy.write_text((ROOT / "worker" / "default_policy.toml").read_text()
                      .replace("percent = 0.0", "percent = 100.0"))
    app, sink = make_churn(tmp_path, policy_path=policy)
    feed = Feed(app)
    run(feed.deliver(feed.keyed(event(1, "support", "c9", 2, ticket_id="t", action="resolved", csat=1), "c9")))
    assert sink.on(app.settings.service_recovery_topic) == []
    [held] = [json.loads(v) for _, _, v, _ in sink.on(app.settings.holdout_topic)]
    assert (held["customer_id"], held["type"], held["rule"], held["held_out"]) == ("c9", "service_recovery",
                                                                                  "bad_rating", True)
    assert {"trigger_id", "risk_score", "policy_version", "state", "event_time"} <= held.keys()
    samples = app.metrics.registry.get_sample_value
    assert samples("churn_triggers_holdout_total", {"type": "service_recovery"}) == 1
    assert samples("churn_triggers_emitted_total", {"type": "service_recovery"}) == 0
