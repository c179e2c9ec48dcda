"""Taking ahead on the execo engine (EXECO_TAKE_AHEAD): when runs are short, several per lock of the sweep.

- The pace: nothing is taken ahead before a run has settled, nor when runs
  last as long as the window; short runs take as many more as the slots
  finish within the window, 32 at most.
- A take after short runs takes the extra parameters in the same write of
  `inprogress`, leased; the next calls hand them out without the sweep.
- An ack of a short run is written with the next lock of the sweep (one
  write and one sync for several); meanwhile the parameter is in progress
  for the others, and not remaining for the minion itself.
- What is kept is given back at close (no attempt counted), or at a lease
  renewal once kept as long as one; the held acks are written at close.
- Kept past the minion's own lease (a pause without runs), they are let
  go without a write: another minion may have reclaimed them.
- A minion waiting for what others hold looks again after 0.05 s, then
  less often, up to every 0.5 s.
- A minion killed with parameters kept and acks held back: nothing is lost,
  they come back after their leases and run again; its lease file goes
  with the reclaim.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from execo_engine.sweep import ParamSweeper

from minionize.engines import execo, sweepfiles, takeahead
from minionize.engines.execo import ExecoEngine
from minionize.engines.takeahead import TakeAhead
from minionize.message import Message
from tests.unit.sweeps import Later, make_sweep, on_disk_in_progress


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def paced(run_seconds: float, slots: int = 1, window: float = 0.05) -> TakeAhead:
    clock = Clock()
    pace = TakeAhead(window, max_age=20, clock=clock)
    messages = [Message(str(i), i) for i in range(slots)]
    pace.handed(messages)
    clock.now += run_seconds
    for message in messages:
        pace.settled(message)
    return pace


def test_the_pace_takes_ahead_only_what_the_slots_finish_within_the_window() -> None:
    assert TakeAhead(0.05, max_age=20).extra() == 0  # no run settled yet
    assert paced(0.01).extra() == 5
    assert paced(0.01, slots=2).extra() == 10
    assert paced(0.0001, slots=2).extra() == takeahead.MOST
    assert paced(0.05).extra() == 0 and paced(3600).extra() == 0  # as long as the window, or longer
    assert paced(0.01, window=0).extra() == 0  # EXECO_TAKE_AHEAD=0


def test_a_busy_lock_lengthens_the_horizon_so_that_the_slots_do_not_run_dry_while_waiting() -> None:
    pace = paced(0.01)
    for _ in range(50):
        pace.waited(0.08)  # a fleet of 128 on two cores: 70 ms and more per lock
    assert pace.extra() == 12  # (0.05 + 0.08) s of 10 ms runs, less what the smoothing has not reached
    assert paced(0.1).extra() == 0  # no wait: a run longer than the window is not taken ahead
    slow = paced(0.1)
    for _ in range(50):
        slow.waited(0.5)
    assert slow.extra() == 5  # others wait half a second for the lock: they could not start it sooner
    hour = paced(3600)
    hour.waited(0.5)
    assert hour.extra() == 0  # never a long run
    for _ in range(100):
        pace.waited(0.0)
    assert pace.extra() == 5  # the lock is free again: the window alone
    off = paced(0.01, window=0)
    for _ in range(50):
        off.waited(0.08)
    assert off.extra() == 0  # EXECO_TAKE_AHEAD=0 is off, however long the wait


def test_a_release_does_not_pace_and_the_pace_follows_the_runs() -> None:
    pace = paced(0.01)
    clock = pace.clock
    assert isinstance(clock, Clock)
    quick = Message("q", "q")
    pace.handed([quick])
    pace.settled(quick, ran=False)  # given back at once: not a run
    assert pace.extra() == 5
    for _ in range(30):  # runs now last a second
        message = Message("slow", "slow")
        pace.handed([message])
        clock.now += 1
        pace.settled(message)
    assert pace.extra() == 0


def opened(path: Path, **kwargs: float) -> ExecoEngine:
    engine = ExecoEngine(str(path), 60, take_ahead=10.0, **kwargs)  # any run of the test is short
    engine.open()
    return engine


def counting(monkeypatch: pytest.MonkeyPatch, name: str) -> list[object]:
    calls: list[object] = []
    original = getattr(sweepfiles, name)
    monkeypatch.setattr(sweepfiles, name, lambda *args, **kw: calls.append(args[0]) or original(*args, **kw))
    return calls


def test_after_a_short_run_one_take_writes_the_next_ones_and_they_come_without_the_sweep(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    d = make_sweep(tmp_path / "s", range(100))
    minion = opened(d)
    first = minion.next(0)
    assert first is not None and on_disk_in_progress(d) == {first.param}  # no pace yet: one
    minion.ack(first)
    writes, locks = counting(monkeypatch, "swap"), counting(monkeypatch, "open_appendable")
    second = minion.next(0)
    assert second is not None and len(writes) == 1
    ahead = on_disk_in_progress(d) - {first.param}
    assert len(ahead) == 1 + takeahead.MOST and second.param in ahead
    assert {execo.param_key(param) for param in ahead} <= set(minion._leases())
    other = opened(d)
    assert not {m.param for m in other.next_many(100, 0)} & ahead  # in progress for every other minion
    writes.clear()
    locks.clear()
    handed = [second] + [minion.next(0) for _ in range(takeahead.MOST)]
    assert {m.param for m in handed if m is not None} == ahead
    assert not writes and not locks  # neither written nor locked again


def test_the_time_a_take_waits_for_the_sweeps_lock_reaches_the_pace(tmp_path: Path) -> None:
    d = make_sweep(tmp_path / "s", range(10))
    minion = opened(d)
    hold = ("import fcntl, sys, time; f = open(sys.argv[1], 'r+b'); fcntl.lockf(f, fcntl.LOCK_EX); "
            "print(1, flush=True); time.sleep(1)")
    holder = subprocess.Popen([sys.executable, "-c", hold, str(d / "done")], stdout=subprocess.PIPE)
    assert holder.stdout is not None and holder.stdout.readline()  # another minion holds the lock
    assert minion.next(0) is not None
    holder.wait(timeout=30)
    assert minion._kept._wait > 0.05  # smoothed: a fifth of the wait, here most of a second


def test_short_runs_acks_are_written_with_the_next_lock_one_sync_for_several(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    d = make_sweep(tmp_path / "s", range(10))
    minion = opened(d)
    syncs = counting(monkeypatch, "sync")
    batch = [minion.next(0) for _ in range(4)]  # the first alone (no pace yet), then the rest kept
    for message in batch:
        assert message is not None
        minion.ack(message)
    acked = {m.param for m in batch if m is not None}
    assert not acked & set(ParamSweeper(str(d)).get_done())
    assert len(syncs) == 0
    assert minion.remaining() == 10 - 4  # not remaining for the minion itself
    assert acked <= on_disk_in_progress(d)  # in progress for the others, under their leases
    assert not {m.param for m in opened(d).next_many(10, 0)} & acked
    assert minion.drained() is False  # a lock of the sweep: the acks are written
    assert acked <= set(ParamSweeper(str(d)).get_done()) and len(syncs) == 1


def taking_ahead(minion: ExecoEngine) -> tuple[Message, Message]:
    """A first run taken and acked (which sets the pace), then a second taken with more kept behind it."""
    first = minion.next(0)
    assert first is not None
    minion.ack(first)
    second = minion.next(0)
    assert second is not None and minion._kept
    return first, second


def test_close_gives_back_what_was_kept_uncounted_and_writes_the_held_acks(tmp_path: Path) -> None:
    d = make_sweep(tmp_path / "s", range(50))
    minion = opened(d)
    first, second = taking_ahead(minion)
    minion.ack(second)  # held back
    kept = {m.param for m in minion._kept.messages()}
    assert kept
    minion.close()
    reader = ParamSweeper(str(d))
    assert set(reader.get_done()) == {first.param, second.param}
    assert not reader.get_inprogress()  # the kept ones given back, the acked ones tidied
    assert not list((d / ".minionize" / "leases").iterdir())  # its lease file removed
    fresh = ExecoEngine(str(d), 60)
    fresh.open()
    back = fresh.next_many(50, 0)
    assert {m.param for m in back} == set(range(50)) - {first.param, second.param}
    assert all(m.attempt == 1 and not m.reclaimed for m in back)


def test_what_was_kept_as_long_as_a_lease_renewal_is_given_back_at_the_renewal(tmp_path: Path) -> None:
    d = make_sweep(tmp_path / "s", range(20))
    minion = opened(d)
    first, running = taking_ahead(minion)
    clock = Clock()
    minion._kept.clock = clock  # the same instant for what is kept now, then a renewal later
    minion._kept.keep(minion._kept.take_all())
    clock.now += minion.lease_interval + 1
    minion.extend([running])
    assert not minion._kept
    reader = ParamSweeper(str(d))
    assert set(reader.get_inprogress()) == {running.param}  # and the held ack written
    assert first.param in reader.get_done()


KILLED_WHILE_TAKING_AHEAD = textwrap.dedent("""
    import os, signal, sys
    from minionize.engines.execo import ExecoEngine
    engine = ExecoEngine(sys.argv[1], 60, take_ahead=10.0)
    engine.open()
    for _ in range(3):
        engine.ack(engine.next(0))   # held back; the second take writes the first and keeps the rest
    print(sorted(engine._acked), flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
""")


def test_a_minion_killed_with_acks_held_and_parameters_kept_loses_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(execo, "_RECLAIM_EVERY", 0.0)
    d = make_sweep(tmp_path / "s", range(12))
    killed = subprocess.run([sys.executable, "-c", KILLED_WHILE_TAKING_AHEAD, str(d)], capture_output=True,
                            text=True, timeout=60)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    held_back = set(eval(killed.stdout))  # noqa: S307 - a list of ints printed by the child
    done = set(ParamSweeper(str(d)).get_done())
    assert len(held_back) == 2 and len(done) == 1 and not done & held_back
    assert on_disk_in_progress(d) >= set(range(12)) - done  # the held acks and the kept ones, leased
    early = ExecoEngine(str(d), 60)
    early.open()
    assert early.next_many(12, 0) == []  # under their leases
    late = ExecoEngine(str(d), 60, clock=Later(81))
    late.open()
    back = late.next_many(12, 0)
    assert {m.param for m in back} == set(range(12)) - done
    assert all(m.attempt == 2 and m.reclaimed for m in back)
    # The dead minion's lease file, run out, went with the reclaim: only the live one's is left.
    assert [str(p) for p in (d / ".minionize" / "leases").iterdir()] == [late._own_lease.path]
    for message in back:
        late.ack(message)
    assert late.drained()
    assert sorted(ParamSweeper(str(d)).get_done()) == list(range(12))


def test_what_was_kept_past_the_minions_lease_is_let_go_without_a_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Kept through a pause without runs (a strike's), which renew nothing: another minion may have reclaimed
    them meanwhile, and a release would take them out of `inprogress` under its feet."""
    monkeypatch.setattr(execo, "_RECLAIM_EVERY", 0.0)
    d = make_sweep(tmp_path / "s", range(10))
    lease_clock = Later(0)
    minion = ExecoEngine(str(d), 60, take_ahead=10.0, clock=lease_clock)
    minion.open()
    first, running = taking_ahead(minion)
    kept = {m.param for m in minion._kept.messages()}
    assert kept
    pace = Clock()
    minion._kept.clock = pace
    minion._kept.keep(minion._kept.take_all())
    lease_clock.shift = 81  # the minion's lease ran out and a third more
    pace.now += minion.lease_interval + 1
    minion.extend([])
    assert not minion._kept and not kept & set(minion._mine.values())
    assert kept <= on_disk_in_progress(d)  # nothing written: left to the reclaim
    later = Later(81)
    late = ExecoEngine(str(d), 60, clock=later)
    late.open()
    late.next_many(10, 0)  # no longer in a lease: a lease period from now
    later.shift += 81
    back = late.next_many(10, 0)
    assert kept <= {m.param for m in back if m.reclaimed and m.attempt == 2}


def test_a_minion_waiting_for_what_others_hold_looks_again_soon_then_less_often(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At the end of a sweep, what a stopping minion took ahead comes back at once: the first looks come
    quickly; a long wait (another minion's long run) is looked at every half second."""
    d = make_sweep(tmp_path / "s", range(3))
    holder, waiter = opened(d), opened(d)
    held = holder.next_many(3, 0)
    assert len(held) == 3
    waits: list[float] = []
    monkeypatch.setattr(execo.time, "sleep", waits.append)
    for _ in range(6):
        assert waiter.next_many(1, 10) == []
    assert waits == [0.05, 0.1, 0.2, 0.4, 0.5, 0.5]
    holder.release(held[0])
    assert [m.param for m in waiter.next_many(1, 10)] == [held[0].param]
    waits.clear()
    assert waiter.next_many(1, 10) == [] and waits == [0.05]  # a take started the waits again
