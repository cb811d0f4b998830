"""How the default (batch) input mode is wired into faust, without a broker."""
from __future__ import annotations

import asyncio
from pathlib import Path

from worker.config import load_policy, load_settings
from worker.model.artifact import load_artifact
from worker.shell.app import ChurnApp
from worker.shell.batching import BatchConsumer
from worker.shell.metrics import Metrics

ROOT = Path(__file__).resolve().parents[2]


def churn_app(tmp_path, **overrides) -> ChurnApp:
    settings = load_settings(kafka_bootstrap="127.0.0.1:1", data_dir=tmp_path,
                             model_dir=ROOT / "models" / "churn-v1", **overrides)
    return ChurnApp(settings, load_artifact(settings.model_dir), load_policy(settings.policy_path), Metrics())


def test_batch_mode_reads_inputs_and_forwarded_events_beneath_the_stream(tmp_path):
    churn = churn_app(tmp_path, input_topics="a,b", batch_size=123)
    app = churn.app
    assert isinstance(app.consumer, BatchConsumer)
    assert app.batch_topics == {"a", "b", churn.settings.repartition_topic}
    assert app.batch_size == 123 and app.batch_handler is not None
    assert "customer-events" not in app.agents  # no per-event agent in this mode


def test_stream_mode_runs_a_faust_agent_instead(tmp_path):
    churn = churn_app(tmp_path, input_mode="stream")
    assert churn.app.batch_handler is None and "customer-events" in churn.app.agents


def test_the_consumer_waits_for_fetches_as_configured(tmp_path):
    churn = churn_app(tmp_path, fetch_max_wait_ms=75)

    async def build():
        thread = churn.app.consumer._new_consumer_thread()
        return thread._create_worker_consumer(churn.app.transport)

    assert asyncio.run(build())._fetch_max_wait_ms == 75  # faust would fix 1500


def test_the_faust_internals_the_batch_consumer_relies_on_are_there(tmp_path):
    """worker.shell.batching re-implements faust's fetch loop on these; a faust upgrade that
    renames or drops one must fail here, not in production."""
    from faust.transport.consumer import Consumer

    for name in ("_wait_next_records", "_add_gap", "perform_seek", "track_message", "ack", "commit",
                 "wait_first", "_to_message", "highwater"):
        assert callable(getattr(BatchConsumer, name)), name
    consumer = churn_app(tmp_path).app.consumer
    for name in ("_read_offset", "_buffered_partitions", "_commit_every", "_n_acked", "flow_active", "callback",
                 "suspend_flow"):
        assert hasattr(consumer, name), name
    assert "_drain_messages" in vars(Consumer)  # the loop BatchConsumer replaces


def test_sends_are_bounded_and_track_their_topics(tmp_path):
    from aiokafka.client import AIOKafkaClient

    from worker.shell import kafka_client

    churn = churn_app(tmp_path, produce_timeout_s=45)
    assert churn.app.conf.producer_request_timeout == 45  # faust's default: 20 minutes
    assert churn.producer.timeout_s == 45
    assert kafka_client.installed()  # see worker/kafka_client.py
    assert "_wait_on_metadata" in vars(AIOKafkaClient) and callable(AIOKafkaClient.add_topic)


def test_the_workers_own_messages_go_through_its_aiokafka_producer(tmp_path):
    """Triggers, ticks and dead letters are sent with aiokafka directly, not through faust's
    per-message send; a tick or forwarded event goes to its customer's partition."""
    import asyncio

    from worker.core.partitioner import partition_of

    churn = churn_app(tmp_path)
    sent = []

    async def send(topic, key, value, headers, partition=None):
        sent.append((topic, key, partition))
        return "future"

    churn.producer.send = send
    s = churn.settings

    async def both():
        return [await churn.send(s.repartition_topic, b"c-42", b"{}", [("churn.kind", b"tick")]),
                await churn.send(s.trigger_topics["win_back"], b"c-42", b"{}", None)]

    assert asyncio.run(both()) == ["future", "future"]
    assert sent == [(s.repartition_topic, b"c-42", partition_of(b"c-42", s.topic_partitions)),
                    (s.trigger_topics["win_back"], b"c-42", None)]  # the default partitioner's choice


def fetch_loop(churn, fetches, *, acquire=None, batched=True):
    """Run BatchConsumer._drain_messages over `fetches` (one records map each, then stop),
    with the handler recording what it is given (not `batched`: no handler, as in the
    stream input mode)."""
    from types import SimpleNamespace

    app, consumer = churn.app, churn.app.consumer
    delivered: list[list] = []

    async def handler(batch):
        assert not any(m.acked for m in batch)  # acked once the handler is done with them
        delivered.append(batch)

    async def wait_next_records(timeout):
        if fetches:
            records = fetches.pop(0)
            return records, set(records)
        fetcher._stopped.set()
        return {}, None

    fetcher = SimpleNamespace(_stopped=asyncio.Event())
    app.batch_handler = handler if batched else None
    consumer._wait_next_records = wait_next_records
    consumer.highwater = lambda tp: 100
    if acquire is not None:
        app.flow_control.acquire = acquire
    app.flow_control.resume()
    asyncio.run(consumer._drain_messages(fetcher))
    assert all(m.acked for batch in delivered for m in batch)
    return [[(m.tp.partition, m.offset) for m in batch] for batch in delivered]


def records(topic, partition, *offsets):
    from aiokafka.structs import ConsumerRecord
    from faust.types import TP

    tp = TP(topic, partition)
    return tp, [ConsumerRecord(topic, partition, o, 0, 0, b"k", b"{}", None, 1, 2, []) for o in offsets]


def test_fetched_records_reach_the_handler_in_one_batch_and_are_acked(tmp_path):
    churn = churn_app(tmp_path)
    topic = churn.settings.input_topics[0]
    fetch = dict([records(topic, 0, 0, 1), records(topic, 1, 5)])
    assert fetch_loop(churn, [fetch]) == [[(0, 0), (0, 1), (1, 5)]]


def test_a_fetch_that_straddles_a_rebalance_is_dropped_not_delivered(tmp_path, caplog):
    """faust seeks back to the committed offsets after a rebalance; records fetched under
    the old assignment must not reach the handler: their partition may be another
    worker's now."""
    churn = churn_app(tmp_path)
    app = churn.app
    topic = churn.settings.input_topics[0]

    async def rebalance_meanwhile():
        app.consumer_generation_id += 1

    generation = app.consumer_generation_id
    fetch = dict([records(topic, 0, 0, 1)])
    with caplog.at_level("INFO"):
        assert fetch_loop(churn, [fetch], acquire=rebalance_meanwhile) == []
    assert "dropped 2 records fetched before a rebalance" in caplog.text
    assert app.consumer_generation_id == generation + 1


def test_a_rebalance_while_a_changelog_record_is_taken_leaves_the_read_offsets_to_it(tmp_path):
    """A fetch holds a standby's changelog record and input records. While faust's conductor
    takes the changelog record the rebalance runs to its end: its seek sets the read offsets
    to the committed ones. The fetch's input records must not be delivered, nor marked read:
    a read offset moved past them would skip them when fetched again, and faust never
    commits past that hole (the partition's committed offset stops for good)."""
    from faust.types import TP

    churn = churn_app(tmp_path)
    app, consumer = churn.app, churn.app.consumer
    topic = churn.settings.input_topics[0]
    changelog, records_ = records("churn-worker-customer-state-changelog", 0, 7, 8)
    seeks, conducted = [], []

    async def conductor(message):  # the rebalance completes while the conductor has the first
        conducted.append(message.offset)
        if len(conducted) == 1:
            app.consumer_generation_id += 1
            consumer._read_offset[TP(topic, 0)] = 10  # what the new assignment's seek sets

    async def perform_seek():
        seeks.append(dict(consumer._read_offset))

    async def wait_first(taken, suspended):  # faust's, on the loop that runs this test
        suspended.close()
        await taken

    consumer.callback, consumer.wait_first = conductor, wait_first
    consumer.perform_seek = perform_seek
    fetch = {changelog: records_, **dict([records(topic, 0, 10, 11, 12)])}
    assert fetch_loop(churn, [fetch]) == []
    assert consumer._read_offset[TP(topic, 0)] == 10  # as the seek left it: 10 to 12 are fetched again
    assert len(seeks) == 1  # and the loop seeks back to the committed offsets itself
    assert conducted == [7, 8]  # recovery's records all reach it: it would wait for good for one dropped


def test_records_fetched_before_the_assignments_seek_wait_for_it(tmp_path, caplog):
    """faust lets newly assigned partitions be fetched at the end of table recovery, a moment
    before its seek to the committed offsets (it is still rebalancing). A fetch from a
    position that seek has not set (here near the partition's end, as seen with a partition
    taken over from a killed worker) must not reach the handler: applied first, its records
    would make the ones before them look like redeliveries. It is dropped, the loop seeks to
    the committed offsets, and the records come in order from there."""
    from faust.types import TP

    churn = churn_app(tmp_path)
    app, consumer = churn.app, churn.app.consumer
    topic = churn.settings.input_topics[0]
    seeks = []

    async def perform_seek():  # the seek, then faust's end of the rebalance
        seeks.append(app.rebalancing)
        consumer._read_offset[TP(topic, 0)] = consumer._committed_offset[TP(topic, 0)] = 140
        app.rebalancing = False

    async def seek(tp, offset):  # back to where the fetch began, before the seek to the committed offsets
        seeks.append((tp.partition, offset))

    consumer.perform_seek, consumer.seek = perform_seek, seek
    app.rebalancing = True
    early, after_seek = dict([records(topic, 0, 441, 442)]), dict([records(topic, 0, 140, 141)])
    with caplog.at_level("INFO"):
        assert fetch_loop(churn, [early, after_seek]) == [[(0, 140), (0, 141)]]
    assert seeks == [(0, 441), True]
    assert "dropped 2 records fetched across a rebalance" in caplog.text
    assert f"began past the committed offset (read again from it): {topic}[0] from 441, committed 140" in caplog.text


def test_a_dropped_fetch_of_a_partition_with_no_committed_offset_is_fetched_again(tmp_path):
    """The seek to the committed offsets leaves a partition with none where it is (aiokafka
    seeks only to a committed offset above 0): without going back to the first dropped
    record, the records dropped would never come again (`make chaos` without it: each
    restarted worker dropped a fetch of 2,000 records, and 298 of 798 customers ended
    under-counted)."""
    from faust.types import TP

    churn = churn_app(tmp_path)
    app, consumer = churn.app, churn.app.consumer
    topic = churn.settings.input_topics[0]
    fetches = [dict([records(topic, 0, 0, 1, 2)])]
    seeks = []

    async def perform_seek():  # nothing committed: no partition moves
        app.rebalancing = False

    async def seek(tp, offset):  # the fetcher reads on from there
        seeks.append((tp, offset))
        fetches.append(dict([records(topic, tp.partition, *range(offset, 3))]))

    consumer.perform_seek, consumer.seek = perform_seek, seek
    app.rebalancing = True
    delivered = fetch_loop(churn, fetches)
    assert seeks == [(TP(topic, 0), 0)]
    assert delivered == [[(0, 0), (0, 1), (0, 2)]]


def test_in_the_stream_mode_the_agents_get_the_inputs_and_also_only_after_the_seek(tmp_path):
    """Without a batch handler (CHURN_INPUT_MODE=stream) the input records go to faust's
    conductor, which feeds the agent, record by record as faust's own loop would; a fetch
    from before the assignment's seek is dropped there too."""
    churn = churn_app(tmp_path, input_mode="stream")
    app, consumer = churn.app, churn.app.consumer
    topic = churn.settings.input_topics[0]
    conducted, seeks = [], []

    async def conductor(message):
        conducted.append((message.tp.partition, message.offset))

    async def wait_first(taken, suspended):
        suspended.close()
        await taken

    async def perform_seek():
        seeks.append(app.rebalancing)
        app.rebalancing = False

    async def seek(tp, offset):
        seeks.append((tp.partition, offset))

    consumer.callback, consumer.wait_first, consumer.perform_seek = conductor, wait_first, perform_seek
    consumer.seek = seek
    app.rebalancing = True
    early, after_seek = dict([records(topic, 0, 441, 442)]), dict([records(topic, 0, 140, 141)])
    assert fetch_loop(churn, [early, after_seek], batched=False) == []  # nothing batched
    assert conducted == [(0, 140), (0, 141)] and seeks == [(0, 441), True]


def test_a_refused_seek_while_flow_is_stopped_is_logged_and_the_loop_goes_on(tmp_path, caplog):
    churn = churn_app(tmp_path)
    consumer = churn.app.consumer
    topic = churn.settings.input_topics[0]
    seeks = []

    async def perform_seek():
        seeks.append(consumer.flow_active)
        consumer.flow_active = True  # what the rebalance's own seek ends with
        raise RuntimeError("rebalance in progress")

    consumer.perform_seek = perform_seek
    consumer.flow_active = False
    first, second = dict([records(topic, 0, 0)]), dict([records(topic, 0, 0, 1)])
    with caplog.at_level("WARNING"):
        delivered = fetch_loop(churn, [first, second])
    assert seeks == [False]  # the first fetch is not delivered: flow was stopped
    assert delivered == [[(0, 0), (0, 1)]]
    assert "seek to the committed offsets failed" in caplog.text


def test_the_handler_and_the_timer_starting_the_producer_at_once_share_one(tmp_path, monkeypatch):
    import aiokafka

    made = []

    class Producer:
        def __init__(self, **config):
            made.append(self)

        async def start(self):
            await asyncio.sleep(0)  # the broker answers later: the other caller arrives meanwhile

    monkeypatch.setattr(aiokafka, "AIOKafkaProducer", Producer)
    churn = churn_app(tmp_path)

    async def both():
        return await asyncio.gather(churn.producer.started(), churn.producer.started())

    first, second = asyncio.run(both())
    assert first is second and len(made) == 1


def test_shutdown_flushes_and_closes_the_output_producer_and_nothing_reopens_it(tmp_path, monkeypatch):
    import aiokafka
    import pytest

    made = []

    class Producer:
        def __init__(self, **config):
            self.stopped = False
            made.append(self)

        async def start(self):
            pass

        async def stop(self):  # aiokafka's stop sends what is buffered, then closes
            self.stopped = True

    monkeypatch.setattr(aiokafka, "AIOKafkaProducer", Producer)
    churn = churn_app(tmp_path)
    churn.assigned_once = True

    async def run():
        await churn.producer.started()
        assert churn.is_ready()
        await churn.app.on_before_shutdown.send()  # what faust sends once the consumer has stopped
        assert made[0].stopped and not churn.is_ready()  # not ready: the timer sends no more ticks
        with pytest.raises(RuntimeError, match="closed"):
            await churn.producer.started()

    asyncio.run(run())
    assert len(made) == 1
