"""Fixtures shared by every test.

`clean_env` (autouse) removes MINION_* and engine variables so that a
developer's shell or `.env` cannot leak into a test. `require` turns a
missing server into a skip locally and into a failure under CI=true.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Generator
from pathlib import Path
from typing import Any

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


# --- running in two lanes (scripts/test: pytest-xdist by file, then the serial tests) -------

#: Tests that must not share the machine with other tests: those that measure
#: how long a stop or a recovery takes, or break a server others use.
SERIAL_MODULES = {"test_service_mode.py"}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "serial: run alone, after the parallel lane (scripts/test)")


def pytest_itemcollected(item: pytest.Item) -> None:
    """Marks the serial tests as they are collected, so that `-m` selects them."""
    if is_serial(item):
        item.add_marker(pytest.mark.serial)


def is_serial(item: pytest.Item) -> bool:
    if item.path.parent.name == "faults" or item.path.name in SERIAL_MODULES:
        return True
    # A restart of RabbitMQ, which every other test of the amqp engine shares.
    params = getattr(getattr(item, "callspec", None), "params", {})
    backend = params.get("backend", "")
    return "restart" in item.name and str(backend).startswith("amqp")


def pytest_sessionfinish(session: pytest.Session) -> None:
    """An xdist worker hands its count of documentation blocks to the controller."""
    from tests.docs.runner import TALLY

    output = getattr(session.config, "workeroutput", None)
    if output is not None:
        output["docs_tally"] = dict(TALLY)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: object, error: object) -> None:
    from tests.docs.runner import TALLY

    tally = dict(getattr(node, "workeroutput", {}).get("docs_tally", {}))
    # Every worker counts the marked blocks as it collects test_docs.py: they are counted once.
    marked = max(TALLY["marked"], tally.pop("marked", 0))
    TALLY.update(tally)
    TALLY["marked"] = marked


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, None]:
    """What a test printed may hold lone surrogates (undecodable bytes, on purpose): xdist
    sends reports as UTF-8, so they are escaped here rather than crashing the worker."""
    outcome = yield
    report = outcome.get_result()
    report.sections = [(title, _utf8(text)) for title, text in report.sections]
    if isinstance(report.longrepr, str):
        report.longrepr = _utf8(report.longrepr)
    elif report.longrepr is not None and not _encodes(str(report.longrepr)):
        report.longrepr = _utf8(str(report.longrepr))


def _encodes(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _utf8(text: str) -> str:
    return text if _encodes(text) else text.encode("utf-8", "backslashreplace").decode("utf-8")
