"""The execo engine against execo's own ParamSweeper, on a real directory."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from execo_engine.sweep import ParamSweeper, sweep

from minionize.config import EnvReader
from minionize.engines.execo import ExecoEngine, param_key
from minionize.errors import ConfigError


def make_sweep(path: Path, params: object) -> Path:
    ParamSweeper(str(path), sweeps=params, save_sweeps=True)
    return path


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


def test_param_taken_by_plain_execo_is_never_reclaimed(tmp_path: Path) -> None:
    d = make_sweep(tmp_path / "s", ["x"])
    assert ParamSweeper(str(d)).get_next() == "x"
    e = engine(d, lease=1)
    time.sleep(1.5)
    assert e.next(0.01) is None and not e.drained()


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
