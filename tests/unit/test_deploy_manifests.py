"""The Kubernetes manifests in deploy/k8s apply as they are: they pass the Kubernetes schema
(kubernetes-validate, strict: no unknown fields), and what they set, the worker accepts."""
from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_deployment_turns_service_links_off():
    text = (ROOT / "deploy" / "k8s" / "statefulset.yaml").read_text()
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


K8S = ROOT / "deploy" / "k8s"
KUBERNETES_VERSION = "1.30.0"
OPERATOR_KINDS = {"ServiceMonitor", "PrometheusRule"}  # CRDs: no schema here (the rules: promtool)


def _documents() -> list[tuple[str, dict]]:
    import yaml

    return [(path.name, doc) for path in sorted(K8S.glob("*.yaml")) for doc in yaml.safe_load_all(path.read_text())
            if doc]


def test_every_manifest_passes_the_kubernetes_schema():
    import kubernetes_validate

    checked = []
    for name, doc in _documents():
        if doc["kind"] in OPERATOR_KINDS:
            continue
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            raise AssertionError(f"{name}: {exc}") from None
        checked.append(doc["kind"])
    assert {"StatefulSet", "Service", "ConfigMap", "PodDisruptionBudget", "NetworkPolicy"} <= set(checked)


def test_the_worker_accepts_the_settings_the_deployment_gives_it(tmp_path):
    from worker.config import load_settings

    deployment = next(doc for _, doc in _documents() if doc["kind"] == "StatefulSet")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    churn = {k[len("CHURN_"):].lower(): v for k, v in env.items() if k.startswith("CHURN_")}
    settings = load_settings(**{**churn, "model_dir": str(ROOT / "models" / "churn-v1")})
    assert settings.web_host == "0.0.0.0" and settings.topic_replication == 3 and settings.store == "rocksdb"
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    claims = {c["metadata"]["name"] for c in deployment["spec"]["volumeClaimTemplates"]}
    assert mounts["data"] == str(settings.data_dir) and "data" in claims  # the table on the pod's volume
    from_secrets = {e["name"] for e in container["env"] if "valueFrom" in e}
    assert {"CHURN_WEB_ADVERTISED_HOST", "CHURN_HTTP_TOKEN"} <= from_secrets


def test_the_operator_resources_carry_a_selector_label_and_select_the_service():
    docs = {doc["kind"]: doc for _, doc in _documents()}
    for kind in OPERATOR_KINDS:
        assert "release" in docs[kind]["metadata"]["labels"], kind
    selector = docs["ServiceMonitor"]["spec"]["selector"]["matchLabels"]
    assert selector.items() <= docs["Service"]["metadata"]["labels"].items()
    port = docs["ServiceMonitor"]["spec"]["endpoints"][0]["port"]
    assert port in {p["name"] for p in docs["Service"]["spec"]["ports"]}
