"""The chart's KEDA objects, checked against KEDA itself: its CRDs and its scalers' code.

Every rendered ScaledObject, ScaledJob and TriggerAuthentication is validated
against the openAPIV3Schema of the oldest and newest KEDA the chart supports
(and 2.17.0), and the ServiceMonitor against the Prometheus Operator's, with
unknown fields rejected as `kubectl --validate=strict` does. The CRDs are
upstream's, unchanged, in tests/data/crds/ (each folder's SOURCE says where
from). Each trigger's metadata is checked against SCALERS, what each KEDA
scaler reads, taken from its Go code; the chart's README shows that table.
"""

from __future__ import annotations

import copy
import re
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import ROOT, require
from tests.unit.keda_scalers import SCALERS, TESTED_KEDA, readme_table
from tests.unit.test_chart import CHART, ENGINES, case_values, helm_template, merge, one, render

CRDS = ROOT / "tests" / "data" / "crds"
#: The oldest and newest KEDA the chart supports (Chart.yaml says the same), and one between.
KEDA_VERSIONS = ("v2.16.1", "v2.17.0", "v2.20.2")
PROMETHEUS_OPERATOR = "v0.93.0"
SERVICE_MONITOR_CRD = CRDS / f"prometheus-operator-{PROMETHEUS_OPERATOR}" / "monitoring.coreos.com_servicemonitors.yaml"
KEDA_FILES = {"ScaledObject": "keda.sh_scaledobjects.yaml", "ScaledJob": "keda.sh_scaledjobs.yaml",
              "TriggerAuthentication": "keda.sh_triggerauthentications.yaml"}


# --- the CRDs' schemas, closed as kubectl closes them -----------------------


def closed(node: Any, root: bool = True) -> Any:
    """An openAPIV3Schema as a JSON schema that rejects unknown fields.

    The API server prunes (and `kubectl --validate=strict` refuses) a field
    that no `properties` names, unless the object says
    x-kubernetes-preserve-unknown-fields; int-or-string takes both types.
    The root's metadata is ObjectMeta, which the CRD does not spell out.
    """
    if isinstance(node, list):
        return [closed(item, root=False) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: closed(value, root=False) for key, value in node.items()
           if key not in ("description", "x-kubernetes-validations")}
    if out.pop("x-kubernetes-int-or-string", False):
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if out.pop("nullable", False) and "type" in out:
        out["type"] = [out["type"], "null"]
    preserve = out.pop("x-kubernetes-preserve-unknown-fields", False)
    if out.get("type") == "object" and not preserve and "additionalProperties" not in out:
        out["additionalProperties"] = False
    if root:
        out.setdefault("properties", {})["metadata"] = OBJECT_META
    return out


OBJECT_META = {
    "type": "object",
    "additionalProperties": False,
    "required": ["name"],
    "properties": {
        "name": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", "maxLength": 253},
        "namespace": {"type": "string"},
        "labels": {"type": "object", "additionalProperties": {"type": "string", "maxLength": 63}},
        "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
    },
}


@cache
def crd_schema(path: Path) -> tuple[str, str, Any]:
    """(apiVersion, kind, validator) of the CRD's served version."""
    try:
        import jsonschema  # the test extra's, which kubernetes-validate brings too
    except ImportError:
        require(False, "jsonschema is missing: pip install -e '.[test]'")
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    crd = yaml.load(path.read_text(), Loader=loader)
    (version,) = [v for v in crd["spec"]["versions"] if v.get("served") and v.get("storage")]
    schema = closed(version["schema"]["openAPIV3Schema"])
    return (f"{crd['spec']['group']}/{version['name']}", crd["spec"]["names"]["kind"],
            jsonschema.Draft7Validator(schema))


def schema_errors(doc: dict[str, Any], path: Path) -> list[str]:
    api_version, kind, validator = crd_schema(path)
    assert (doc["apiVersion"], doc["kind"]) == (api_version, kind)
    return [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(doc)]


def keda_schema_errors(doc: dict[str, Any], version: str) -> list[str]:
    return schema_errors(doc, CRDS / f"keda-{version}" / KEDA_FILES[doc["kind"]])


def test_the_crds_are_upstreams_with_their_source() -> None:
    for folder in [f"keda-{v}" for v in KEDA_VERSIONS] + [f"prometheus-operator-{PROMETHEUS_OPERATOR}"]:
        source = (CRDS / folder / "SOURCE").read_text()
        assert "Apache-2.0" in source and re.search(r"Commit:\s+[0-9a-f]{40}", source), folder
        assert folder.rsplit("-", 1)[1] in source
        import hashlib

        for line in re.findall(r"^[0-9a-f]{64}  \S+$", source, re.M):
            digest, name = line.split("  ")
            assert hashlib.sha256((CRDS / folder / name).read_bytes()).hexdigest() == digest, name


def test_the_closed_schema_rejects_what_kubectl_rejects() -> None:
    """The check itself: an unknown field, a missing required one, a wrong type."""
    path = CRDS / "keda-v2.20.2" / KEDA_FILES["ScaledObject"]
    good = {"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject", "metadata": {"name": "a"},
            "spec": {"scaleTargetRef": {"name": "a"}, "triggers": [{"type": "cron", "metadata": {"x": "1"}}]}}
    assert schema_errors(good, path) == []
    bad = merge(good, {"spec": {"pollingIntervall": 30}})
    assert any("pollingIntervall" in e for e in schema_errors(bad, path))
    bad = merge(good, {"spec": {"advanced": {"horizontalPodAutoscalerConfig": {"behaviour": {}}}}})
    assert any("behaviour" in e for e in schema_errors(bad, path))
    bad = copy.deepcopy(good)
    del bad["spec"]["scaleTargetRef"]
    assert any("scaleTargetRef" in e for e in schema_errors(bad, path))
    bad = merge(good, {"spec": {"triggers": [{"type": "cron", "metadata": {"x": 1}}]}})
    assert any("is not of type 'string'" in e for e in schema_errors(bad, path))


# --- every combination the chart renders, on every KEDA version --------------

#: Values beyond each engine's ENGINES entry: modes, secrets, TLS, strategies.
VARIANTS: dict[str, dict[str, Any]] = {
    "google-workload-identity": merge(ENGINES["google"], {
        "google": {"credentials": {"existingSecret": ""}, "workloadIdentity": True}}),
    "pulsar-short-topic-mtls": merge(ENGINES["pulsar"], {
        "pulsar": {"topic": "params", "tls": {"clientCert": {"existingSecret": "minion-cert"}}},
        "keda": {"pulsar": {"adminURL": "https://broker:8443", "isPartitionedTopic": True}}}),
    "redis-url-secret": merge(ENGINES["redis"], {
        "redis": {"url": "", "urlSecret": {"existingSecret": "redis-url"}},
        "keda": {"redis": {"address": "redis:6379", "databaseIndex": 3, "username": "minion", "enableTLS": True}}}),
    "redis-plain": merge(ENGINES["redis"], {"redis": {"url": "redis://redis:6379", "passwordSecret": {
        "existingSecret": ""}}}),
    "amqp-management-secret": merge(ENGINES["amqp"], {
        "keda": {"rabbitmq": {"managementURLSecret": {"existingSecret": "rabbit-api"}}}}),
    "amqp-amqp-protocol": merge(ENGINES["amqp"], {"keda": {"rabbitmq": {"protocol": "amqp"}}}),
    "amqp-amqp-protocol-plain-url": merge(ENGINES["amqp"], {
        "amqp": {"url": "amqp://rabbitmq:5672/%2F", "urlSecret": {"existingSecret": ""}},
        "keda": {"rabbitmq": {"protocol": "amqp"}}}),
    "nats-endpoint-secret": merge(ENGINES["nats"], {
        "keda": {"nats": {"monitoringEndpointSecret": {"existingSecret": "nats-mon"}, "useHttps": True}}}),
    "postgres-plain-url": merge(ENGINES["postgres"], {
        "postgres": {"url": "postgresql://minion@db:5432/sweeps", "urlSecret": {"existingSecret": ""}}}),
}
def keda_case(name: str, mode: str) -> dict[str, Any]:
    if name in ENGINES:
        return case_values(name, mode, keda=True)
    engine = name.split("-")[0]
    return merge(case_values(engine, mode, keda=True), VARIANTS[name], {"mode": mode, "keda": {"enabled": True}})


JOB_EXTRAS = {"job": {"restartPolicy": "Never", "parallelism": 3},
              "keda": {"scaledJob": {"scalingStrategy": "custom", "customScalingQueueLengthDeduction": 1,
                                     "customScalingRunningJobPercentage": 0.5}}}
CASES = [(name, mode) for name in [*("google", "pulsar", "redis", "amqp", "nats", "postgres"), *VARIANTS]
         for mode in ("deployment", "job")]


def rendered(helm: str, name: str, mode: str) -> list[dict[str, Any]]:
    values = keda_case(name, mode)
    if mode == "job" and name in ENGINES:
        values = merge(values, JOB_EXTRAS)
    if name == "redis":
        values = merge(values, {"metrics": {"enabled": True, "serviceMonitor": {"enabled": True,
                                                                              "interval": "30s"}}})
    return render(helm, values)


@pytest.mark.parametrize(("name", "mode"), CASES, ids=[f"{n}-{m}" for n, m in CASES])
def test_keda_objects_match_every_supported_crd(helm: str, name: str, mode: str) -> None:
    docs = rendered(helm, name, mode)
    keda = [d for d in docs if d["kind"] in KEDA_FILES]
    assert {d["kind"] for d in keda} >= {"ScaledObject" if mode == "deployment" else "ScaledJob"}
    for version in KEDA_VERSIONS:
        for doc in keda:
            assert keda_schema_errors(doc, version) == [], (version, doc["kind"])
    for monitor in (d for d in docs if d["kind"] == "ServiceMonitor"):
        assert schema_errors(monitor, SERVICE_MONITOR_CRD) == []
    check_trigger_against_the_scaler(docs)


def check_trigger_against_the_scaler(docs: list[dict[str, Any]]) -> None:
    """What the scaler reads: known names, required ones, numbers it can parse, auth parameters it takes."""
    scaled = next(d for d in docs if d["kind"] in ("ScaledObject", "ScaledJob"))
    auth = {ref["parameter"] for d in docs if d["kind"] == "TriggerAuthentication"
            for ref in d["spec"].get("secretTargetRef", [])}
    pod_identity = any("podIdentity" in d["spec"] for d in docs if d["kind"] == "TriggerAuthentication")
    for trigger in scaled["spec"]["triggers"]:
        scaler = SCALERS[trigger["type"]]
        metadata = trigger["metadata"]
        assert set(metadata) <= scaler.reads, f"{trigger['type']} reads none of {set(metadata) - scaler.reads}"
        assert auth <= scaler.auth, f"{trigger['type']} takes no auth parameter {auth - scaler.auth}"
        given = set(metadata) | auth | {k.removesuffix("FromEnv") for k in metadata}
        for alternatives in scaler.required:
            assert given & alternatives or pod_identity and trigger["type"] == "gcp-pubsub", alternatives
        for key in scaler.integers & set(metadata):
            assert re.fullmatch(r"-?[0-9]+", metadata[key]), f"{key}: {metadata[key]!r} is not a Go integer"
        for key in scaler.numbers & set(metadata):
            assert re.fullmatch(r"-?[0-9]+(\.[0-9]+)?", metadata[key]), f"{key}: {metadata[key]!r}"
        for key in scaler.booleans & set(metadata):
            assert metadata[key] in ("true", "false"), f"{key}: {metadata[key]!r}"
        for key, allowed in scaler.enums.items():
            assert metadata.get(key, next(iter(allowed))) in allowed, (key, metadata.get(key))
        for key, excluded in scaler.excludes.items():
            if key in metadata:
                assert not excluded & set(metadata), f"{key} with {excluded & set(metadata)} measures another thing"


def test_the_readme_shows_the_scalers_table() -> None:
    readme = (CHART / "README.md").read_text()
    match = re.search(r"<!-- keda-scalers:start -->\n(.*?)<!-- keda-scalers:end -->", readme, re.S)
    assert match, "the chart's README has no table of KEDA's scalers"
    assert match.group(1) == readme_table(), "regenerate it: python -m tests.unit.keda_scalers"


def test_the_chart_states_the_keda_versions_it_supports() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    annotations = chart["annotations"]
    oldest, newest = KEDA_VERSIONS[0].lstrip("v"), KEDA_VERSIONS[-1].lstrip("v")
    assert annotations["minionize/keda-oldest-tested"] == oldest
    assert annotations["minionize/keda-newest-tested"] == newest
    assert (KEDA_VERSIONS[0], KEDA_VERSIONS[-1]) == TESTED_KEDA
    readme = (CHART / "README.md").read_text()
    assert f"KEDA {oldest} to {newest}" in readme


# --- the issue's defects, one test each ---------------------------------------


def scaled_spec(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return next(d for d in docs if d["kind"] in ("ScaledObject", "ScaledJob"))["spec"]


def trigger_metadata(docs: list[dict[str, Any]]) -> dict[str, str]:
    (trigger,) = scaled_spec(docs)["triggers"]
    metadata: dict[str, str] = trigger["metadata"]
    return metadata


def test_redis_counts_waiting_running_and_handed_back_entries(helm: str) -> None:
    """XLEN without a consumer group: consumerGroup would turn streamLength into XPENDING."""
    metadata = trigger_metadata(render(helm, keda_case("redis", "deployment")))
    assert metadata["streamLength"] == "1" and "consumerGroup" not in metadata and "lagCount" not in metadata


def test_redis_connection_settings_come_from_the_url(helm: str) -> None:
    values = merge(keda_case("redis", "deployment"), {"redis": {"url": "rediss://minion@redis-master:6380/2"}})
    metadata = trigger_metadata(render(helm, values))
    assert (metadata["address"], metadata["databaseIndex"], metadata["username"], metadata["enableTLS"]) == (
        "redis-master:6380", "2", "minion", "true")
    metadata = trigger_metadata(render(helm, keda_case("redis-plain", "deployment")))
    assert metadata["enableTLS"] == "false" and "databaseIndex" not in metadata and "username" not in metadata


def test_redis_url_secret_alone_is_refused_with_keda(helm: str) -> None:
    values = merge(keda_case("redis-url-secret", "deployment"), {"redis": {"passwordSecret": {"existingSecret": ""}}})
    done = helm_template(helm, values)
    assert done.returncode != 0 and "KEDA cannot read the password inside the URL" in done.stderr, done.stderr
    docs = render(helm, merge(values, {"keda": {"authenticationRef": "mine"}}))
    assert scaled_spec(docs)["triggers"][0]["authenticationRef"] == {"name": "mine"}


@pytest.mark.parametrize(("values", "message"), [
    ({"keda": {"redis": {"metric": "lagCount"}}}, "lagCount counts only the entries not yet delivered"),
    ({"keda": {"redis": {"metric": "pendingEntriesCount"}}}, "pendingEntriesCount counts only the entries being run"),
    ({"redis": {"deleteAcked": False}}, "redis.deleteAcked=false: the stream keeps settled entries"),
    ({"engine": "google", "google": {"emulatorHost": "pubsub:8085"}}, "the emulator does not have"),
    ({"engine": "amqp", "keda": {"rabbitmq": {"managementURL": ""}}}, "keda.rabbitmq.managementURL"),
    ({"engine": "amqp", "keda": {"rabbitmq": {"credentialsSecret": {"existingSecret": ""}}}},
     "keda.rabbitmq.managementURL needs keda.rabbitmq.credentialsSecret"),
    ({"engine": "pulsar", "pulsar": {"topic": "non-persistent://public/default/p"}}, "non-persistent://"),
])
def test_keda_guards(helm: str, values: dict[str, Any], message: str) -> None:
    engine = values.get("engine", "redis")
    done = helm_template(helm, merge(keda_case(engine, "deployment"), values))
    assert done.returncode != 0 and message in done.stderr, done.stderr
    assert "schema" not in done.stderr


def test_rabbitmq_counts_unacknowledged_messages_by_default(helm: str) -> None:
    docs = render(helm, keda_case("amqp", "deployment"))
    metadata = trigger_metadata(docs)
    assert (metadata["protocol"], metadata["host"], metadata["mode"]) == ("http", "http://rabbitmq:15672/%2F",
                                                                          "QueueLength")
    assert "excludeUnacknowledged" not in metadata
    # The management API's user, not the AMQP URL's Secret, which is the minions'.
    assert one(docs, "TriggerAuthentication")["spec"]["secretTargetRef"] == [
        {"parameter": "username", "name": "rabbit-monitor", "key": "username"},
        {"parameter": "password", "name": "rabbit-monitor", "key": "password"}]
    docs = render(helm, keda_case("amqp-management-secret", "deployment"))
    assert "host" not in trigger_metadata(docs)
    assert one(docs, "TriggerAuthentication")["spec"]["secretTargetRef"] == [
        {"parameter": "host", "name": "rabbit-api", "key": "managementURL"}]
    # protocol amqp, chosen: the queue's ready messages, from the minions' URL.
    docs = render(helm, keda_case("amqp-amqp-protocol", "job"))
    assert trigger_metadata(docs)["protocol"] == "amqp"
    assert one(docs, "TriggerAuthentication")["spec"]["secretTargetRef"] == [
        {"parameter": "host", "name": "amqp-url", "key": "url"}]


@pytest.mark.parametrize(("overrides", "mode", "target"), [
    ({}, "deployment", "1"),
    ({"minion": {"concurrency": 4}}, "deployment", "4"),
    ({"minion": {"concurrency": 4}, "job": {"parallelism": 2}}, "job", "8"),
    ({"minion": {"concurrency": 4}, "keda": {"target": 10}}, "deployment", "10"),
])
def test_target_defaults_to_what_the_minions_run_at_once(
    helm: str, overrides: dict[str, Any], mode: str, target: str
) -> None:
    for engine, key in (("redis", "streamLength"), ("pulsar", "msgBacklogThreshold"), ("nats", "lagThreshold"),
                        ("amqp", "value"), ("google", "value"), ("postgres", "targetQueryValue")):
        metadata = trigger_metadata(render(helm, merge(keda_case(engine, mode), overrides)))
        assert metadata[key] == target, engine


def test_scale_down_never_stops_a_busy_minion_by_default_and_goes_one_pod_at_a_time_when_asked(helm: str) -> None:
    spec = scaled_spec(render(helm, keda_case("redis", "deployment")))
    scale_down = spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]["scaleDown"]
    # The HPA removes no pod (the ReplicaSet would pick busy ones too): KEDA stops the
    # fleet whole once the backlog, runs in flight included, is zero.
    assert scale_down["selectPolicy"] == "Disabled"
    spec = scaled_spec(render(helm, merge(keda_case("redis", "deployment"),
                                          {"keda": {"behavior": {"scaleDown": {"selectPolicy": "Min"}}}})))
    scale_down = spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]["scaleDown"]
    assert scale_down["selectPolicy"] == "Min"
    assert scale_down["stabilizationWindowSeconds"] >= 300
    assert scale_down["policies"] == [{"type": "Pods", "value": 1, "periodSeconds": 120}]
    spec = scaled_spec(render(helm, merge(keda_case("redis", "deployment"), {"keda": {"behavior": None}})))
    assert "advanced" not in spec


def test_an_upgrade_leaves_running_jobs_alone(helm: str) -> None:
    values = keda_case("redis", "job")
    spec = scaled_spec(render(helm, values))
    assert spec["rollout"] == {"strategy": "gradual"}
    # A chart bump alone changes nothing of the Jobs' template.
    template = spec["jobTargetRef"]["template"]
    assert not {"helm.sh/chart", "app.kubernetes.io/version"} & set(template["metadata"]["labels"])


def test_job_never_restart_rule_has_a_status_for_keda_up_to_2_19(helm: str) -> None:
    docs = render(helm, merge(keda_case("redis", "job"), {"job": {"restartPolicy": "Never"}}))
    rules = scaled_spec(docs)["jobTargetRef"]["podFailurePolicy"]["rules"]
    assert {"type": "DisruptionTarget", "status": "True"} in rules[1]["onPodConditions"]


def test_pulsar_tls_and_short_topics_reach_keda(helm: str) -> None:
    docs = render(helm, keda_case("pulsar-short-topic-mtls", "deployment"))
    metadata = trigger_metadata(docs)
    assert metadata["topic"] == "persistent://public/default/params"
    assert metadata["tls"] == "enable" and metadata["authModes"] == "bearer"
    refs = one(docs, "TriggerAuthentication")["spec"]["secretTargetRef"]
    assert refs == [{"parameter": "bearerToken", "name": "pulsar-auth", "key": "jwt"},
                    {"parameter": "ca", "name": "pulsar-ca", "key": "ca.crt"},
                    {"parameter": "cert", "name": "minion-cert", "key": "tls.crt"},
                    {"parameter": "key", "name": "minion-cert", "key": "tls.key"}]
    values = merge(keda_case("pulsar", "deployment"), {"pulsar": {"topic": "team/sweeps/params"}})
    assert trigger_metadata(render(helm, values))["topic"] == "persistent://team/sweeps/params"


def test_numbers_are_written_as_integers(helm: str) -> None:
    values = merge(keda_case("redis", "deployment"), {"keda": {"target": 1000000, "activationTarget": 2,
                                                               "triggerMetadata": {"pageSize": 2000000}}})
    metadata = trigger_metadata(render(helm, values))
    assert (metadata["streamLength"], metadata["activationLagCount"], metadata["pageSize"]) == (
        "1000000", "2", "2000000")
    done = helm_template(helm, merge(values, {"keda": {"target": 2.5}}))
    assert done.returncode != 0 and "keda.target" in done.stderr
    # The objects' own integers too (a values file's numbers are floats to Helm).
    big = 1000000
    values = merge(keda_case("redis", "job"), {"keda": {"pollingInterval": big, "maxReplicaCount": big,
                                                        "scaledJob": {"successfulJobsHistoryLimit": big}},
                                               "job": {"activeDeadlineSeconds": big, "backoffLimit": big}})
    scaled = one(render(helm, values), "ScaledJob")
    spec = scaled["spec"]
    assert [spec["pollingInterval"], spec["maxReplicaCount"], spec["successfulJobsHistoryLimit"],
            spec["jobTargetRef"]["activeDeadlineSeconds"], spec["jobTargetRef"]["backoffLimit"]] == [big] * 5
    assert keda_schema_errors(scaled, KEDA_VERSIONS[0]) == []
    values = merge(keda_case("redis", "deployment"), {"keda": {"cooldownPeriod": big, "minReplicaCount": 3}})
    scaled = one(render(helm, values), "ScaledObject")
    assert (scaled["spec"]["cooldownPeriod"], scaled["spec"]["minReplicaCount"]) == (big, 3)


def test_google_trigger_reads_an_idle_subscription_as_empty(helm: str) -> None:
    assert trigger_metadata(render(helm, keda_case("google", "deployment")))["valueIfNull"] == "0"


def test_custom_scaling_strategy_subtracts_running_jobs(helm: str) -> None:
    strategy = scaled_spec(rendered(helm, "redis", "job"))["scalingStrategy"]
    assert strategy == {"strategy": "custom", "customScalingQueueLengthDeduction": 1,
                        "customScalingRunningJobPercentage": "0.5"}


def test_pods_have_requests_and_skip_the_recursive_chown(helm: str) -> None:
    docs = render(helm, keda_case("redis", "deployment"))
    deployment = one(docs, "Deployment")["spec"]["template"]["spec"]
    assert deployment["securityContext"]["fsGroupChangePolicy"] == "OnRootMismatch"
    assert set(deployment["containers"][0]["resources"]["requests"]) == {"cpu", "memory"}
