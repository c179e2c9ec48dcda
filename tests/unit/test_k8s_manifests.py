"""The plain manifests in k8s/: valid, block-style, and in step with the chart.

Each file is validated with `kubernetes-validate --strict`; the labels, the
security settings and the grace period are compared with what the Helm chart
renders, so that the two ways of deploying stay the same. The tools come from
scripts/k8s-tools.sh, like in test_chart.py.
"""

from __future__ import annotations

import json
import subprocess
from typing import Any

import pytest
import yaml

from tests.conftest import ROOT

K8S = ROOT / "k8s"
CHART = ROOT / "helm" / "minionize"
#: Bundled by the kubernetes-validate that scripts/k8s-tools.sh pins.
KUBERNETES_VERSION = "1.37.0"
MANIFESTS = sorted(p.relative_to(K8S).as_posix() for p in K8S.rglob("*.yaml"))
WORKLOAD_KINDS = ("Deployment", "Job")


@pytest.fixture(scope="session")
def chart_pod(helm: str) -> dict[str, Any]:
    """The Deployment the chart renders for the pulsar engine, as the reference."""
    values = {
        "engine": "pulsar",
        "pulsar": {"connection": "pulsar://pulsar-broker:6650", "topic": "t", "subscription": "s"},
        "image": {"repository": "registry.example/team/train"},
    }
    done = subprocess.run(
        [str(helm), "template", "ref", str(CHART), "--values", "-"],
        input=json.dumps(values), capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 0, done.stderr
    (deployment,) = [d for d in yaml.safe_load_all(done.stdout) if d and d["kind"] == "Deployment"]
    return dict(deployment)


def load(name: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all((K8S / name).read_text()) if doc]


def workloads() -> list[tuple[str, dict[str, Any]]]:
    return [(name, doc) for name in MANIFESTS for doc in load(name) if doc["kind"] in WORKLOAD_KINDS]


def app_labels(labels: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in labels.items() if k.startswith("app.kubernetes.io/")}


def env_of(pod: dict[str, Any]) -> dict[str, Any]:
    (minion,) = pod["containers"]
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in minion["env"]}


def test_manifests_exist_for_pulsar_and_google() -> None:
    for engine in ("pulsar", "google"):
        kinds = {doc["kind"] for name in MANIFESTS if name.startswith(f"{engine}/") for doc in load(name)}
        assert {"Deployment", "Job", "Secret"} <= kinds, engine


@pytest.mark.parametrize("name", MANIFESTS)
def test_manifest_validates(kubernetes_validate: str, name: str) -> None:
    done = subprocess.run(
        [kubernetes_validate, "--strict", "--kubernetes-version", KUBERNETES_VERSION, str(K8S / name)],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("passed for resource") == len(load(name)), done.stdout


def _flow_collections(node: yaml.Node) -> list[str]:
    found = []
    if isinstance(node, (yaml.MappingNode, yaml.SequenceNode)):
        if node.flow_style:
            found.append(f"line {node.start_mark.line + 1}")
        children = node.value if isinstance(node, yaml.SequenceNode) else [v for pair in node.value for v in pair]
        for child in children:
            found += _flow_collections(child)
    return found


@pytest.mark.parametrize("name", MANIFESTS)
def test_manifest_is_block_style(name: str) -> None:
    flow = []
    for document in yaml.compose_all((K8S / name).read_text()):
        flow += _flow_collections(document)
    assert not flow, f"flow-style collections in {name}: {flow}"


@pytest.mark.parametrize("name", MANIFESTS)
def test_labels_match_the_chart(chart_pod: dict[str, Any], name: str) -> None:
    chart_labels = app_labels(chart_pod["metadata"]["labels"])
    chart_selector = chart_pod["spec"]["selector"]["matchLabels"]
    for doc in load(name):
        labels = app_labels(doc["metadata"]["labels"])
        assert set(labels) == set(chart_labels), doc["metadata"]["name"]
        for key in ("app.kubernetes.io/name", "app.kubernetes.io/version", "app.kubernetes.io/component"):
            assert labels[key] == chart_labels[key], key
        assert labels["app.kubernetes.io/managed-by"] == "kubectl"
        if doc["kind"] in WORKLOAD_KINDS:
            assert app_labels(doc["spec"]["template"]["metadata"]["labels"]) == labels
        if doc["kind"] == "Deployment":
            selector = doc["spec"]["selector"]["matchLabels"]
            assert set(selector) == set(chart_selector)
            assert selector.items() <= labels.items()


@pytest.mark.parametrize(("name", "doc"), workloads(), ids=[name for name, _ in workloads()])
def test_workload_hardening_matches_the_chart(chart_pod: dict[str, Any], name: str, doc: dict[str, Any]) -> None:
    pod = doc["spec"]["template"]["spec"]
    reference = chart_pod["spec"]["template"]["spec"]
    (minion,) = pod["containers"]
    assert pod["securityContext"] == reference["securityContext"]
    assert minion["securityContext"] == reference["containers"][0]["securityContext"]
    assert pod["automountServiceAccountToken"] is False
    env = env_of(pod)
    assert int(pod["terminationGracePeriodSeconds"]) > int(env["MINION_GRACE_PERIOD"])
    assert env["TMPDIR"] == env["HOME"] == "/scratch"
    (scratch,) = [v for v in pod["volumes"] if v["name"] == "scratch"]
    assert "emptyDir" in scratch
    assert {"name": "scratch", "mountPath": "/scratch"} in minion["volumeMounts"]
    assert env["MINION_ENGINE"] == name.split("/")[0]


@pytest.mark.parametrize(("name", "doc"), workloads(), ids=[name for name, _ in workloads()])
def test_jobs_drain_and_complete_deployments_wait(name: str, doc: dict[str, Any]) -> None:
    env = env_of(doc["spec"]["template"]["spec"])
    if doc["kind"] == "Deployment":
        # A Deployment's minions wait for work until they are stopped: one that exits is restarted.
        assert "MINION_BATCH" not in env and "MINION_IDLE_TIMEOUT" not in env
        return
    spec = doc["spec"]
    assert spec["parallelism"] >= 1
    assert "completions" not in spec
    assert spec["template"]["spec"]["restartPolicy"] in ("OnFailure", "Never")
    # Batch mode: minions exit once the queue is drained, as the chart's Job mode sets it.
    assert env["MINION_BATCH"] == "1"
    # Pulsar and Pub/Sub cannot tell drained: minions in batch mode stop when idle.
    assert int(env["MINION_IDLE_TIMEOUT"]) > 0


def test_secrets_referenced_by_workloads_are_examples_here() -> None:
    secrets = {
        doc["metadata"]["name"]: set(doc.get("stringData", {})) | set(doc.get("data", {}))
        for name in MANIFESTS for doc in load(name) if doc["kind"] == "Secret"
    }
    for _, doc in workloads():
        pod = doc["spec"]["template"]["spec"]
        for value in env_of(pod).values():
            if isinstance(value, dict) and "secretKeyRef" in value:
                ref = value["secretKeyRef"]
                assert ref["key"] in secrets[ref["name"]]
        for vol in pod["volumes"]:
            if "secret" in vol:
                assert {item["key"] for item in vol["secret"]["items"]} <= secrets[vol["secret"]["secretName"]]


def test_google_credentials_point_into_the_mounted_secret() -> None:
    for name, doc in workloads():
        if not name.startswith("google/"):
            continue
        pod = doc["spec"]["template"]["spec"]
        (minion,) = pod["containers"]
        (mount,) = [m for m in minion["volumeMounts"] if m["name"] == "google-credentials"]
        (vol,) = [v for v in pod["volumes"] if v["name"] == "google-credentials"]
        (item,) = vol["secret"]["items"]
        assert env_of(pod)["GOOGLE_APPLICATION_CREDENTIALS"] == f"{mount['mountPath']}/{item['path']}"


def test_readme_names_every_manifest() -> None:
    readme = (K8S / "README.md").read_text()
    for name in MANIFESTS:
        assert f"`{name}`" in readme, name
