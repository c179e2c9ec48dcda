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
