"""The memory of a minion on an execo sweep of N parameters (default 1,000,000; --quick 10,000).

A sweep of N short strings (`minion-push --file`, as a user pushes one), then
a minion that opens it, takes one parameter and acks it: its time and peak
memory (VmHWM, its own process); the same on the sweep with all but 1,000
done (the state a long sweep grows into: every done parameter is read back
from `done`), written as plain execo writes it and as minionize's acks do
(with their places in `.minionize/donemap`). With BENCH_BEFORE=<git revision>, that revision's minionize too
(its own minion-push and minion, from `git archive`), in the same run, in
turns. Target: under 100 MB (issue 14, target 2).
"""

from __future__ import annotations

import os
import pickle
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from common import ONE_MINION, PYTHON, checkout, env, table, verdict


def _sweep(work: Path, name: str, params: Path, done: int, extra: dict[str, str], placed: bool = False) -> Path:
    """A sweep of `params` pushed by the minionize of `extra`, its first `done` parameters done; `placed`:
    as this minionize's acks write them, with their places in `.minionize/donemap`."""
    sweep = work / name
    subprocess.run([PYTHON, "-m", "minionize.push", "--file", str(params)], cwd=work, check=True,
                   env=env(MINION_ENGINE="execo", EXECO_PERSISTENCE_DIR=str(sweep), **extra),
                   stdout=subprocess.DEVNULL)
    if placed:
        _placed(sweep, [str(index) for index in range(done)])
        return sweep
    with open(sweep / "done", "ab") as out:  # execo's format: one pickle appended per parameter done
        for index in range(done):
            pickle.dump(str(index), out)
    return sweep


def _placed(sweep: Path, params: list[str]) -> None:
    """`params` done as the acks of this minionize write them: their records, then their places."""
    from minionize.engines import sweepfiles
    from minionize.engines.sweepstate import SweepState

    state = SweepState(str(sweep), "bench", lambda _: set())
    state.load()
    done = sweepfiles.open_appendable(sweep / "done")
    try:
        for first in range(0, len(params), 10_000):  # acks come a few at a time
            records, positions = state.ack_records(params[first : first + 10_000])
            state.write_places(sweepfiles.append_bytes(done, records, sync=False), positions)
    finally:
        os.close(done)


def _minion(work: Path, sweep: Path, extra: dict[str, str]) -> tuple[float, float]:
    """Seconds and peak MB of a minion that opens `sweep`, takes one parameter and acks it."""
    result = subprocess.run([PYTHON, "-c", ONE_MINION, str(sweep)], cwd=work, env=env(**extra),
                            capture_output=True, text=True, check=True)
    seconds, peak = map(float, result.stdout.split())
    return seconds, peak


def run(size: int = 1_000_000, quick: bool = False) -> str:
    if quick:
        size = 10_000
    work = Path(tempfile.mkdtemp(prefix="bench-sweepmem-"))
    rows = []
    try:
        params = work / "params.txt"
        params.write_text("".join(f"{i}\n" for i in range(size)))
        versions = [("now", {})]
        if os.environ.get("BENCH_BEFORE"):
            versions.insert(0, (f"before ({os.environ['BENCH_BEFORE']})", checkout(os.environ["BENCH_BEFORE"], work)))
        for done, placed in ((0, False), (size - 1_000, False), (size - 1_000, True)):
            state = "fresh" if not done else f"{done:,} done" + (" by minionize's acks, with their places" * placed)
            for label, extra in versions:
                name = f"sweep-{len(rows)}"
                sweep = _sweep(work, name, params, done, extra, placed)
                seconds, peak = _minion(work, sweep, extra)
                rows.append((f"a minion on the execo sweep of {size:,} ({state}): open, take and ack one, {label}",
                             f"{seconds:.2f} s", f"peak {peak:.0f} MB", f"< 100 MB: {verdict(peak < 100)}"))
                shutil.rmtree(sweep)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    stamp = time.strftime("%H:%M")
    return table(f"The memory of a minion on a sweep of {size:,} parameters (one run, at {stamp})", rows)


if __name__ == "__main__":
    print(run())
