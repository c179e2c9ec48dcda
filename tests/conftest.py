"""Fixtures shared by every test.

`clean_env` (autouse) removes MINION_* and engine variables so that a
developer's shell or `.env` cannot leak into a test. `require` turns a
missing server into a skip locally and into a failure under CI=true.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from minionize.registry import VARIABLE_PREFIXES

ROOT = Path(__file__).resolve().parent.parent
#: minionize's own variables, and those of the clients it drives (Docker's, the Pub/Sub emulator's).
_PREFIXES = (*VARIABLE_PREFIXES, "DOCKER_", "PUBSUB_")
_NAMES = {"EP", "DRY", "OAR_JOB_ID", "SLURM_JOB_ID", "PBS_JOBID", "POD_NAME", "JOB_ID"}


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith(_PREFIXES) or name in _NAMES:
            monkeypatch.delenv(name, raising=False)


def require(condition: bool, reason: str) -> None:
    """Skip when a server or daemon is missing, except under CI=true where it fails."""
    if condition:
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"required under CI=true: {reason}")
    pytest.skip(reason)


def minion_env(**overrides: str) -> dict[str, str]:
    """The environment of a minion started by a test: clean, plus `overrides`.

    In batch mode (MINION_BATCH=1) unless `overrides` say otherwise: a test
    runs a minion to its end, and on a broker only batch mode ends it when
    the queue is drained (tests/integration/test_service_mode.py tests the
    service mode).
    """
    env = {
        k: v
        for k, v in os.environ.items()
        if not (k.startswith(_PREFIXES) or k in _NAMES)
    }
    env["PYTHONUNBUFFERED"] = "1"
    env["MINION_BATCH"] = "1"
    env.update(overrides)
    return env


def minionize_cmd(*args: str) -> list[str]:
    """argv that runs the minionize command line of this checkout."""
    return [sys.executable, "-m", "minionize", *args]


def run_minion(*args: str, cwd: Path, timeout: float = 60, **env: str) -> subprocess.CompletedProcess[str]:
    """Run one minion to completion and capture its output."""
    return subprocess.run(
        minionize_cmd(*args),
        cwd=cwd,
        env=minion_env(**env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """How many documentation blocks ran and how many are marked (tests/integration/test_docs.py)."""
    from tests.docs.runner import TALLY, summary

    line = summary(TALLY)
    if line:
        terminalreporter.write_line(line)
