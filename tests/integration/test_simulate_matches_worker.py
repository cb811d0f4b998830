"""`policy simulate` replays history through the worker's own pipeline: the live worker on
the event clock and the simulation, fed the same history, send the same trigger ids."""
from __future__ import annotations

import json

import pytest

from worker.config import load_policy
from worker.core.events import parse_valid
from worker.harness.conditions import read_to_end
from worker.harness.process import WorkerProcess
from worker.model import shipped_model_dir
from worker.model.artifact import load_artifact
from worker.tools.generate import generate
from worker.tools.kafka_io import create_topics, produce
from worker.tools.simulate import replay

from .conftest import ROOT, run, topic_env

pytestmark = pytest.mark.integration


def test_the_simulation_sends_the_trigger_ids_the_live_worker_sends(broker, tmp_path):
    env = topic_env("simlive")
    messages = [json.dumps(e).encode() for e in generate(customers=60, days=150, seed=21,
                                                         start="2026-01-05T00:00:00+00:00")]
    topic = env["CHURN_INPUT_TOPICS"]
    run(create_topics(broker.bootstrap, [topic], 4))
    run(produce(broker.bootstrap, topic, messages))
    worker = WorkerProcess(broker.bootstrap, env, tmp_path / "worker.log").start()
    try:
        worker.wait_consumed(len(messages))
        settings = worker.settings
        live = {json.loads(r.value)["trigger_id"] for t in settings.trigger_topics.values()
                for r in run(read_to_end(broker.bootstrap, t))}
    finally:
        worker.stop()

    events = sorted((parse_valid(m) for m in messages), key=lambda e: (e.occurred_at, e.event_id))
    policy = load_policy(ROOT / "worker" / "default_policy.toml")
    simulated = replay(events, load_artifact(shipped_model_dir()), policy, events[-1].occurred_at)
    ids = {t["trigger_id"] for t in simulated["triggers"] if not t.get("held_out")}
    assert len(live) >= 20
    assert ids == live, (sorted(ids - live)[:3], sorted(live - ids)[:3])
