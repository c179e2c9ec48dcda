"""The chart's alert rules (PrometheusRule) and Grafana dashboard (ConfigMap).

Both are rendered with the real helm, and everything is read from the
rendering: the PrometheusRule is validated against the Prometheus Operator's
CRD (tests/data/crds/), its groups pass `promtool check rules` and a
`promtool test rules` unit test per alert, firing and not firing; the
dashboard's JSON is validated against Grafana's own schemas for its
schemaVersion (tests/unit/grafana_schemas.py: the dashboard kind's, each
panel plugin's, the Prometheus query's, made from @grafana/schema) and
checked for what the chart needs of it. The expressions themselves are evaluated by a
real Prometheus scraping real minions in tests/integration/test_prometheus.py,
whose table of expected values must name every query found here.

promtool is Debian's `prometheus` package (scripts/services.sh installs it).
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import require
from tests.unit.grafana_schemas import (
    GRAFANA_SCHEMAS,
    PANEL_SCHEMAS,
    SCHEMA_VERSION,
    dashboard_errors,
    panels,
    set_in,
)
from tests.unit.test_chart import FULLNAME, case_values, helm_template, merge, one, render, validate
from tests.unit.test_chart_keda import CRDS, PROMETHEUS_OPERATOR, schema_errors

PROMETHEUS_RULE_CRD = CRDS / f"prometheus-operator-{PROMETHEUS_OPERATOR}" / "monitoring.coreos.com_prometheusrules.yaml"
MONITORING = {"metrics": {"enabled": True, "serviceMonitor": {"enabled": True},
                          "prometheusRule": {"enabled": True}, "grafanaDashboard": {"enabled": True}}}
#: The labels a ServiceMonitor of the release gives the minions' series (and the default selector).
JOB, NAMESPACE = f"{FULLNAME}-metrics", "minions"
ALERTS = {"MinionNoAck", "MinionDeadLettersRising", "MinionNotReady", "MinionBrokenNode", "MinionRunsTimingOut"}
PANEL_TYPES = {"row", *PANEL_SCHEMAS}
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}


def monitoring_values(**rule: Any) -> dict[str, Any]:
    return merge(case_values("redis", "deployment"), MONITORING, {"metrics": {"prometheusRule": rule}})


def rendered_rule(helm: str, values: dict[str, Any]) -> dict[str, Any]:
    return one(render(helm, values), "PrometheusRule")


def rendered_dashboard(helm: str, values: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the ConfigMap, the dashboard it holds)."""
    configmaps = [d for d in render(helm, values) if d["kind"] == "ConfigMap"
                  and d["metadata"]["labels"].get("grafana_dashboard") == "1"]
    assert len(configmaps) == 1, configmaps
    (text,) = configmaps[0]["data"].values()
    return configmaps[0], json.loads(text)


def rules_of(rule: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["alert"]: r for group in rule["spec"]["groups"] for r in group["rules"]}


def panel_queries(dashboard: dict[str, Any]) -> dict[str, str]:
    """'panel title/refId' -> PromQL, for every query of the dashboard (no two with the same key)."""
    queries = [(f"{p['title']}/{t['refId']}", t["expr"]) for _, p in panels(dashboard) for t in p.get("targets", [])]
    keys = [key for key, _ in queries]
    assert len(keys) == len(set(keys)), f"two queries have the same panel title and refId: {keys}"
    return dict(queries)


@pytest.fixture(scope="session")
def promtool() -> str:
    path = shutil.which("promtool")
    require(path is not None, "promtool is missing: apt-get install prometheus (scripts/services.sh does)")
    assert path is not None
    return path


# --- rendering ---------------------------------------------------------------


def test_off_by_default(helm: str) -> None:
    kinds = [d["kind"] for d in render(helm, merge(case_values("redis", "deployment"), {"metrics": {"enabled": True}}))]
    assert "PrometheusRule" not in kinds and "ConfigMap" not in kinds


@pytest.mark.parametrize("switch", ["prometheusRule", "grafanaDashboard"])
def test_refused_without_metrics(helm: str, switch: str) -> None:
    done = helm_template(helm, merge(case_values("redis", "deployment"), {"metrics": {switch: {"enabled": True}}}))
    assert done.returncode != 0
    assert f"metrics.{switch}.enabled needs metrics.enabled=true" in done.stderr, done.stderr


def test_objects_validate(helm: str, kubernetes_validate: str, tmp_path: Path) -> None:
    values = merge(monitoring_values(labels={"release": "kube-prometheus-stack"}),
                   {"metrics": {"grafanaDashboard": {"namespace": "monitoring",
                                                     "annotations": {"grafana_folder": "Minions"}}}})
    docs = render(helm, values)
    rule = one(docs, "PrometheusRule")
    assert schema_errors(rule, PROMETHEUS_RULE_CRD) == []
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert rule["metadata"]["namespace"] == NAMESPACE
    assert set(rules_of(rule)) == ALERTS
    configmap, _ = rendered_dashboard(helm, values)
    assert configmap["metadata"]["namespace"] == "monitoring"
    assert configmap["metadata"]["annotations"] == {"grafana_folder": "Minions"}
    validate(kubernetes_validate, [configmap], tmp_path)


def test_rules_follow_kube_prometheus_conventions(helm: str) -> None:
    for name, rule in rules_of(rendered_rule(helm, monitoring_values())).items():
        assert re.fullmatch(r"Minion[A-Z][A-Za-z]+", name)
        assert rule["labels"]["severity"] in {"warning", "critical"}, name
        assert {"summary", "description"} <= set(rule["annotations"]), name
        assert "__" not in json.dumps(rule), f"{name}: a placeholder of files/prometheus-rules.yaml is left"
        assert f'job="{JOB}",namespace="{NAMESPACE}"' in rule["expr"], name


def test_values_reach_the_rules(helm: str) -> None:
    rules = rules_of(rendered_rule(helm, merge(
        monitoring_values(noAckFor="2h", deadLetterWindow="1h", deadLetterThreshold=5, notReadyFor="7m",
                          timeoutRatio=0.25, timeoutWindow="45m"),
        {"metrics": {"promqlSelector": 'app="sweep"'}},
    )))
    assert rules["MinionNoAck"]["expr"].count("[2h]") == 2 and "offset 2h" in rules["MinionNoAck"]["expr"]
    assert "[1h]" in rules["MinionDeadLettersRising"]["expr"]
    assert rules["MinionDeadLettersRising"]["expr"].endswith("> 5")
    assert rules["MinionNotReady"]["for"] == "7m"
    assert rules["MinionRunsTimingOut"]["expr"].endswith("> 0.25") and "[45m]" in rules["MinionRunsTimingOut"]["expr"]
    assert all('{app="sweep"}' in r["expr"] and "job=" not in r["expr"] for r in rules.values())


# --- promtool ---------------------------------------------------------------


def rule_file(helm: str, tmp_path: Path) -> Path:
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump(rendered_rule(helm, monitoring_values())["spec"]))
    return path


def test_promtool_checks_the_rules(helm: str, promtool: str, tmp_path: Path) -> None:
    done = subprocess.run([promtool, "check", "rules", str(rule_file(helm, tmp_path))],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in done.stdout


def series(metric: str, values: str, pod: str = "minion-a") -> dict[str, str]:
    return {"series": f'{metric}{{job="{JOB}",namespace="{NAMESPACE}",pod="{pod}"}}', "values": values}


def expected(rule: dict[str, Any], value: str, **labels: str) -> dict[str, Any]:
    """The alert promtool should see: the rule's labels and its annotations, templates filled in."""
    all_labels = {"job": JOB, "namespace": NAMESPACE, **labels}

    def fill(text: str) -> str:
        text = re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: all_labels[m.group(1)], text)
        return re.sub(r"\{\{ \$value[^}]*\}\}", value, text)

    return {"exp_labels": {**rule["labels"], **all_labels},
            "exp_annotations": {k: fill(v) for k, v in rule["annotations"].items()}}


def alert_tests(rules: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """One promtool test per alert: the same series, where it fires and where it does not.

    The rendered defaults: noAckFor 30m, deadLetterWindow 15m (threshold 0),
    notReadyFor 15m, timeoutRatio 0.1 over 15m. One sample a minute.
    """
    pod_a = {"pod": "minion-a"}
    return [
        {   # minion-a holds a run and acks nothing from minute 10; minion-b acks all along.
            "interval": "1m",
            "input_series": [
                series("minion_in_flight", "1x60"),
                series("minion_messages_acked_total", "0+1x9 10x50"),
                series("minion_in_flight", "1x60", "minion-b"),
                series("minion_messages_acked_total", "0+1x60", "minion-b"),
                # minion-c started at minute 35 on a long run: not yet at 45.
                series("minion_in_flight", "_x35 1x25", "minion-c"),
                series("minion_messages_acked_total", "_x35 0x25", "minion-c"),
            ],
            "alert_rule_test": [
                {"eval_time": "35m", "alertname": "MinionNoAck", "exp_alerts": []},
                {"eval_time": "45m", "alertname": "MinionNoAck",
                 "exp_alerts": [expected(rules["MinionNoAck"], "1", **pod_a)]},
            ],
        },
        {   # Three dead letters at minute 20, then none.
            "interval": "1m",
            "input_series": [series("minion_messages_dead_lettered_total", "0x19 3x40")],
            "alert_rule_test": [
                {"eval_time": "10m", "alertname": "MinionDeadLettersRising", "exp_alerts": []},
                {"eval_time": "25m", "alertname": "MinionDeadLettersRising",
                 "exp_alerts": [expected(rules["MinionDeadLettersRising"], "3")]},
                {"eval_time": "50m", "alertname": "MinionDeadLettersRising", "exp_alerts": []},
            ],
        },
        {   # minion-a not ready from minute 10; minion-b not ready but draining;
            # minion-c's metrics do not answer from minute 10.
            "interval": "1m",
            "input_series": [
                series("minion_ready", "1x9 0x50"), series("minion_draining", "0x60"),
                series("up", "1x60"),
                series("minion_ready", "0x60", "minion-b"), series("minion_draining", "1x60", "minion-b"),
                series("up", "1x60", "minion-b"),
                series("up", "1x9 0x50", "minion-c"),
            ],
            "alert_rule_test": [
                {"eval_time": "20m", "alertname": "MinionNotReady", "exp_alerts": []},
                {"eval_time": "30m", "alertname": "MinionNotReady",
                 "exp_alerts": [expected(rules["MinionNotReady"], "0", **pod_a),
                                expected(rules["MinionNotReady"], "0", pod="minion-c")]},
            ],
        },
        {   # Two strikes at minute 10, a success at minute 20.
            "interval": "1m",
            "input_series": [series("minion_broken_node", "0x9 2x10 0x40")],
            "alert_rule_test": [
                {"eval_time": "5m", "alertname": "MinionBrokenNode", "exp_alerts": []},
                {"eval_time": "15m", "alertname": "MinionBrokenNode",
                 "exp_alerts": [expected(rules["MinionBrokenNode"], "2", **pod_a)]},
                {"eval_time": "25m", "alertname": "MinionBrokenNode", "exp_alerts": []},
            ],
        },
        {   # 4 runs a minute; from minute 30, one of them times out.
            "interval": "1m",
            "input_series": [
                series("minion_run_duration_seconds_count", "0+4x60"),
                series("minion_runs_timed_out_total", "0x30 0+1x30"),
            ],
            "alert_rule_test": [
                {"eval_time": "25m", "alertname": "MinionRunsTimingOut", "exp_alerts": []},
                {"eval_time": "55m", "alertname": "MinionRunsTimingOut",
                 "exp_alerts": [expected(rules["MinionRunsTimingOut"], "25%")]},
            ],
        },
    ]


def test_promtool_tests_each_alert_firing_and_not(helm: str, promtool: str, tmp_path: Path) -> None:
    path = rule_file(helm, tmp_path)
    rules = rules_of(rendered_rule(helm, monitoring_values()))
    tests = alert_tests(rules)
    assert {t["alertname"] for test in tests for t in test["alert_rule_test"]} == ALERTS
    for test in tests:  # every alert has a case where it fires and one where it does not
        cases = test["alert_rule_test"]
        assert any(c["exp_alerts"] for c in cases) and any(not c["exp_alerts"] for c in cases)
    unit = tmp_path / "tests.yaml"
    unit.write_text(yaml.safe_dump({"rule_files": [path.name], "evaluation_interval": "1m", "tests": tests}))
    done = subprocess.run([promtool, "test", "rules", unit.name], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_promtool_tests_catch_a_wrong_rule(helm: str, promtool: str, tmp_path: Path) -> None:
    """The check itself: a rule that never fires fails the tests above."""
    path = rule_file(helm, tmp_path)
    path.write_text(path.read_text().replace("minion_broken_node", "minion_broken_nodes"))
    unit = tmp_path / "tests.yaml"
    tests = alert_tests(rules_of(rendered_rule(helm, monitoring_values())))
    unit.write_text(yaml.safe_dump({"rule_files": [path.name], "evaluation_interval": "1m", "tests": tests}))
    done = subprocess.run([promtool, "test", "rules", unit.name], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "MinionBrokenNode" in done.stdout + done.stderr


# --- the dashboard ----------------------------------------------------------


def test_dashboard_is_what_grafana_reads(helm: str) -> None:
    configmap, dashboard = rendered_dashboard(helm, monitoring_values())
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert configmap["metadata"]["name"] == f"{FULLNAME}-dashboard"
    (key,) = configmap["data"]
    assert key.endswith(".json")
    assert dashboard["schemaVersion"] == SCHEMA_VERSION, "a new schemaVersion needs its Grafana's schemas"
    assert dashboard["title"] == f"Minionize / {NAMESPACE}/{FULLNAME}"
    assert re.fullmatch(r"[A-Za-z0-9-]{1,40}", dashboard["uid"])
    assert "__" not in json.dumps(dashboard), "a placeholder of files/grafana-dashboard.json is left"
    (variable,) = dashboard["templating"]["list"]
    assert (variable["name"], variable["type"], variable["query"]) == ("datasource", "datasource", "prometheus")
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        assert panel["type"] in PANEL_TYPES, panel["title"]
        grid = panel["gridPos"]
        assert set(grid) == {"h", "w", "x", "y"} and grid["x"] + grid["w"] <= 24 and grid["h"] > 0
        if panel["type"] == "row":
            assert "targets" not in panel
            continue
        assert panel["datasource"] == DATASOURCE, panel["title"]
        refs = [t["refId"] for t in panel["targets"]]
        assert panel["targets"] and len(refs) == len(set(refs)), panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE
            assert set(target) >= {"refId", "expr", "legendFormat"}
            assert f'job="{JOB}",namespace="{NAMESPACE}"' in target["expr"]
    # No two panels overlap.
    grids = [p["gridPos"] for p in dashboard["panels"]]
    cells = [(x, y) for g in grids for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])]
    assert len(cells) == len(set(cells))
    titles = {p["title"] for p in dashboard["panels"]}
    assert {"Fleet", "Per minion"} <= titles


def test_every_query_is_one_the_real_prometheus_test_checks(helm: str) -> None:
    from tests.integration.test_prometheus import ALERT_CHECKS, NO_ACK_FOR, PANEL_CHECKS

    _, dashboard = rendered_dashboard(helm, monitoring_values())
    assert set(panel_queries(dashboard)) == set(PANEL_CHECKS)
    # That test renders the chart with a shorter noAckFor: the dashboard's queries are the same.
    _, tested = rendered_dashboard(helm, monitoring_values(noAckFor=f"{NO_ACK_FOR}s"))
    assert panel_queries(tested) == panel_queries(dashboard)
    assert set(rules_of(rendered_rule(helm, monitoring_values()))) == set(ALERT_CHECKS) == ALERTS


# --- the dashboard against Grafana's schemas ---------------------------------


def test_dashboard_follows_grafanas_schemas(helm: str) -> None:
    _, dashboard = rendered_dashboard(helm, monitoring_values())
    assert dashboard["schemaVersion"] == SCHEMA_VERSION
    assert {p["type"] for _, p in panels(dashboard)} == PANEL_TYPES
    assert dashboard_errors(dashboard) == []


def test_grafanas_schemas_reject_a_broken_dashboard(helm: str) -> None:
    """The check itself: a wrong type, an unknown key, a value off an enum, a missing field, each where it is."""
    _, good = rendered_dashboard(helm, monitoring_values())
    stat, ts = (next(path for path, p in panels(good) if p["type"] == kind) for kind in ("stat", "timeseries"))
    breakages = {
        f"{stat}.gridPos.w": ("6", f"{stat}.gridPos.w: '6' is not of type 'number'"),
        "panels.0.collapsed": ("no", "panels.0.collapsed: 'no' is not of type 'boolean'"),
        "refersh": ("30s", "(top): Additional properties are not allowed ('refersh' was unexpected)"),
        "graphTooltip": (3, "graphTooltip: 3 is not one of [1, 0, 2]"),
        "templating.list.0.current": ({}, "templating.list.0.current: 'text' is a required property"),
        f"{stat}.options.colorMode": ("colour", f"{stat}.options.colorMode: 'colour' is not one of"),
        f"{ts}.options.legend.placement": ("left", f"{ts}.options.legend.placement: 'left' is not one of"),
        f"{ts}.fieldConfig.defaults.custom": ({"lineWidth": "1"}, f"{ts}.fieldConfig.defaults.custom.lineWidth: '1'"),
        f"{stat}.fieldConfig.defaults.custom": ({}, f"{stat}.fieldConfig.defaults.custom: a stat panel has none"),
        f"{ts}.targets.0.expr": (1, f"{ts}.targets.0.expr: 1 is not of type 'string'"),
        f"{ts}.targets.0.instnat": (True, "('instnat' was unexpected)"),
        f"{ts}.type": ("piechart", f"{ts}.type: no schema of a 'piechart' panel"),
        f"{stat}.type": ("row", f"{stat}: 'collapsed' is a required property"),
    }
    for path, (value, expected) in breakages.items():
        bad = copy.deepcopy(good)
        set_in(bad, path, value)
        errors = dashboard_errors(bad)
        assert any(expected in error for error in errors), (path, errors)


def test_grafanas_schemas_are_the_generated_ones() -> None:
    """tests/data/grafana-schema-*/: what SOURCE says was generated, by the script beside it."""
    version = GRAFANA_SCHEMAS.name.rsplit("-", 1)[1]
    source = (GRAFANA_SCHEMAS / "SOURCE").read_text()
    script = (GRAFANA_SCHEMAS / "regenerate.sh").read_text()
    assert "Apache-2.0" in source and f"@grafana/schema {version}" in source
    (integrity,) = re.findall(r"^Integrity:\s+(sha512-\S+)$", source, re.M)
    assert f"INTEGRITY={integrity}\n" in script and f"GRAFANA_SCHEMA={version}\n" in script
    digests = {name: digest for digest, name in re.findall(r"^([0-9a-f]{64})  (\S+)$", source, re.M)}
    used = {"dashboard", "prometheus-dataquery", *(name for pair in PANEL_SCHEMAS.values() for name in pair if name)}
    assert set(digests) == {p.name for p in GRAFANA_SCHEMAS.glob("*.schema.json")} == {f"{n}.schema.json" for n in used}
    for name, digest in digests.items():
        assert hashlib.sha256((GRAFANA_SCHEMAS / name).read_bytes()).hexdigest() == digest, name
