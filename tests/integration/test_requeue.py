"""Failed parameters are listed with their reasons (`minion-status --failed`) and queued again
(`minion-push --retry-failed`), end to end on each engine that keeps them."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import minion_env, minionize_cmd

from .backends import Backend, backend_fixture, with_capability

pytestmark = pytest.mark.integration
#: Fails for "doomed" until the file `fixed` exists; leaves `<param>.ok` behind each success.
PROGRAM = ("sh", "-c", 'test "$1" != doomed || test -e fixed || exit 1; touch "$1.ok"', "sh")


backend = backend_fixture(
    with_capability("retry_empties_dead_letters"),
    doc="Every engine whose dead-letter place the retry empties (execo's journal keeps the history: its own test).",
)


def command(env: dict[str, str], cwd: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, env=minion_env(**env), capture_output=True, text=True, timeout=60)


def run_until(env: dict[str, str], cwd: Path, done: Callable[[], bool]) -> None:
    """Run a minion until `done()` (a minion on a broker may wait for more work), then stop it."""
    with open(cwd / "minion.err", "a") as stderr:
        minion = subprocess.Popen(minionize_cmd(*PROGRAM), cwd=cwd, env=minion_env(**env, MINION_MAX_ATTEMPTS="1"),
                                  stdout=subprocess.DEVNULL, stderr=stderr)
    try:
        deadline = time.monotonic() + 120
        while not done() and minion.poll() is None:
            assert time.monotonic() < deadline, (cwd / "minion.err").read_text()
            time.sleep(0.1)
    finally:
        minion.terminate()
        minion.wait(timeout=60)
    assert done(), (cwd / "minion.err").read_text()


def failed(env: dict[str, str], cwd: Path) -> list[str]:
    listed = command(env, cwd, sys.executable, "-m", "minionize.status", "--failed")
    assert listed.returncode == 0, listed.stderr
    return [] if listed.stdout == "no failed parameters\n" else listed.stdout.splitlines()


def test_a_failed_parameter_is_listed_then_retried(backend: Backend, tmp_path: Path) -> None:
    env = backend.env(tmp_path)
    status = (sys.executable, "-m", "minionize.status", "--failed")
    retry = (sys.executable, "-m", "minionize.push", "--retry-failed")
    assert command(env, tmp_path, sys.executable, "-m", "minionize.push", "doomed", "fine").returncode == 0
    # Polled with the command under test: the backends' own reader takes Pub/Sub's letters away.
    run_until(env, tmp_path, lambda: (tmp_path / "fine.ok").exists() and len(failed(env, tmp_path)) == 1)

    listed = command(env, tmp_path, *status)
    assert listed.returncode == 0, listed.stderr
    [line] = listed.stdout.splitlines()
    param, _, reason = line.partition("\t")
    assert "doomed" in param
    if backend.dead_letter_reason:
        assert "exit code 1" in reason

    (tmp_path / "fixed").touch()
    requeued = command(env, tmp_path, *retry)
    assert (requeued.returncode, requeued.stdout.split(" again")[0]) == (0, "queued 1 failed parameters"), requeued
    assert command(env, tmp_path, *status).stdout == "no failed parameters\n"
    run_until(env, tmp_path, lambda: (tmp_path / "doomed.ok").exists())
    assert backend.dead_letters(env) == []


def test_engines_without_a_dead_letter_place_say_so(tmp_path: Path) -> None:
    for argv in (("minionize.status", "--failed"), ("minionize.push", "--retry-failed")):
        result = command({"MINION_ENGINE": "memory"}, tmp_path, sys.executable, "-m", *argv)
        assert (result.returncode, result.stdout) == (2, "")
        assert "memory" in result.stderr and result.stderr.count("\n") == 1


def test_execo_lists_its_failed_parameters_from_the_journal_and_retries_them(tmp_path: Path) -> None:
    env = {"MINION_ENGINE": "execo", "EXECO_PERSISTENCE_DIR": str(tmp_path / "sweeps")}
    assert command(env, tmp_path, sys.executable, "-m", "minionize.push", "doomed", "fine").returncode == 0
    ran = command({**env, "MINION_MAX_ATTEMPTS": "1"}, tmp_path, *minionize_cmd("test", "doomed", "!="))
    assert "drained" in ran.stderr, ran.stderr
    assert failed(env, tmp_path) == ["doomed\texit code 1 (attempt 1 of 1)"]
    retried = command(env, tmp_path, sys.executable, "-m", "minionize.push", "--retry-failed")
    assert (retried.returncode, retried.stdout.split(" again")[0]) == (0, "queued 1 failed parameters"), retried
    assert failed(env, tmp_path) == []
    again = command(env, tmp_path, *minionize_cmd("test", "doomed", "="))
    assert again.returncode == 0 and "drained (1 acked)" in again.stderr, again.stderr
    assert command(env, tmp_path, *minionize_cmd("true")).stderr.count("nothing done") == 1  # all done now
