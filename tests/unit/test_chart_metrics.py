"""The chart's metrics option: /metrics, the probes and how Prometheus finds them.

Rendered with the real helm; the core objects pass `kubernetes-validate
--strict`, the ServiceMonitor its CRD's schema (the Prometheus Operator's, in
tests/data/crds/), and the links between them are checked here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.unit.test_chart import (
    FULLNAME,
    RELEASE,
    case_values,
    container,
    env_of,
    helm_template,
    merge,
    one,
    render,
    render_notes,
    validate,
)
from tests.unit.test_chart_keda import SERVICE_MONITOR_CRD, schema_errors

ON = {"metrics": {"enabled": True}}
MONITORED = {"metrics": {"enabled": True, "serviceMonitor": {"enabled": True}}}
SCRAPE_ANNOTATIONS = ("prometheus.io/scrape", "prometheus.io/port", "prometheus.io/path")


def pod_metadata(docs: list[dict[str, Any]]) -> dict[str, Any]:
    for doc in docs:
        if doc["kind"] in ("Deployment", "Job"):
            return doc["spec"]["template"]["metadata"]
        if doc["kind"] == "ScaledJob":
            return doc["spec"]["jobTargetRef"]["template"]["metadata"]
    raise AssertionError(f"no workload in {[d['kind'] for d in docs]}")


def named_port(docs: list[dict[str, Any]], name: str) -> int:
    (port,) = [p["containerPort"] for p in container(docs).get("ports", []) if p["name"] == name]
    return int(port)


CASES = [("execo", "deployment", False), ("execo", "job", False), ("redis", "job", True), ("amqp", "deployment", True)]


@pytest.mark.parametrize(("engine", "mode", "keda"), CASES, ids=[f"{e}-{m}{'-keda' * k}" for e, m, k in CASES])
def test_metrics_render_validates(
    helm: str, kubernetes_validate: str, tmp_path: Path, engine: str, mode: str, keda: bool
) -> None:
    docs = render(helm, merge(case_values(engine, mode, keda), MONITORED))
    validate(kubernetes_validate, [d for d in docs if d["kind"] != "ServiceMonitor"], tmp_path)
    service, monitor = one(docs, "Service"), one(docs, "ServiceMonitor")
    assert schema_errors(monitor, SERVICE_MONITOR_CRD) == []
    # The ServiceMonitor finds the Service, whose selector finds the minion pods.
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["namespace"] == service["metadata"]["namespace"] == "minions"
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": ["minions"]}
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert service["spec"]["selector"].items() <= pod_metadata(docs)["labels"].items()
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["publishNotReadyAddresses"] is True
    (endpoint,) = monitor["spec"]["endpoints"]
    (port,) = service["spec"]["ports"]
    assert endpoint["port"] == port["name"] == "metrics"
    assert endpoint["path"] == "/metrics"
    assert port["targetPort"] == "metrics" and named_port(docs, "metrics") == port["port"] == 9100
    assert set(endpoint) == {"port", "path"}, "no interval or timeout unless asked: Prometheus' defaults"


def test_env_port_and_probes(helm: str) -> None:
    docs = render(helm, merge(case_values("pulsar", "deployment"), {"metrics": {"enabled": True, "port": 9200}}))
    minion = container(docs)
    assert env_of(docs)["MINION_METRICS_PORT"] == "9200"
    assert "MINION_METRICS_ADDRESS" not in env_of(docs), "its 0.0.0.0 default is what the kubelet needs"
    assert minion["ports"] == [{"name": "metrics", "containerPort": 9200, "protocol": "TCP"}]
    live, ready = minion["livenessProbe"], minion["readinessProbe"]
    assert live["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert ready["httpGet"] == {"path": "/readyz", "port": "metrics"}
    # /healthz goes stale after 60 s without a turn: a minute more of failures before a restart.
    assert live["periodSeconds"] * live["failureThreshold"] == 60
    assert named_port(docs, live["httpGet"]["port"]) == named_port(docs, ready["httpGet"]["port"]) == 9200
    assert pod_metadata(docs)["annotations"]["prometheus.io/port"] == "9200"


@pytest.mark.parametrize("mode", ["deployment", "job"])
def test_disabled_renders_nothing_of_it(helm: str, mode: str) -> None:
    values = merge(case_values("redis", mode), {"podAnnotations": {"team": "ml"}})
    docs = render(helm, values)
    minion = container(docs)
    assert not [k for k in env_of(docs) if k.startswith("MINION_METRICS")]
    assert not {"ports", "livenessProbe", "readinessProbe"} & set(minion)
    assert pod_metadata(docs)["annotations"] == {"team": "ml"}
    assert not {"Service", "ServiceMonitor"} & {d["kind"] for d in docs}


@pytest.mark.parametrize(
    ("metrics", "expected"),
    [
        ({"enabled": True}, {"prometheus.io/scrape": "true", "prometheus.io/port": "9100",
                             "prometheus.io/path": "/metrics", "team": "ml"}),
        ({"enabled": True, "scrapeAnnotations": False}, {"team": "ml"}),
        ({"enabled": False, "scrapeAnnotations": True}, {"team": "ml"}),
    ],
)
def test_scrape_annotations(helm: str, metrics: dict[str, Any], expected: dict[str, str]) -> None:
    values = merge(case_values("amqp", "deployment"), {"metrics": metrics, "podAnnotations": {"team": "ml"}})
    assert pod_metadata(render(helm, values))["annotations"] == expected


def test_pod_annotations_win_over_scrape_annotations(helm: str) -> None:
    values = merge(case_values("amqp", "job", keda=True), ON, {"podAnnotations": {"prometheus.io/path": "/other"}})
    annotations = pod_metadata(render(helm, values))["annotations"]
    assert annotations["prometheus.io/path"] == "/other"
    assert annotations["prometheus.io/scrape"] == "true"


def test_probes_are_overridable(helm: str) -> None:
    values = merge(case_values("execo", "deployment"), {"metrics": {
        "enabled": True,
        "livenessProbe": {"periodSeconds": 20, "initialDelaySeconds": 5},
        # null drops a default, here to replace the HTTP check by a TCP one.
        "readinessProbe": {"httpGet": None, "tcpSocket": {"port": "metrics"}},
    }})
    minion = container(render(helm, values))
    assert minion["livenessProbe"] == {"httpGet": {"path": "/healthz", "port": "metrics"}, "periodSeconds": 20,
                                       "initialDelaySeconds": 5, "timeoutSeconds": 5, "failureThreshold": 6}
    assert "httpGet" not in minion["readinessProbe"]
    assert minion["readinessProbe"]["tcpSocket"] == {"port": "metrics"}

    values = merge(case_values("execo", "deployment"), {"metrics": {"enabled": True, "livenessProbe": None}})
    minion = container(render(helm, values))
    assert "livenessProbe" not in minion and minion["readinessProbe"]["httpGet"]["path"] == "/readyz"


def test_service_monitor_settings(helm: str) -> None:
    values = merge(case_values("google", "deployment"), MONITORED, {
        "commonLabels": {"release": "common", "team": "ml"},
        "metrics": {"serviceMonitor": {"interval": "30s", "scrapeTimeout": "10s",
                                       "labels": {"release": "kube-prometheus-stack"}}},
    })
    monitor = one(render(helm, values), "ServiceMonitor")
    assert schema_errors(monitor, SERVICE_MONITOR_CRD) == []
    assert monitor["metadata"]["name"] == FULLNAME
    labels = monitor["metadata"]["labels"]
    assert labels["release"] == "kube-prometheus-stack", "the ServiceMonitor's own labels win"
    assert labels["team"] == "ml" and labels["app.kubernetes.io/instance"] == RELEASE
    (endpoint,) = monitor["spec"]["endpoints"]
    assert (endpoint["interval"], endpoint["scrapeTimeout"]) == ("30s", "10s")


def test_service_name_fits_a_label(helm: str) -> None:
    values = merge(case_values("execo", "deployment"), MONITORED, {"fullnameOverride": "m" * 63})
    name = one(render(helm, values), "Service")["metadata"]["name"]
    assert len(name) <= 63 and name.endswith("-metrics")


def test_service_monitor_needs_metrics(helm: str) -> None:
    values = merge(case_values("execo", "deployment"), {"metrics": {"serviceMonitor": {"enabled": True}}})
    for args in ((), ("--skip-schema-validation",)):
        done = helm_template(helm, values, *args)
        assert done.returncode != 0, "rendered instead of failing"
        assert "metrics.serviceMonitor.enabled needs metrics.enabled=true" in done.stderr, done.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "metrics.enable=true"], "metrics: Additional property enable is not allowed"),
        (["--set", "metrics.serviceMonitor.intervall=30s"],
         "metrics.serviceMonitor: Additional property intervall is not allowed"),
        (["--set", "metrics.livenessProbe.periodSecond=5"],
         "metrics.livenessProbe: Additional property periodSecond is not allowed"),
        (["--set", "metrics.readinessProbe.httpGet.pth=/x"],
         "metrics.readinessProbe.httpGet: Additional property pth is not allowed"),
        (["--set", "metrics.port=0"], "metrics.port: Must be greater than or equal to 1"),
        (["--set", "metrics.port=http"], "metrics.port: Invalid type. Expected: integer, given: string"),
        (["--set", "metrics.serviceMonitor.interval=30 seconds"], "metrics.serviceMonitor.interval: Does not match"),
        (["--set", "metrics.livenessProbe.successThreshold=2"],
         "metrics.livenessProbe.successThreshold: Must be less than or equal to 1"),
    ],
)
def test_schema_rejects(helm: str, args: list[str], message: str) -> None:
    done = helm_template(helm, case_values("execo", "deployment"), *args)
    assert done.returncode != 0
    assert "values don't meet the specifications of the schema" in done.stderr
    assert message in done.stderr, done.stderr


def test_notes_tell_how_to_scrape_one_minion(helm: str, tmp_path: Path) -> None:
    notes = render_notes(helm, merge(case_values("redis", "job"), MONITORED, {"metrics": {"port": 9300}}), tmp_path)
    assert "kubectl port-forward --namespace minions $(kubectl get pods --namespace minions -l " in notes
    assert "9300:9300" in notes
    assert "curl -s http://127.0.0.1:9300/metrics" in notes
    assert f"ServiceMonitor {FULLNAME}" in notes and f"Service {FULLNAME}-metrics" in notes

    notes = render_notes(helm, case_values("redis", "job"), tmp_path / "off")
    assert "port-forward" not in notes and "/metrics" not in notes
