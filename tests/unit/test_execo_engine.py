"""The execo engine against execo's own ParamSweeper, on a real directory."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from execo_engine.sweep import ParamSweeper, sweep

from minionize.config import EnvReader
from minionize.engines import execo
from minionize.engines.execo import ExecoEngine, param_key
from minionize.errors import ConfigError
from tests.conftest import minion_env, minionize_cmd
from tests.unit.sweeps import make_sweep


def engine(path: Path, lease: float = 60) -> ExecoEngine:
    e = ExecoEngine(str(path), lease)
    e.open()
    return e


def take_all(e: ExecoEngine) -> list:
    messages = []
    while (m := e.next(0.01)) is not None:
        messages.append(m)
    return messages


def test_done_is_visible_to_execo(tmp_path: Path) -> None:
    d = make_sweep(tmp_path / "s", range(5))
    e = engine(d)
    for m in take_all(e):
        e.ack(m)
    assert e.drained()
    reader = ParamSweeper(str(d))
    assert sorted(reader.get_done()) == [0, 1, 2, 3, 4]
    assert not reader.get_remaining() and not reader.get_inprogress()


def test_in_progress_is_visible_to_execo_and_to_other_minions(tmp_path: Path) -> None:
    d = make_sweep(tmp_path / "s", range(4))
    a, b = engine(d), engine(d)
    first = a.next(0.01)
    assert first is not None
    assert first.param in ParamSweeper(str(d)).get_inprogress()
    others = {m.param for m in take_all(b)}
    assert first.param not in others and len(others) == 3
    assert not b.drained()  # a still holds one


def test_dict_sweeps_made_by_execo(tmp_path: Path) -> None:
    d = make_sweep(tmp_path / "s", sweep({"a": [0, 1], "b": ["x", "t"]}))
    e = engine(d)
    params = take_all(e)
    assert sorted(json.dumps(m.param, sort_keys=True) for m in params) == sorted(
        json.dumps({"a": a, "b": b}, sort_keys=True) for a in (0, 1) for b in ("x", "t")
    )
    for m in params:
        e.ack(m)
    assert len(ParamSweeper(str(d)).get_done()) == 4


def test_nack_comes_back_to_another_minion_with_the_next_attempt(tmp_path: Path) -> None:
    d = make_sweep(tmp_path / "s", ["only"])
    a, b = engine(d), engine(d)
    m = a.next(0.01)
    assert m is not None and m.attempt == 1
    assert b.next(0.01) is None
    a.nack(m)
    again = b.next(0.01)
    assert again is not None and again.param == "only" and again.attempt == 2


def test_release_does_not_count_an_attempt(tmp_path: Path) -> None:
    d = make_sweep(tmp_path / "s", ["only"])
    a, b = engine(d), engine(d)
    m = a.next(0.01)
    assert m is not None
    a.release(m)
    again = b.next(0.01)
    assert again is not None and again.attempt == 1


def test_failed_is_never_handed_out_again_even_to_a_new_minion(tmp_path: Path) -> None:
    d = make_sweep(tmp_path / "s", ["bad", "good"])
    a = engine(d)
    for m in take_all(a):
        (a.fail(m, "exit code 3") if m.param == "bad" else a.ack(m))
    late = engine(d)
    assert late.next(0.01) is None
    assert late.drained()
    assert late.remaining() == 0


def test_expired_lease_is_reclaimed(tmp_path: Path) -> None:
    d = make_sweep(tmp_path / "s", ["x"])
    dead = engine(d, lease=1)
    assert dead.next(0.01) is not None  # then never renewed: the minion "died"
    alive = engine(d, lease=1)
    assert alive.next(0.01) is None
    assert not alive.drained()
    time.sleep(1.6)  # lease (1s) + margin (a third of it)
    back = alive.next(0.01)
    assert back is not None and back.param == "x"
    assert back.attempt == 2  # the dead minion's attempt was spent


def test_a_parameter_that_kills_every_minion_runs_out_of_attempts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(execo, "_RECLAIM_EVERY", 0.0)
    d = make_sweep(tmp_path / "s", ["x"])
    clock = Clock()
    attempts = []
    for _ in range(3):  # each minion takes it, then dies in the run: never renewed, never settled
        minion = ExecoEngine(str(d), 60, clock=clock)
        minion.open()
        message = minion.next(0)
        assert message is not None
        attempts.append(message.attempt)
        clock.now += 81  # lease + margin
    assert attempts == [1, 2, 3]
    fourth = ExecoEngine(str(d), 60, clock=clock)
    fourth.open()
    message = fourth.next(0)
    assert message is not None and message.attempt == 4  # past MINION_MAX_ATTEMPTS: the worker sets it aside


def test_renewed_lease_is_not_reclaimed(tmp_path: Path) -> None:
    d = make_sweep(tmp_path / "s", ["x"])
    holder = engine(d, lease=1)
    m = holder.next(0.01)
    assert m is not None
    other = engine(d, lease=1)
    for _ in range(6):
        time.sleep(0.3)
        holder.extend([m])
        assert other.next(0.01) is None


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def test_param_in_progress_without_a_lease_is_reclaimed_after_a_lease_period(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The state a full disk left between `inprogress` and the lease: plain execo's get_next makes it too."""
    monkeypatch.setattr(execo, "_RECLAIM_EVERY", 0.0)
    d = make_sweep(tmp_path / "s", ["x"])
    assert ParamSweeper(str(d)).get_next() == "x"
    clock = Clock()
    e = ExecoEngine(str(d), 60, clock=clock)
    e.open()
    assert e.next(0) is None and not e.drained()  # first seen without a lease: a lease period from now
    clock.now += 60
    assert e.next(0) is None  # the margin for clock skew, as for an expired lease
    clock.now += 21
    back = e.next(0)
    assert back is not None and back.param == "x" and back.reclaimed
    e.ack(back)
    assert e.drained()


def test_inprogress_emptied_by_a_kill_keeps_what_live_minions_hold(tmp_path: Path) -> None:
    """Plain execo (and minionize before) truncated `inprogress`, then wrote it: a kill in between emptied it."""
    d = make_sweep(tmp_path / "s", ["a", "b", "c"])
    holder = engine(d)
    held = holder.next(0)
    assert held is not None
    (d / "inprogress").write_bytes(b"")
    fresh = engine(d)
    assert held.param not in {m.param for m in take_all(fresh)}
    assert held.param in ParamSweeper(str(d)).get_inprogress()  # written back whole by the fresh minion


def test_temporaries_of_a_killed_minion_are_cleaned_up_at_open(tmp_path: Path) -> None:
    d = make_sweep(tmp_path / "s", ["a", "b"])
    holder = engine(d)
    held = holder.next(0)
    assert held is not None
    leases = d / ".minionize" / "leases"
    left = [d / ".inprogress.node_12_ab12cd.tmp", d / ".sweeps.node_12_ab12cd.tmp", leases / ".0123.node_12_ab12cd",
            leases / "not-in-progress", leases / "minion.node_14_0a0b0c", leases / "minion.node_15_0d0e0f"]
    for path in left:
        path.write_bytes(b"half")
    long_ago = time.time() - 200  # a lease (60 s) and more
    left[4].write_text(json.dumps({"minion": "node:14:0a0b0c", "expires": long_ago, "keys": ["0" * 20]}))
    for old in (left[2], left[4], left[5]):  # a lease's temporary, a dead minion's lease, a torn one: all old
        os.utime(old, (long_ago, long_ago))
    renewing = leases / ".4567.node_13_ef34ab"  # one a live minion may be renaming right now
    renewing.write_bytes(b"{}")
    running = leases / "minion.node_16_101112"  # a live minion's, rewritten in place right now
    running.write_bytes(b"{")
    engine(d)
    assert [path.name for path in left if path.exists()] == []
    assert renewing.exists() and running.exists() and held.id in holder._leases()


def test_push_writes_a_sweep_that_plain_execo_reads_and_adds_to_it(tmp_path: Path) -> None:
    d = tmp_path / "s"
    ExecoEngine(str(d)).push([{"a": 1}, "b"])
    assert "(3 parameters" in ExecoEngine(str(d)).push(["b", [1, 2]])
    reader = ParamSweeper(str(d))
    assert sorted(map(str, reader.get_sweeps())) == sorted(["{'a': 1}", "b", "(1, 2)"])
    assert not [p.name for p in d.iterdir() if p.name.endswith(".tmp")]


def without_override(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """Run minionize without the power to override file permissions, which root has."""
    prefix: list[str] = []
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("root passes every permission check, and setpriv (util-linux) is not there to drop it")
        prefix = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--"]
    return subprocess.run([*prefix, *minionize_cmd(*args)], cwd=cwd, env=minion_env(**env), capture_output=True,
                          text=True, timeout=60)


def test_a_sweep_directory_it_may_not_write_is_a_configuration_error(tmp_path: Path) -> None:
    d = make_sweep(tmp_path / "s", ["x"])
    d.chmod(0o555)
    try:
        done = without_override("true", cwd=tmp_path, MINION_ENGINE="execo", EXECO_PERSISTENCE_DIR=str(d))
    finally:
        d.chmod(0o755)
    assert done.returncode == 2, done.stderr
    assert "EXECO_PERSISTENCE_DIR=" in done.stderr and "Permission denied" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_grown_sweep_is_picked_up(tmp_path: Path) -> None:
    d = make_sweep(tmp_path / "s", [1])
    e = engine(d)
    for m in take_all(e):
        e.ack(m)
    time.sleep(0.01)
    ParamSweeper(str(d), sweeps=[1, 2], save_sweeps=True)
    m = e.next(0.01)
    assert m is not None and m.param == 2


def test_lease_key_is_stable() -> None:
    assert param_key({"a": 1}) == param_key({"a": 1}) != param_key({"a": 2})


def test_missing_sweep_is_a_configuration_error(tmp_path: Path) -> None:
    e = ExecoEngine.from_env(EnvReader({"EXECO_PERSISTENCE_DIR": str(tmp_path / "nope")}))
    with pytest.raises(ConfigError, match="EXECO_PERSISTENCE_DIR=.*no sweep there"):
        e.open()
