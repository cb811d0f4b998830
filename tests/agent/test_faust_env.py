"""Only the worker's own settings (CHURN_*) configure it: faust reads its settings from
unprefixed environment variables, over the values the app passes, unless told not to."""
from __future__ import annotations

from pathlib import Path

import pytest

from worker.config import load_policy, load_settings
from worker.model.artifact import load_artifact
from worker.shell.app import ChurnApp
from worker.shell.metrics import Metrics

ROOT = Path(__file__).resolve().parents[2]
# what Kubernetes injects for a Service named `web` (service links), and two faust settings
# an operator may have exported for something else
FOREIGN = {"WEB_PORT": "tcp://10.96.0.7:80", "WEB_HOST": "10.96.0.7", "TOPIC_PARTITIONS": "8",
           "PRODUCER_ACKS": "1", "BROKER": "kafka://elsewhere:9092", "STORE": "rocksdb://"}


def test_faust_reads_no_unprefixed_environment_variable(tmp_path, monkeypatch):
    for name, value in FOREIGN.items():
        monkeypatch.setenv(name, value)
    settings = load_settings(kafka_bootstrap="127.0.0.1:1", data_dir=tmp_path, model_dir=ROOT / "models" / "churn-v1",
                             topic_partitions=4, web_port=6070)
    churn = ChurnApp(settings, load_artifact(settings.model_dir), load_policy(settings.policy_path), Metrics())
    conf = churn.app.conf
    assert (conf.web_port, conf.web_host, conf.topic_partitions, conf.producer_acks) == (6070, "127.0.0.1", 4, -1)
    assert [str(url) for url in conf.broker] == ["kafka://127.0.0.1:1"]
    assert str(conf.store) == "memory:"


def test_without_the_guard_faust_would_take_them(monkeypatch):
    """The test above can fail: the same variables do reach a faust app built plainly (the
    injected WEB_PORT makes it raise; the others beat the values passed)."""
    import faust

    for name, value in FOREIGN.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match="tcp://10.96.0.7:80"):
        assert faust.App("plain", web_port=6070).conf.web_port
    monkeypatch.delenv("WEB_PORT")
    conf = faust.App("plain", topic_partitions=4, producer_acks=-1).conf
    assert (conf.topic_partitions, conf.producer_acks) == (8, 1)

