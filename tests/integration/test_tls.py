"""Kafka over TLS: the embedded broker behind a TLS-only listener (a loopback proxy that
terminates TLS, with the broker advertising the proxy's port, so every connection of every
client goes through TLS), a throwaway CA made in the test.

The worker started with CHURN_KAFKA_SECURITY_PROTOCOL=SSL and that CA consumes the stream
and its triggers arrive; started with another CA it stops at once, naming the setting.
A SASL login the broker does not accept stops start-up too, naming the mechanism.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from aiokafka.errors import KafkaConnectionError

from worker.config import load_settings
from worker.harness.broker import EmbeddedBroker, free_port
from worker.harness.conditions import read_to_end
from worker.harness.process import WorkerProcess
from worker.harness.proxy import CutProxy
from worker.harness.tls import ThrowawayCA
from worker.kafka_security import kafka_auth
from worker.tools.generate import generate
from worker.tools.kafka_io import create_topics, produce

from .conftest import ROOT, run, topic_env

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def tls_broker(tmp_path_factory):
    """(bootstrap of the TLS-only listener, the CA that signed it, the proxy)."""
    tmp = tmp_path_factory.mktemp("tls")
    ca = ThrowawayCA.create(tmp / "ca")
    proxy_port = free_port()
    with EmbeddedBroker(log_path=tmp / "broker.log", advertised_port=proxy_port) as broker, \
            CutProxy(broker.port, proxy_port, tls=ca.server_context()) as proxy:
        yield f"127.0.0.1:{proxy_port}", ca, proxy


def start_worker(bootstrap: str, **env: str) -> subprocess.CompletedProcess:
    full = {**os.environ, "CHURN_KAFKA_BOOTSTRAP": bootstrap, "CHURN_WEB_PORT": str(free_port()), **env}
    return subprocess.run([sys.executable, "-m", "worker", "run"], env=full, cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def test_triggers_arrive_over_tls(tls_broker, tmp_path):
    bootstrap, ca, proxy = tls_broker
    env = {**topic_env("tls"), "CHURN_KAFKA_SECURITY_PROTOCOL": "SSL", "CHURN_KAFKA_SSL_CAFILE": str(ca.cafile)}
    settings = load_settings(**{k[len("CHURN_"):].lower(): v for k, v in env.items()})
    options = kafka_auth(settings).options
    messages = [json.dumps(e).encode() for e in generate(customers=30, days=90, seed=5,
                                                         start="2026-01-05T00:00:00+00:00")]
    topic = settings.input_topics[0]
    with pytest.raises(KafkaConnectionError):  # the listener speaks TLS only
        run(create_topics(bootstrap, [topic], 4))
    run(create_topics(bootstrap, [topic], 4, options=options))
    run(produce(bootstrap, topic, messages, options=options))
    handshakes = proxy.connections

    worker = WorkerProcess(bootstrap, env, tmp_path / "worker.log").start()
    try:
        samples = worker.wait_consumed(len(messages), timeout=300)
    finally:
        worker.stop()

    applied = sum(v for k, v in samples.items()
                  if k[0] == "churn_events_consumed_total" and dict(k[1:]).get("outcome") == "applied")
    assert applied == len(messages)
    triggers = [json.loads(r.value) for t in settings.trigger_topics.values()
                for r in run(read_to_end(bootstrap, t, options=options))]
    assert triggers and all(t["schema_version"] == 1 for t in triggers)
    emitted = sum(v for k, v in samples.items() if k[0] == "churn_triggers_emitted_total")
    assert len(triggers) == emitted  # every trigger the worker counted is on the topics
    assert proxy.connections > handshakes  # the worker's clients came through the TLS listener


def test_a_wrong_ca_stops_start_up_naming_the_setting(tls_broker, tmp_path):
    bootstrap, _, _ = tls_broker
    other = ThrowawayCA.create(tmp_path / "other", name="some other CA")
    done = start_worker(bootstrap, **topic_env("tls-wrong-ca"), CHURN_KAFKA_SECURITY_PROTOCOL="SSL",
                        CHURN_KAFKA_SSL_CAFILE=str(other.cafile))
    assert done.returncode == 2, done.stderr[-2000:]
    assert "CHURN_KAFKA_SSL_CAFILE" in done.stderr and "does not verify" in done.stderr


def test_a_sasl_mechanism_the_broker_refuses_stops_start_up(broker, tmp_path):
    secret = tmp_path / "password"
    secret.write_text("s3cret\n")
    done = start_worker(broker.bootstrap, **topic_env("sasl"), CHURN_KAFKA_SECURITY_PROTOCOL="SASL_PLAINTEXT",
                        CHURN_KAFKA_SASL_MECHANISM="SCRAM-SHA-256", CHURN_KAFKA_SASL_USERNAME="churn",
                        CHURN_KAFKA_SASL_PASSWORD_FILE=str(secret))
    assert done.returncode == 2, done.stderr[-2000:]
    assert "CHURN_KAFKA_SASL_MECHANISM" in done.stderr and "SCRAM-SHA-256" in done.stderr
