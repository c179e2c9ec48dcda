"""A million parameters: `minion-push` into each engine, a streamed sweep, and a minion on the result.

- `minion-push --file` of N parameters (default 1,000,000; --quick 10,000)
  into execo, redis, amqp and postgres: wall time and peak memory of the
  command. Target: under 60 s each. With BENCH_BEFORE=<git revision>, the
  amqp push of that revision's minionize too, in the same run, on at most
  BEFORE_LIMIT parameters (a publisher confirm per message made the whole
  million a quarter of an hour; the time shown for N is that rate times N).
- `minion-push --sweep a=1..K --sweep b=1..K` (K = sqrt(N)) into execo: the
  product is streamed, checked in a first pass and generated again into the
  sweep, never held in a list: peak memory next to the plain file push.
- A minion opening the execo sweep of N parameters, taking and acking one:
  its time and peak memory. Target: under 100 MB.
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from common import ONE_MINION, PEAK, PYTHON, checkout, env, table, verdict
from consumer import AMQP_URL, POSTGRES_URL, REDIS_URL

BEFORE_LIMIT = 100_000
# The peak of the process itself (VmHWM, reset by exec): ru_maxrss would count the parent's pages
# that the child shared until its exec.
PUSH = f"""
import sys
from minionize import push
code = push.main(sys.argv[1:])
print({PEAK}, file=sys.stderr)
sys.exit(code)
"""
def _push(work: Path, args: list[str], **extra: str) -> tuple[float, float]:
    """Seconds and peak MB of one minion-push, which must succeed."""
    started = time.perf_counter()
    result = subprocess.run([PYTHON, "-c", PUSH, *args], cwd=work, env=env(**extra), capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"minion-push {' '.join(args)} failed: {result.stderr[-2000:]}")
    return seconds, float(result.stderr.split()[-1])


def _drop(engine: str, name: str) -> None:
    if engine == "redis":
        from throughput import drop_keys

        drop_keys(f"{name}*")
    elif engine == "amqp":
        from throughput import delete_queues

        delete_queues(name, f"{name}.dead", f"{name}.in-flight")
    elif engine == "postgres":
        from throughput import _drop_table

        _drop_table(name)


def _settings(engine: str, name: str, work: Path) -> dict[str, str]:
    return {
        "execo": {"MINION_ENGINE": "execo", "EXECO_PERSISTENCE_DIR": str(work / name)},
        "redis": {"MINION_ENGINE": "redis", "REDIS_URL": REDIS_URL, "REDIS_STREAM": name},
        "amqp": {"MINION_ENGINE": "amqp", "AMQP_URL": AMQP_URL, "AMQP_QUEUE": name},
        "postgres": {"MINION_ENGINE": "postgres", "POSTGRES_URL": POSTGRES_URL, "POSTGRES_TABLE": name},
    }[engine]


def _rows_push(work: Path, size: int) -> list[tuple[str, str, str, str]]:
    rows = []
    before = os.environ.get("BENCH_BEFORE")
    runs = [(engine, f"minion-push --file, {size:,} parameters, {engine}", size, {})
            for engine in ("execo", "redis", "amqp", "postgres")]
    if before:
        runs.insert(2, ("amqp", f"the same, amqp, before ({before})", min(size, BEFORE_LIMIT),
                        checkout(before, work)))
    for engine, what, count, revision in runs:
        params = work / f"params-{count}.txt"
        if not params.exists():
            params.write_text("".join(f"{i}\n" for i in range(count)))
        name = f"bench_push_{os.getpid()}_{engine}"
        try:
            seconds, peak = _push(work, ["--file", str(params)], **_settings(engine, name, work), **revision)
        finally:
            _drop(engine, name)
        whole = seconds * size / count
        measured = f"{whole:.1f} s ({seconds / count * 1e6:.1f} us/parameter)"
        if count < size:
            measured = f"{seconds:.1f} s for {count:,}: {whole:.0f} s for {size:,} at that rate"
        rows.append((what, measured, f"peak {peak:.0f} MB", f"< 60 s: {verdict(whole < 60)}"))
    return rows


def _rows_sweep_and_minion(work: Path, size: int) -> list[tuple[str, str, str, str]]:
    side = math.isqrt(size)
    axes = [f"a={','.join(map(str, range(side)))}", f"b={','.join(map(str, range(side)))}"]
    sweep = work / "sweep-product"
    seconds, peak = _push(work, ["--sweep", axes[0], "--sweep", axes[1]], **_settings("execo", sweep.name, work))
    rows = [(f"minion-push --sweep, {side:,} x {side:,} (streamed), execo", f"{seconds:.1f} s",
             f"peak {peak:.0f} MB", f"< 60 s: {verdict(seconds < 60)}")]
    flat = work / "sweep-flat"
    params = work / f"params-{size}.txt"
    _push(work, ["--file", str(params)], **_settings("execo", flat.name, work))
    result = subprocess.run([PYTHON, "-c", ONE_MINION, str(flat)], env=env(), capture_output=True, text=True,
                            check=True)
    opened, peak = map(float, result.stdout.split())
    rows.append((f"a minion on the execo sweep of {size:,}: open, take and ack one", f"{opened:.2f} s",
                 f"peak {peak:.0f} MB", f"< 100 MB: {verdict(peak < 100)}"))
    return rows


def run(size: int = 1_000_000, quick: bool = False) -> str:
    if quick:
        size = 10_000
    work = Path(tempfile.mkdtemp(prefix="bench-push-"))
    try:
        rows = _rows_push(work, size) + _rows_sweep_and_minion(work, size)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return table(f"A million parameters: minion-push of {size:,} and a minion on the sweep (one run)", rows)


if __name__ == "__main__":
    print(run())
