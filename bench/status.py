"""Reading a big report: `minion-status` over N runs (default 1,000,000; --quick 20,000), and mtop's frames.

A report directory as the json reporter writes it: 100 minions, each a
`minion` record, then a `start` and an `end` record per run (a parameter, a
verdict, a short stderr tail) and a heartbeat every 10 s of their clock,
written by this benchmark rather than by real runs, with the summaries a
minion writes at each heartbeat (`minionize.summaryfiles.SummaryWriter`, fed
every line). Timed: `minion-status --dir` (the whole command, its own
process), with the summaries and without them (a report of an older
minionize: every record parsed); the first read of mtop's model
(`mtop.Live.refresh`), then a refresh after 1,000 more runs were appended,
as a frame does. With BENCH_BEFORE=<git revision>, that revision's
minion-status too (from `git archive`), on the same report, in the same run.
Targets: minion-status under 10 s; a refresh after the first under 1 s.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from common import PYTHON, checkout, env, table, verdict

from minionize.summaryfiles import SUMMARY_DIRECTORY, SummaryWriter

MINIONS = 100


def write_report(directory: Path, runs: int, first: int = 0, fresh: bool = True) -> None:
    """`runs` runs spread over the minions' files (appended to them, with no summary, unless `fresh`)."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = random.Random(first)
    now = time.time() - 3600
    for index in range(MINIONS):
        minion = f"host-{index}-0a0b0c"
        lines = []
        if fresh:
            lines.append({"type": "minion", "minion": minion, "host": f"host-{index}", "pid": 1000 + index,
                          "job_id": None, "engine": "execo sweep s", "concurrency": 2, "time": now})
        beat = now
        for run in range(first + index, first + runs, MINIONS):
            start = now + run * 0.003
            if fresh and start - beat >= 10:
                beat = start
                lines.append({"type": "heartbeat", "minion": minion, "time": beat, "in_flight": 1,
                              "free_slots": 1, "draining": False})
            end = start + rng.uniform(0.5, 2.0)
            failed = run % 97 == 0
            common = {"minion": minion, "id": f"k{run}", "param": {"a": run % 1000, "b": run // 1000},
                      "attempt": 1, "slot": run % 2}
            lines.append({"type": "start", **common, "time": start})
            lines.append({"type": "end", **common, "start": start, "end": end, "duration": end - start,
                          "status": "error" if failed else "ok", "exit_code": 1 if failed else 0, "signal": None,
                          "timed_out": False, "verdict": "retried" if failed else "acked",
                          "error": "exit code 1" if failed else None, "host": f"host-{index}", "job_id": None,
                          "stdout_tail": "", "stderr_tail": "boom\n" if failed else ""})
        path = directory / f"{minion}.jsonl"
        with open(path, "a" if not fresh else "w") as out:
            summary = SummaryWriter(path) if fresh else None
            if summary:
                summary.opened(out.fileno())
            for line in lines:
                text = json.dumps(line) + "\n"
                out.write(text)
                if summary:
                    summary.wrote(text)
                    if line["type"] == "heartbeat":
                        out.flush()  # as the reporter does, before its summary
                        summary.write()


def _status(directory: Path, **extra: str) -> float:
    """Seconds of one `minion-status --dir`, which must succeed (run from `directory`'s parent, so that
    PYTHONPATH in `extra` comes before this checkout)."""
    started = time.perf_counter()
    result = subprocess.run([PYTHON, "-m", "minionize.status", "--dir", str(directory)], env=env(**extra),
                            capture_output=True, text=True, cwd=directory.parent)
    if result.returncode != 0:
        raise SystemExit(f"minion-status failed: {result.stderr[-2000:]}")
    return time.perf_counter() - started


def _frames(directory: Path, runs: int) -> tuple[float, float]:
    """Seconds of mtop's first read, and of a refresh after 1,000 more runs."""
    from minionize import mtop

    dashboard = mtop.Live(directory)
    started = time.perf_counter()
    dashboard.refresh()
    first = time.perf_counter() - started
    write_report(directory, 1_000, first=runs, fresh=False)
    started = time.perf_counter()
    dashboard.refresh()
    return first, time.perf_counter() - started


def run(runs: int = 1_000_000, quick: bool = False) -> str:
    if quick:
        runs = 20_000
    work = Path(tempfile.mkdtemp(prefix="bench-status-"))
    try:
        write_report(work / "report", runs)
        before = os.environ.get("BENCH_BEFORE")
        old = _status(work / "report", **checkout(before, work)) if before else None
        status = _status(work / "report")
        first, refresh = _frames(work / "report", runs)
        shutil.rmtree(work / "report" / SUMMARY_DIRECTORY)
        whole = _status(work / "report")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    rows = [] if old is None else [
        (f"minion-status over {runs:,} runs, before ({before})", f"{old:.1f} s", "every record",
         f"< 10 s: {verdict(old < 10)}")]
    rows += [
        (f"minion-status over {runs:,} runs ({MINIONS} minions)", f"{status:.1f} s",
         "the minions' summaries, then the records after them", f"< 10 s: {verdict(status < 10)}"),
        ("minion-status over the same report without its summaries", f"{whole:.1f} s",
         "every record (a report of an older minionize)", ""),
        ("mtop, the first read", f"{first:.1f} s", "the summaries, then the records after them", ""),
        ("mtop, a refresh after 1,000 more runs", f"{refresh:.2f} s", "the new records only",
         f"< 1 s: {verdict(refresh < 1)}"),
    ]
    return table(f"Reading a report of {runs:,} runs (one run)", rows)


if __name__ == "__main__":
    print(run())
