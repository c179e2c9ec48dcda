"""Each engine declares its variables once (minionize.engines.kit): the README,
the engine's docstring, the Helm chart, `minionize --help` and the credential
filter of the program's environment all agree with the declarations.

A variable that the code reads and the README or the chart leaves out, or a
documented variable that nothing reads, fails here.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest

from minionize.callbacks.process import is_credential
from minionize.config import EnvReader
from minionize.engines.kit import (
    MANDATORY,
    Setting,
    all_engine_classes,
    documented_variables,
    read_settings,
    readme_block,
)
from minionize.errors import ConfigError
from minionize.registry import ENGINES
from tests.conftest import ROOT
from tests.unit.test_chart import ENGINES as CHART_CASES
from tests.unit.test_chart import env_of, merge, render

README = ROOT / "README.md"
ENGINE_CLASSES = all_engine_classes()
CHART_ENGINES = json.loads((ROOT / "helm/minionize/values.schema.json").read_text())["properties"]["engine"]["enum"]
#: The modules of the runtime, outside the engines, that read variables.
RUNTIME_MODULES = ("config.py", "fleet.py", "reporters/json.py")
_READ = re.compile(r'(?:reader|env|environ)\.\w+\(\s*"([A-Z][A-Z0-9_]*)"|\(reader, "([A-Z][A-Z0-9_]*)"')
#: Names read that belong to someone else (a client library, Kubernetes) or are
#: the original minionize's aliases, documented in prose.
_NOT_OURS = {"PATH", "DOCKER_HOST", "DOCKER_TLS_VERIFY", "KUBERNETES_SERVICE_HOST", "EP", "DRY"}


def fenced_block_after(text: str, marker: str) -> str:
    """The body of the fenced block that follows `marker`."""
    start = text.index(marker)
    body = text.index("\n", text.index("```", start)) + 1
    return text[body:text.index("```", body)]


def readme_runtime_block() -> str:
    section = README.read_text()[README.read_text().index("## Environment variables"):]
    return fenced_block_after(section, "```bash")


def names_read(paths: list[Path]) -> set[str]:
    found: set[str] = set()
    for path in paths:
        for match in _READ.finditer(path.read_text()):
            found.add(match.group(1) or match.group(2))
    return found - _NOT_OURS


# --- the README ------------------------------------------------------------


def test_readme_engine_block_is_made_of_the_declarations() -> None:
    shown = fenced_block_after(README.read_text(), "<!-- engine-settings -->")
    expected = readme_block(ENGINE_CLASSES)
    assert shown == expected, (
        "README.md's engine variables differ: python -m minionize.engines readme --write README.md"
    )


def test_the_readme_block_is_written_in_place(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    text = README.read_text()
    stale = text.replace(fenced_block_after(text, "<!-- engine-settings -->"), "# An engine since removed\nOLD_URL=\n")
    readme.write_text(stale)
    command = [sys.executable, "-m", "minionize.engines", "readme", "--write", str(readme)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "written" in done.stdout, done.stderr
    assert readme.read_text() == text
    again = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert again.returncode == 0 and "already up to date" in again.stdout
    readme.write_text("# no marker here\n")
    broken = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert broken.returncode == 1 and broken.stderr.count("\n") == 1 and "engine-settings" in broken.stderr
    assert readme.read_text() == "# no marker here\n"  # left as it was
    usage = subprocess.run([*command[:3], "readme", "--wirte", "x"], capture_output=True, text=True, timeout=60)
    assert usage.returncode == 2 and usage.stderr.startswith("usage:")


def test_readme_runtime_block_lists_exactly_what_the_runtime_reads() -> None:
    read = names_read([ROOT / "minionize" / m for m in RUNTIME_MODULES])
    shown = set(re.findall(r"^([A-Z][A-Z0-9_]*)=", readme_runtime_block(), re.M))
    assert {"MINION_TIMEOUT", "MINION_PASS_ENV", "REPORTER_JSON_DIRECTORY"} <= read  # the scan works
    assert read - shown == set(), "read by the code, missing from the README's runtime block"
    assert shown - read == set(), "in the README's runtime block, read by nothing"


def test_help_lists_every_variable_of_the_runtime_and_every_engine() -> None:
    done = subprocess.run([sys.executable, "-m", "minionize", "--help"], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    missing = sorted(n for n in names_read([ROOT / "minionize" / m for m in RUNTIME_MODULES]) if n not in done.stdout)
    assert missing == []
    engines = done.stdout.split("MINION_ENGINE", 1)[1].split("MINION_CONCURRENCY", 1)[0]
    shown = set(re.findall(r"\b[a-z]+\b", engines))
    assert set(ENGINES) <= shown, "minionize --help's MINION_ENGINE line misses an engine"
    readme = re.search(r"^MINION_ENGINE=execo +# (.*)$", readme_runtime_block(), re.M)
    assert readme is not None and set(ENGINES) - {"execo"} <= set(readme.group(1).split(", "))


# --- each engine's module --------------------------------------------------


@pytest.mark.parametrize("engine", ENGINE_CLASSES, ids=lambda e: e.name)
def test_docstring_names_exactly_the_declared_variables(engine: Any) -> None:
    """Every declared variable is in the Environment section; what else it names is the runtime's."""
    documented = documented_variables(sys.modules[engine.__module__].__doc__ or "")
    declared = {s.name for s in engine.settings}
    assert declared - documented == set()
    assert documented - declared - names_read([ROOT / "minionize" / m for m in RUNTIME_MODULES]) == set()


@pytest.mark.parametrize("engine", ENGINE_CLASSES, ids=lambda e: e.name)
def test_an_engine_reads_only_declared_variables(engine: Any) -> None:
    source = Path(sys.modules[engine.__module__].__file__ or "")
    runtime = names_read([ROOT / "minionize" / m for m in RUNTIME_MODULES])
    undeclared = names_read([source]) - {s.name for s in engine.settings} - runtime
    assert undeclared == set()


def test_the_registry_the_chart_and_the_readme_name_the_same_engines() -> None:
    assert [e.name for e in ENGINE_CLASSES] == list(ENGINES)
    # memory keeps its queue in the minion's process: it has nothing to offer a fleet.
    assert set(CHART_ENGINES) == set(ENGINES) - {"memory"}
    table = README.read_text().split("| engine | shared by |", 1)[1].split("\n\n", 1)[0]
    assert re.findall(r"^\| (\w+) \|", table, re.M) == [n for n in ENGINES if n != "memory"]


@pytest.mark.parametrize(
    "setting", [s for e in ENGINE_CLASSES for s in e.settings if s.secret], ids=lambda s: s.name
)
def test_every_secret_is_kept_from_the_program(setting: Setting) -> None:
    assert is_credential(setting.name)


@pytest.mark.parametrize("engine", ENGINE_CLASSES, ids=lambda e: e.name)
def test_declared_defaults_are_what_an_empty_environment_reads(engine: Any) -> None:
    env = {s.name: "x" for s in engine.settings if s.required}
    values = read_settings(EnvReader(env), [s for s in engine.settings if not s.required])
    for setting in engine.settings:
        if not setting.required:
            assert values[setting.name] == setting.default, setting.name


def test_a_bad_value_names_the_variable_and_the_range() -> None:
    claim = next(s for s in all_engine_classes() if s.name == "redis").settings
    with pytest.raises(ConfigError) as caught:
        read_settings(EnvReader({"REDIS_STREAM": "s", "REDIS_CLAIM_IDLE": "0.5"}), claim)
    assert "REDIS_CLAIM_IDLE" in str(caught.value) and ">= 1" in str(caught.value)


def test_mandatory_settings_show_as_mandatory() -> None:
    redis = next(e for e in ENGINE_CLASSES if e.name == "redis")
    assert next(s for s in redis.settings if s.name == "REDIS_STREAM").shown_default == MANDATORY


# --- the chart --------------------------------------------------------------


def _sample(setting: Setting) -> Any:
    """A value other than the default, that the chart's schema and guards accept."""
    if setting.example is not None:
        return setting.example
    if setting.kind == "flag":
        return not setting.default
    if setting.kind == "choice":
        return next(c for c in setting.choices if c != setting.default)
    if setting.kind == "integer":
        return int(setting.minimum or 0) + 7
    if setting.kind == "seconds":
        return 42
    if setting.kind == "url":
        # The default's host, localhost, replaced: the chart refuses localhost (the pod itself).
        assert setting.default, f"{setting.name}: a URL without a default declares an example"
        parts = urlsplit(setting.default)
        assert parts.hostname, f"{setting.name}: no host in the default {setting.default!r}"
        return urlunsplit(parts._replace(netloc=parts.netloc.replace(parts.hostname, "probe")))
    return "probe-value"


def _nest(path: str, value: Any) -> dict[str, Any]:
    for key in reversed(path.split(".")):
        value = {key: value}
    assert isinstance(value, dict)
    return value


CHART_SETTINGS = [
    (engine.name, setting)
    for engine in ENGINE_CLASSES
    if engine.name in CHART_ENGINES
    for setting in engine.settings
]


@pytest.mark.parametrize("engine, setting", CHART_SETTINGS, ids=lambda x: getattr(x, "name", x))
def test_the_chart_sets_every_variable(helm: str, engine: str, setting: Setting) -> None:
    """Each declared variable is set by a chart value, and the minion reads back what was given."""
    prefix = engine.upper() + "_"
    key = setting.chart_key(prefix)
    if key == "":  # not a value of the chart: values.yaml says why
        assert setting.name in (ROOT / "helm/minionize/values.yaml").read_text()
        return
    how, _, path = key.rpartition(":")
    base = CHART_CASES.get(engine, {**CHART_CASES["execo"], "engine": engine, "file": {"path": "/params/list.txt"}})
    if setting.kind == "url" and engine != "pulsar":  # the value, not the Secret that would win over it
        base = merge(base, {engine: {"urlSecret": {"existingSecret": ""}}})
    if how in ("secret", "file"):
        env = env_of(render(helm, merge(base, {engine: _nest(path, {"existingSecret": "probe-secret"})})))
        given = env[setting.name]
        if how == "secret":
            assert given["secretKeyRef"]["name"] == "probe-secret"
        else:
            assert isinstance(given, str) and given.startswith("/")
        return
    sample = _sample(setting)
    env = env_of(render(helm, merge(base, {engine: _nest(path, sample)})))
    assert setting.name in env, f"{engine}.{path} does not reach {setting.name}"
    got = setting.read(EnvReader({k: v for k, v in env.items() if isinstance(v, str)}))
    if setting.name == "EXECO_PERSISTENCE_DIR":  # under the claim's mount
        assert got.endswith("/" + sample)
    else:
        assert got == sample
