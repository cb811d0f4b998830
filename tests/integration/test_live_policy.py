"""The policy as live data: `churn-worker policy publish` switches a running worker to a new
version without restart or rebalance, and its next triggers carry it; a publish that is
invalid or not new is refused naming why; a record another tool writes that cannot be
applied is refused by the worker, which keeps deciding with the version in force."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from worker.harness.conditions import read_to_end
from worker.harness.process import WorkerProcess, wait_until
from worker.tools.kafka_io import create_topics, produce

from .conftest import ROOT, run, topic_env, write_raw

pytestmark = pytest.mark.integration
DEFAULT = (ROOT / "worker" / "default_policy.toml").read_text()
NEW = "2026.12-live"


def bad_ratings(phase: int, customers: int = 5) -> list[bytes]:
    """Each customer opens a ticket and rates its resolution 1/5: a service recovery at once."""
    out = []
    for c in range(customers):
        cid, day = f"lp-{phase}-{c}", 5 + phase * 5
        for n, (action, extra) in enumerate((("opened", {}), ("resolved", {"csat": 1}))):
            out.append(json.dumps({"schema_version": 1, "event_id": f"{cid}-{n}", "type": "support",
                                   "customer_id": cid, "occurred_at": f"2026-01-{day:02d}T1{n}:00:00Z",
                                   "ticket_id": f"t-{cid}", "action": action, **extra}).encode())
    return out


def cli(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "worker", "policy", *args], env={**os.environ, **env},
                          capture_output=True, text=True, timeout=120, cwd=ROOT)


def versions(broker, topic: str) -> dict[str, str]:
    """customer -> policy_version of its triggers."""
    return {json.loads(r.value)["customer_id"]: json.loads(r.value)["policy_version"]
            for r in run(read_to_end(broker.bootstrap, topic))}


def test_publish_switches_a_running_worker_and_a_bad_policy_is_refused(broker, tmp_path):
    env = topic_env("live")
    app_id, topic, recovery = env["CHURN_APP_ID"], env["CHURN_INPUT_TOPICS"], env["CHURN_SERVICE_RECOVERY_TOPIC"]
    admin = {**env, "CHURN_KAFKA_BOOTSTRAP": broker.bootstrap}
    run(create_topics(broker.bootstrap, [topic, recovery], 4))
    worker = WorkerProcess(broker.bootstrap, env, tmp_path / "worker.log").start()
    try:
        run(produce(broker.bootstrap, topic, bad_ratings(1)))
        worker.wait_consumed(10)
        assert set(versions(broker, recovery).values()) == {"2026.11-1"}
        pid, rebalances = worker.pid, worker.metrics()[("churn_rebalances_total",)]

        new = tmp_path / "new.toml"
        new.write_text(DEFAULT.replace('version = "2026.11-1"', f'version = "{NEW}"'))
        done = cli(admin, "publish", str(new))
        assert done.returncode == 0 and NEW in done.stdout, done.stderr
        wait_until(lambda: json.loads(worker.get("/ready")[1])["policy_version"] == NEW, "the new policy in force")
        run(produce(broker.bootstrap, topic, bad_ratings(2)))
        worker.wait_consumed(20)
        seen = versions(broker, recovery)
        assert {v for c, v in seen.items() if c.startswith("lp-2-")} == {NEW}
        assert {v for c, v in seen.items() if c.startswith("lp-1-")} == {"2026.11-1"}
        assert worker.pid == pid and worker.metrics()[("churn_rebalances_total",)] == rebalances

        again = cli(admin, "publish", str(new))  # the same version again
        assert again.returncode == 2 and "not new" in again.stderr
        broken = tmp_path / "broken.toml"
        broken.write_text(DEFAULT.replace('version = "2026.11-1"', 'version = "2026.12-broken"')
                          .replace("sla_hours = 24.0", "sla_hours = 0"))
        refused = cli(admin, "publish", str(broken))
        assert refused.returncode == 2 and "support.sla_hours" in refused.stderr

        run(write_raw(broker.bootstrap, f"{app_id}-policy", b"policy", b"version = \"2026.12-other-tool\"\n[risk]\n"))
        wait_until(lambda: worker.metrics()[("churn_policy_refused_total",)] == 1, "the worker to refuse the record")
        ready = json.loads(worker.get("/ready")[1])
        assert ready["policy_version"] == NEW and "invalid policy" in ready["policy_refused"]
        run(produce(broker.bootstrap, topic, bad_ratings(3)))
        worker.wait_consumed(30)
        assert {v for c, v in versions(broker, recovery).items() if c.startswith("lp-3-")} == {NEW}

        shown = cli(admin, "show")
        assert shown.returncode == 0 and f"version {NEW}" in shown.stdout and "last refused" in shown.stdout, \
            shown.stdout + shown.stderr
    finally:
        worker.stop()

