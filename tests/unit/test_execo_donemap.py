"""`.minionize/donemap`: where each record of `done` is, and which parameter of the sweep it names.

Every minion reads every record the fleet appends to `done`; a record with
a place is neither unpickled to find its end nor looked up to find its
parameter, only compared with the sweep's own pickle. A place is a
shortcut, never the truth: one that does not hold (a sweep reloaded, a
`done` that lost its end in a crash, or rewritten) is passed over and the
record read as plain execo's are.
"""

from __future__ import annotations

import os
import pickle
import struct
from pathlib import Path
from typing import Any

import pytest
from execo_engine.sweep import ParamSweeper

from minionize.engines import sweepstate
from minionize.engines.execo import ExecoEngine
from minionize.engines.sweepindex import SweepIndex
from minionize.engines.sweepstate import SweepState
from tests.unit.sweeps import make_sweep

PLACE = struct.Struct("<QII")


def opened(path: Path) -> ExecoEngine:
    engine = ExecoEngine(str(path), 60)
    engine.open()
    return engine


def ack_all(minion: ExecoEngine, count: int) -> list[Any]:
    acked = []
    for message in minion.next_many(count, 0):
        minion.ack(message)
        acked.append(message.param)
    return acked


def lookups(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """The records of `done` found by their bytes (the way without a place)."""
    found: list[bytes] = []
    position_of = SweepIndex.position_of

    def counted(self: SweepIndex, key: Any) -> Any:
        found.append(bytes(key))
        return position_of(self, key)

    monkeypatch.setattr(SweepIndex, "position_of", counted)
    return found


def places(path: Path) -> list[tuple[int, int, int]]:
    return list(PLACE.iter_unpack((path / ".minionize" / "donemap").read_bytes()))


def test_an_ack_writes_the_place_of_its_record_and_the_others_read_it_by_that(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    d = make_sweep(tmp_path / "s", range(20))
    writer, reader = opened(d), opened(d)
    acked = ack_all(writer, 5)
    sweeps = reader._sweep.sweeps
    at = 0
    for (start, length, position), param in zip(places(d), acked, strict=True):
        assert (start, sweeps[position]) == (at, param)
        assert (d / "done").read_bytes()[start : start + length] == pickle.dumps(param, protocol=4)
        at = start + length
    found = lookups(monkeypatch)
    taken = reader.next_many(20, 0)
    assert found == []  # no record looked up by its bytes
    assert sorted(m.param for m in taken) == sorted(set(range(20)) - set(acked))
    assert len(reader._sweep.remaining) == 15


def test_records_of_plain_execo_between_placed_ones_are_read_as_records(tmp_path: Path) -> None:
    d = make_sweep(tmp_path / "s", range(30))
    minion, other, reader = opened(d), opened(d), opened(d)
    first = ack_all(minion, 3)
    plain = ParamSweeper(str(d))  # plain execo appends to `done` without a place
    plain_done = []
    for _ in range(2):
        param = plain.get_next()
        plain.done(param)
        plain_done.append(param)
    second = ack_all(other, 3)
    assert len(places(d)) == 6
    taken = reader.next_many(30, 0)
    assert sorted(m.param for m in taken) == sorted(set(range(30)) - set(first + plain_done + second))
    assert reader._sweep.done_pos == (d / "done").stat().st_size


def test_a_place_that_does_not_hold_is_passed_over(tmp_path: Path) -> None:
    """A place naming another parameter than its record (a sweep reloaded since, a `done` rewritten) marks
    nothing done: the record is read for what it is."""
    d = make_sweep(tmp_path / "s", range(10))
    minion, reader = opened(d), opened(d)
    [acked] = ack_all(minion, 1)
    [(start, length, position)] = places(d)
    sweeps = reader._sweep.sweeps
    wrong = next(p for p in range(10) if p != position and len(pickle.dumps(sweeps[p], protocol=4)) == length)
    (d / ".minionize" / "donemap").write_bytes(PLACE.pack(start, length, wrong))
    taken = {m.param for m in reader.next_many(10, 0)}
    assert acked not in taken and sweeps[wrong] in taken
    assert reader._sweep.done_pos == (d / "done").stat().st_size


def test_places_beyond_the_end_of_done_are_cut_under_the_lock_and_the_next_ones_trusted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A machine crash may keep places whose records `done` lost: under the lock (nobody writes), they are
    cut, so that the records appended at those offsets next are not taken for them."""
    d = make_sweep(tmp_path / "s", range(20))
    minion = opened(d)
    ack_all(minion, 4)
    size = (d / "done").stat().st_size
    kept = places(d)[1][0]  # `done` keeps its first record only
    os.truncate(d / "done", kept)
    assert size > kept
    reader = opened(d)
    reader.next_many(1, 0)  # a take: under the lock
    assert len(places(d)) == 1
    again = opened(d)
    again_acked = ack_all(again, 3)
    found = lookups(monkeypatch)
    late = opened(d)
    late.next_many(1, 0)
    assert found == []  # the new places hold
    assert all(param in late._sweep.done for param in again_acked)
    assert len(late._sweep.done.flags) - late._sweep.done.flags.count(0) == 4


def test_a_torn_place_is_cut_under_the_lock_and_its_record_read_as_one(tmp_path: Path) -> None:
    d = make_sweep(tmp_path / "s", range(10))
    minion = opened(d)
    acked = ack_all(minion, 2)
    donemap = d / ".minionize" / "donemap"
    with open(donemap, "r+b") as handle:
        handle.truncate(PLACE.size + 5)  # the second place, torn by a kill or a full disk
    reader = opened(d)
    reader.next_many(1, 0)
    assert donemap.stat().st_size == PLACE.size
    assert all(param in reader._sweep.done for param in acked)
    more = ack_all(opened(d), 2)
    late = opened(d)
    late.next_many(1, 0)
    assert all(param in late._sweep.done for param in acked + more)


def test_a_read_without_the_lock_leaves_a_torn_place_for_the_writer(tmp_path: Path) -> None:
    d = make_sweep(tmp_path / "s", range(10))
    acked = ack_all(opened(d), 2)
    donemap = d / ".minionize" / "donemap"
    whole = donemap.read_bytes()
    donemap.write_bytes(whole[:-5])  # being appended
    state: SweepState = ExecoEngine(str(d))._sweep
    state.load()
    done = os.open(d / "done", os.O_RDWR)
    try:
        state.scan_done(done, cut=False)
    finally:
        os.close(done)
    assert donemap.stat().st_size == len(whole) - 5
    assert all(param in state.done for param in acked)


@pytest.mark.parametrize("places_read", [7 * PLACE.size, 1 << 20])
def test_a_minion_catching_up_on_many_placed_records_reads_them_all(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, places_read: int
) -> None:
    """The places are read a chunk at a time (a mebibyte; here 7 places too), the records by them."""
    monkeypatch.setattr(sweepstate, "_PLACES_READ", places_read)
    d = make_sweep(tmp_path / "s", range(3000))
    minion = opened(d)
    acked = []
    for _ in range(10):
        acked += ack_all(minion, 200)
    found = lookups(monkeypatch)
    late = opened(d)
    taken = late.next_many(1000, 0)
    assert found == []
    assert not {m.param for m in taken} & set(acked)
    assert len(late._sweep.remaining) == 1000
