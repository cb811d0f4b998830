"""`churn-worker run` refuses to start on a bad config, model or policy, naming the field,
before it touches Kafka (the bootstrap below points at a closed port)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_worker(**env: str) -> subprocess.CompletedProcess:
    full = {**os.environ, "CHURN_KAFKA_BOOTSTRAP": "127.0.0.1:1",
            "CHURN_MODEL_DIR": str(ROOT / "models" / "churn-v1"), **env}
    return subprocess.run([sys.executable, "-m", "worker", "run"], env=full, cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


def test_bad_setting_is_named():
    done = run_worker(CHURN_BATCH_SIZE="lots")
    assert done.returncode == 2 and "CHURN_BATCH_SIZE" in done.stderr


def test_missing_bootstrap_is_named():
    env = {k: v for k, v in os.environ.items() if k != "CHURN_KAFKA_BOOTSTRAP"}
    done = subprocess.run([sys.executable, "-m", "worker", "run"], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "CHURN_KAFKA_BOOTSTRAP" in done.stderr


def test_model_with_a_foreign_feature_is_refused(tmp_path):
    model = tmp_path / "model"
    shutil.copytree(ROOT / "models" / "churn-v1", model)
    card = json.loads((model / "model_card.json").read_text())
    card["feature_names"][0] = "favourite_colour"
    (model / "model_card.json").write_text(json.dumps(card))
    done = run_worker(CHURN_MODEL_DIR=str(model))
    assert done.returncode == 2 and "ModelError" in done.stderr and "favourite_colour" in done.stderr


def test_bad_policy_is_refused_naming_the_field(tmp_path):
    text = (ROOT / "worker" / "default_policy.toml").read_text().replace("sla_hours = 24.0", "sla_hours = 0")
    policy = tmp_path / "policy.toml"
    policy.write_text(text)
    done = run_worker(CHURN_POLICY_PATH=str(policy))
    assert done.returncode == 2 and "support.sla_hours" in done.stderr
