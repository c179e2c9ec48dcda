"""Grafana's own schemas of a dashboard, and what they find wrong in one.

Grafana writes its dashboard schema in CUE and publishes it as TypeScript
types (@grafana/schema); tests/data/grafana-schema-10.4.19/ holds those types
as JSON schemas (its SOURCE says how they were made, its regenerate.sh makes
them). dashboard_errors() validates a dashboard against the dashboard kind's,
then what the kind leaves open against the panel plugin's (a panel's options
and fieldConfig.defaults.custom) and the Prometheus data source's (each
target). tests/unit/test_chart_monitoring.py runs it on the chart's dashboard.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from functools import cache
from typing import Any

from tests.conftest import ROOT, require

#: Grafana's schemas, as JSON schemas, for SCHEMA_VERSION, the dashboard's schemaVersion.
GRAFANA_SCHEMAS, SCHEMA_VERSION = ROOT / "tests" / "data" / "grafana-schema-10.4.19", 39
#: Each panel type's schemas there: of its options, of its fieldConfig.defaults.custom (None: it has none).
PANEL_SCHEMAS = {"stat": ("stat-options", None), "timeseries": ("timeseries-options", "timeseries-fieldconfig")}


def panels(dashboard: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(path, panel) for every panel, those that a collapsed row holds included."""
    for i, panel in enumerate(dashboard.get("panels", [])):
        yield f"panels.{i}", panel
        for j, inner in enumerate(panel.get("panels", []) if isinstance(panel, dict) else []):
            yield f"panels.{i}.panels.{j}", inner


@cache
def grafana_validator(name: str) -> Any:
    """The validator of GRAFANA_SCHEMAS' `name`.schema.json, or of one of its definitions ('file#Definition')."""
    try:
        import jsonschema  # the test extra's
    except ImportError:
        require(False, "jsonschema is missing: pip install -e '.[test]'")
    file, _, definition = name.partition("#")
    schema = json.loads((GRAFANA_SCHEMAS / f"{file}.schema.json").read_text())
    if definition:
        schema["$ref"] = f"#/definitions/{definition}"
    return jsonschema.Draft7Validator(schema)


def leaves(error: Any) -> list[Any]:
    """The errors under an anyOf's (a panel is a Panel or a RowPanel): those of
    its closest branch, the one with the fewest errors, then the deepest."""
    if not error.context:
        return [error]
    branches: dict[Any, list[Any]] = {}
    for sub in error.context:
        branches.setdefault(sub.relative_schema_path[0], []).append(sub)
    closest = min(branches.values(), key=lambda subs: (len(subs), -max(len(e.absolute_path) for e in subs)))
    return [leaf for sub in closest for leaf in leaves(sub)]


def grafana_errors(doc: Any, name: str, where: str) -> list[str]:
    """'path: message' for each error of doc against GRAFANA_SCHEMAS' schema `name`."""
    errors = [leaf for error in grafana_validator(name).iter_errors(doc) for leaf in leaves(error)]
    return [f"{'.'.join(map(str, [where, *e.absolute_path])).lstrip('.') or '(top)'}: {e.message}" for e in errors]


def dashboard_errors(dashboard: dict[str, Any]) -> list[str]:
    """What Grafana's schemas find wrong: the dashboard kind's, then each panel
    plugin's (options and fieldConfig.defaults.custom, which the kind leaves
    open) and the Prometheus data source's (each target, left open too)."""
    errors = grafana_errors(dashboard, "dashboard", "")
    for path, panel in panels(dashboard):
        if not isinstance(panel, dict):
            continue  # the kind's schema has said what is wrong with it
        if panel.get("type") == "row":  # Grafana reads it as a RowPanel; a Panel's type is any string
            errors += grafana_errors(panel, "dashboard#RowPanel", path)
            continue
        if panel.get("type") not in PANEL_SCHEMAS:
            errors.append(f"{path}.type: no schema of a {panel.get('type')!r} panel in {GRAFANA_SCHEMAS.name}")
            continue
        options, custom = PANEL_SCHEMAS[panel["type"]]
        errors += grafana_errors(panel.get("options", {}), options, f"{path}.options")
        field_custom = panel.get("fieldConfig", {}).get("defaults", {}).get("custom")
        if custom is None and field_custom is not None:
            errors.append(f"{path}.fieldConfig.defaults.custom: a {panel['type']} panel has none")
        elif custom is not None and field_custom is not None:
            errors += grafana_errors(field_custom, custom, f"{path}.fieldConfig.defaults.custom")
        for k, target in enumerate(panel.get("targets", [])):
            errors += grafana_errors(target, "prometheus-dataquery", f"{path}.targets.{k}")
    return list(dict.fromkeys(errors))  # a row's errors come twice: as a Panel or RowPanel, and as a RowPanel


def set_in(doc: dict[str, Any], path: str, value: Any) -> None:
    """Sets the value at a path as dashboard_errors names it ('panels.3.gridPos.w')."""
    *parents, last = path.split(".")
    for key in parents:
        doc = doc[int(key)] if isinstance(doc, list) else doc[key]
    doc[last] = value
