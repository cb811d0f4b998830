"""The broker connection cut for 30 s, mid-stream, by a loopback proxy the test controls: the
worker reports the outage on /ready while it lasts, recovers by itself, and ends with the
same counts and trigger ids as a run where nothing went wrong.

The broker advertises the proxy's port, so every connection of every client (the worker's
consumer, its producer, the group coordinator) goes through the proxy and is cut with it.
"""
from __future__ import annotations

import time
from types import SimpleNamespace

import pytest

from worker.harness.broker import EmbeddedBroker, free_port
from worker.harness.process import POLL_S, WorkerProcess, wait_settled
from worker.harness.proxy import CutProxy
from worker.tools.kafka_io import create_topics, produce

from .conftest import run, topic_env
from .test_faults import UNKEYED, expected_counts, outcome, run_once, stream

pytestmark = pytest.mark.integration
CUT_S = 30.0


def wait_for(condition, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:.0f} s: {what}")
        time.sleep(POLL_S)


def test_a_broker_cut_mid_stream_is_reported_and_ridden_out(tmp_path):
    proxy_port = free_port()
    with EmbeddedBroker(log_path=tmp_path / "broker.log", advertised_port=proxy_port) as broker, \
            CutProxy(broker.port, proxy_port) as proxy:
        via_proxy = SimpleNamespace(bootstrap=f"127.0.0.1:{proxy_port}")
        messages = stream("event")
        expected = expected_counts(messages)
        customers = sorted(expected)
        keyed, mixed = (topic_env(f"cut-{tag}")["CHURN_INPUT_TOPICS"] for tag in ("keyed", "mixed"))
        run(create_topics(via_proxy.bootstrap, [keyed, mixed], 4))
        run(produce(via_proxy.bootstrap, keyed, messages))
        run(produce(via_proxy.bootstrap, mixed, messages, unkeyed_share=UNKEYED, seed=7))

        def env(tag: str, inputs: str) -> dict:
            return {**topic_env(f"cut-{tag}"), "CHURN_INPUT_TOPICS": inputs}

        clean = run_once(via_proxy, env("clean", keyed), tmp_path / "clean.log", customers)

        worker = WorkerProcess(via_proxy.bootstrap, env("cut", mixed), tmp_path / "cut.log").start()
        try:
            wait_for(lambda: worker.consumed() >= len(messages) * 0.2, "the worker consuming a fifth of the stream")
            proxy.cut()
            cut_at = time.monotonic()
            wait_for(lambda: worker.get("/ready")[0] == 503, "/ready reporting the outage", timeout=CUT_S)
            while time.monotonic() - cut_at < CUT_S:  # the outage lasts 30 s; /ready says so throughout
                assert worker.get("/ready")[0] == 503, "ready while the broker is unreachable"
                time.sleep(POLL_S)
            proxy.restore()
            wait_settled([worker], timeout=300)
            cut = outcome([worker], customers)
        finally:
            worker.stop()

    produced = {c: (n["login"], n["purchase"], 0) for c, n in expected.items()}
    assert clean["counts"] == produced
    wrong = {c: (cut["counts"][c], want) for c, want in produced.items() if cut["counts"][c] != want}
    assert not wrong, f"{len(wrong)} customers miscounted (held, produced): {list(wrong.items())[:5]}"
    assert cut["dead_letters"] == clean["dead_letters"]
    for kind, ids in clean["triggers"].items():
        assert cut["triggers"][kind] == ids, (kind, sorted(ids - cut["triggers"][kind])[:3],
                                               sorted(cut["triggers"][kind] - ids)[:3])
    assert sum(len(ids) for ids in clean["triggers"].values()) >= 20
