"""A worker never holds a customer it does not own: start-up refuses topics that are not
co-partitioned with the state table, naming the topic and both counts."""
from __future__ import annotations

import os
import subprocess
import sys

from worker.tools.kafka_io import create_topics

from .conftest import run, topic_env


def test_an_input_topic_with_another_partition_count_stops_start_up(broker, tmp_path):
    env = topic_env("own")
    topic = env["CHURN_INPUT_TOPICS"]
    run(create_topics(broker.bootstrap, [topic], partitions=3))
    done = subprocess.run([sys.executable, "-m", "worker", "run"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120, env={**os.environ, **env, "CHURN_KAFKA_BOOTSTRAP": broker.bootstrap,
                                            "CHURN_TOPIC_PARTITIONS": "4", "CHURN_WEB_PORT": "0"})
    assert done.returncode == 2, done.stdout[-2000:] + done.stderr[-2000:]
    assert "CHURN_TOPIC_PARTITIONS" in done.stderr and f"{topic} has 3" in done.stderr and "4 partitions" in done.stderr
