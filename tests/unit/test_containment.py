"""A run never outlives its limits: whatever it does with its stdio, its session or SIGTERM.

Each test runs a real minion (the file engine, no network) over runs of
tests/programs/escape.py, which redirect their output, start `setsid`
children and double-forking daemons, or ignore SIGTERM, and write the pid of
every process they make. After the timeout, a stop or the minion's death,
none of those processes may be left.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from minionize import exitcodes
from minionize.callbacks.child import KILL_AFTER, kill_run, spawn
from tests.conftest import minion_env, minionize_cmd, require, run_minion
from tests.faults.harness import alive, wait_for

ESCAPE = Path(__file__).resolve().parent.parent / "programs" / "escape.py"
EVERYTHING = "redirect,setsid,daemon"


def program(piddir: Path) -> tuple[str, ...]:
    piddir.mkdir(exist_ok=True)
    return (sys.executable, str(ESCAPE), str(piddir))


def pids(piddir: Path, count: int, timeout: float = 20) -> list[int]:
    """The pids the runs wrote, once there are `count` of them."""
    wait_for(lambda: len(list(piddir.iterdir())) >= count, timeout, f"{count} processes started")
    return [int(path.name) for path in piddir.iterdir()]


def none_left(found: list[int], within: float) -> None:
    wait_for(lambda: not any(alive(pid) for pid in found), within, "every process of the runs ended")


def start(tmp_path: Path, params: list[str], **env: str) -> subprocess.Popen[str]:
    (tmp_path / "in.txt").write_text("".join(f"{p}\n" for p in params))
    return subprocess.Popen(
        minionize_cmd(*program(tmp_path / "pids")), cwd=tmp_path, text=True, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, env=minion_env(MINION_ENGINE="file", FILE_PATH="in.txt", **env),
    )


@pytest.mark.parametrize("how", ["redirect", "setsid", "daemon", EVERYTHING])
def test_the_timeout_ends_every_process_of_the_run(tmp_path: Path, how: str) -> None:
    (tmp_path / "in.txt").write_text(f"{how} 60\n")
    started = time.monotonic()
    result = run_minion(*program(tmp_path / "pids"), cwd=tmp_path, MINION_ENGINE="file", FILE_PATH="in.txt",
                        MINION_TIMEOUT="1", MINION_MAX_ATTEMPTS="1")
    assert result.returncode == exitcodes.SET_ASIDE, result.stderr  # MINION_MAX_ATTEMPTS=1: set aside
    assert "timed out after 1s" in result.stderr
    assert time.monotonic() - started < 1 + KILL_AFTER + 5
    found = pids(tmp_path / "pids", 1 + how.count("setsid") + how.count("daemon"), timeout=1)
    none_left(found, 1.0)


def test_a_run_deaf_to_sigterm_is_killed_at_its_timeout(tmp_path: Path) -> None:
    (tmp_path / "in.txt").write_text(f"{EVERYTHING} 60 deaf\n")
    started = time.monotonic()
    result = run_minion(*program(tmp_path / "pids"), cwd=tmp_path, MINION_ENGINE="file", FILE_PATH="in.txt",
                        MINION_TIMEOUT="1", MINION_MAX_ATTEMPTS="1")
    took = time.monotonic() - started
    assert result.returncode == exitcodes.SET_ASIDE and "timed out after 1s" in result.stderr, result.stderr
    assert 1 + KILL_AFTER - 0.5 <= took < 1 + KILL_AFTER + 5, f"took {took:.1f}s"
    none_left(pids(tmp_path / "pids", 3, timeout=1), 1.0)


def test_what_a_finished_run_leaves_behind_is_ended_while_the_minion_goes_on(tmp_path: Path) -> None:
    minion = start(tmp_path, ["setsid,daemon 0", "none 8"])
    try:
        found = pids(tmp_path / "pids", 4)  # the first run's 3 processes, and the second run
        leftovers = [pid for pid in found if pid != max(found)]
        none_left(leftovers, 3.0)  # the minion is still in its second run
        assert minion.poll() is None
    finally:
        minion.kill()
        minion.communicate(timeout=30)


#: A run that leaves behind a process slow to die on SIGTERM (`leave`), or that works a second.
_SLOW_LEFTOVER = """
import os, signal, subprocess, sys, time
if sys.argv[1] == "leave":
    slow = "import signal, sys, time; signal.signal(15, lambda *a: (time.sleep(1.5), sys.exit(0))); time.sleep(600)"
    subprocess.Popen([sys.executable, "-c", slow], start_new_session=True, stdin=subprocess.DEVNULL,
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.3)
else:
    time.sleep(1)
    print(sys.argv[1], "ok")
"""


def test_the_runs_that_start_while_leftovers_are_ended_are_spared(tmp_path: Path) -> None:
    # The guard takes up to KILL_AFTER to end what a finished run left: the runs started
    # meanwhile are not leftovers (they were set aside, killed by its SIGTERM).
    (tmp_path / "slow.py").write_text(_SLOW_LEFTOVER)
    (tmp_path / "in.txt").write_text("leave\nA\nB\nC\n")
    result = run_minion(sys.executable, str(tmp_path / "slow.py"), cwd=tmp_path, MINION_ENGINE="file",
                        FILE_PATH="in.txt", MINION_MAX_ATTEMPTS="1")
    assert result.returncode == 0, result.stderr
    assert sorted(result.stdout.split()) == ["A", "B", "C", "ok", "ok", "ok"]
    assert "killed 1 process(es) left behind by finished runs" in result.stderr


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_a_warm_stop_ends_every_process_of_the_runs(tmp_path: Path, signum: int) -> None:
    minion = start(tmp_path, [f"{EVERYTHING} 60", f"{EVERYTHING} 60 deaf"], MINION_CONCURRENCY="2",
                   MINION_GRACE_PERIOD="0.5")
    found = pids(tmp_path / "pids", 6)
    minion.send_signal(signum)
    _, err = minion.communicate(timeout=0.5 + KILL_AFTER + 10)
    assert minion.returncode == 0, err
    assert "2 released" in err
    none_left(found, 1.0)


def test_a_cold_stop_ends_every_process_of_the_runs(tmp_path: Path) -> None:
    minion = start(tmp_path, [f"{EVERYTHING} 60 deaf"], MINION_GRACE_PERIOD="60")
    found = pids(tmp_path / "pids", 3)
    minion.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    minion.send_signal(signal.SIGTERM)
    _, err = minion.communicate(timeout=KILL_AFTER + 10)
    assert minion.returncode == 130, err
    none_left(found, 1.0)


def test_the_runs_die_with_a_minion_that_is_sigkilled(tmp_path: Path) -> None:
    minion = start(tmp_path, [f"{EVERYTHING} 60", f"{EVERYTHING} 60 deaf"], MINION_CONCURRENCY="2")
    found = pids(tmp_path / "pids", 6)
    os.kill(minion.pid, signal.SIGKILL)
    minion.wait(timeout=10)
    polite = [pid for pid in found if not _ignores_sigterm(pid)]
    assert len(polite) == 3
    none_left(polite, 2.0)
    none_left(found, KILL_AFTER + 2.0)  # those deaf to SIGTERM get a SIGKILL KILL_AFTER later
    minion.communicate(timeout=10)


def _ignores_sigterm(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    ignored = int(next(line for line in status.splitlines() if line.startswith("SigIgn:")).split()[1], 16)
    return bool(ignored & (1 << (signal.SIGTERM - 1)))


def test_as_pid_1_minionize_reaps_what_it_is_handed(tmp_path: Path) -> None:
    unshare = shutil.which("unshare") or "/usr/bin/unshare"
    require(os.geteuid() == 0 and os.path.exists(unshare), "a PID namespace needs root and unshare (util-linux)")
    script = tmp_path / "orphans.sh"
    # Each run leaves a child that outlives it: orphaned, it goes to PID 1, which must reap it.
    # The last run counts the zombies of the namespace (its /proc is the namespace's own).
    script.write_text(
        '#!/bin/sh\n'
        'if [ "$1" = last ]; then sleep 0.5\n'
        '  grep -h "^State:.*Z" /proc/[0-9]*/status 2>/dev/null | wc -l > "$ZOMBIES"; exit 0; fi\n'
        '(sleep 0.05) & exit 0\n'
    )
    script.chmod(0o755)
    (tmp_path / "in.txt").write_text("".join(f"{i}\n" for i in range(20)) + "last\n")
    result = subprocess.run(
        [unshare, "--fork", "--pid", "--mount-proc", *minionize_cmd(str(script))], cwd=tmp_path,
        env=minion_env(MINION_ENGINE="file", FILE_PATH="in.txt", ZOMBIES=str(tmp_path / "zombies")),
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "21 acked" in result.stderr
    assert (tmp_path / "zombies").read_text().strip() == "0"


def test_ending_one_run_spares_the_runs_whose_mark_it_prefixes() -> None:
    """Run 1's MINION_RUN_ID is a prefix of run 10's: a timeout of run 1 must not touch run 10."""
    env = {os.fsencode(k): os.fsencode(v) for k, v in os.environ.items()}
    sleep = shutil.which("sleep") or "/bin/sleep"
    one = spawn(["sleep", "60"], sleep, {**env, b"MINION_RUN_ID": b"tok-1"})
    ten = spawn(["sleep", "60"], sleep, {**env, b"MINION_RUN_ID": b"tok-10"})
    try:
        kill_run(one, "tok-1", hard=False)
        assert one.wait() == -signal.SIGTERM
        assert ten.poll() is None, "run 10 was killed with run 1"
    finally:
        kill_run(ten, "tok-10", hard=True)
        for child in (one, ten):
            os.close(child.stdout)
            os.close(child.stderr)
