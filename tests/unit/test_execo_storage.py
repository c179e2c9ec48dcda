"""Storage faults under the execo engine: ENOSPC, EIO or a kill at every write.

`FaultyOs` stands in for the `os` module of minionize/engines/sweepfiles.py,
through which every change to a sweep directory goes, and fails its n-th
write (a call that changes the disk: creating a file, write, fsync,
rename, unlink, truncate). A write that fails writes half its bytes first,
as a full disk does. A kill raises `Killed`, which no `except OSError` of
the engine catches: what was not done by then stays undone (descriptors are
closed, as the kernel would), and the minion is never used again.

After each fault, the invariant: every parameter of the sweep is done, set
aside, or takeable, and none is taken twice. Checked by fresh minions: one
at once (it must not get what a live minion holds under a fresh lease, nor
anything done or failed, and it finds no temporary left), one after every
lease has run out (it takes and acks what is left: then everything is done
or failed, and plain execo reads the directory). The same with a victim
that takes ahead and holds its acks back (EXECO_TAKE_AHEAD): an ack not
written yet when it dies is a run to do again, as a run killed midway is.
"""

from __future__ import annotations

import errno
import os
import pickle
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import pytest
from execo_engine.sweep import ParamSweeper
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from minionize.engines import execo, sweepfiles
from minionize.engines.execo import ExecoEngine, param_key
from minionize.errors import QueueUnreachable
from minionize.message import Message

LEASE = 60.0
FAULTS = ("ENOSPC", "EIO", "kill")


class Killed(BaseException):
    """The minion was SIGKILLed at this write."""


class FaultyOs:
    """The `os` module, failing at the `fail_at`-th write while armed."""

    WRITES = frozenset({"open", "write", "pwrite", "fsync", "replace", "unlink", "ftruncate"})

    def __init__(self) -> None:
        self.armed = False
        self.fail_at: Optional[int] = None
        self.fault = "ENOSPC"
        self.writes: list[str] = []

    def __getattr__(self, name: str) -> Any:
        real = getattr(os, name)
        if name not in self.WRITES:
            return real

        def call(*args: Any, **kwargs: Any) -> Any:
            if name == "open" and not args[1] & os.O_CREAT:
                return real(*args, **kwargs)
            if self.armed:
                self.writes.append(f"{name}{_shown(args)}")
                if len(self.writes) - 1 == self.fail_at:
                    self._fail(name, args)
            if name == "fsync":
                return None  # durability across a crash of the machine is not what these tests see: saves time
            return real(*args, **kwargs)

        return call

    def _fail(self, name: str, args: tuple[Any, ...]) -> None:
        if name == "write":
            os.write(args[0], bytes(args[1])[: max(1, len(args[1]) // 2)])  # torn, as on a full disk
        if name == "pwrite":
            os.pwrite(args[0], bytes(args[1])[: max(1, len(args[1]) // 2)], args[2])
        if self.fault == "kill":
            raise Killed(self.writes[-1])
        code = errno.ENOSPC if self.fault == "ENOSPC" else errno.EIO
        raise OSError(code, os.strerror(code))


def _shown(args: tuple[Any, ...]) -> str:
    first = args[0]
    return f"({Path(first).name if isinstance(first, (str, Path)) else 'fd'})"


@dataclass
class Clock:
    now: float = field(default_factory=lambda: __import__("time").time())

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def faulty(monkeypatch: pytest.MonkeyPatch) -> Iterator[FaultyOs]:
    wrapper = FaultyOs()
    monkeypatch.setattr(sweepfiles, "os", wrapper)
    monkeypatch.setattr(execo, "_RECLAIM_EVERY", 0.0)
    yield wrapper


class Minion:
    """An engine and what it believes it holds; `dead` once killed."""

    def __init__(self, directory: Path, clock: Clock, take_ahead: float = 0.0) -> None:
        self.engine = ExecoEngine(str(directory), LEASE, clock=clock, take_ahead=take_ahead)
        self.engine.open()
        self.held: dict[Any, Message] = {}
        self.dead = False
        self.most_kept = 0  # the most parameters it took ahead at once

    def take(self) -> Optional[Message]:
        message = self.engine.next(0)
        if message is not None:
            self.held[message.param] = message
        self.most_kept = max(self.most_kept, len(self.engine._kept))
        return message

    def settle(self, how: str, param: Any) -> None:
        message = self.held.pop(param)
        getattr(self.engine, how)(*([message, "boom"] if how == "fail" else [message]))


@dataclass
class World:
    """A sweep, a live minion `other` holding a parameter, the minion under faults, what was settled."""

    directory: Path
    clock: Clock
    faulty: FaultyOs
    other: Minion
    victim: Minion
    acked: set[Any] = field(default_factory=set)
    failed: set[Any] = field(default_factory=set)

    @classmethod
    def make(cls, directory: Path, faulty: FaultyOs, size: int = 8, ahead: bool = False) -> World:
        ParamSweeper(str(directory), sweeps=range(size), save_sweeps=True)
        clock = Clock()
        other = Minion(directory, clock)
        assert other.take() is not None
        # Taking ahead: a window (10 s) longer than any run of the test.
        return cls(directory, clock, faulty, other, Minion(directory, clock, take_ahead=10.0 * ahead))

    def written(self) -> set[Any]:
        """The acks made and written (an ack of a short run waits for the victim's next lock)."""
        return self.acked - set(self.victim.engine._acked)

    def act(self, step: Callable[[World], None]) -> bool:
        """Run a step of the victim under faults; False once it was killed."""
        if self.victim.dead:
            return False
        self.faulty.armed = True
        try:
            step(self)
        except OSError as exc:
            assert exc.errno in (errno.ENOSPC, errno.EIO), exc  # the worker pauses and goes on
        except QueueUnreachable as exc:  # minion-push exits 3 and says why
            assert "No space left" in str(exc) or "Input/output error" in str(exc), exc
        except Killed:
            self.victim.dead = True
        finally:
            self.faulty.armed = False
        return not self.victim.dead


# -- the steps of a minion's life, each ending in writes ------------------------------


def take(world: World) -> None:
    world.victim.take()


def settle(how: str) -> Callable[[World], None]:
    def step(world: World) -> None:
        if world.victim.held:
            param = next(iter(world.victim.held))
            world.victim.settle(how, param)  # raises on a fault: then not settled
            {"ack": world.acked, "fail": world.failed}.get(how, set()).add(param)

    step.__name__ = how
    return step


def renew(world: World) -> None:
    world.victim.engine.extend(list(world.victim.held.values()))


def look(world: World) -> None:
    world.victim.engine.drained()


def grow(world: World) -> None:
    world.victim.engine.push([100, 101])


STORY = [take, take, take, settle("ack"), settle("nack"), renew, take, settle("fail"), grow, take,
         settle("release"), look, take, settle("ack")]


# -- the invariant ----------------------------------------------------------------------


def leased_to_the_living(world: World) -> set[Any]:
    """Parameters that a live minion runs under a lease that has not run out."""
    holders = [world.other] + ([] if world.victim.dead else [world.victim])
    leases = world.other.engine._leases()  # every minion's lease file, read as any minion reads them
    live = set()
    for minion in holders:
        for param in minion.held:
            expires = leases.get(param_key(param))
            if expires is not None and expires + LEASE / 3 >= world.clock():
                live.add(param)
    return live


def leftovers(directory: Path) -> list[str]:
    names = [p.name for p in directory.iterdir() if p.name.endswith(".tmp")]
    return names + [p.name for p in (directory / ".minionize" / "leases").iterdir() if p.name.startswith(".")]


def take_and_ack_all(minion: Minion) -> set[Any]:
    taken = set()
    while (message := minion.take()) is not None:
        taken.add(message.param)
        minion.settle("ack", message.param)
    return taken


def check_invariant(world: World, where: str) -> None:
    holding = leased_to_the_living(world)
    at_once = Minion(world.directory, world.clock)  # opening the sweep cleans up after the dead
    # Only a lease's temporary may be left (renewals write them without the lock): until it is old.
    assert not [name for name in leftovers(world.directory) if name.endswith(".tmp")], where
    first = take_and_ack_all(at_once)
    assert not first & holding, f"{where}: a parameter held by a live minion was taken again"
    settled = world.written() | world.failed
    assert not first & settled, f"{where}: a settled parameter was taken again"
    world.clock.now += 3 * LEASE  # every minion of the story is dead now
    late = Minion(world.directory, world.clock)
    assert not leftovers(world.directory), f"{where}: temporaries left: {leftovers(world.directory)}"
    second: set[Any] = set()
    for _ in range(3):  # a parameter in progress without a lease: seen once, reclaimed a lease later
        second |= take_and_ack_all(late)
        if late.engine.drained():
            break
        world.clock.now += 2 * LEASE
    assert late.engine.drained(), f"{where}: never drained; {late.engine.remaining()} stranded"
    assert not second & settled, f"{where}: a settled parameter was taken again"
    late.engine.close()
    reader = ParamSweeper(str(world.directory))
    assert not reader.get_inprogress(), where
    assert set(reader.get_remaining()) == _failed_on_disk(world.directory), where
    assert world.written() <= set(reader.get_done()) and world.failed <= _failed_on_disk(world.directory), where
    assert not list((world.directory / ".minionize" / "leases").iterdir()), where


def _failed_on_disk(directory: Path) -> set[Any]:
    failed = set()
    with open(directory / ".minionize" / "journal", "rb") as journal:
        while True:
            try:
                event, param, _ = pickle.load(journal)
            except EOFError:
                return failed
            if event == "fail":
                failed.add(param)


def count_writes(tmp_path: Path, faulty: FaultyOs, ahead: bool) -> list[str]:
    world = World.make(tmp_path / "count", faulty, ahead=ahead)
    for step in STORY:
        world.act(step)
    if ahead:  # after its first ack, a take kept the rest of the sweep, and acks waited for a lock
        assert world.victim.most_kept >= 3 and world.written() < world.acked
    check_invariant(world, "without faults")
    writes, faulty.writes = faulty.writes, []
    return writes


# -- the tests ---------------------------------------------------------------------------


@pytest.mark.parametrize("ahead", [False, True], ids=["one-per-slot", "taking-ahead"])
@pytest.mark.parametrize("fault", FAULTS)
def test_a_fault_at_every_write_keeps_every_parameter_done_set_aside_or_takeable(
    tmp_path: Path, faulty: FaultyOs, fault: str, ahead: bool
) -> None:
    writes = count_writes(tmp_path, faulty, ahead)
    assert len(writes) > 40, writes  # the story writes every kind of file
    faulty.fault = fault
    for point, write in enumerate(writes):
        faulty.fail_at = point
        world = World.make(tmp_path / f"at-{point}", faulty, ahead=ahead)
        for step in STORY:
            if not world.act(step):
                break
        check_invariant(world, f"{fault} at write {point}, {write}")
        faulty.writes = []


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    story=st.lists(st.sampled_from([take, settle("ack"), settle("nack"), settle("fail"), settle("release"),
                                    renew, look, grow]), max_size=16),
    faults=st.lists(st.tuples(st.integers(0, 60), st.sampled_from(FAULTS)), max_size=3),
    ahead=st.booleans(),
)
def test_any_story_with_faults_keeps_the_invariant(
    tmp_path_factory: pytest.TempPathFactory, faulty: FaultyOs, story: list[Callable[[World], None]],
    faults: list[tuple[int, str]], ahead: bool,
) -> None:
    world = World.make(tmp_path_factory.mktemp("story"), faulty, ahead=ahead)
    pending = sorted(faults)
    for step in story:
        if pending and len(faulty.writes) <= pending[0][0]:
            faulty.fail_at, faulty.fault = pending[0]
        if not world.act(step):
            break
        if pending and len(faulty.writes) > pending[0][0]:
            pending.pop(0)
    faulty.fail_at, faulty.writes = None, []
    check_invariant(world, f"story {[s.__name__ for s in story]} with faults {faults}")


def test_a_full_disk_at_take_leaves_the_parameter_takeable_not_stranded(tmp_path: Path, faulty: FaultyOs) -> None:
    """The issue's case: ENOSPC writing the lease left the parameter in `inprogress`, leaseless, forever."""
    world = World.make(tmp_path / "s", faulty, size=2)
    faulty.fault = "ENOSPC"
    for point in range(8):  # every write of a take fails in turn
        faulty.fail_at, faulty.writes = point, []
        world.act(take)
    faulty.fail_at = None
    fresh = Minion(world.directory, world.clock)
    assert {m.param for m in iter(fresh.take, None)} | set(world.victim.held) == {0, 1} - set(world.other.held)
