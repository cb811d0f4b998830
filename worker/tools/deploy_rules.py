"""deploy/k8s/prometheusrule.yaml is generated from deploy/prometheus/alerts.yml, the one
source of the alert rules:

    python -m worker.tools.deploy_rules        # (make rules) rewrite the PrometheusRule

A test fails when the committed file is not what this writes.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
PROMETHEUS_RULE = ROOT / "deploy" / "k8s" / "prometheusrule.yaml"
HEADER = """\
# Generated from deploy/prometheus/alerts.yml by `make rules`: edit that file, not this one.
#
# The Prometheus resource must select this rule: `release: kube-prometheus-stack` matches
# kube-prometheus-stack installed under that release name (its default ruleSelector is
# `release: <release name>`); change it to yours, or to your Prometheus's ruleSelector.
# The rules select job="churn-worker", the Service name in service.yaml.
"""
LABELS = {"app.kubernetes.io/name": "churn-worker", "app.kubernetes.io/component": "worker",
          "app.kubernetes.io/part-of": "churn", "release": "kube-prometheus-stack"}


def render(alerts_text: str) -> str:
    import yaml

    groups = yaml.safe_load(alerts_text)["groups"]
    doc: dict[str, Any] = {"apiVersion": "monitoring.coreos.com/v1", "kind": "PrometheusRule",
                           "metadata": {"name": "churn-worker", "labels": LABELS}, "spec": {"groups": groups}}
    return HEADER + yaml.safe_dump(doc, sort_keys=False, width=100, allow_unicode=True)


def main() -> None:
    PROMETHEUS_RULE.write_text(render(ALERTS.read_text()))
    print(f"wrote {PROMETHEUS_RULE.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
