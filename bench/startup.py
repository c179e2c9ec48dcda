"""Start-up time and idle memory.

Start-up: from launching `minionize` to its first run starting, as a ratio
to `python3 -c pass` (target: under 3x with the execo engine). Memory: the
peak resident set of a minion that waits on an empty queue, per engine
(target: under 40 MB for execo, file and redis).
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from pathlib import Path

from common import MINIONIZE, PYTHON, best_of, env, table, timed, verdict


def first_run_latency(work: Path) -> float:
    """Seconds from exec to the wrapped program's start (it writes its own clock)."""
    stamp = work / "stamp"
    stamp.unlink(missing_ok=True)
    started = time.time()
    subprocess.run(
        [*MINIONIZE, "sh", "-c", f'date +%s.%N > {stamp}; exit 0'], cwd=work,
        env=env(EXECO_PERSISTENCE_DIR=str(work / "sweep")), check=True, stdout=subprocess.DEVNULL,
    )
    # the sweep holds one parameter: reset it for the next measurement
    subprocess.run(["rm", "-rf", str(work / "sweep")], check=True)
    timed([PYTHON, "-m", "minionize.push", "1"], cwd=work, EXECO_PERSISTENCE_DIR=str(work / "sweep"))
    return float(stamp.read_text()) - started


def idle_rss_mb(engine_env: dict[str, str], work: Path) -> float:
    """Peak RSS (VmHWM) of a minion whose only run is a `sleep 30`: the minion itself idles."""
    timed([PYTHON, "-m", "minionize.push", "30"], cwd=work, **engine_env)
    process = subprocess.Popen(
        [*MINIONIZE, "sleep"], cwd=work, env=env(**engine_env),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(2.5)
        status = Path(f"/proc/{process.pid}/status").read_text()
        if process.poll() is not None:
            raise SystemExit(f"the minion exited early ({process.returncode}) with {engine_env}")
        kilobytes = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:"))
        return kilobytes / 1024
    finally:
        process.terminate()
        process.wait(30)


def run(repeat: int = 5) -> str:
    work = Path(tempfile.mkdtemp(prefix="bench-startup-"))
    timed([PYTHON, "-m", "minionize.push", "1"], cwd=work, EXECO_PERSISTENCE_DIR=str(work / "sweep"))
    bare = best_of(repeat, lambda: timed([PYTHON, "-c", "pass"]))
    first = best_of(repeat, lambda: first_run_latency(work))
    rows = [
        ("python3 -c pass", f"{bare * 1e3:.0f} ms", "reference", ""),
        ("minionize start to first run (execo)", f"{first * 1e3:.0f} ms", f"{first / bare:.2f}x",
         f"< 3x: {verdict(first < 3 * bare)}"),
    ]
    engines = {
        "execo": {"EXECO_PERSISTENCE_DIR": str(work / "idle")},
        "file": {"MINION_ENGINE": "file", "FILE_PATH": str(work / "idle.txt")},
        "redis": {"MINION_ENGINE": "redis", "REDIS_STREAM": f"bench-idle-{os.getpid()}"},
    }
    for name, engine_env in engines.items():
        try:
            mb = idle_rss_mb(engine_env, work)
        finally:
            if name == "redis":  # leave the server as it was
                import redis

                redis.Redis.from_url("redis://127.0.0.1:6379/0").delete(engine_env["REDIS_STREAM"])
        rows.append((f"idle minion, {name} engine", f"{mb:.1f} MB peak RSS", "", f"< 40 MB: {verdict(mb < 40)}"))
    return table(f"Start-up and memory (best of {repeat})", rows)


if __name__ == "__main__":
    print(run())
