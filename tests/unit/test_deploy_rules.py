"""The shipped alert rules refer to metrics the worker exports, and the two copies (compose
Prometheus and the Kubernetes PrometheusRule) hold the same alerts with the same expressions."""
from __future__ import annotations

import re
from pathlib import Path

from prometheus_client import generate_latest

from worker.shell.metrics import Metrics

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
RULE_FILES = (DEPLOY / "prometheus" / "alerts.yml", DEPLOY / "k8s" / "prometheusrule.yaml")


def _alerts(path: Path) -> dict[str, str]:
    """alert name -> its expression, whitespace-normalised."""
    text = path.read_text()
    out = {}
    for block in re.split(r"\n\s*- alert: ", text)[1:]:
        name, rest = block.split("\n", 1)
        expr = re.search(r"expr: (\|\n(?:\s{6,}.*\n)+|.*\n)", rest)
        assert expr, f"{path.name}: {name} has no expr"
        out[name.strip()] = " ".join(expr.group(1).replace("|", " ", 1).split())
    return out


def test_both_rule_files_hold_the_same_alerts():
    compose, kubernetes = (_alerts(p) for p in RULE_FILES)
    assert compose and compose == kubernetes


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


def test_promtool_accepts_the_rules_and_their_unit_tests_pass():
    """deploy/prometheus/alerts.test.yml: among others, the stuck-consumer alert fires for a
    ready worker with records to read that consumes nothing, and not while it consumes."""
    assert "SUCCESS" in _promtool("check", "rules", "alerts.yml")
    assert "SUCCESS" in _promtool("test", "rules", "alerts.test.yml")
