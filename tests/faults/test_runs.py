"""Runs that misbehave: one deaf to SIGTERM during a warm stop, one that leaves grandchildren behind.

Each test runs one real minion on one parameter, then checks by pid that no
process of the run is left, what the minion did with the parameter (the
json reporter's verdict), and what the queue did with it (a second minion
runs it again, or finds nothing).
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest

from minionize.callbacks.child import KILL_AFTER
from tests.integration.backends import Backend

from .harness import PROGRAMS, Fleet, alive, count_done, done_program, push, read_pids, wait_for

pytestmark = pytest.mark.integration
GRACE = 1.0


def verdicts(reports: Path) -> list[str]:
    """The verdict of every finished run in the json reports."""
    found = []
    for path in reports.glob("*.jsonl"):
        for line in path.read_text().splitlines():
            record = json.loads(line) if line.startswith("{") else {}
            if record.get("type") == "end":
                found.append(record["verdict"])
    return found


def one_minion(backend: Backend, workdir: Path, program: list[str], **extra: str) -> tuple[Fleet, dict[str, str]]:
    """A minion with the json reporter in workdir/reports, on a queue holding the parameter "victim"."""
    env = {**backend.env(workdir), "MINION_REPORTER": "json", "REPORTER_JSON_DIRECTORY": str(workdir / "reports"),
           **extra}
    push(env, ["victim"])
    return Fleet(backend, env, workdir, program).start(), env


def second_minion_runs(backend: Backend, env: dict[str, str], workdir: Path) -> dict[str, int]:
    """What another minion, started once the first is gone, finds to run on the queue."""
    records = workdir / "second"
    second = Fleet(backend, env, workdir, done_program(records, 0), name="second").start()
    try:
        assert second.wait(120), "the second minion did not exit by itself"
    finally:
        second.stop()
    assert not second.failures(), second.failures()
    return dict(count_done(records))


def test_a_run_deaf_to_sigterm_is_killed_after_the_grace_period_and_given_back(
    backend: Backend, tmp_path: Path
) -> None:
    program = [str(PROGRAMS / "deaf.sh"), str(tmp_path)]
    fleet, env = one_minion(backend, tmp_path, program, MINION_GRACE_PERIOD=f"{GRACE:g}")
    minion = fleet.minions[0]
    try:
        wait_for((tmp_path / "pids.victim").exists, 60, "the run did not start")
        pids = read_pids(tmp_path / "pids.victim")
        stopped = time.monotonic()
        minion.send_signal(signal.SIGTERM)
        minion.wait(timeout=GRACE + KILL_AFTER + 60)
        took = time.monotonic() - stopped
    finally:
        fleet.stop()
    assert minion.returncode == 0, fleet.log(0)
    # SIGTERM came after the grace period and was ignored: only the SIGKILL, KILL_AFTER later, ended the run.
    assert took >= GRACE + KILL_AFTER - 0.2, f"stopped after {took:.1f}s"
    assert [pid for pid in pids if alive(pid)] == [], "a process of the run outlived the minion"
    assert verdicts(tmp_path / "reports") == ["released"]
    assert second_minion_runs(backend, env, tmp_path) == {"victim": 1}


def test_grandchildren_of_a_finished_run_are_killed_and_the_parameter_acked(backend: Backend, tmp_path: Path) -> None:
    records = tmp_path / "records"
    records.mkdir()
    # Short leases: were the parameter not acked, the second minion would get it back.
    program = [str(PROGRAMS / "forker.sh"), str(records)]
    fleet, env = one_minion(backend, tmp_path, program, **backend.lease_env())
    try:
        assert fleet.wait(120), "the minion did not exit by itself"
    finally:
        fleet.stop()
    assert not fleet.failures(), fleet.failures()
    grandchildren = read_pids(records / "pids.victim")
    assert len(grandchildren) == 2
    assert [pid for pid in grandchildren if alive(pid)] == [], "a grandchild outlived its run"
    assert verdicts(tmp_path / "reports") == ["acked"]
    assert count_done(records) == {"victim": 1}
    assert second_minion_runs(backend, env, tmp_path) == {}
