"""MINION_LOG_FORMAT=json on every engine: each line a real minion writes on stderr is a JSON object.

One minion per engine runs a success, a failure retried then done, and a
failure set aside (MINION_MAX_ATTEMPTS=2), through a program that prints
nothing itself: every stderr line is minionize's.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from minionize import exitcodes
from minionize.secrets import mask_url, secrets_of
from tests.conftest import minion_env, minionize_cmd

from .backends import BACKENDS, started

pytestmark = pytest.mark.integration
#: Exits 0 for "ok", and for "again" from its second attempt; 1 otherwise.
PROGRAM = (sys.executable, "-c", "import os, sys; p = sys.argv[1]; "
           "sys.exit(0 if p == 'ok' or (p == 'again' and os.environ['MINION_ATTEMPT'] != '1') else 1)")
PARAMS = ("ok", "again", "doomed")
#: The verdicts of each parameter's runs, in order.
VERDICTS = {"ok": ["acked"], "again": ["retried", "acked"], "doomed": ["retried", "failed"]}
#: amqp-prefetch is amqp with another prefetch: the same log lines.
ENGINES = ["memory", *(name for name in BACKENDS if name != "amqp-prefetch")]


def engine_env(name: str, config: pytest.Config, workdir: Path) -> dict[str, str]:
    """A fresh queue of engine `name` holding PARAMS."""
    if name == "memory":
        return {"MINION_ENGINE": "memory", "MEMORY_PARAMS": json.dumps(PARAMS)}
    backend = started(name, config)
    env = backend.env(workdir)
    if not backend.drains:
        env["MINION_IDLE_TIMEOUT"] = "2"
    pushed = subprocess.run([sys.executable, "-m", "minionize.push", *PARAMS], env=minion_env(**env),
                            capture_output=True, text=True, timeout=60)
    assert pushed.returncode == 0, pushed.stderr
    return env


@pytest.mark.parametrize("engine", ENGINES)
def test_every_line_of_a_run_is_json_with_the_stable_fields(
    engine: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    env = engine_env(engine, request.config, tmp_path)
    minion = subprocess.run(
        minionize_cmd(*PROGRAM), cwd=tmp_path, capture_output=True, text=True, timeout=120,
        env=minion_env(**env, MINION_LOG_FORMAT="json", MINION_MAX_ATTEMPTS="2"),
    )
    assert minion.returncode == exitcodes.SET_ASIDE, minion.stderr
    lines: list[dict[str, Any]] = [json.loads(line) for line in minion.stderr.splitlines()]
    assert len(lines) >= 7  # the start, five runs, the end
    for line in lines:
        assert {"time", "level", "logger", "message", "minion", "host", "job_id"} <= set(line), line
    assert len({line["minion"] for line in lines}) == 1
    runs = [line for line in lines if "verdict" in line]
    assert {p: [r["verdict"] for r in runs if r["param"] == p] for p in PARAMS} == VERDICTS, minion.stderr
    for param in PARAMS:
        # pulsar-lite sometimes counts a nacked message's redelivery twice: attempt 3 after 1, set aside unrun.
        attempts = [r["attempt"] for r in runs if r["param"] == param]
        assert attempts[0] == 1 and attempts == sorted(set(attempts)), minion.stderr
    for run in runs:
        assert isinstance(run["message_id"], str) and run["message_id"]
        ran = "delivered" not in run["message"]  # no run, hence no exit code, for an attempt counted twice
        assert run.get("exit_code") == ((0 if run["verdict"] == "acked" else 1) if ran else None)
        assert isinstance(run["duration"], float) and run["duration"] >= 0
        assert run["level"] == ("INFO" if run["verdict"] == "acked" else "WARNING")
    # A URL's secrets (amqp's password, postgres's user): masked in the start line as in text, never in clear.
    start = lines[0]["message"]
    assert start.startswith(f"minion {lines[0]['minion']}: taking parameters from ")
    for url in (value for value in env.values() if "://" in value and secrets_of(value)):
        assert mask_url(url) in start and url not in minion.stderr


def test_an_unreachable_queue_says_so_in_json(tmp_path: Path) -> None:
    """The last word of a minion that cannot go on is a JSON line too, its URL masked (a configuration
    error stays a plain line: the configuration that asks for JSON may be what is wrong)."""
    url = "redis://:Zq-json-secret@127.0.0.1:1/0"  # port 1: refused at once
    minion = subprocess.run(
        minionize_cmd("true"), cwd=tmp_path, capture_output=True, text=True, timeout=60,
        env=minion_env(MINION_ENGINE="redis", REDIS_URL=url, REDIS_STREAM="s", MINION_LOG_FORMAT="json"),
    )
    assert minion.returncode == exitcodes.UNREACHABLE, minion.stderr
    [line] = [json.loads(line) for line in minion.stderr.splitlines()]
    assert line["level"] == "ERROR" and mask_url(url) in line["message"] and "Zq-json" not in minion.stderr
