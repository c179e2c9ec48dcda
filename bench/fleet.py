"""Fleet scaling: 1, 2 and 4 minions (separate processes) draining one Redis stream of 10 ms tasks.

2,000 tasks, each a Python function that sleeps 10 ms (FuncCallback through
the API, bench/consumer.py), MINION_CONCURRENCY=1 per minion. The tasks wait
rather than compute, so the fleet is limited by the minions' own work until
it uses the machine's cores: the table gives the cores the minions kept busy.
Targets: 2 minions at least 1.8x the throughput of one, 4 minions at least 3x.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from common import env, table, verdict
from consumer import REDIS_URL, Run, launch
from throughput import drop_keys, fill_stream

FLEETS = (1, 2, 4)
TARGETS = {2: 1.8, 4: 3.0}


def drain(work: Path, stream: str, minions: int, tasks: int, pause: float) -> Run:
    fill_stream(stream, tasks)
    try:
        environ = env(MINION_ENGINE="redis", REDIS_URL=REDIS_URL, REDIS_STREAM=stream, BENCH_SLEEP=str(pause))
        run = launch([(["minion", "-", "0"], environ)] * minions, work)
    finally:
        drop_keys(f"{stream}*")
    if run.count != tasks:
        raise SystemExit(f"{minions} minions did {run.count} tasks of {tasks}")
    return run


def run(tasks: int = 2_000, pause: float = 0.01, repeat: int = 1) -> str:
    work = Path(tempfile.mkdtemp(prefix="bench-fleet-"))  # the minions' working directory
    best: dict[int, Run] = {}
    try:
        for round_ in range(repeat):
            for minions in FLEETS:
                measured = drain(work, f"bench-fleet-{os.getpid()}-{round_}-{minions}", minions, tasks, pause)
                if minions not in best or measured.seconds < best[minions].seconds:
                    best[minions] = measured
    finally:
        shutil.rmtree(work, ignore_errors=True)
    one = tasks / best[1].seconds
    ideal = 1 / pause
    rows = []
    for minions in FLEETS:
        measured = best[minions]
        rate = tasks / measured.seconds
        cores = f"{measured.cpu / measured.seconds:.2f} cores busy"
        if minions == 1:
            rows.append(("1 minion", f"{rate:.0f} tasks/s", f"reference ({rate / ideal:.0%} of 1/10 ms); {cores}", ""))
            continue
        speedup = rate / one
        target = f">= {TARGETS[minions]:g}x: {verdict(speedup >= TARGETS[minions])}"
        rows.append((f"{minions} minions", f"{rate:.0f} tasks/s", f"{speedup:.2f}x one minion; {cores}", target))
    title = f"Fleet scaling, redis engine: {tasks:,} tasks of {pause * 1e3:g} ms (best of {repeat})"
    return table(title, rows)


if __name__ == "__main__":
    print(run())
