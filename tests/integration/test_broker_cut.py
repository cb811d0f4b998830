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
from worker.harness.process import POLL_S, WorkerProcess, wait_settled, wait_until
from worker.harness.proxy import CutProxy

from .conftest import topic_env
from .test_faults import assert_as_clean, expected_counts, outcome, produce_keyed_and_mixed, run_once, stream

pytestmark = pytest.mark.integration
CUT_S = 30.0


def test_a_broker_cut_mid_stream_is_reported_and_ridden_out(tmp_path):
    proxy_port = free_port()
    with EmbeddedBroker(log_path=tmp_path / "broker.log", advertised_port=proxy_port) as broker, \
            CutProxy(broker.port, proxy_port) as proxy:
        via_proxy = SimpleNamespace(bootstrap=f"127.0.0.1:{proxy_port}")
        messages = stream("event")
        expected = expected_counts(messages)
        customers = sorted(expected)
        keyed, mixed = produce_keyed_and_mixed(via_proxy.bootstrap, "cut", messages)

        def env(tag: str, inputs: str) -> dict:
            return {**topic_env(f"cut-{tag}"), "CHURN_INPUT_TOPICS": inputs}

        clean = run_once(via_proxy, env("clean", keyed), tmp_path / "clean.log", customers)

        worker = WorkerProcess(via_proxy.bootstrap, env("cut", mixed), tmp_path / "cut.log").start()
        try:
            wait_until(lambda: worker.consumed() >= len(messages) * 0.2, "the worker consuming a fifth of the stream")
            proxy.cut()
            cut_at = time.monotonic()
            wait_until(lambda: worker.get("/ready")[0] == 503, "/ready reporting the outage", timeout=CUT_S)
            while time.monotonic() - cut_at < CUT_S:  # the outage lasts 30 s; /ready says so throughout
                assert worker.get("/ready")[0] == 503, "ready while the broker is unreachable"
                time.sleep(POLL_S)
            proxy.restore()
            wait_settled([worker], timeout=300)
            cut = outcome([worker], customers)
        finally:
            worker.stop()

    assert_as_clean(clean, cut, expected, trigger_ids=True)
