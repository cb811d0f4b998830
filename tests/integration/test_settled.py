"""The harness's "settled" condition (worker.harness.process.wait_settled) waits for the
silence timer's ticks as well as for the input: ticks travel through the worker's
repartition topic, after the input is committed.

Each customer opens a support ticket that nobody answers; a login on every partition then
moves the event-time watermark past every ticket's SLA. With CHURN_BATCH_SIZE=1 a batch
takes at most one due silence check, so the timer sends the rest as ticks; its interval is
longer than faust's commit interval (2.8 s), so the input is committed before the first
tick is sent and only the repartition topic's offsets tell the ticks still to be handled."""
from __future__ import annotations

import json

import pytest

from worker.core.events import format_time
from worker.core.partitioner import partition_of
from worker.harness.conditions import read_to_end
from worker.harness.process import WorkerProcess
from worker.tools.kafka_io import create_topics, produce

from .conftest import run, topic_env

pytestmark = pytest.mark.integration
T0 = 1767571200.0  # 2026-01-05
HOUR = 3600.0
CUSTOMERS = 400
SLA_S = 24 * HOUR  # the default policy's support.sla_hours


def event(kind: str, customer: str, t: float, **extra: str) -> bytes:
    return json.dumps({"schema_version": 1, "event_id": f"{customer}-{kind}-{t:.0f}", "type": kind,
                       "customer_id": customer, "occurred_at": format_time(t), **extra}).encode()


def pacers(partitions: int, t: float) -> list[bytes]:
    """One login at `t` on every partition: the event-time watermark reaches `t`."""
    out: dict[int, bytes] = {}
    n = 0
    while len(out) < partitions:
        cid = f"pacer-{n}"
        out.setdefault(partition_of(cid.encode(), partitions), event("login", cid, t))
        n += 1
    return list(out.values())


def test_settled_waits_for_every_tick_the_watermark_brings_due(broker, tmp_path):
    env = {**topic_env("settle"), "CHURN_BATCH_SIZE": "1", "CHURN_TIMER_INTERVAL_S": "3"}
    worker = WorkerProcess(broker.bootstrap, env, tmp_path / "worker.log")
    settings = worker.settings
    run(create_topics(broker.bootstrap, [*settings.input_topics, *settings.trigger_topics.values(),
                                         settings.dead_letter_topic], settings.topic_partitions))
    opened = {f"s-{n:03d}": T0 + n * 60.0 for n in range(CUSTOMERS)}
    tickets = [event("support", c, t, ticket_id=f"t-{c}", action="opened") for c, t in opened.items()]
    later = pacers(settings.topic_partitions, T0 + 2 * SLA_S)
    worker.start()
    try:
        run(produce(broker.bootstrap, settings.input_topics[0], tickets))
        run(produce(broker.bootstrap, settings.input_topics[0], later))
        samples = worker.wait_consumed(len(tickets) + len(later))
        assert samples[("churn_silence_checks_total", ("path", "timer"))] > CUSTOMERS / 2, "ticks were not needed"
        sent = [json.loads(r.value) for r in run(read_to_end(broker.bootstrap, settings.service_recovery_topic))]
        breaches = sorted((t["customer_id"], t["rule"], t["event_time"]) for t in sent)
        assert breaches == [(c, "sla_breach", format_time(t + SLA_S)) for c, t in sorted(opened.items())]
        assert samples[("churn_triggers_emitted_total", ("type", "service_recovery"))] == CUSTOMERS
    finally:
        worker.stop()
