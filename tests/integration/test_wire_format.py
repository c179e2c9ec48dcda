"""One wire format for `minion-push`: what it queues reaches a minion as it was pushed, on every engine.

The backends' own variables choose the json decoder; these tests drop them
to check the defaults a new user has, then set them on one side only to see
the two decoders agree, or say why they cannot.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import ROOT, minion_env, minionize_cmd

from .backends import Backend, backend_fixture, with_capability

pytestmark = pytest.mark.integration
ARGV = (sys.executable, str(ROOT / "tests" / "programs" / "argv.py"))
SWEEP = ("--sweep", "lr=0.1,0.01", "--sweep", "seed=1,2")
EXPECTED = sorted(["--lr", lr, "--seed", seed] for lr in ("0.1", "0.01") for seed in ("1", "2"))


#: Not execo, which keeps Python objects (pickled), not bodies: it has no wire format.
WIRED = with_capability("holds_bodies")


backend = backend_fixture(WIRED, doc="Every engine whose queue holds bodies, on its real server.")


def defaults(backend: Backend, workdir: Path) -> dict[str, str]:
    """The backend's variables without its decoder: a minion with default settings."""
    return {k: v for k, v in backend.env(workdir).items() if not k.endswith("_DECODER")}


def decoder_variable(env: dict[str, str]) -> str:
    return f"{env['MINION_ENGINE'].upper()}_DECODER"


def push(env: dict[str, str], *args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "minionize.push", *args],
        env=minion_env(**env), capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def run(env: dict[str, str], cwd: Path, done: Callable[[str, str], bool]) -> tuple[list[list[str]], str]:
    """Run a minion until `done(stdout, stderr)`, then stop it (a minion on a broker may wait for more)."""
    settings = {**env, "MINION_ARGS": "--lr {lr} --seed {seed}", "MINION_MAX_ATTEMPTS": "1"}
    out, err = cwd / "minion.out", cwd / "minion.err"
    with open(out, "w") as stdout, open(err, "w") as stderr:
        minion = subprocess.Popen(
            minionize_cmd(*ARGV), cwd=cwd, env=minion_env(**settings), stdout=stdout, stderr=stderr,
        )
    try:
        deadline = time.monotonic() + 120
        while not done(out.read_text(), err.read_text()) and minion.poll() is None:
            assert time.monotonic() < deadline, err.read_text()
            time.sleep(0.1)
    finally:
        minion.terminate()
        minion.wait(timeout=60)
    argvs = sorted(json.loads(line)["argv"] for line in out.read_text().splitlines())
    return argvs, err.read_text()


def four_runs(out: str, _err: str) -> bool:
    return out.count("\n") >= len(EXPECTED)


def test_a_pushed_sweep_runs_as_its_template_says_with_default_settings(backend: Backend, tmp_path: Path) -> None:
    env = defaults(backend, tmp_path)
    push(env, *SWEEP)
    argvs, err = run(env, tmp_path, four_runs)
    assert argvs == EXPECTED, err


def test_a_sweep_pushed_with_defaults_runs_on_json_minions(backend: Backend, tmp_path: Path) -> None:
    env = defaults(backend, tmp_path)
    push(env, *SWEEP)
    argvs, err = run({**env, decoder_variable(env): "json"}, tmp_path, four_runs)
    assert argvs == EXPECTED, err


def test_a_sweep_pushed_for_json_minions_runs_on_default_ones(backend: Backend, tmp_path: Path) -> None:
    env = defaults(backend, tmp_path)
    push({**env, decoder_variable(env): "json"}, *SWEEP)
    argvs, err = run(env, tmp_path, four_runs)
    assert argvs == EXPECTED, err


def test_text_on_a_json_minion_is_set_aside_with_the_mismatch(backend: Backend, tmp_path: Path) -> None:
    env = defaults(backend, tmp_path)
    push(env, "plain words", "{'lr': 0.1, 'seed': 1}")
    argvs, err = run({**env, decoder_variable(env): "json"}, tmp_path, both_mismatches)
    assert argvs == []
    assert both_mismatches("", err), err


def both_mismatches(_out: str, err: str) -> bool:
    return all(f"decoder is json but the body looks like {what}" in err for what in ("plain text", "Python's repr"))


def test_minion_push_into_memory_refuses(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "minionize.push", "1"], cwd=tmp_path,
        env=minion_env(MINION_ENGINE="memory"), capture_output=True, text=True, timeout=60,
    )
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr.startswith("minion-push: MINION_ENGINE='memory': ") and result.stderr.count("\n") == 1


def test_minion_push_into_execo_counts_the_new_parameters(tmp_path: Path) -> None:
    env = {"MINION_ENGINE": "execo", "EXECO_PERSISTENCE_DIR": str(tmp_path / "sweeps")}
    assert push(env, *SWEEP).startswith("queued 4 new parameters to execo sweep ")
    again = push(env, "--sweep", "lr=0.1,0.5", "--sweep", "seed=1", "7", "7")
    assert again.startswith("queued 2 new parameters to execo sweep ")
    assert again.rstrip().endswith("(6 parameters in the sweep); the other 2 were in it already")
