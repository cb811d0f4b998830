"""The shipped alert rules refer to metrics the worker exports; the Kubernetes PrometheusRule
is generated from the compose Prometheus's alerts.yml; promtool accepts both and runs a unit
test for every alert."""
from __future__ import annotations

import re
from pathlib import Path

from prometheus_client import generate_latest

from worker.shell.metrics import Metrics

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
RULE_FILES = (DEPLOY / "prometheus" / "alerts.yml", DEPLOY / "k8s" / "prometheusrule.yaml")


def _alerts(path: Path) -> dict[str, str]:
    """alert name -> its expression, whitespace-normalised."""
    import yaml

    doc = yaml.safe_load(path.read_text())
    groups = doc["spec"]["groups"] if doc.get("kind") == "PrometheusRule" else doc["groups"]
    return {r["alert"]: " ".join(r["expr"].split()) for g in groups for r in g["rules"] if "alert" in r}


def test_the_prometheus_rule_is_generated_from_alerts_yml():
    """One source of truth: `make rules` writes the PrometheusRule from alerts.yml."""
    from worker.tools.deploy_rules import ALERTS, PROMETHEUS_RULE, render

    assert PROMETHEUS_RULE.read_text() == render(ALERTS.read_text()), "run `make rules`"
    compose, kubernetes = (_alerts(p) for p in RULE_FILES)
    assert compose and compose == kubernetes


def test_every_alert_says_what_to_check_and_links_its_runbook():
    import yaml

    for group in yaml.safe_load(RULE_FILES[0].read_text())["groups"]:
        for rule in group["rules"]:
            notes = rule["annotations"]
            assert {"summary", "description", "first_check", "runbook_url"} <= notes.keys(), rule["alert"]
            assert notes["runbook_url"].startswith("https://") and rule["labels"]["severity"] in ("warning", "critical")


def test_every_metric_an_alert_reads_is_exported():
    exported = set()
    for line in generate_latest(Metrics().registry).decode().splitlines():
        if line.startswith("# TYPE "):
            name, kind = line.split()[2:4]
            exported |= {name} | ({f"{name}_bucket", f"{name}_sum", f"{name}_count"} if kind == "histogram" else set())
            exported |= {f"{name}_total"} if kind == "counter" else set()
    used = {m for expr in _alerts(RULE_FILES[0]).values() for m in re.findall(r"\bchurn_[a-z_]+", expr)}
    assert used and used <= exported, sorted(used - exported)


def test_every_metric_the_dashboard_reads_is_exported_and_lag_has_a_panel():
    import json

    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "churn-worker.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    used = {m for expr in exprs for m in re.findall(r"\bchurn_[a-z_]+", expr)}
    exported = {line.split()[2] for line in generate_latest(Metrics().registry).decode().splitlines()
                if line.startswith("# TYPE ")}
    exported |= {f"{n}_{s}" for n in exported for s in ("total", "bucket", "sum", "count")}
    assert used and used <= exported, sorted(used - exported)
    assert "churn_consumer_lag_records" in used


def _promtool(*args: str) -> str:
    import subprocess
    import sys

    promtool = Path(sys.executable).parent / "promtool"  # `make install` puts it beside the venv's python
    done = subprocess.run([str(promtool), *args], cwd=DEPLOY / "prometheus", capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_promtool_accepts_the_rules_and_their_unit_tests_pass(tmp_path):
    """deploy/prometheus/alerts.test.yml: every alert fires in a case of its own and stays
    quiet in another (among them, the stuck-consumer alert fires for a ready worker with
    records to read that consumes nothing, and not while it consumes)."""
    import yaml

    assert "SUCCESS" in _promtool("check", "rules", "alerts.yml")
    assert "SUCCESS" in _promtool("test", "rules", "alerts.test.yml")
    spec = tmp_path / "prometheusrule-spec.yml"  # what the operator hands Prometheus
    spec.write_text(yaml.safe_dump(yaml.safe_load(RULE_FILES[1].read_text())["spec"]))
    assert "SUCCESS" in _promtool("check", "rules", str(spec))


def test_every_alert_has_a_unit_test():
    import yaml

    tests = yaml.safe_load((DEPLOY / "prometheus" / "alerts.test.yml").read_text())["tests"]
    tested = {case["alertname"] for t in tests for case in t.get("alert_rule_test", []) if case["exp_alerts"]}
    assert set(_alerts(RULE_FILES[0])) <= tested, sorted(set(_alerts(RULE_FILES[0])) - tested)
