"""The Helm chart in helm/minionize: lint, renders and guards, with no cluster.

Every engine is rendered in both modes (and with KEDA for the brokers); the
core objects are validated with `kubernetes-validate --strict`, the KEDA
objects' structure here, and against KEDA's CRDs and scalers in
test_chart_keda.py. helm and kubernetes-validate
come from scripts/k8s-tools.sh: a missing tool skips locally and fails under
CI=true.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any, Optional

import pytest
import yaml

from minionize.config import BATCH_IDLE_TIMEOUT
from tests.conftest import ROOT

CHART = ROOT / "helm" / "minionize"
#: Bundled by the kubernetes-validate that scripts/k8s-tools.sh pins.
KUBERNETES_VERSION = "1.37.0"
RELEASE = "fleet"
FULLNAME = f"{RELEASE}-minionize"
KEDA_KINDS = {"ScaledObject", "ScaledJob", "TriggerAuthentication"}

#: The user's image, built FROM minionize/base with the program as its CMD.
IMAGE = {"image": {"repository": "registry.example/team/train", "tag": "1.0"}}
#: A working configuration of each engine, as a user would write it.
ENGINES: dict[str, dict[str, Any]] = {
    "execo": {**IMAGE, "engine": "execo", "execo": {"existingClaim": "sweeps", "leaseSeconds": 90}},
    "google": {
        **IMAGE,
        "engine": "google",
        "google": {
            "projectId": "proj",
            "topicId": "params",
            "subscription": "params-sub",
            "decoder": "json",
            "ackDeadline": 60,
            "credentials": {"existingSecret": "gcp-key", "key": "sa.json"},
        },
    },
    "pulsar": {
        **IMAGE,
        "engine": "pulsar",
        "pulsar": {
            "connection": "pulsar+ssl://broker:6651",
            "topic": "persistent://public/default/params",
            "subscription": "minions",
            "decoder": "json",
            "token": {"existingSecret": "pulsar-auth", "key": "jwt"},
            "tls": {"trustCerts": {"existingSecret": "pulsar-ca"}, "validateHostname": False, "allowInsecure": True},
        },
    },
    "redis": {
        **IMAGE,
        "engine": "redis",
        "redis": {
            "url": "redis://redis-master:6380/1",
            "passwordSecret": {"existingSecret": "redis-pass"},
            "stream": "params",
            "claimIdle": 120,
        },
    },
    "amqp": {
        **IMAGE,
        "engine": "amqp",
        "amqp": {"urlSecret": {"existingSecret": "amqp-url"}, "queue": "params", "decoder": "identity"},
    },
    "nats": {
        **IMAGE,
        "engine": "nats",
        "nats": {
            "url": "nats://nats:4222",
            "stream": "params",
            "decoder": "json",
            "userSecret": {"existingSecret": "nats-auth"},
            "passwordSecret": {"existingSecret": "nats-auth"},
            "tls": {"ca": {"existingSecret": "nats-ca"}},
        },
    },
    "postgres": {
        **IMAGE,
        "engine": "postgres",
        "postgres": {"urlSecret": {"existingSecret": "pg-url"}, "table": "sweeps.params", "leaseSeconds": 120},
    },
}
BROKERS = ("google", "pulsar", "redis", "amqp", "postgres", "nats")
#: What KEDA needs beyond the engine's own settings.
KEDA_EXTRA: dict[str, dict[str, Any]] = {
    "google": {},
    "pulsar": {"keda": {"pulsar": {"adminURL": "https://broker:8443"}}},
    "redis": {},
    "amqp": {"keda": {"rabbitmq": {"managementURL": "http://rabbitmq:15672/%2F",
                                   "credentialsSecret": {"existingSecret": "rabbit-monitor"}}}},
    "nats": {"keda": {"nats": {"monitoringEndpoint": "nats:8222"}}},
    "postgres": {},
}
TRIGGER_TYPES = {"google": "gcp-pubsub", "pulsar": "pulsar", "redis": "redis-streams", "amqp": "rabbitmq",
                 "nats": "nats-jetstream",
                 "postgres": "postgresql"}




# --- rendering -------------------------------------------------------------


def merge(*layers: dict[str, Any]) -> dict[str, Any]:
    """Deep merge of values, later layers winning."""
    out: dict[str, Any] = {}
    for layer in layers:
        for key, value in layer.items():
            if isinstance(value, dict) and isinstance(out.get(key), dict):
                out[key] = merge(out[key], value)
            else:
                out[key] = value
    return out


def case_values(engine: str, mode: str, keda: bool = False) -> dict[str, Any]:
    values = merge(ENGINES[engine], {"mode": mode})
    if keda:
        values = merge(values, {"keda": {"enabled": True}}, KEDA_EXTRA[engine])
    return values


def helm_template(
    helm: str, values: dict[str, Any], *args: str, chart: Path = CHART
) -> subprocess.CompletedProcess[str]:
    # JSON is YAML: the values reach helm exactly as typed here.
    return subprocess.run(
        [helm, "template", RELEASE, str(chart), "--namespace", "minions", "--values", "-", *args],
        input=json.dumps(values),
        capture_output=True,
        text=True,
        timeout=60,
    )


@cache
def _render_cached(helm: str, values_json: str) -> tuple[dict[str, Any], ...]:
    done = helm_template(helm, json.loads(values_json))
    assert done.returncode == 0, done.stderr
    return tuple(doc for doc in yaml.safe_load_all(done.stdout) if doc)


def render(helm: str, values: dict[str, Any]) -> list[dict[str, Any]]:
    return list(_render_cached(helm, json.dumps(values, sort_keys=True)))


def one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, got {[d['kind'] for d in docs]}"
    return found[0]


def pod_spec(docs: list[dict[str, Any]]) -> dict[str, Any]:
    """The pod spec of the workload, whichever kind carries it."""
    for doc in docs:
        if doc["kind"] in ("Deployment", "Job"):
            return doc["spec"]["template"]["spec"]
        if doc["kind"] == "ScaledJob":
            return doc["spec"]["jobTargetRef"]["template"]["spec"]
    raise AssertionError(f"no workload in {[d['kind'] for d in docs]}")


def container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (minion,) = pod_spec(docs)["containers"]
    return minion


def env_of(docs: list[dict[str, Any]]) -> dict[str, Any]:
    """name -> value, or the valueFrom mapping for variables read from elsewhere."""
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container(docs)["env"]}


def mount_of(docs: list[dict[str, Any]], volume_name: str) -> str:
    (path,) = [m["mountPath"] for m in container(docs)["volumeMounts"] if m["name"] == volume_name]
    return path


def volume(docs: list[dict[str, Any]], name: str) -> dict[str, Any]:
    (vol,) = [v for v in pod_spec(docs)["volumes"] if v["name"] == name]
    return vol


def validate(kubernetes_validate: str, docs: list[dict[str, Any]], tmp_path: Path) -> None:
    """kubernetes-validate --strict the core objects, and the Job inside a ScaledJob."""
    core = [d for d in docs if d["kind"] not in KEDA_KINDS]
    for scaled in (d for d in docs if d["kind"] == "ScaledJob"):
        core.append({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "scaledjob-target"},
                     "spec": scaled["spec"]["jobTargetRef"]})
    path = tmp_path / "rendered.yaml"
    path.write_text(yaml.safe_dump_all(core))
    done = subprocess.run(
        [kubernetes_validate, "--strict", "--kubernetes-version", KUBERNETES_VERSION, str(path)],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("passed for resource") == len(core), done.stdout


# --- lint ------------------------------------------------------------------


def helm_lint(helm: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([helm, "lint", "--strict", str(CHART), *args], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("values_file", sorted(p.name for p in (CHART / "ci").glob("*-values.yaml")))
def test_lint_strict(helm: str, values_file: str) -> None:
    """Each example of ci/ (chart-testing's convention)."""
    done = helm_lint(helm, "--values", str(CHART / "ci" / values_file))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 chart(s) linted, 0 chart(s) failed" in done.stdout


def test_lint_fails_on_the_defaults_naming_what_to_set(helm: str) -> None:
    """The defaults make no fleet (execo without its claim, the base image's help): lint says so.

    helm lint turns a template's `fail` into an [INFO] line and passes; the
    chart's guards stop it all the same (templates/_validation.tpl).
    """
    done = helm_lint(helm)
    assert done.returncode != 0, done.stdout
    assert "1 chart(s) linted, 1 chart(s) failed" in done.stdout + done.stderr
    assert "[ERROR]" in done.stdout and "engine execo needs execo.existingClaim" in done.stdout


# --- every engine, every mode ---------------------------------------------

MATRIX = [(engine, mode, False) for engine in ENGINES for mode in ("deployment", "job")] + [
    (engine, mode, True) for engine in BROKERS for mode in ("deployment", "job")
]


@pytest.mark.parametrize(("engine", "mode", "keda"), MATRIX, ids=[f"{e}-{m}{'-keda' * k}" for e, m, k in MATRIX])
def test_render_validates(
    helm: str, kubernetes_validate: str, tmp_path: Path, engine: str, mode: str, keda: bool
) -> None:
    docs = render(helm, case_values(engine, mode, keda))
    validate(kubernetes_validate, docs, tmp_path)
    kinds = sorted(d["kind"] for d in docs)
    workload = {("deployment", False): "Deployment", ("job", False): "Job",
                ("deployment", True): "ScaledObject", ("job", True): "ScaledJob"}[mode, keda]
    assert workload in kinds
    if keda:
        check_keda(docs, engine, mode)
    else:
        assert not KEDA_KINDS & set(kinds)
    env = env_of(docs)
    assert env["MINION_ENGINE"] == engine
    assert int(pod_spec(docs)["terminationGracePeriodSeconds"]) > int(env["MINION_GRACE_PERIOD"])
    # A Deployment's minions wait for work until stopped; a Job's run in batch mode and end drained.
    if mode == "deployment":
        assert "MINION_BATCH" not in env and "MINION_IDLE_TIMEOUT" not in env
        assert "MINION_FAILED_EXIT_CODE" not in env
    else:
        # A pod whose minion set parameters aside completes: they wait in the dead-letter place.
        assert env["MINION_BATCH"] == "1" and env["MINION_FAILED_EXIT_CODE"] == "0"


def check_keda(docs: list[dict[str, Any]], engine: str, mode: str) -> None:
    """The structure KEDA expects, since no schema is bundled for its CRDs."""
    kind = "ScaledObject" if mode == "deployment" else "ScaledJob"
    scaled = one(docs, kind)
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    assert scaled["metadata"]["name"] == FULLNAME
    spec = scaled["spec"]
    (trigger,) = spec["triggers"]
    assert trigger["type"] == TRIGGER_TYPES[engine]
    assert all(isinstance(v, str) for v in trigger["metadata"].values()), "KEDA metadata values are strings"
    if kind == "ScaledObject":
        assert spec["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": FULLNAME}
        assert "replicas" not in one(docs, "Deployment")["spec"], "KEDA owns the replica count"
        assert spec["minReplicaCount"] <= spec["maxReplicaCount"]
    else:
        assert not [d for d in docs if d["kind"] == "Job"], "KEDA creates the Jobs"
        assert "template" in spec["jobTargetRef"] and "completions" not in spec["jobTargetRef"]
    auth = [d for d in docs if d["kind"] == "TriggerAuthentication"]
    if auth:
        assert auth[0]["apiVersion"] == "keda.sh/v1alpha1"
        assert trigger["authenticationRef"] == {"name": auth[0]["metadata"]["name"]}
        for ref in auth[0]["spec"].get("secretTargetRef", []):
            assert set(ref) == {"parameter", "name", "key"}


# --- what reaches the container -------------------------------------------


@pytest.mark.parametrize(
    ("engine", "expected"),
    [
        ("execo", {"EXECO_PERSISTENCE_DIR": "/data/sweeps", "MINION_LEASE_SECONDS": "90"}),
        ("google", {"GOOGLE_PROJECT_ID": "proj", "GOOGLE_TOPIC_ID": "params", "GOOGLE_SUBSCRIPTION": "params-sub",
                    "GOOGLE_DECODER": "json", "GOOGLE_ACK_DEADLINE": "60"}),
        ("pulsar", {"PULSAR_CONNECTION": "pulsar+ssl://broker:6651", "PULSAR_TOPIC": "persistent://public/default/params",
                    "PULSAR_SUBSCRIPTION": "minions", "PULSAR_DECODER": "json",
                    "PULSAR_TLS_VALIDATE_HOSTNAME": "false", "PULSAR_TLS_ALLOW_INSECURE": "true",
                    "PULSAR_TOKEN": {"secretKeyRef": {"name": "pulsar-auth", "key": "jwt"}}}),
        ("redis", {"REDIS_URL": "redis://redis-master:6380/1", "REDIS_STREAM": "params", "REDIS_GROUP": "minionize",
                   "REDIS_PASSWORD": {"secretKeyRef": {"name": "redis-pass", "key": "password"}},
                   "REDIS_CLAIM_IDLE": "120"}),
        ("amqp", {"AMQP_URL": {"secretKeyRef": {"name": "amqp-url", "key": "url"}}, "AMQP_QUEUE": "params",
                  "AMQP_DECODER": "identity"}),
        ("nats", {"NATS_URL": "nats://nats:4222", "NATS_STREAM": "params", "NATS_DECODER": "json",
                  "NATS_USER": {"secretKeyRef": {"name": "nats-auth", "key": "user"}},
                  "NATS_PASSWORD": {"secretKeyRef": {"name": "nats-auth", "key": "password"}},
                  "NATS_TLS_CA_FILE": "/var/run/secrets/minionize/nats-tls/ca.crt"}),
        ("postgres", {"POSTGRES_URL": {"secretKeyRef": {"name": "pg-url", "key": "url"}},
                      "POSTGRES_TABLE": "sweeps.params", "POSTGRES_LEASE_SECONDS": "120"}),
    ],
)
def test_engine_env(helm: str, engine: str, expected: dict[str, Any]) -> None:
    env = env_of(render(helm, case_values(engine, "deployment")))
    assert {k: env.get(k) for k in expected} == expected
    # Only the chosen engine's variables: another engine's would be noise.
    others = {"EXECO", "FILE", "GOOGLE", "PULSAR", "REDIS", "AMQP", "NATS", "POSTGRES"} - {engine.upper()}
    assert not [k for k in env if k.split("_")[0] in others]


def test_runtime_env_and_extra_env(helm: str) -> None:
    values = merge(ENGINES["execo"], {
        "minion": {"concurrency": 4, "maxAttempts": 5, "timeout": 3600, "gracePeriod": 40,
                   "args": "--lr {lr} --seed {seed}", "logLevel": "DEBUG", "logFormat": "json"},
        "reporter": {"type": "stdout"},
        "extraEnv": [{"name": "MINION_CONCURRENCY", "value": "8"}, {"name": "OMP_NUM_THREADS", "value": "1"}],
        "envFrom": [{"configMapRef": {"name": "settings"}}],
        "program": ["python3", "train.py", 3],
    })
    docs = render(helm, values)
    minion = container(docs)
    env = env_of(docs)
    assert env["MINION_MAX_ATTEMPTS"] == "5"
    assert env["MINION_TIMEOUT"] == "3600"
    assert env["MINION_GRACE_PERIOD"] == "40"
    assert env["MINION_ARGS"] == "--lr {lr} --seed {seed}"
    assert env["MINION_LOG_LEVEL"] == "DEBUG"
    assert env["MINION_LOG_FORMAT"] == "json"
    assert env["MINION_REPORTER"] == "stdout"
    assert env["OMP_NUM_THREADS"] == "1"
    assert env["POD_NAME"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    # extraEnv comes last, so that it wins over the chart's own value.
    names = [e["name"] for e in minion["env"]]
    assert names.index("MINION_CONCURRENCY") < len(names) - 2
    assert minion["env"][-2] == {"name": "MINION_CONCURRENCY", "value": "8"}
    assert minion["envFrom"] == [{"configMapRef": {"name": "settings"}}]
    # The program replaces the image's CMD; the ENTRYPOINT (tini, minionize) stays.
    assert minion["args"] == ["python3", "train.py", "3"]
    assert "command" not in minion


def test_unset_settings_leave_minionize_defaults(helm: str) -> None:
    env = env_of(render(helm, case_values("execo", "deployment")))
    for name in ("MINION_CONCURRENCY", "MINION_TIMEOUT", "MINION_IDLE_TIMEOUT", "MINION_ARGS", "MINION_REPORTER"):
        assert name not in env
    assert "args" not in container(render(helm, case_values("execo", "deployment")))


def test_google_credentials_mounted_from_secret(helm: str) -> None:
    docs = render(helm, case_values("google", "deployment"))
    vol = volume(docs, "google-credentials")
    assert vol["secret"]["secretName"] == "gcp-key"
    assert vol["secret"]["items"] == [{"key": "sa.json", "path": "sa.json"}]
    mount = mount_of(docs, "google-credentials")
    (read_only,) = [m.get("readOnly") for m in container(docs)["volumeMounts"] if m["name"] == "google-credentials"]
    assert read_only is True
    assert env_of(docs)["GOOGLE_APPLICATION_CREDENTIALS"] == f"{mount}/sa.json"


def test_google_workload_identity_mounts_nothing(helm: str) -> None:
    values = merge(ENGINES["google"], {"google": {"credentials": {"existingSecret": ""}, "workloadIdentity": True},
                                       "keda": {"enabled": True}})
    docs = render(helm, values)
    assert "GOOGLE_APPLICATION_CREDENTIALS" not in env_of(docs)
    assert "google-credentials" not in [v["name"] for v in pod_spec(docs)["volumes"]]
    assert one(docs, "TriggerAuthentication")["spec"] == {"podIdentity": {"provider": "gcp"}}


def test_pulsar_trust_certs_mounted_from_secret(helm: str) -> None:
    docs = render(helm, case_values("pulsar", "deployment"))
    assert volume(docs, "pulsar-tls")["secret"]["secretName"] == "pulsar-ca"
    assert env_of(docs)["PULSAR_TLS_TRUST_CERTS_FILE"] == mount_of(docs, "pulsar-tls") + "/ca.crt"


def test_pulsar_client_cert_mounted_from_secret(helm: str) -> None:
    values = merge(ENGINES["pulsar"], {"pulsar": {"tls": {"clientCert": {"existingSecret": "minion-cert"}}}})
    docs = render(helm, values)
    items = volume(docs, "pulsar-client-cert")["secret"]["items"]
    assert items == [{"key": "tls.crt", "path": "tls.crt"}, {"key": "tls.key", "path": "tls.key"}]
    mount = mount_of(docs, "pulsar-client-cert")
    assert env_of(docs)["PULSAR_TLS_CERT_FILE"] == f"{mount}/tls.crt"
    assert env_of(docs)["PULSAR_TLS_KEY_FILE"] == f"{mount}/tls.key"


def test_urls_from_values_or_secrets(helm: str) -> None:
    values = merge(ENGINES["amqp"], {"amqp": {"url": "amqp://rabbit:5672/%2F", "urlSecret": {"existingSecret": ""}}})
    assert env_of(render(helm, values))["AMQP_URL"] == "amqp://rabbit:5672/%2F"
    values = merge(ENGINES["redis"], {"redis": {"urlSecret": {"existingSecret": "redis-url"}}})
    assert env_of(render(helm, values))["REDIS_URL"] == {"secretKeyRef": {"name": "redis-url", "key": "url"}}
    # Neither: the engine's default would be localhost, the pod itself (refused, see GUARDS),
    # unless extraEnv gives the variable.
    values = merge(ENGINES["redis"], {"redis": {"url": ""}, "extraEnv": [{"name": "REDIS_URL", "value": "redis://r"}]})
    assert env_of(render(helm, values))["REDIS_URL"] == "redis://r"


def test_file_engine_is_a_single_minion(helm: str, kubernetes_validate: str, tmp_path: Path) -> None:
    values = {
        **IMAGE,
        "engine": "file",
        "file": {"path": "/params/list.txt", "decoder": "json", "deadLetter": "/scratch/failed.txt"},
        "extraVolumes": [{"name": "params", "configMap": {"name": "params"}}],
        "extraVolumeMounts": [{"name": "params", "mountPath": "/params", "readOnly": True}],
    }
    docs = render(helm, values)
    validate(kubernetes_validate, docs, tmp_path)
    env = env_of(docs)
    assert (env["FILE_PATH"], env["FILE_DECODER"], env["FILE_DEAD_LETTER"]) == (
        "/params/list.txt", "json", "/scratch/failed.txt")
    assert mount_of(docs, "params") == "/params"
    spec = one(docs, "Deployment")["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"] == {"type": "Recreate"}, "a rolling update would run two minions on one file"
    assert "MINION_BATCH" not in env
    # Job mode sets batch mode for every engine, those whose input ends by itself too.
    assert env_of(render(helm, merge(values, {"mode": "job"})))["MINION_BATCH"] == "1"
    # ... and a set-aside parameter does not fail the pod, unless extraEnv says so (it comes last).
    told = merge(values, {"mode": "job", "extraEnv": [{"name": "MINION_FAILED_EXIT_CODE", "value": "123"}]})
    assert env_of(render(helm, told))["MINION_FAILED_EXIT_CODE"] == "123"


def test_execo_claim_and_shared_reports(helm: str) -> None:
    values = merge(ENGINES["execo"], {"reporter": {"type": "json"}})
    docs = render(helm, values)
    assert volume(docs, "execo")["persistentVolumeClaim"] == {"claimName": "sweeps"}
    assert mount_of(docs, "execo") == "/data"
    # Without a claim of their own, the reports go beside the sweep, shared by the fleet.
    assert env_of(docs)["REPORTER_JSON_DIRECTORY"] == "/data/minion-report"

    values = merge(values, {"reporter": {"json": {"existingClaim": "reports"}}})
    docs = render(helm, values)
    assert volume(docs, "reports")["persistentVolumeClaim"] == {"claimName": "reports"}
    assert env_of(docs)["REPORTER_JSON_DIRECTORY"] == mount_of(docs, "reports") + "/minion-report"


# --- hardening -------------------------------------------------------------


@pytest.mark.parametrize(("engine", "mode", "keda"), [("pulsar", "deployment", False), ("amqp", "job", True)])
def test_security_defaults(helm: str, engine: str, mode: str, keda: bool) -> None:
    docs = render(helm, case_values(engine, mode, keda))
    pod = pod_spec(docs)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    security = container(docs)["securityContext"]
    assert security["runAsNonRoot"] is True
    assert security["runAsUser"] == 10001
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}
    # The only writable place: an emptyDir at /scratch, where TMPDIR and HOME point.
    assert "emptyDir" in volume(docs, "scratch")
    assert mount_of(docs, "scratch") == "/scratch"
    assert env_of(docs)["TMPDIR"] == env_of(docs)["HOME"] == "/scratch"


def test_scheduling_values_reach_the_pod(helm: str) -> None:
    values = merge(case_values("redis", "deployment"), {
        "resources": {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"memory": "1Gi"}},
        "nodeSelector": {"pool": "batch"},
        "tolerations": [{"key": "batch", "operator": "Exists", "effect": "NoSchedule"}],
        "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "gpu", "operator": "DoesNotExist"}]}]}}},
        "imagePullSecrets": [{"name": "regcred"}],
        "podAnnotations": {"prometheus.io/scrape": "false"},
        "serviceAccount": {"create": False, "name": "minions"},
        "image": {"repository": "registry.example/team/train", "tag": "1.2"},
    })
    docs = render(helm, values)
    pod = pod_spec(docs)
    assert container(docs)["resources"] == values["resources"]
    assert container(docs)["image"] == "registry.example/team/train:1.2"
    assert pod["nodeSelector"] == {"pool": "batch"}
    assert pod["tolerations"] == values["tolerations"]
    assert pod["affinity"] == values["affinity"]
    assert pod["imagePullSecrets"] == [{"name": "regcred"}]
    assert pod["serviceAccountName"] == "minions"
    assert one(docs, "Deployment")["spec"]["template"]["metadata"]["annotations"] == {"prometheus.io/scrape": "false"}
    assert not [d for d in docs if d["kind"] == "ServiceAccount"]


def test_default_image_and_service_account(helm: str) -> None:
    # The base image runs what `program` says (alone, it only prints the help: see GUARDS).
    docs = render(helm, merge(case_values("execo", "deployment"), {"image": {"repository": "minionize/base", "tag": ""},
                                                                   "program": ["echo"]}))
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert container(docs)["image"] == f"minionize/base:{chart['appVersion']}"
    account = one(docs, "ServiceAccount")
    assert pod_spec(docs)["serviceAccountName"] == account["metadata"]["name"] == FULLNAME


# --- Job and grace periods -------------------------------------------------


def test_job_is_a_work_queue(helm: str) -> None:
    values = merge(case_values("pulsar", "job"), {"job": {"parallelism": 8, "ttlSecondsAfterFinished": 600}})
    spec = one(render(helm, values), "Job")["spec"]
    assert spec["parallelism"] == 8
    assert "completions" not in spec
    assert spec["backoffLimit"] == 6
    assert spec["ttlSecondsAfterFinished"] == 600
    assert spec["template"]["spec"]["restartPolicy"] == "OnFailure"
    assert "podFailurePolicy" not in spec  # it needs restartPolicy Never


def test_job_never_restart_fails_fast_on_config_errors(helm: str) -> None:
    values = merge(case_values("execo", "job"), {"job": {"restartPolicy": "Never"}})
    spec = one(render(helm, values), "Job")["spec"]
    assert spec["template"]["spec"]["restartPolicy"] == "Never"
    fail_job, ignore = spec["podFailurePolicy"]["rules"]
    assert fail_job["action"] == "FailJob"
    assert fail_job["onExitCodes"] == {"containerName": "minion", "operator": "In", "values": [2]}
    assert ignore == {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]}


def test_deployment_has_no_restart_policy_but_always(helm: str) -> None:
    pod = pod_spec(render(helm, case_values("amqp", "deployment")))
    assert pod.get("restartPolicy", "Always") == "Always"


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [({}, 35), ({"minion": {"gracePeriod": 100}}, 110), ({"terminationGracePeriodSeconds": 300}, 300)],
)
def test_termination_grace_period_outlasts_the_minion(helm: str, overrides: dict[str, Any], expected: int) -> None:
    docs = render(helm, merge(case_values("redis", "deployment"), overrides))
    assert pod_spec(docs)["terminationGracePeriodSeconds"] == expected
    assert expected > int(env_of(docs)["MINION_GRACE_PERIOD"])


# --- KEDA triggers ---------------------------------------------------------


def trigger(helm: str, engine: str, mode: str = "deployment", extra: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    docs = render(helm, merge(case_values(engine, mode, keda=True), extra or {}))
    kind = "ScaledObject" if mode == "deployment" else "ScaledJob"
    (first,) = one(docs, kind)["spec"]["triggers"]
    return first


def test_keda_trigger_metadata(helm: str) -> None:
    google = trigger(helm, "google")["metadata"]
    assert google["subscriptionName"] == "projects/proj/subscriptions/params-sub"
    assert google["mode"] == "SubscriptionSize" and google["value"] == "1"

    pulsar = trigger(helm, "pulsar")["metadata"]
    assert pulsar["adminURL"] == "https://broker:8443"
    assert pulsar["topic"] == "persistent://public/default/params"
    assert pulsar["subscription"] == "minions"
    assert pulsar["authModes"] == "bearer"

    # The address comes from redis.url unless keda.redis.address says otherwise.
    redis = trigger(helm, "redis", "job")["metadata"]
    assert (redis["address"], redis["stream"], redis["databaseIndex"]) == ("redis-master:6380", "params", "1")
    assert redis["streamLength"] == "1"
    redis = trigger(helm, "redis", extra={"redis": {"url": "redis://cache"}})["metadata"]
    assert redis["address"] == "cache:6379"
    redis = trigger(helm, "redis", extra={"keda": {"redis": {"address": "r:1"}, "target": 5}})["metadata"]
    assert (redis["address"], redis["streamLength"]) == ("r:1", "5")

    extra = {"keda": {"target": 20, "triggerMetadata": {"vhostName": "/"}, "rabbitmq": {"protocol": "amqp"}}}
    amqp = trigger(helm, "amqp", extra=extra)["metadata"]
    assert (amqp["queueName"], amqp["mode"], amqp["value"], amqp["vhostName"]) == ("params", "QueueLength", "20", "/")
    assert "host" not in amqp, "the URL holds a password: it comes from the TriggerAuthentication"


@pytest.mark.parametrize(
    ("engine", "parameter", "secret", "key"),
    [
        ("google", "GoogleApplicationCredentials", "gcp-key", "sa.json"),
        ("redis", "password", "redis-pass", "password"),
        ("amqp", "host", "amqp-url", "url"),
    ],
)
def test_keda_trigger_authentication_reads_the_engine_secret(
    helm: str, engine: str, parameter: str, secret: str, key: str
) -> None:
    # The AMQP URL is the trigger's host with protocol amqp (the default reads the management API).
    values = merge(case_values(engine, "deployment", keda=True), {"keda": {"rabbitmq": {"protocol": "amqp"}}})
    auth = one(render(helm, values), "TriggerAuthentication")
    assert auth["spec"]["secretTargetRef"] == [{"parameter": parameter, "name": secret, "key": key}]


def test_keda_existing_authentication_ref(helm: str) -> None:
    docs = render(helm, merge(case_values("pulsar", "deployment", keda=True), {"keda": {"authenticationRef": "mine"}}))
    assert not [d for d in docs if d["kind"] == "TriggerAuthentication"]
    assert one(docs, "ScaledObject")["spec"]["triggers"][0]["authenticationRef"] == {"name": "mine"}


# --- the READMEs' commands -------------------------------------------------

#: The variable that names the broker of each broker engine (Pub/Sub has one address, Google's).
BROKER_ADDRESS = {"pulsar": "PULSAR_CONNECTION", "redis": "REDIS_URL", "amqp": "AMQP_URL",
                  "nats": "NATS_URL", "postgres": "POSTGRES_URL"}


def readme_installs() -> list[tuple[str, list[str]]]:
    """Each `helm install` of the READMEs' shell blocks: (where, the words after `helm install`)."""
    found = []
    for readme in (ROOT / "README.md", CHART / "README.md"):
        for block in re.findall(r"```(?:bash|sh)\n(.*?)```", readme.read_text(), re.S):
            for line in block.replace("\\\n", " ").splitlines():
                if line.startswith("helm install "):
                    words = shlex.split(line)[2:]
                    found.append((f"{readme.relative_to(ROOT)}: {words[0]}", words))
    return found


def test_the_readmes_show_how_to_install() -> None:
    where = [w for w, _ in readme_installs()]
    assert "README.md: fleet" in where and "helm/minionize/README.md: fleet" in where, where


@pytest.mark.parametrize(("where", "words"), readme_installs(), ids=[w for w, _ in readme_installs()])
def test_a_readme_install_renders_a_fleet_that_would_work(
    helm: str, kubernetes_validate: str, tmp_path: Path, where: str, words: list[str]
) -> None:
    release, chart, *flags = words
    assert (ROOT / chart).resolve() == CHART.resolve(), "the chart's path, from the checkout's root"
    done = subprocess.run([helm, "template", release, str(CHART), *flags], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    docs = [doc for doc in yaml.safe_load_all(done.stdout) if doc]
    # The Prometheus Operator's kinds have no schema there (test_chart_metrics.py and
    # test_chart_monitoring.py validate them against its CRDs).
    validate(kubernetes_validate, [d for d in docs if d["kind"] not in ("ServiceMonitor", "PrometheusRule")], tmp_path)
    minion, env = container(docs), env_of(docs)
    # Something runs: the user's image with its CMD, or a program.
    assert "args" in minion or not minion["image"].startswith("minionize/base:"), minion["image"]
    # The broker is named, and is not the pod itself.
    address = BROKER_ADDRESS.get(env["MINION_ENGINE"])
    if address:
        value = env[address]
        assert isinstance(value, dict) or not re.search(r"//(localhost|127\.)", value), value

# --- labels and notes ------------------------------------------------------


def test_standard_labels_everywhere(helm: str) -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    docs = render(helm, case_values("google", "deployment", keda=True))
    for doc in docs:
        labels = doc["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == "minionize"
        assert labels["app.kubernetes.io/instance"] == RELEASE
        assert labels["app.kubernetes.io/version"] == chart["appVersion"]
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        assert labels["helm.sh/chart"] == f"minionize-{chart['version']}"
    deployment = one(docs, "Deployment")
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector == {"app.kubernetes.io/name": "minionize", "app.kubernetes.io/instance": RELEASE}
    assert selector.items() <= deployment["spec"]["template"]["metadata"]["labels"].items()


def test_helpers_define_the_standard_names() -> None:
    helpers = (CHART / "templates" / "_helpers.tpl").read_text()
    for name in ("name", "fullname", "chart", "labels", "selectorLabels", "serviceAccountName"):
        assert f'define "minionize.{name}"' in helpers


def render_notes(helm: str, values: dict[str, Any], tmp_path: Path) -> str:
    """NOTES.txt as `helm install` prints it, rendered without a cluster."""
    chart = tmp_path / "minionize"
    shutil.copytree(CHART, chart)
    (chart / "templates" / "zz-notes.yaml").write_text(
        'apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: notes\ndata:\n'
        '  NOTES.txt: {{ include "minionize.notes" . | quote }}\n'
    )
    assert (CHART / "templates" / "NOTES.txt").read_text().strip() == '{{ include "minionize.notes" . }}'
    done = helm_template(helm, values, "--show-only", "templates/zz-notes.yaml", chart=chart)
    assert done.returncode == 0, done.stderr
    notes: str = yaml.safe_load(done.stdout)["data"]["NOTES.txt"]
    return notes


def test_notes_tell_how_to_watch(helm: str, tmp_path: Path) -> None:
    selector = f"app.kubernetes.io/name=minionize,app.kubernetes.io/instance={RELEASE}"
    notes = render_notes(helm, merge(case_values("execo", "job"), {"reporter": {"type": "json"}}), tmp_path)
    assert f"Job {FULLNAME}" in notes
    assert f"kubectl get pods --namespace minions -l {selector}" in notes
    assert f"kubectl logs --namespace minions -l {selector}" in notes
    assert f"job/{FULLNAME}" in notes
    assert "-- minion-status" in notes and "/data/minion-report" in notes

    # Pulsar cannot tell drained: the Job ends after minionize's batch idle time.
    notes = render_notes(helm, case_values("pulsar", "job"), tmp_path / "1")
    assert f"no parameter for {BATCH_IDLE_TIMEOUT:g}s (pulsar cannot tell that the queue is drained)" in notes
    notes = render_notes(helm, merge(case_values("pulsar", "job"), {"minion": {"idleTimeout": 45}}), tmp_path / "3")
    assert "no parameter for 45s" in notes
    assert "completes when\n            the queue is drained\n" in render_notes(helm, case_values("redis", "job"),
                                                                             tmp_path / "4")

    values = merge(case_values("pulsar", "deployment"), {"reporter": {"type": "json"}})
    notes = render_notes(helm, values, tmp_path / "2")
    assert f"Deployment {FULLNAME}" in notes
    assert "-- minion-status" not in notes, "per-pod reports: minion-status would see one minion"
    assert "reporter.json.existingClaim" in notes


# --- the schema ------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "typoKey=1"], "Additional property typoKey is not allowed"),
        (["--set", "minion.gracePerod=30"], "Additional property gracePerod is not allowed"),
        (["--set", "keda.pulsar.adminUrl=http://x"], "Additional property adminUrl is not allowed"),
        (["--set", "securityContext.readOnlyRootFileSystem=true"],
         "Additional property readOnlyRootFileSystem is not allowed"),
        (["--set", "minion.gracePeriod=abc"], "minion.gracePeriod: Invalid type. Expected: integer, given: string"),
        (["--set", "keda.enabled=yes"], "keda.enabled: Invalid type. Expected: boolean, given: string"),
        (["--set", "job.parallelism=0"], "job.parallelism: Must be greater than or equal to 1"),
        (["--set", "engine=kafka"], "engine: engine must be one of the following"),
        (["--set", "mode=cronjob"], "mode: mode must be one of the following"),
    ],
)
def test_schema_rejects(helm: str, args: list[str], message: str) -> None:
    done = helm_template(helm, ENGINES["execo"], *args)
    assert done.returncode != 0
    assert "values don't meet the specifications of the schema" in done.stderr
    assert message in done.stderr, done.stderr


def _schema_objects(node: dict[str, Any], path: str = "") -> list[tuple[str, dict[str, Any]]]:
    found = [(path, node)] if "properties" in node else []
    for key, child in node.get("properties", {}).items():
        found += _schema_objects(child, f"{path}.{key}")
    return found


def test_schema_closes_every_object_and_matches_values() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    # Kubernetes types: closed too, but values.yaml sets only some of their fields.
    kubernetes_types = (".podSecurityContext", ".securityContext", ".resources", ".affinity", ".deployment.strategy",
                        ".metrics.livenessProbe", ".metrics.readinessProbe", ".keda.behavior")
    for path, node in _schema_objects(schema):
        assert node.get("additionalProperties") is False, f"{path or '(root)'} accepts unknown keys"
        if path.startswith(kubernetes_types):
            continue
        here = values
        for key in filter(None, path.split(".")):
            here = here[key]
        # Every key of the schema is in values.yaml, so it is documented there.
        assert set(node["properties"]) - {"global"} == set(here), path


def test_every_value_is_documented() -> None:
    """helm-docs style: each key has a `# --` comment, or sits under one that has."""
    undocumented = []
    stack: list[tuple[int, bool]] = []  # (indent, documented) of the enclosing keys
    comment = False
    for line in (CHART / "values.yaml").read_text().splitlines():
        stripped = line.strip()
        if stripped.startswith("# --"):
            comment = True
            continue
        if stripped.startswith("#") or not stripped:
            if not stripped:
                comment = False
            continue
        match = re.match(r"^(\s*)([A-Za-z][\w.-]*):(.*)$", line)
        if not match:  # a list item or the rest of a block
            continue
        indent = len(match.group(1))
        while stack and stack[-1][0] >= indent:
            stack.pop()
        documented = comment or any(doc for _, doc in stack)
        value = match.group(3).split("#")[0].strip()
        if value and not documented:
            undocumented.append(match.group(2))
        stack.append((indent, documented))
        comment = False
    assert not undocumented


# --- fail guards -----------------------------------------------------------

GUARDS = [
    ({"engine": "execo"}, "engine execo needs execo.existingClaim"),
    ({"engine": "file"}, "engine file needs file.path"),
    ({"engine": "file", "file": {"path": "/params/list"}, "deployment": {"replicas": 3}},
     "engine file allows one minion only"),
    (merge(ENGINES["google"], {"google": {"projectId": ""}}), "engine google needs google.projectId"),
    (merge(ENGINES["google"], {"google": {"topicId": ""}}), "engine google needs google.topicId"),
    (merge(ENGINES["google"], {"google": {"subscription": ""}}), "engine google needs google.subscription"),
    (merge(ENGINES["google"], {"google": {"credentials": {"existingSecret": ""}}}),
     "engine google needs google.credentials.existingSecret"),
    (merge(ENGINES["google"], {"google": {"workloadIdentity": True}}),
     "google.credentials.existingSecret and google.workloadIdentity are exclusive"),
    (merge(ENGINES["pulsar"], {"pulsar": {"topic": ""}}), "engine pulsar needs pulsar.topic"),
    (merge(ENGINES["redis"], {"redis": {"stream": ""}}), "engine redis needs redis.stream"),
    (merge(ENGINES["amqp"], {"amqp": {"queue": ""}}), "engine amqp needs amqp.queue"),
    (merge(ENGINES["execo"], {"terminationGracePeriodSeconds": 20}),
     "terminationGracePeriodSeconds (20) must be greater than minion.gracePeriod (25)"),
    (merge(ENGINES["execo"], {"terminationGracePeriodSeconds": 60, "minion": {"gracePeriod": 60}}),
     "terminationGracePeriodSeconds (60) must be greater than minion.gracePeriod (60)"),
    (merge(ENGINES["amqp"], {"minion": {"idleTimeout": 30}}), "minion.idleTimeout is for mode job"),
    (merge(ENGINES["redis"], {"extraEnv": [{"name": "MINION_BATCH", "value": "1"}]}),
     "extraEnv sets MINION_BATCH, for minions that exit when the queue is drained or idle"),
    (merge(ENGINES["google"], {"extraEnv": [{"name": "MINION_IDLE_TIMEOUT", "value": "60"}]}),
     "extraEnv sets MINION_IDLE_TIMEOUT"),
    # Nothing would run: the base image's CMD prints the help and exits 0.
    (merge(ENGINES["redis"], {"image": {"repository": "minionize/base", "tag": ""}}),
     "nothing would run: the image minionize/base only prints minionize's help. Set image.repository"),
    (merge(ENGINES["pulsar"], {"image": {"repository": "registry.example/mirror/minionize/base"}}),
     "nothing would run: the image registry.example/mirror/minionize/base"),
    # A broker address left at the engine's default: localhost, the pod itself.
    (merge(ENGINES["pulsar"], {"pulsar": {"connection": ""}}),
     "engine pulsar needs pulsar.connection (PULSAR_CONNECTION)"),
    (merge(ENGINES["redis"], {"redis": {"url": ""}}), "engine redis needs redis.url (REDIS_URL)"),
    (merge(ENGINES["amqp"], {"amqp": {"urlSecret": {"existingSecret": ""}}}), "engine amqp needs amqp.url (AMQP_URL)"),
    (merge(ENGINES["postgres"], {"postgres": {"urlSecret": {"existingSecret": ""}}}),
     "engine postgres needs postgres.url (POSTGRES_URL)"),
    (merge(ENGINES["postgres"], {"postgres": {"urlSecret": {"existingSecret": ""}, "url": "postgresql://u@localhost/db"}}),
     "postgres.url points at localhost"),
    (merge(ENGINES["postgres"], {"postgres": {"table": ""}}), "engine postgres needs postgres.table (POSTGRES_TABLE)"),
    (merge(ENGINES["postgres"], {"postgres": {"urlSecret": {"existingSecret": ""}}, "keda": {"enabled": True},
                                 "extraEnv": [{"name": "DATABASE_URL", "value": "postgresql://db/sweeps"}]}),
     "keda.enabled with engine postgres needs postgres.url or postgres.urlSecret"),
    (merge(ENGINES["nats"], {"nats": {"url": ""}}), "engine nats needs nats.url (NATS_URL)"),
    (merge(ENGINES["nats"], {"nats": {"url": "nats://localhost:4222"}}), "nats.url points at localhost"),
    (merge(ENGINES["nats"], {"nats": {"url": "nats://nats-0:4222,nats://127.0.0.1:4222"}}),
     "nats.url points at localhost"),
    (merge(ENGINES["nats"], {"nats": {"stream": ""}}), "engine nats needs nats.stream (NATS_STREAM)"),
    (merge(ENGINES["nats"], {"keda": {"enabled": True}}),
     "keda.enabled with engine nats needs keda.nats.monitoringEndpoint"),
    (merge(ENGINES["amqp"], {"reporter": {"json": {"existingClaim": "reports"}}}),
     "reporter.json.existingClaim is set but reporter.type is not json"),
    (merge(ENGINES["execo"], {"keda": {"enabled": True}}), "keda.enabled with engine execo"),
    ({"engine": "file", "file": {"path": "/params/list"}, "keda": {"enabled": True}},
     "engine file allows one minion only"),
    (merge(ENGINES["pulsar"], {"keda": {"enabled": True}}),
     "keda.enabled with engine pulsar needs keda.pulsar.adminURL"),
    (merge(ENGINES["redis"], {"redis": {"url": "", "urlSecret": {"existingSecret": "u"}}, "keda": {"enabled": True}}),
     "keda.enabled with engine redis needs keda.redis.address"),
    # AMQP_URL in extraEnv serves the minions, not KEDA's trigger.
    (merge(ENGINES["amqp"], {"amqp": {"urlSecret": {"existingSecret": ""}},
                             "keda": {"enabled": True, "rabbitmq": {"protocol": "amqp"}},
                             "extraEnv": [{"name": "AMQP_URL", "value": "amqp://rabbitmq"}]}),
     "keda.enabled with engine amqp needs amqp.url or amqp.urlSecret"),
    (merge(ENGINES["amqp"], KEDA_EXTRA["amqp"], {"keda": {"enabled": True, "minReplicaCount": 5,
                                                          "maxReplicaCount": 2}}),
     "keda.minReplicaCount (5) is greater than keda.maxReplicaCount (2)"),
]


@pytest.mark.parametrize(("values", "message"), GUARDS, ids=[m.split(":")[0][:60] for _, m in GUARDS])
def test_fail_guard(helm: str, tmp_path: Path, values: dict[str, Any], message: str) -> None:
    done = helm_template(helm, values)
    assert done.returncode != 0, "rendered instead of failing"
    assert message in done.stderr, done.stderr
    assert "schema" not in done.stderr, "the schema, not the guard, refused it"
    # helm lint must not pass on values that cannot render.
    (tmp_path / "values.yaml").write_text(json.dumps(values))
    linted = helm_lint(helm, "--values", str(tmp_path / "values.yaml"))
    assert linted.returncode != 0, linted.stdout
    assert "[ERROR]" in linted.stdout and message in linted.stdout, linted.stdout


@pytest.mark.parametrize(
    ("values", "message"),
    [({"engine": "kafka"}, 'engine "kafka" is unknown'), ({"mode": "cronjob"}, 'mode "cronjob" is unknown')],
)
def test_fail_guard_without_schema(helm: str, values: dict[str, Any], message: str) -> None:
    """The guards hold even when the schema is skipped."""
    done = helm_template(helm, merge(ENGINES["execo"], values), "--skip-schema-validation")
    assert done.returncode != 0
    assert message in done.stderr, done.stderr
