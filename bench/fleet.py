"""Fleet scaling: 1, 2 and 4 minions (separate processes) draining one Redis stream of 10 ms tasks;
1 to 128 minions on one execo sweep directory, and on one Redis stream and one RabbitMQ queue, for comparison.

2,000 tasks, each a Python function that sleeps 10 ms (FuncCallback through
the API, bench/consumer.py), MINION_CONCURRENCY=1 per minion. The tasks wait
rather than compute, so the fleet is limited by the minions' own work until
it uses the machine's cores: the table gives the cores the minions kept busy.
Targets: 2 minions at least 1.8x the throughput of one, 4 minions at least 3x.

The large fleets (issue 14): 1, 4, 16, 64 and 128 minions (--quick: to 16)
on one execo sweep, 40 tasks of 10 ms per minion (500 at least), with the
time the minions waited for the sweep's lock per parameter; then the same
fleets on one Redis stream and on one RabbitMQ queue (a quorum queue, the
amqp engine's default); the median of three rounds (--quick: one).
Targets: the aggregate throughput never falls as minions are added (no lock
convoy), and at 128 minions it is at least 80 % of the best.
"""

from __future__ import annotations

import os
import shutil
import statistics
import tempfile
from pathlib import Path

import plots
from common import env, table, verdict
from consumer import AMQP_URL, REDIS_URL, Run, launch
from throughput import delete_queues, drop_keys, fill_queue, fill_stream

FLEETS = (1, 2, 4)
TARGETS = {2: 1.8, 4: 3.0}
LARGE = (1, 4, 16, 64, 128)
_ONE = {"execo": "sweep", "redis": "stream", "amqp": "queue"}


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


def drain_sweep(work: Path, minions: int, tasks: int, pause: float) -> Run:
    from minionize.engines.execo import ExecoEngine

    sweep = work / f"sweep-{minions}"
    ExecoEngine(str(sweep)).push(list(range(tasks)))
    try:
        environ = env(MINION_ENGINE="execo", EXECO_PERSISTENCE_DIR=str(sweep), BENCH_SLEEP=str(pause))
        run = launch([(["minion", "-", "0"], environ)] * minions, work, timeout=600)
    finally:
        shutil.rmtree(sweep, ignore_errors=True)
    if run.count != tasks:
        raise SystemExit(f"{minions} minions did {run.count} tasks of {tasks} on the execo sweep")
    return run


def drain_queue(work: Path, queue: str, minions: int, tasks: int, pause: float) -> Run:
    fill_queue(queue, tasks, "quorum")
    try:
        environ = env(MINION_ENGINE="amqp", AMQP_URL=AMQP_URL, AMQP_QUEUE=queue, BENCH_SLEEP=str(pause))
        run = launch([(["minion", "-", "0"], environ)] * minions, work, timeout=600)
    finally:
        delete_queues(queue, f"{queue}.dead", f"{queue}.in-flight")
    if run.count != tasks:
        raise SystemExit(f"{minions} minions did {run.count} tasks of {tasks} on the RabbitMQ queue")
    return run


def large(pause: float = 0.01, quick: bool = False, rounds: int = 3) -> str:
    """The large fleets on one execo sweep, one Redis stream, one RabbitMQ queue: the median of `rounds` runs each,
    every size in each round (a fleet's throughput varies by a sixth from run to run on two cores)."""
    fleets = LARGE[:3] if quick else LARGE
    rounds = 1 if quick else rounds
    work = Path(tempfile.mkdtemp(prefix="bench-fleet-large-"))
    runs: dict[tuple[str, int], list[float]] = {}
    lock_waits: dict[int, list[float]] = {}
    try:
        for round_ in range(rounds):
            for minions in fleets:
                tasks = max(500, 40 * minions)
                measured = drain_sweep(work, minions, tasks, pause)
                runs.setdefault(("execo", minions), []).append(tasks / measured.seconds)
                lock_waits.setdefault(minions, []).append(measured.lock_wait / tasks)
                name = f"bench-fleet-{os.getpid()}-large-{round_}-{minions}"
                measured = drain(work, name, minions, tasks, pause)
                runs.setdefault(("redis", minions), []).append(tasks / measured.seconds)
                measured = drain_queue(work, name, minions, tasks, pause)
                runs.setdefault(("amqp", minions), []).append(tasks / measured.seconds)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    rates = {key: statistics.median(values) for key, values in runs.items()}
    waits = {minions: statistics.median(values) for minions, values in lock_waits.items()}
    rows = []
    for engine in ("execo", "redis", "amqp"):
        best = max(rates[engine, m] for m in fleets)
        for before, minions in zip((None, *fleets), fleets, strict=False):
            rate = rates[engine, minions]
            plots.record("fleet", f"{engine}, one {_ONE[engine]}", minions, rate)
            wait = f"; lock wait {waits[minions] * 1e3:.2f} ms/parameter" if engine == "execo" else ""
            target = ""
            if before is not None:
                target = f"not below {before}: {verdict(rate >= 0.95 * rates[engine, before])}"
            if minions == fleets[-1] and engine == "execo":
                target += f"; >= 80% of the best: {verdict(rate >= 0.8 * best)}"
            spread = f" ({min(runs[engine, minions]):.0f} to {max(runs[engine, minions]):.0f})" if rounds > 1 else ""
            rows.append((f"{engine}, {minions} minion{'s' * (minions > 1)}", f"{rate:.0f} tasks/s{spread}",
                         f"{rate / best:.0%} of the best{wait}", target))
    title = (f"Large fleets on one execo sweep, one Redis stream, one RabbitMQ quorum queue: tasks of "
             f"{pause * 1e3:g} ms, "
             f"40 per minion (median of {rounds} {'runs' if rounds > 1 else 'run'} each)")
    return table(title, rows)


def run(tasks: int = 2_000, pause: float = 0.01, repeat: int = 1, quick: bool = False) -> str:
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
    return table(title, rows) + "\n" + large(pause, quick)


if __name__ == "__main__":
    print(run())
