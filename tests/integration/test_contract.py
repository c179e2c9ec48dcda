"""The engine contract: the same delivery promises, checked for every engine on its real server.

Each test starts real `minionize` processes wrapping tests/programs/*.py,
fills the queue with `minion-push`, and judges by what the programs
recorded. pulsar-lite 0.2.0 cannot give one subscription to two client
processes (both number their consumer 0): for Pulsar, "two minions" are two
slots of one minion (MINION_CONCURRENCY=2), and the kill case uses a
restarted minion.
"""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from minionize import exitcodes
from tests.conftest import ROOT, minion_env, minionize_cmd

from .backends import BACKENDS, Backend, backend_fixture, with_capability

pytestmark = pytest.mark.integration
PROGRAMS = ROOT / "tests" / "programs"
RECORD = (sys.executable, str(PROGRAMS / "record.py"))


backend = backend_fixture(BACKENDS, scope="session", doc="Every engine, on its real server.")


def push(env: dict[str, str], *args: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "minionize.push", *args],
        env=minion_env(**env), capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("queued "), result.stdout


def spawn(backend: Backend, env: dict[str, str], cwd: Path, *program: str, **extra: str) -> subprocess.Popen[str]:
    settings = {**env, **extra}
    if not backend.drains:
        settings.setdefault("MINION_IDLE_TIMEOUT", "4")
    return subprocess.Popen(
        minionize_cmd(*program), cwd=cwd, env=minion_env(**settings),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def two_minions(backend: Backend, env: dict[str, str], cwd: Path, *program: str, **extra: str) -> list:
    """Two consumers of one queue: two processes, or two slots where processes cannot share."""
    if backend.shared_by_processes:
        return [spawn(backend, env, cwd, *program, **extra) for _ in range(2)]
    return [spawn(backend, env, cwd, *program, MINION_CONCURRENCY="2", **extra)]


def finish(minions: list, timeout: float = 120, code: int = exitcodes.OK) -> str:
    errors = []
    for minion in minions:
        _, err = minion.communicate(timeout=timeout)
        assert minion.returncode == code, err
        errors.append(err)
    return "\n".join(errors)


def runs(directory: Path, suffix: str) -> collections.Counter[str]:
    """How many runs of each parameter reached `suffix` (start or end)."""
    return collections.Counter(p.name.split(".")[0] for p in directory.glob(f"*.{suffix}"))


def wait_for(predicate, timeout: float = 30) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


def test_two_minions_ack_each_pushed_parameter_once(backend: Backend, tmp_path: Path) -> None:
    env = backend.env(tmp_path)
    params = [f"p{i}" for i in range(20)]
    push(env, *params)
    minions = two_minions(backend, env, tmp_path, *RECORD, str(tmp_path), "0.05", "0")
    finish(minions)
    assert runs(tmp_path, "end") == {p: 1 for p in params}


def test_nack_redelivers_with_a_higher_attempt(backend: Backend, tmp_path: Path) -> None:
    env = backend.env(tmp_path)
    push(env, "a", "b")
    minions = two_minions(backend, env, tmp_path, sys.executable, str(PROGRAMS / "fail_first.py"), str(tmp_path))
    finish(minions)
    attempts = sorted(tuple(p.name.split(".")[:2]) for p in tmp_path.glob("[ab].*.*"))
    if backend.exact_redelivery:
        assert attempts == [("a", "1"), ("a", "2"), ("b", "1"), ("b", "2")]
    else:  # an attempt may come a count higher (Backend.exact_redelivery)
        for param in "ab":
            numbers = sorted(int(n) for p, n in attempts if p == param)
            assert numbers[0] == 1 and len(numbers) >= 2, attempts  # failed once, then ran again
            assert len(set(numbers)) == len(numbers), attempts  # each delivery counted anew


def test_dead_letter_after_max_attempts(backend: Backend, tmp_path: Path) -> None:
    env = backend.env(tmp_path)
    push(env, "doomed", "fine")
    program = ("test", "doomed", "!=")  # exits 1 for "doomed" only
    finish([spawn(backend, env, tmp_path, *program, MINION_MAX_ATTEMPTS="2")], code=exitcodes.SET_ASIDE)
    letters = backend.dead_letters(env)
    assert [param for param, _ in letters] == ["doomed"]
    if backend.dead_letter_reason:
        assert "exit code 1" in letters[0][1]


@pytest.mark.parametrize("backend", with_capability("has_deadline"), indirect=True)
def test_a_run_longer_than_the_deadline_is_done_once(backend: Backend, tmp_path: Path) -> None:
    seconds, deadline_env = backend.long_run()
    env = {**backend.env(tmp_path), **deadline_env}
    if not backend.drains:
        # The second minion must still be there when the deadline passes, or a
        # lost lease would go unseen.
        env.setdefault("MINION_IDLE_TIMEOUT", str(seconds + 5))
    push(env, "long")
    minions = two_minions(backend, env, tmp_path, *RECORD, str(tmp_path), str(seconds), "0")
    finish(minions, timeout=seconds * 4 + 60)
    assert runs(tmp_path, "start") == {"long": 1}
    assert runs(tmp_path, "end") == {"long": 1}


@pytest.mark.parametrize("backend", with_capability("survives_kill"), indirect=True)
def test_a_killed_minions_parameter_is_done_by_another(backend: Backend, tmp_path: Path) -> None:
    env = {**backend.env(tmp_path), **backend.lease_env()}
    push(env, "victim")
    first = spawn(backend, env, tmp_path, *RECORD, str(tmp_path), "60", "0")
    wait_for(lambda: runs(tmp_path, "start")["victim"] == 1)
    # The node dies: the minion and its run, with no chance to say anything.
    run_pid = int(next(tmp_path.glob("victim.*.start")).name.split(".")[1])
    first.kill()
    os.killpg(run_pid, signal.SIGKILL)
    first.communicate(timeout=30)
    second = spawn(backend, env, tmp_path, *RECORD, str(tmp_path), "0.1", "0")
    finish([second], timeout=180)
    assert runs(tmp_path, "end") == {"victim": 1}


@pytest.mark.parametrize("backend", with_capability("restartable"), indirect=True)
def test_a_broker_restart_loses_nothing(backend: Backend, tmp_path: Path) -> None:
    env = backend.env(tmp_path)
    params = [f"r{i}" for i in range(12)]
    push(env, *params)
    minions = two_minions(backend, env, tmp_path, *RECORD, str(tmp_path), "0.5", "0")
    wait_for(lambda: sum(runs(tmp_path, "end").values()) >= 2)
    backend.restart()
    finish(minions, timeout=240)
    done = runs(tmp_path, "end")
    assert set(done) == set(params)  # at least once each; a redelivery after the restart may repeat one


def test_minion_push_sweep_round_trip(backend: Backend, tmp_path: Path) -> None:
    env = backend.env(tmp_path)
    push(env, "--sweep", "lr=0.1,0.01", "--sweep", "seed=1,2")
    program = (sys.executable, str(PROGRAMS / "argv.py"))
    minion = spawn(backend, env, tmp_path, *program, MINION_ARGS="--lr {lr} --seed {seed}")
    out, err = minion.communicate(timeout=120)
    assert minion.returncode == 0, err
    import json

    argvs = sorted(tuple(json.loads(line)["argv"]) for line in out.splitlines())
    assert argvs == sorted(
        ("--lr", lr, "--seed", seed) for lr in ("0.1", "0.01") for seed in ("1", "2")
    )
