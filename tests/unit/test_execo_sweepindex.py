"""The execo engine's compact sweep (minionize.engines.sweepindex), against a set and against plain execo.

- `SweepIndex` finds a parameter by its pickle, as `done`, `inprogress`
  and the journal hold it, and `Remaining` holds what a set would after any
  sequence of adds and discards, handing them out from the first.
- `.minionize/params` is written by a push for its `sweeps` file, used by a
  minion only while it matches that file (a copy of the directory too): a sweep rewritten by plain execo,
  a torn or lost cache, another sweep's cache, are read from `sweeps`, and
  the cache is written again for the next minions.
- A push killed between `sweeps` and its cache leaves a sweep that minions
  take in full.
"""

from __future__ import annotations

import pickle
import random
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from execo_engine.sweep import HashableDict, ParamSweeper

from minionize.engines import sweepindex
from minionize.engines.execo import ExecoEngine
from minionize.engines.sweepindex import Done, Remaining, SweepIndex


def test_the_index_finds_a_parameter_by_its_pickle() -> None:
    params = {1, "1", (1, 2), HashableDict({"a": 1, "b": (2, 3)}), None, 2.5, b"x", frozenset({3})}
    index = SweepIndex.of(params)
    assert len(index) == len(params) and set(index) == params
    for param in params:
        position = index.position(param)
        assert position is not None and index[position] == param
        # As it comes back from `done` or `inprogress`: unpickled, then looked up.
        assert index.position(pickle.loads(pickle.dumps(param, protocol=2))) == position
    for stranger in (2, "2", (2, 1), HashableDict({"a": 2}), 0.5, b"y", frozenset()):
        assert stranger not in index and index.position(stranger) is None
    assert 1.0 not in index  # equal to 1, but another parameter here (see the module)


def test_remaining_holds_what_a_set_would() -> None:
    rng = random.Random(14)
    params = [f"p{i}" for i in range(500)] + list(range(500))
    index = SweepIndex.of(set(params))
    model = set(params) - set(params[:100])
    remaining = Remaining(index, params[:100])
    for _ in range(3000):
        param = rng.choice(params)
        if rng.random() < 0.5:
            remaining.add(param)
            model.add(param)
        else:
            remaining.discard(param)
            model.discard(param)
        if rng.random() < 0.1:
            first = next(iter(remaining), None)  # what a take picks: the first that remains
            assert (first is None) == (not model) and (first is None or first in model)
        assert len(remaining) == len(model) and bool(remaining) == bool(model)
    assert list(remaining) == [p for p in index if p in model]
    remaining.add("not in the sweep")
    assert len(remaining) == len(model)


def test_done_holds_what_a_set_would_and_follows_a_reloaded_sweep() -> None:
    before = Done(SweepIndex.of({"a", "b", "c"}))
    before.add("a")
    before.add("outside")  # done before the sweep lost it, or by plain execo: kept apart
    assert "a" in before and "outside" in before and "b" not in before and set(before) == {"a", "outside"}
    grown = SweepIndex.of({"a", "b", "c", "d", "outside"})
    done = before.onto(grown)
    assert set(done) == {"a", "outside"} and not done.others
    remaining = Remaining(grown, ["b"], done)
    assert set(remaining) == {"c", "d"} and len(remaining) == 2
    remaining.mark_done("c")
    assert list(remaining) == ["d"] and "c" in done


def params_file(sweep: Path) -> Path:
    return sweep / ".minionize" / "params"


def taken(sweep: Path) -> set[object]:
    """Everything one minion takes (and acks) from `sweep`."""
    engine = ExecoEngine(str(sweep), 60)
    engine.open()
    seen = set()
    while (message := engine.next(0)) is not None:
        seen.add(message.param)
        engine.ack(message)
    engine.close()
    return seen


def stamp(sweep: Path) -> tuple[int, int]:
    return sweepindex.stamp_of((sweep / "sweeps").read_bytes())


def test_a_push_writes_the_cache_of_its_sweep_and_minions_read_it(tmp_path: Path) -> None:
    sweep = tmp_path / "s"
    ExecoEngine(str(sweep)).push(["a", {"x": 1}, [1, 2]])
    copy = tmp_path / "copy"
    shutil.copytree(sweep, copy)  # the cache of a copy is still good
    for directory in (sweep, copy):
        cached = sweepindex.read(str(params_file(directory)), stamp(directory))
        assert cached is not None and set(cached) == ParamSweeper(str(directory)).get_sweeps()
        written = params_file(directory).stat().st_mtime_ns
        assert taken(directory) == {"a", HashableDict({"x": 1}), (1, 2)}
        assert params_file(directory).stat().st_mtime_ns == written  # used, not written again
    assert not [p.name for p in sweep.iterdir() if p.name.endswith(".tmp")]


def test_a_parameter_pushed_again_keeps_its_pickle_and_stays_done(tmp_path: Path) -> None:
    sweep = tmp_path / "s"
    ExecoEngine(str(sweep)).push([{"lr": 0.1, "seed": 4}])
    assert taken(sweep) == {HashableDict({"lr": 0.1, "seed": 4})}
    # The same dict, its keys in another order (another pickle): not new, and still done.
    pushed = ExecoEngine(str(sweep)).push([{"seed": 4, "lr": 0.1}, {"seed": 5, "lr": 0.1}])
    assert pushed.new == 1
    assert taken(sweep) == {HashableDict({"lr": 0.1, "seed": 5})}


def test_done_records_are_found_by_their_bytes_or_unpickled_and_a_torn_one_is_cut(tmp_path: Path) -> None:
    """`done` as minionize writes it (one frame of protocol 4: found by its bytes), as older writers do
    (protocol 2: unpickled), with a parameter outside the sweep, and with a record torn by a kill."""
    sweep = tmp_path / "s"
    ExecoEngine(str(sweep)).push(["a", "b", "c", "d", "e"])
    whole = pickle.dumps("d", protocol=4)
    with open(sweep / "done", "ab") as done:
        done.write(pickle.dumps("a", protocol=4) + pickle.dumps("b", protocol=2) + pickle.dumps("zz", protocol=4))
        done.write(pickle.dumps("c", protocol=4))
        kept = done.tell()
        done.write(whole[: len(whole) - 2])  # "d" cut short: not done, and cut off by the next reader
    assert taken(sweep) == {"d", "e"}
    assert ParamSweeper(str(sweep)).get_done() == {"a", "b", "c", "d", "e"}
    with open(sweep / "done", "rb") as done:
        done.seek(kept)
        after = [pickle.load(done), pickle.load(done)]
        assert done.read() == b""
    assert sorted(after) == ["d", "e"]  # acked after the cut, whole


def test_a_sweep_rewritten_by_plain_execo_is_read_from_sweeps_and_cached_again(tmp_path: Path) -> None:
    sweep = tmp_path / "s"
    ExecoEngine(str(sweep)).push(["a", "b"])
    old = params_file(sweep).read_bytes()
    ParamSweeper(str(sweep), sweeps=["a", "b", "c", "d"], save_sweeps=True)  # in place, as execo does
    assert sweepindex.read(str(params_file(sweep)), stamp(sweep)) is None  # the cache is the old sweep's
    assert taken(sweep) == {"a", "b", "c", "d"}
    assert params_file(sweep).read_bytes() != old
    cached = sweepindex.read(str(params_file(sweep)), stamp(sweep))
    assert cached is not None and set(cached) == {"a", "b", "c", "d"}


def test_a_torn_lost_or_foreign_cache_is_not_used(tmp_path: Path) -> None:
    other = tmp_path / "other"
    ExecoEngine(str(other)).push(["x", "y", "z"])
    for number, damage in enumerate(("cut", "half", "empty", "lost", "foreign")):
        sweep = tmp_path / f"s{number}"
        ExecoEngine(str(sweep)).push(["a", "b", "c"])
        whole = params_file(sweep).read_bytes()
        if damage == "lost":
            params_file(sweep).unlink()
        else:
            cut = {"cut": whole[:-3], "half": whole[: len(whole) // 2], "empty": b""}
            params_file(sweep).write_bytes(cut.get(damage) or params_file(other).read_bytes())
        assert sweepindex.read(str(params_file(sweep)), stamp(sweep)) is None
        assert taken(sweep) == {"a", "b", "c"}
        cached = sweepindex.read(str(params_file(sweep)), stamp(sweep))  # written again by the minion
        assert cached is not None and set(cached) == {"a", "b", "c"}


KILLED_PUSH = textwrap.dedent("""
    import os, sys
    from minionize.engines import sweepfiles
    from minionize.engines.execo import ExecoEngine
    real = sweepfiles.replace
    def replace(path, data, temporary, sync):
        if str(path).endswith("params"):
            with open(temporary, "wb") as out:
                out.write(data[: len(data) // 2])  # the cache half written: then the kill
            os.kill(os.getpid(), 9)
        real(path, data, temporary, sync)
    sweepfiles.replace = replace
    ExecoEngine(sys.argv[1]).push(["a", "b", "c"])
""")


def test_a_push_killed_before_its_cache_leaves_a_whole_sweep(tmp_path: Path) -> None:
    sweep = tmp_path / "s"
    ExecoEngine(str(sweep)).push(["old"])
    killed = subprocess.run([sys.executable, "-c", KILLED_PUSH, str(sweep)], capture_output=True, timeout=60)
    assert killed.returncode == -signal.SIGKILL
    assert [p.name for p in sweep.iterdir() if p.name.endswith(".tmp")]  # the half-written cache
    assert ParamSweeper(str(sweep)).get_sweeps() == {"old", "a", "b", "c"}
    assert taken(sweep) == {"old", "a", "b", "c"}
    assert not [p.name for p in sweep.iterdir() if p.name.endswith(".tmp")]  # cleaned up at open
