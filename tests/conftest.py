"""Fixtures shared by every test.

`clean_env` (autouse) removes MINION_* and engine variables so that a
developer's shell or `.env` cannot leak into a test. `require` turns a
missing server into a skip locally and into a failure under CI=true.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from collections.abc import Callable, Generator, Iterator
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


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Callable[..., subprocess.Popen[str]]]:
    """Starts minions (`spawn(env, *program)`, output piped, in tmp_path); the test's end kills
    any still running and reads what every one of them wrote."""
    started: list[subprocess.Popen[str]] = []

    def start(env: dict[str, str], *program: str) -> subprocess.Popen[str]:
        process = subprocess.Popen(minionize_cmd(*program), cwd=tmp_path, env=minion_env(**env),
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        started.append(process)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
        process.communicate()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    """How many documentation blocks ran and how many are marked (tests/integration/test_docs.py),
    and the fault suite's table of figures (tests/faults/)."""
    from tests.docs.runner import TALLY, summary
    from tests.faults.harness import print_table

    line = summary(TALLY)
    if line:
        terminalreporter.write_line(line)
    print_table(terminalreporter, config)


# --- running in three lanes (scripts/test: the bulk by file over pytest-xdist, the serial
# tests two files at a time, then the tests that must be alone) --------------------------

#: Tests kept from the bulk of the suite: those that measure how long a stop or
#: a recovery takes. They run after it, two test files at a time.
SERIAL_MODULES = {"test_service_mode.py"}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "serial: times a stop or a recovery: run after the bulk, two files at a time")
    config.addinivalue_line("markers", "alone: restarts a server every other test shares: run by itself, last")


def pytest_itemcollected(item: pytest.Item) -> None:
    """Marks the serial and the alone tests as they are collected, so that `-m` selects them."""
    if is_alone(item):
        item.add_marker(pytest.mark.alone)
    elif is_serial(item):
        item.add_marker(pytest.mark.serial)


def is_serial(item: pytest.Item) -> bool:
    return item.path.parent.name == "faults" or item.path.name in SERIAL_MODULES


def is_alone(item: pytest.Item) -> bool:
    """A restart of RabbitMQ, the machine's own server, which every test of the amqp engine shares
    (the other brokers' restarts are of private servers)."""
    params = getattr(getattr(item, "callspec", None), "params", {})
    backend = params.get("backend", "")
    return "restart" in item.name and str(backend).startswith("amqp")


def pytest_sessionfinish(session: pytest.Session) -> None:
    """An xdist worker hands its count of documentation blocks and its rows of the fault table to the controller."""
    from tests.docs.runner import TALLY
    from tests.faults.harness import FIGURES

    output = getattr(session.config, "workeroutput", None)
    if output is not None:
        output["docs_tally"] = dict(TALLY)
        output["fault_figures"] = [dataclasses.asdict(row) for row in session.config.stash.get(FIGURES, [])]


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: object) -> None:
    from tests.docs.runner import TALLY
    from tests.faults.harness import FIGURES, Figures

    output = getattr(node, "workeroutput", {})
    node.config.stash.setdefault(FIGURES, []).extend(Figures(**row) for row in output.get("fault_figures", []))
    tally = dict(output.get("docs_tally", {}))
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
