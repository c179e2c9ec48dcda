"""A broken node cannot burn a sweep: 3 healthy minions and 1 whose every run exits 127 at once.

The broken minion runs `programs/broken.sh`, which execs a program that is
not installed (the shell's "not found", exit code 127), as on a node that
lacks a tool. Without the guard it takes most of the sweep, runs being
ten times quicker to fail than to succeed, and spends every attempt of the
parameters it takes three times in a row: they are set aside. With it
(minionize.health), its strikes stop it taking, its local failures are
given back uncounted, and it exits 4; the healthy minions do everything.

FAULTS_BROKEN_PARAMS parameters (100 here, 500 in `scripts/faults`), with
MINION_MAX_ATTEMPTS=3 (the default: the one that matters here) and the
default strike settings except the pause, MINION_STRIKE_PAUSE=0.1 instead
of 30 s, so that the broken minion goes through all its strikes within the
sweep.
"""

from __future__ import annotations

import collections
import json
import time
from pathlib import Path
from typing import Any

import pytest

from minionize import exitcodes
from tests.integration.backends import Backend

from .harness import PROGRAMS, Figures, Fleet, Sizes, count_done, done_program, not_done, push

pytestmark = pytest.mark.integration
HEALTHY = 3
#: Seconds the minions may take to exit once the sweep is done.
DRAIN_TIMEOUT = 60.0


def verdicts(reports: Path) -> tuple[collections.Counter[str], list[dict[str, Any]]]:
    """The verdicts of the runs, and the strike records, in the json reports of a directory."""
    counted: collections.Counter[str] = collections.Counter()
    strikes = []
    for path in reports.glob("*.jsonl"):
        for line in path.read_text().splitlines():
            record = json.loads(line) if line.startswith("{") else {}
            if record.get("type") == "end":
                counted[record["verdict"]] += 1
            elif record.get("type") == "strike":
                strikes.append(record)
    return counted, strikes


def set_aside(backend: Backend, env: dict[str, str]) -> list[Any]:
    try:
        return [param for param, _ in backend.dead_letters(env)]
    except FileNotFoundError:  # execo writes its journal at the first retry or failure
        return []


class BrokenSweep:
    """One sweep through HEALTHY healthy minions and a broken one, and what came of it."""

    def __init__(self, backend: Backend, workdir: Path, sizes: Sizes, guard: dict[str, str]) -> None:
        self.backend, self.workdir, self.sizes = backend, workdir, sizes
        self.env = {**backend.env(workdir), **backend.lease_env(), "MINION_MAX_ATTEMPTS": "3",
                    "MINION_REPORTER": "json"}
        self.params = [f"p{i}" for i in range(sizes.broken_params)]
        self.records = workdir / "records"
        healthy_env = {**self.env, "REPORTER_JSON_DIRECTORY": str(workdir / "reports-healthy")}
        broken_env = {**self.env, **guard, "REPORTER_JSON_DIRECTORY": str(workdir / "reports-broken")}
        program = done_program(self.records, sizes.run_seconds)
        self.healthy = Fleet(backend, healthy_env, workdir, program, HEALTHY, name="healthy")
        self.broken = Fleet(backend, broken_env, workdir, [str(PROGRAMS / "broken.sh")], name="broken")
        self.all_done = self.drained = 0.0

    def run(self) -> None:
        """Push, start the four minions at once, wait until every one exited by itself."""
        push(self.env, self.params)
        started = time.monotonic()
        self.broken.start()
        self.healthy.start()
        deadline = started + self.sizes.give_up + DRAIN_TIMEOUT
        try:
            while self.healthy.live() or self.broken.live():
                assert time.monotonic() < deadline, f"not over within {deadline - started:.0f}s\n{self.logs()}"
                if not self.all_done and not not_done(self.params, self.records):
                    self.all_done = time.monotonic() - started
                time.sleep(0.05)
            self.drained = time.monotonic() - started
        finally:
            self.healthy.stop()
            self.broken.stop()

    @property
    def broken_code(self) -> int:
        code = self.broken.minions[0].returncode
        assert code is not None
        return code

    def logs(self) -> str:
        return f"broken:\n{self.broken.log(0)[-2000:]}\nhealthy:\n{self.healthy.all_logs()[-3000:]}"

    def figures(self, scenario: str) -> Figures:
        counts = count_done(self.records)
        row = Figures.of(self.backend.name, scenario, self.healthy, self.params, counts,
                         all_done=self.all_done, drained=self.drained)
        row.layout = f"{HEALTHY} minions + 1 broken"
        mine, strikes = verdicts(self.workdir / "reports-broken")
        row.remarks = (
            f"{len(set_aside(self.backend, self.env))} set aside; the broken minion exited {self.broken_code} "
            f"after {len(strikes)} strikes, with {sum(mine.values())} runs: {mine['retried']} retried "
            f"(an attempt counted), {mine['released']} released (given back uncounted), {mine['failed']} failed"
        )
        return row


@pytest.mark.parametrize("backend", ["execo", "redis"], indirect=True)
def test_a_broken_node_cannot_burn_the_sweep(
    backend: Backend, tmp_path: Path, sizes: Sizes, figures: list[Figures]
) -> None:
    sweep = BrokenSweep(backend, tmp_path, sizes, {"MINION_STRIKE_PAUSE": "0.1"})
    sweep.run()
    figures.append(sweep.figures("broken node"))
    assert set_aside(backend, sweep.env) == [], sweep.logs()
    assert not_done(sweep.params, sweep.records) == []
    assert not sweep.healthy.failures(), sweep.healthy.failures()
    assert sweep.broken_code == exitcodes.BROKEN_NODE, sweep.logs()
    mine, strikes = verdicts(tmp_path / "reports-broken")
    assert [s["strike"] for s in strikes] == [1, 2, 3]
    # Before its first strike the broken minion cannot know: 9 attempts counted, at most (MINION_STRIKE_AFTER - 1).
    assert mine["retried"] <= 9 and mine["failed"] == 0 and mine["acked"] == 0
    assert mine["released"] >= 21, "each strike after the first gives back 10 runs, uncounted"
    assert "broken node? 10 runs in a row failed fast" in sweep.broken.log(0)


@pytest.mark.parametrize("backend", ["execo"], indirect=True)
def test_without_the_guard_a_broken_node_burns_the_sweep(
    backend: Backend, tmp_path: Path, sizes: Sizes, figures: list[Figures]
) -> None:
    """The control: MINION_STRIKE_AFTER=0 turns the guard off, and the scenario bites as it did before it."""
    sweep = BrokenSweep(backend, tmp_path, sizes, {"MINION_STRIKE_AFTER": "0"})
    sweep.run()
    figures.append(sweep.figures("broken node, guard off"))
    assert sweep.broken_code == exitcodes.SET_ASIDE
    burnt = set_aside(backend, sweep.env)
    assert len(burnt) > len(sweep.params) // 10, f"only {len(burnt)} set aside"
    assert len(not_done(sweep.params, sweep.records)) == len(burnt)
