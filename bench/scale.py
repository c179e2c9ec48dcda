"""The execo queue's cost per parameter as the sweep grows: 1,000 to 1,000,000 parameters (--quick: to 10,000).

The same fixed number of parameters (1,000: the whole of the smallest sweep)
is taken from a fresh sweep of each size, and the last 1,000 from a sweep of
100,000 whose first 99,000 are done (the state a long sweep grows into), by 1
minion and by 4 minions (separate processes sharing the directory, 250
each), with leases on (the default). The task is a no-op Python function (FuncCallback through the API,
bench/consumer.py), so that no process spawn hides the queue's own cost.
Per parameter: from the first parameter done to the last, divided by the
parameters in between; the start (go to the first parameter: opening, loading
the sweep) is shown apart. Target: the cost per parameter of the 100,000
sweep within 2x that of the 1,000 sweep, at 100,000 (issue 7) and at 1,000,000 (issue 14).
"""

from __future__ import annotations

import pickle
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import plots
from common import env, table, verdict
from consumer import Run, launch

SIZES = (1_000, 10_000, 100_000, 1_000_000)
FLEETS = (1, 4)


@dataclass(frozen=True)
class Case:
    size: int
    done: int = 0  # parameters of the sweep already done before the minions start

    def describe(self, taken: int) -> str:
        if taken >= self.size:
            return f"the whole {self.size:,} sweep"
        if self.done:
            return f"the last {taken:,} of {self.size:,} ({self.done:,} done before)"
        return f"the first {taken:,} of {self.size:,}"


def make_sweep(directory: Path, case: Case) -> None:
    """A sweep of integers, written in execo's format (as minion-push does), some of it done."""
    from minionize.engines.execo import ExecoEngine

    ExecoEngine(str(directory)).push(list(range(case.size)))
    with open(directory / "done", "ab") as done:  # execo's format: one pickle appended per parameter done
        for param in range(case.done):
            pickle.dump(param, done)


def take(sweep: Path, work: Path, minions: int, taken: int) -> Run:
    """`taken` parameters from a copy of `sweep`, `minions` at a time."""
    copy = work / "taking"
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(sweep, copy)
    quota = taken // minions
    environ = env(MINION_ENGINE="execo", EXECO_PERSISTENCE_DIR=str(copy), BENCH_LIMIT=str(quota))
    run = launch([(["minion", "-", "0"], environ)] * minions, work)
    if run.count != quota * minions:
        raise SystemExit(f"took {run.count} parameters of {quota * minions} from {sweep}")
    return run


def per_parameter(run: Run) -> float:
    return (run.last - run.first) / (run.count - 1)


def _rows(
    best: dict[tuple[int, Case], Run], cases: list[Case], taken: int, largest: int
) -> list[tuple[str, str, str, str]]:
    rows = []
    for minions in FLEETS:
        smallest = per_parameter(best[(minions, cases[0])])
        for case in cases:
            measured = best[(minions, case)]
            cost = per_parameter(measured)
            if not case.done:
                plots.record("scale", f"{minions} minion{'s' * (minions > 1)}, the first {taken:,}", case.size,
                             cost * 1e3)
            what = f"{minions} minion{'s' * (minions > 1)}, {case.describe(taken)}"
            start = f"start {1e3 * (measured.first - measured.go):.0f} ms"
            if case is cases[0]:
                rows.append((what, f"{cost * 1e3:.2f} ms/parameter", f"reference; {start}", ""))
                continue
            ratio = cost / smallest
            target = f"<= 2x: {verdict(ratio <= 2)}" if case.size >= min(100_000, largest) else ""
            rows.append((what, f"{cost * 1e3:.2f} ms/parameter", f"{ratio:.2f}x the {cases[0].size:,} sweep; {start}",
                         target))
    return rows


def run(taken: int = 1_000, repeat: int = 2, quick: bool = False) -> str:
    sizes = SIZES[:2] if quick else SIZES
    if quick:
        repeat = 1
    work = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    cases = [Case(size) for size in sizes] + [Case(sizes[-1], sizes[-1] - taken)]
    sweeps = {case: work / f"sweep-{case.size}-{case.done}" for case in cases}
    for case, directory in sweeps.items():
        make_sweep(directory, case)
    best: dict[tuple[int, Case], Run] = {}
    try:
        for _ in range(repeat):  # in turns: a busy moment of the machine hits every size alike
            for minions in FLEETS:
                for case in cases:
                    measured = take(sweeps[case], work, minions, taken)
                    key = (minions, case)
                    if key not in best or per_parameter(measured) < per_parameter(best[key]):
                        best[key] = measured
    finally:
        shutil.rmtree(work, ignore_errors=True)
    title = (f"execo queue: cost per parameter by sweep size, {taken:,} no-op parameters taken, "
             f"leases on (best of {repeat})")
    return table(title, _rows(best, cases, taken, sizes[-1]))


if __name__ == "__main__":
    print(run())
