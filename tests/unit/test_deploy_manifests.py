"""The Kubernetes manifests in deploy/k8s apply as they are: what they set, the worker accepts."""
from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_deployment_turns_service_links_off():
    text = (ROOT / "deploy" / "k8s" / "deployment.yaml").read_text()
    pod_spec = text[text.index("  template:"):]
    assert "\n      enableServiceLinks: false\n" in pod_spec  # at the pod spec's indentation


def test_the_policy_configmap_holds_the_packaged_policy_and_the_worker_accepts_it():
    """`kubectl apply -f deploy/k8s/` must not start pods on a policy they refuse."""
    from worker.config import DEFAULT_POLICY
    from worker.core.policy import parse_policy

    text = (ROOT / "deploy" / "k8s" / "configmap.yaml").read_text()
    block = text[text.index("  policy.toml: |\n") + len("  policy.toml: |\n"):]
    policy = "".join(line[4:] if line.strip() else "\n" for line in block.splitlines(keepends=True))
    assert policy == Path(DEFAULT_POLICY).read_text()
    assert parse_policy(policy, "configmap.yaml").version
