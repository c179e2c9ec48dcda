"""Several minions on one execo sweep, in any interleaving, against a model of the sweep.

A minion of a fleet reads `inprogress` as a set and never places its
parameters in the sweep one by one: what remains to it is what is neither
done nor failed, and its take walks that from a place of its own, passing
over what is in the set (`SweepState.take`). Whatever the others did meanwhile (took one or a batch, acked, nacked, gave
back, set aside, pushed more), each minion must count what remains as the
model does, never take what another runs, and the sweep must end with every
parameter done once or set aside. The same with minions that take ahead and
hold their acks back (EXECO_TAKE_AHEAD, runs shorter than the window): what
they keep is taken by no other, and their acks, not yet written, leave the
parameters in progress for the others until their next lock of the sweep.
"""

from __future__ import annotations

import pickle
import tempfile
from itertools import chain
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from minionize.engines import sweepfiles
from minionize.engines.execo import ExecoEngine
from minionize.engines.sweepindex import SweepIndex
from minionize.message import Message

MINIONS = 5

steps = st.lists(
    st.tuples(
        st.sampled_from(["take"] * 4 + ["ack"] * 2 + ["nack", "release"] * 2 + ["fail", "push"] + ["look"] * 3),
        st.integers(0, MINIONS - 1),
        st.integers(1, 8),
    ),
    max_size=80,
)


class Fleet:
    def __init__(self, directory: Path, size: int, ahead: bool = False) -> None:
        self.directory = directory
        self.sweep: set[Any] = set(range(size))
        ExecoEngine(str(directory)).push(sorted(self.sweep))
        # Taking ahead: every other minion, with a window (10 s) longer than any run of the test.
        self.minions = [ExecoEngine(str(directory), take_ahead=10.0 * (ahead and i % 2 == 0)) for i in range(MINIONS)]
        for minion in self.minions:
            minion.open()
        self.held: list[list[Message]] = [[] for _ in range(MINIONS)]
        self.done: set[Any] = set()
        self.failed: set[Any] = set()

    def running(self) -> list[Any]:
        return [message.param for held in self.held for message in held]

    def kept(self, but: int = -1) -> set[Any]:
        """What the minions (but one) took ahead, not handed out yet."""
        kept = (minion._kept.messages() for i, minion in enumerate(self.minions) if i != but)
        return {message.param for message in chain.from_iterable(kept)}

    def unwritten(self, but: int = -1) -> set[Any]:
        """What the minions (but one) acked and did not write yet: in progress for the others."""
        return set(chain.from_iterable(minion._acked for i, minion in enumerate(self.minions) if i != but))

    def step(self, action: str, which: int, count: int) -> None:
        minion, held = self.minions[which], self.held[which]
        if action == "take":
            unwritten, elsewhere = self.unwritten(), self.kept(but=which)
            wrote = bool(minion._kept.messages()) is False  # nothing kept: this take writes `inprogress`
            taken = minion.next_many(count, 0)
            assert not {m.param for m in taken} & set(self.running()), "taken while another minion runs it"
            assert not {m.param for m in taken} & elsewhere, "taken while another minion keeps it"
            assert len(taken) <= count
            held.extend(taken)
            if taken and wrote:  # its write of `inprogress` drops every parameter settled (and written) so far
                data = (self.directory / "inprogress").read_bytes()
                settled = (self.done | self.failed) - unwritten
                assert not set(pickle.loads(data)) & settled, "settled, still in progress"
            open_ = self.sweep - self.done - self.failed - set(self.running()) - self.kept()
            assert taken or not open_, f"nothing taken, {len(open_)} open"
        elif action == "push":
            more = set(range(len(self.sweep), len(self.sweep) + count * 7))
            ExecoEngine(str(self.directory)).push(sorted(more))
            self.sweep |= more
        elif action == "look":
            minion.drained()  # brings its view up to date under the lock (and writes its acks)
            # The acks the others have not written yet are in progress for it.
            assert minion.remaining() == len(self.sweep - self.done - self.failed) + len(self.unwritten(but=which))
            # What it holds for in progress is `inprogress` as it just read or wrote it.
            data = sweepfiles.read_whole(self.directory / "inprogress")
            if data:
                assert minion._sweep.in_progress == set(pickle.loads(data))
        elif held:
            message = held.pop(count % len(held))
            if action == "ack":
                minion.ack(message)
                self.done.add(message.param)
            elif action == "fail":
                minion.fail(message, "bad")
                self.failed.add(message.param)
            else:
                getattr(minion, action)(message)
        assert len(set(self.running())) == len(self.running()), "one parameter held twice"

    def finish(self) -> None:
        for minion, held in zip(self.minions, self.held, strict=True):
            for message in held:
                minion.ack(message)
                self.done.add(message.param)
            held.clear()
        while True:
            progress = False
            for minion in self.minions:
                for message in minion.next_many(3, 0):
                    minion.ack(message)
                    self.done.add(message.param)
                    progress = True
            if not progress:
                break
        for minion in self.minions:
            assert minion.drained() and minion.remaining() == 0
            minion.close()
        with open(self.directory / "done", "rb") as handle:
            records, _ = sweepfiles.read_appended(handle.fileno(), 0)
        assert sorted(records) == sorted(self.sweep - self.failed), "not every parameter done once"
        assert not set(records) & self.failed


@pytest.mark.parametrize("ahead", [False, True], ids=["one-per-slot", "taking-ahead"])
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(size=st.integers(1, 120), story=steps)
def test_any_interleaving_of_a_fleet_agrees_with_the_model(
    ahead: bool, size: int, story: list[tuple[str, int, int]]
) -> None:
    with tempfile.TemporaryDirectory() as work:
        fleet = Fleet(Path(work) / "sweep", size, ahead)
        for action, which, count in story:
            fleet.step(action, which, count)
        fleet.finish()


def test_what_another_minion_gives_back_sets_aside_or_acks_is_seen_at_the_next_look(tmp_path: Path) -> None:
    for action in ("release", "nack", "fail", "ack"):
        fleet = Fleet(tmp_path / action, 10)
        fleet.step("take", 0, 2)
        fleet.step("look", 1, 0)  # sees them in progress
        fleet.step(action, 0, 0)
        fleet.step("look", 1, 0)
        fleet.step("take", 1, 8)
        fleet.step("take", 2, 8)
        fleet.finish()


def unpickles(monkeypatch: pytest.MonkeyPatch, minion: ExecoEngine) -> list[int]:
    """The places of the parameters `minion` unpickles from its index of the sweep, from now on."""
    unpickled: list[int] = []
    index, original = minion._sweep.sweeps, SweepIndex.__getitem__

    def counted(self: SweepIndex, position: int) -> Any:
        if self is index:
            unpickled.append(position)
        return original(self, position)

    monkeypatch.setattr(SweepIndex, "__getitem__", counted)
    return unpickled


def test_a_take_passes_over_no_parameter_the_others_hold_when_their_places_are_apart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The usual fleet: each minion acks and takes in turn, from a place of its own in the sweep. A take
    unpickles the parameters it takes and those it passes over, never one per parameter in progress: the
    work of a take under the lock does not grow with what the fleet holds."""
    fleet = Fleet(tmp_path / "sweep", 1000)
    for which, minion in enumerate(fleet.minions):
        minion._sweep._start = 200 * which  # as far apart as the crc32s of their names usually are
    for which in range(MINIONS):
        fleet.step("take", which, 8)  # minion 0 first, alone: from the start; the others, from their places
    assert [minion._sweep._cursor for minion in fleet.minions] == [8, 208, 408, 608, 808]
    unpickled = unpickles(monkeypatch, fleet.minions[0])
    for _ in range(20):
        for which in range(MINIONS):
            if fleet.held[which]:
                fleet.step("ack", which, 0)
            fleet.step("take", which, 1 if which == 0 else 8)
    # Each take of minion 0 unpickled the one it took, and none of the 32 to 40 the others held.
    assert unpickled == list(range(8, 28))
    fleet.finish()


def test_a_minion_that_found_nothing_to_take_does_not_walk_the_sweep_again_until_something_changed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fleet = Fleet(tmp_path / "sweep", 30)
    fleet.step("take", 1, 30)
    idle = fleet.minions[0]
    unpickled = unpickles(monkeypatch, idle)
    assert idle.next_many(1, 0) == []
    assert len(unpickled) == 30  # passed over every parameter, all in progress
    assert idle.next_many(1, 0) == []
    fleet.step("ack", 1, 0)  # acks do not make anything takeable: no walk either
    assert idle.next_many(1, 0) == []
    assert len(unpickled) == 30
    fleet.step("release", 1, 0)  # given back: taken at once
    taken = idle.next_many(1, 0)
    assert len(taken) == 1 and len(unpickled) == 31  # the one given back, tried first: no walk
    fleet.held[0].extend(taken)
    fleet.finish()
