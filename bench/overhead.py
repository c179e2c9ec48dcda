"""Per-task overhead: 5,000 runs of `true`, 2 at a time.

xargs -P2 -n1 true, GNU parallel -j2 true, and minionize with the file and
the execo engines (MINION_CONCURRENCY=2; execo with its leases, as
minion-push leaves a sweep), measured in the same run, in turns (a busy
moment of a shared machine hits each alike).
Targets: the file engine within 1.3x of xargs' wall time, and at least 4x
faster than GNU parallel; the execo engine within 1.5x of xargs. With
BENCH_BEFORE=<git revision>, that revision's execo engine runs in the same
turns.
"""

from __future__ import annotations

import os
import statistics
import tempfile
from pathlib import Path

from common import MINIONIZE, PYTHON, best_of, checkout, have, table, timed, verdict


def run(tasks: int = 5000, repeat: int = 3, quick: bool = False) -> str:
    if quick:
        tasks, repeat = 1000, 2
    work = Path(tempfile.mkdtemp(prefix="bench-overhead-"))
    params = work / "params.txt"
    params.write_text("".join(f"{i}\n" for i in range(tasks)))
    parallel = None
    if _gnu_parallel():
        parallel = best_of(repeat, lambda: timed(["parallel", "--will-cite", "-j2", "true"], stdin=params))

    def execo(**version: str) -> float:
        sweep = work / "sweep"
        timed([PYTHON, "-m", "minionize.push", "--file", str(params)], cwd=work,
              EXECO_PERSISTENCE_DIR=str(sweep))
        try:
            return timed([*MINIONIZE, "true"], cwd=work, EXECO_PERSISTENCE_DIR=str(sweep), MINION_CONCURRENCY="2",
                         **version)
        finally:
            import shutil

            shutil.rmtree(sweep)

    contenders = {
        "xargs": lambda: timed(["xargs", "-P2", "-n1", "true"], stdin=params),
        "file": lambda: timed([*MINIONIZE, "true"], MINION_ENGINE="file", FILE_PATH=str(params),
                              MINION_CONCURRENCY="2"),
        "execo": execo,
    }
    before = os.environ.get("BENCH_BEFORE")
    if before:
        old = checkout(before, work)
        contenders["before"] = lambda: execo(**old)
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(repeat):  # in turns
        for name, measure in contenders.items():
            times[name].append(measure())
    best = {name: min(values) for name, values in times.items()}
    median = {name: statistics.median(values) for name, values in times.items()}
    xargs, file_engine, execo_engine = best["xargs"], best["file"], best["execo"]
    per = lambda seconds: f"{seconds:.2f} s ({seconds / tasks * 1e3:.2f} ms/task)"  # noqa: E731
    rows = [
        ("xargs -P2 -n1 true", per(xargs), "reference", ""),
        ("GNU parallel -j2 true", per(parallel) if parallel else "not installed", "", ""),
        ("minionize, file engine", per(file_engine), f"{file_engine / xargs:.2f}x xargs",
         f"<= 1.3x xargs: {verdict(file_engine <= 1.3 * xargs)}"),
        ("minionize, file engine vs parallel", "", f"{parallel / file_engine:.1f}x faster" if parallel else "-",
         f">= 4x faster: {verdict(parallel >= 4 * file_engine)}" if parallel else "not measured"),
    ]
    if before:
        rows.append((f"minionize, execo engine, before ({before})", per(best["before"]),
                     f"{best['before'] / xargs:.2f}x xargs (median {median['before'] / median['xargs']:.2f}x)", ""))
    rows.append(("minionize, execo engine", per(execo_engine),
                 f"{execo_engine / xargs:.2f}x xargs (median {median['execo'] / median['xargs']:.2f}x)",
                 f"<= 1.5x xargs: {verdict(execo_engine <= 1.5 * xargs)}"))
    return table(f"Per-task overhead: {tasks} runs of true, 2 at a time (best of {repeat})", rows)


def _gnu_parallel() -> bool:
    """GNU parallel, not moreutils' program of the same name (which takes other options)."""
    import subprocess

    if not have("parallel"):
        return False
    version = subprocess.run(["parallel", "--version"], capture_output=True, text=True, check=False)
    return "GNU parallel" in version.stdout


if __name__ == "__main__":
    print(run())
