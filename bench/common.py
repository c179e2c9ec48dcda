"""Shared helpers of the benchmarks: timing commands, printing comparison tables."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from minionize.registry import VARIABLE_PREFIXES

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
MINIONIZE = [PYTHON, "-m", "minionize"]


def env(**extra: str) -> dict[str, str]:
    """A clean environment for a minion: no MINION_* from the caller's shell.

    In batch mode: a benchmark's minions end once their queue is drained.
    """
    base = {k: v for k, v in os.environ.items() if not k.startswith(VARIABLE_PREFIXES)}
    base.update(MINION_LOG_LEVEL="WARNING", MINION_BATCH="1", **extra)
    return base


def timed(argv: Sequence[str], stdin: Path | None = None, cwd: Path | None = None, **extra: str) -> float:
    """Wall-clock seconds of one command, which must succeed."""
    started = time.perf_counter()
    with open(stdin) if stdin else open(os.devnull) as feed:
        result = subprocess.run(
            list(argv), stdin=feed, cwd=cwd, env=env(**extra), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed: {result.stderr.decode()[-2000:]}")
    return elapsed


def best_of(runs: int, measure) -> float:  # type: ignore[no-untyped-def]
    """The best of `runs` measurements: the least disturbed by the rest of the machine."""
    return min(measure() for _ in range(runs))


def have(program: str) -> bool:
    return shutil.which(program) is not None


def table(title: str, rows: list[tuple[str, str, str, str]]) -> str:
    """A Markdown table: what, measured, compared with, verdict."""
    lines = [f"### {title}", "", "| what | measured | compared | target |", "|---|---|---|---|"]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    return "\n".join(lines) + "\n"


def verdict(ok: bool) -> str:
    return "met" if ok else "**missed**"


#: Python code that prints the process's peak resident memory in MB (read in the child itself).
PEAK = "int(next(l for l in open('/proc/self/status') if l.startswith('VmHWM')).split()[1]) / 1024"
#: A minion's start on an execo sweep (argv[1]): open it, take and ack one parameter; prints seconds and peak MB.
ONE_MINION = f"""
import sys, time
from minionize.engines.execo import ExecoEngine
started = time.perf_counter()
engine = ExecoEngine(sys.argv[1])
engine.open()
for message in engine.next_many(1, 0):
    engine.ack(message)
engine.close()
print(time.perf_counter() - started, {PEAK})
"""


def checkout(revision: str, work: Path) -> dict[str, str]:
    """The environment that runs `revision`'s minionize package, extracted from git into `work`
    (what BENCH_BEFORE=<revision> compares against, in the same run)."""
    root = work / f"minionize-{revision}"
    root.mkdir()
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", revision, "minionize"], capture_output=True,
                             check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(root)], input=archive, check=True)
    return {"PYTHONPATH": str(root)}  # ahead of the installed (editable) package
