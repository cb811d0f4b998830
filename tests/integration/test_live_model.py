"""Models change without downtime: a running worker scores a candidate in shadow (sending
nothing from it), promotes it and rolls back, on `churn-worker model ...`, with no restart
or rebalance; a directory that fails the artifact checks is refused and the active model
stays."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import joblib
import pytest

from worker.harness.conditions import read_to_end
from worker.harness.process import WorkerProcess, wait_until
from worker.model import shipped_model_dir
from worker.tools.kafka_io import create_topics, produce

from .conftest import ROOT, run, topic_env, write_raw
from .test_live_policy import bad_ratings

pytestmark = pytest.mark.integration


def candidate(tmp_path):
    """The shipped model with other weights, as version churn-v2."""
    directory = tmp_path / "churn-v2"
    shutil.copytree(shipped_model_dir(), directory)
    model = joblib.load(directory / "model.joblib")
    model.named_steps["classifier"].coef_ *= 1.5
    joblib.dump(model, directory / "model.joblib")
    card = json.loads((directory / "model_card.json").read_text())
    card["model_version"] = "churn-v2"
    (directory / "model_card.json").write_text(json.dumps(card))
    return directory


def model_cli(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "worker", "model", *args], env={**os.environ, **env},
                          capture_output=True, text=True, timeout=120, cwd=ROOT)


def test_shadow_promote_and_rollback_on_a_running_worker(broker, tmp_path):
    env = topic_env("livemodel")
    topic, recovery = env["CHURN_INPUT_TOPICS"], env["CHURN_SERVICE_RECOVERY_TOPIC"]
    admin = {**env, "CHURN_KAFKA_BOOTSTRAP": broker.bootstrap}
    run(create_topics(broker.bootstrap, [topic, recovery], 4))
    new = candidate(tmp_path)
    worker = WorkerProcess(broker.bootstrap, env, tmp_path / "worker.log").start()

    def ready() -> dict:
        return json.loads(worker.get("/ready")[1])

    def versions(phase: int) -> set[str]:
        return {json.loads(r.value)["model_version"] for r in run(read_to_end(broker.bootstrap, recovery))
                if json.loads(r.value)["customer_id"].startswith(f"lp-{phase}-")}

    def phase(n: int) -> set[str]:
        run(produce(broker.bootstrap, topic, bad_ratings(n)))
        worker.wait_consumed(10 * n)
        return versions(n)

    try:
        assert phase(1) == {"churn-v1"}
        pid, rebalances = worker.pid, worker.metrics()[("churn_rebalances_total",)]

        assert model_cli(admin, "shadow", str(new)).returncode == 0
        wait_until(lambda: ready()["shadow_model_version"] == "churn-v2", "the candidate in shadow")
        assert phase(2) == {"churn-v1"}  # the shadow sends nothing
        samples = worker.metrics()
        assert samples[("churn_shadow_scored_total", ("shadow_version", "churn-v2"))] >= 5
        assert ("churn_shadow_score_difference_count", ("shadow_version", "churn-v2")) in samples

        assert model_cli(admin, "promote").returncode == 0
        wait_until(lambda: ready()["model_version"] == "churn-v2", "the candidate promoted")
        assert phase(3) == {"churn-v2"} and ready()["shadow_model_version"] is None

        assert model_cli(admin, "rollback").returncode == 0
        wait_until(lambda: ready()["model_version"] == "churn-v1", "the rollback")
        assert phase(4) == {"churn-v1"}

        refused = model_cli(admin, "shadow", str(tmp_path / "no-such-model"))
        assert refused.returncode == 2 and "ModelError" in refused.stderr
        run(write_raw(broker.bootstrap, f"{env['CHURN_APP_ID']}-model", b"model",
                      json.dumps({"active": str(tmp_path / "no-such-model"), "shadow": None}).encode()))
        wait_until(lambda: worker.metrics()[("churn_model_refused_total",)] == 1, "the bad record refused")
        assert ready()["model_version"] == "churn-v1" and "no-such-model" in ready()["model_refused"]
        assert phase(5) == {"churn-v1"}
        assert worker.pid == pid and worker.metrics()[("churn_rebalances_total",)] == rebalances
        shown = model_cli(admin, "show")
        assert shown.returncode == 0 and "active churn-v1" in shown.stdout, shown.stdout + shown.stderr
    finally:
        worker.stop()

