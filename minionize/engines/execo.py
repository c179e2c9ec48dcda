"""A sweep in a shared directory, in the format of execo's ParamSweeper.

What it is
    The default engine: no server, only a directory on a file system that
    every minion sees (NFS on a cluster). The directory is the one execo's
    `ParamSweeper(dir, sweeps=..., save_sweeps=True)` creates (files `sweeps`,
    `done`, `inprogress`), read and written here under execo's own `lockf`
    lock (on `done`, which execo always takes first), so execo keeps reading
    it. Minionize adds `.minionize/` beside them: a journal of retries and
    failures, one lease file per minion (`leases/minion.<host>_<pid>_<id>`,
    the keys of the parameters it holds and when its lease runs out: see
    minionize/engines/sweepleases.py), `params`, the sweep held
    compactly (see minionize/engines/sweepindex.py), `donemap`, where
    each record of `done` that minionize wrote is and which parameter it
    names (see minionize/engines/sweepstate.py), and `line`, an empty file
    whose lock the minions waiting for a busy sweep queue on. What a minion knows of
    the sweep, read from these files, is minionize/engines/sweepstate.py.

A fleet
    Every minion reads every record the others write (execo's one `done`
    and one `inprogress`), so that is kept cheap: `done` is read before the
    sweep's lock is taken (under it, only what was appended meanwhile; the
    minions that wait for a busy lock wait in line, `.minionize/line`, and
    the first in line reads while the lock's holder works; a record with a
    place in `donemap` is only compared with the sweep's pickle, neither
    unpickled nor looked up), `inprogress` as one set, and a take walks what is neither done nor
    failed from a place of the minion's own in the sweep, passing over
    what is in progress (a minion alone starts at the beginning): the
    minions of a fleet do not walk over what the others just took.
    Parameters given back (a nack, a release, a reclaim) are tried first.

Environment
    EXECO_PERSISTENCE_DIR (path, default `sweeps`): the sweep directory.
    MINION_LEASE_SECONDS (seconds, default 60): how long a parameter stays
        reserved for a minion that stopped renewing it.
    EXECO_TAKE_AHEAD (seconds, default 0.05; 0: off): when runs are this
        short, a minion takes, with the parameters its free slots ask for,
        as many more as its slots finish in that time and in the time it
        waits for the sweep's lock (32 at most), and writes its acks
        together at its next take: one lock of the sweep for several
        parameters (see minionize/engines/takeahead.py). A run of this
        length (plus that wait) or longer is taken one per free slot, its
        ack written at once: a minion never holds work that another one
        could start sooner.

Ack and nack
    Ack marks the parameter done (execo's `done`). Nack takes it out of
    `inprogress` (execo's `cancel`) and counts the attempt in the journal, so
    that any minion picks it up again; a release (a stopped minion) does the
    same without counting an attempt, so that preemptions never set a
    parameter aside. Fail sets it aside: it leaves `inprogress` and the
    journal records it with the reason, so that no minion takes it again;
    plain execo, which does not read the journal, still counts it as
    remaining (`minion-status --failed` lists it). With short runs
    (EXECO_TAKE_AHEAD), an ack's record waits for the minion's next take
    (a few runs later, well under a second), its close, or its next lease
    renewal; the parameters taken ahead are released at close, or once
    kept as long as a lease renewal.

A crashed minion
    A minion rewrites its lease at each take and every third of
    MINION_LEASE_SECONDS while it runs something. A minion that finds nothing left to take reclaims
    the parameters whose lease expired more than a third of the lease ago
    (the margin tolerates that much clock skew between hosts), and those in
    `inprogress` with no lease (a minion died or met a full disk between two
    writes; plain execo code took it) once it has seen them so for as long.
    Until the earliest lease it saw can have run out, a minion reads no
    lease file again (a fleet's idle minions would read them all each second).
    A reclaim counts the attempt that died with its minion: a parameter that
    kills every minion that runs it is set aside after MINION_MAX_ATTEMPTS.
    A minion killed with acks not yet written (short runs) or parameters
    taken ahead has them reclaimed the same way: they run again.
    The next minion to open the sweep deletes the temporary files of a
    killed one.

Storage faults
    Every write is crash-atomic (see minionize/engines/sweepfiles.py):
    `inprogress` and `sweeps` are replaced through a temporary and a rename
    (an exchange, for `inprogress`), `done` and the journal grow by appends
    that are cut back when they fail, a minion's lease is rewritten in place
    (read torn, or torn by a kill, it counts as no lease: its parameters get
    a whole lease period from when a minion first sees them so). Whichever write fails
    (ENOSPC, EDQUOT, EIO) or is the last before a kill, every parameter stays
    done, set aside, or takeable; the engine call raises OSError and the
    worker tries again after a pause. What recovery needs is synced: an ack
    (once the sweep's lock is let go, before the call returns: a fleet does
    not wait for one minion's disk), a failure and a nack (before the
    parameter leaves `inprogress`), a push; an ack's record lost with the
    machine before its sync makes its parameter remaining again. `inprogress`
    and the leases are not: a crash
    of the machine that loses or empties them makes the parameters they
    named reclaimable a lease later, as when their minions die with it; an
    older `inprogress` only names parameters done since (ignored) or
    released since (reclaimed). An ack leaves its parameter in `inprogress`,
    as done (every minion reads it so): the next write drops it.

Caveats
    A parameter put in `inprogress` by plain execo code has no lease: it is
    reclaimed after a lease period, even if that code still runs it. Plain
    execo rewrites `inprogress` in place: should it be killed midway,
    minionize takes the parameters that still have a lease as in progress.
    Older minionize (before these atomic writes) opened `inprogress` before
    taking the lock, missing renames: do not mix its minions with these.
    Minionize before the minions' lease files wrote a lease per parameter
    (`leases/<key>`): still read, never written; those minions do not read
    the new files, and would take a parameter running longer than a lease
    here for a dead minion's: do not mix them with these on one sweep.
    Parameters must be picklable and hashable (execo's own rule). Failed
    parameters are not `skipped` for a plain ParamSweeper, which keeps skips
    in memory only.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import hashlib
import json
import os
import pickle
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Optional

from ..config import EnvReader
from ..errors import ConfigError, MinionizeError, QueueUnreachable
from ..message import Message
from . import sweepfiles, sweepindex, sweepleases
from .base import DeadLetter, Engine, Pushed
from .kit import Setting, read_settings
from .sweepstate import SweepState
from .takeahead import TakeAhead

# POSIX record locks are per process: threads of one process need this too.
_PROCESS_LOCK = threading.RLock()
_RECLAIM_EVERY = 1.0
_IDLE_WAIT_LEAST, _IDLE_WAIT_MOST = 0.05, 0.5  # between two looks of a minion waiting for others' parameters


def param_key(param: Any) -> str:
    """A stable name for a parameter, the same in every minion."""
    return hashlib.sha1(pickle.dumps(param, protocol=4)).hexdigest()[:20]


def _unusable(directory: Path, exc: OSError) -> MinionizeError:
    """A directory this user may not write is a configuration error; other faults, the storage's."""
    if isinstance(exc, PermissionError) or exc.errno == errno.EROFS:
        where = f"{exc.filename}: " if exc.filename else ""
        accepted = f"a directory this minion can read and write ({where}{exc.strerror})"
        return ConfigError("EXECO_PERSISTENCE_DIR", str(directory), accepted)
    return QueueUnreachable(f"cannot use the sweep in {directory}: {exc}")


class ExecoEngine(Engine):
    name = "execo"
    title = "Execo"
    settings = (
        Setting("EXECO_PERSISTENCE_DIR", "path", "the sweep's directory, shared by the minions", default="sweeps"),
        Setting("MINION_LEASE_SECONDS", "seconds", "a dead minion's parameter comes back after it and a third more",
                default=60.0, minimum=1, chart="leaseSeconds"),
        Setting("EXECO_TAKE_AHEAD", "seconds", "runs shorter than this are taken several per lock of the sweep "
                "(0: one per free slot)", default=0.05, minimum=0, maximum=10, example=0.2),
    )
    any_thread = True
    input_ends = tells_drained = True  # the sweep is done
    has_deadline = True  # the lease (MINION_LEASE_SECONDS)
    ack_delay = 0.05  # EXECO_TAKE_AHEAD's default: the acks of shorter runs wait for the minion's next take

    def __init__(
        self, directory: str = "sweeps", lease_seconds: float = 60.0, clock: Callable[[], float] = time.time,
        take_ahead: float = 0.0,
    ) -> None:
        self.directory = Path(directory)
        self.lease_seconds = lease_seconds
        self.lease_interval = lease_seconds / 3
        #: The wall clock of leases (hosts compare their expiry times).
        self.clock = clock
        self.minion = f"{os.uname().nodename}:{os.getpid()}:{os.urandom(3).hex()}"
        self._tag = self.minion.replace(":", "_")  # names this minion's temporaries
        # The paths of every take and settlement, as strings: pathlib's joins cost more than their writes.
        self._done_file = os.path.join(directory, "done")
        self._journal_file = os.path.join(directory, ".minionize", "journal")
        self._line_file = os.path.join(directory, ".minionize", "line")
        self._leases_dir = os.path.join(directory, ".minionize", "leases", "")
        #: This minion's lease file, rewritten in place at each take and renewal (sweepleases.py).
        self._own_lease = sweepleases.MinionLease(self._leases_dir, self._tag, self.minion, lease_seconds, clock)
        self._idle_wait = _IDLE_WAIT_LEAST
        #: What this minion knows of the sweep (sweepstate.py), brought up to date under the lock.
        self._sweep = SweepState(str(self.directory), self._tag, self._leased)
        self._mine: dict[str, Any] = {}
        self._reclaimed: set[Any] = set()
        self._unleased: dict[str, float] = {}  # key -> when its lease period ends
        self._key_of: dict[Any, str] = {}  # see `_keys`
        self._last_reclaim = 0.0
        self._reclaim_due = 0.0  # `self.clock` time before which no lease seen can have run out (`_reclaim`)
        #: Seconds spent waiting for the sweep's lock (bench/fleet.py reports it per parameter).
        self.lock_wait = 0.0
        #: Acks not written yet (param -> key): with short runs, the next lock of the sweep writes them.
        self._acked: dict[Any, str] = {}
        #: Parameters taken beyond the free slots when runs are short (EXECO_TAKE_AHEAD), leased and in
        #: `inprogress` like running ones; given back at close, or when kept longer than a renewal.
        self._kept = TakeAhead(take_ahead, max_age=self.lease_interval)

    @classmethod
    def from_env(cls, env: EnvReader) -> ExecoEngine:
        values = read_settings(env, cls.settings)
        return cls(values["EXECO_PERSISTENCE_DIR"], values["MINION_LEASE_SECONDS"],
                   take_ahead=values["EXECO_TAKE_AHEAD"])

    def describe(self) -> str:
        return f"execo sweep {self.directory}"

    # -- the files -------------------------------------------------------

    @property
    def _state(self) -> Path:
        return self.directory / ".minionize"

    def open(self) -> None:
        try:
            if not (self.directory / "sweeps").is_file():
                raise ConfigError(
                    "EXECO_PERSISTENCE_DIR",
                    str(self.directory),
                    "no sweep there: create one with execo's ParamSweeper(dir, sweeps=..., "
                    "save_sweeps=True)",
                )
            (self._state / "leases").mkdir(parents=True, exist_ok=True)
            self._sweep.load()
            sweepfiles.prepare_exchange()
            with self._locked():
                self._clean_up()
        except OSError as exc:
            raise _unusable(self.directory, exc) from None

    @contextmanager
    def _locked(self, full: bool = True) -> Iterator[dict[str, int]]:
        """Hold the sweep's lock (execo's: on `done`), bring the state up to date and write the acks held
        back (`_settle`); not `full`: only what `done` gained (which cuts a torn record off before an
        append), for an ack, which reads nothing else."""
        with _PROCESS_LOCK:
            done = sweepfiles.open_appendable(self._done_file)
            try:
                waited = self._lock(done)  # released by the close
                self.lock_wait += waited
                self._kept.waited(waited)
                if not full:
                    self._sweep.scan_done(done)
                    acked = self._write_acks(done)
                    yield {"done": done}
                else:
                    journal = sweepfiles.open_appendable(self._journal_file)
                    try:
                        files = {"done": done, "journal": journal}
                        self._sweep.update(files)
                        acked = self._write_acks(done)
                        yield files
                    finally:
                        os.close(journal)
                if acked:
                    # Synced once the lock is free: a fleet waits for no one's disk. The parameters may
                    # leave `inprogress` meanwhile (another minion's write): a crash of the machine in
                    # between makes them remaining again, never lost.
                    fcntl.lockf(done, fcntl.LOCK_UN)
                    sweepfiles.sync(done)
            finally:
                os.close(done)

    def _lock(self, done: int) -> float:
        """Take the sweep's lock; returns how long it took. What the fleet acked since the last look is
        read before (a fleet's minions read every record of `done`): under the lock, only what was
        appended since. A busy lock is waited for in line (`.minionize/line`, a lock of its own): the
        first in line reads what the fleet acks while the lock's holder works, then waits for the sweep's
        lock, and the others wait for their turn without reading. Before, every minion read under the
        sweep's lock what was acked while it waited (about a hundred records in a fleet of 128 on two
        cores): the lock, held that long, bounded the fleet, not the cores. (Read while waiting by a
        thread of every minion, it slowed the fleet down: the lock's holder waited for a core.)"""
        self._sweep.scan_done(done, cut=False)
        asked = time.perf_counter()
        try:
            fcntl.lockf(done, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            self._wait_in_line(done)
        return time.perf_counter() - asked

    def _wait_in_line(self, done: int) -> None:
        try:
            line = os.open(self._line_file, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError:
            fcntl.lockf(done, fcntl.LOCK_EX)  # no line (a file system that refuses it): wait as plain execo does
            return
        try:
            fcntl.lockf(line, fcntl.LOCK_EX)
            self._sweep.scan_done(done, cut=False)
            fcntl.lockf(done, fcntl.LOCK_EX)
        finally:
            os.close(line)  # the next in line reads while this minion holds the sweep

    def _write_held_acks(self) -> None:
        """Write the acks held back now, under a lock that reads only what `done` gained."""
        with self._locked(full=False):
            pass  # `_locked` writes them

    def _write_acks(self, done: int) -> bool:
        """Append the records of the acks made since the last lock, in one write, and read them back like
        the records of other minions (a take then drops them from `inprogress`); True when there were."""
        if not self._acked:
            return False
        records, positions = self._sweep.ack_records(list(self._acked))
        start = sweepfiles.append_bytes(done, records, sync=False)
        self._sweep.write_places(start, positions)
        self._acked = {}
        self._sweep.untidy = True  # `inprogress` names them still: the next write drops them
        self._sweep.scan_done(done)
        return True

    def _clean_up(self) -> None:
        """Delete what killed minions left: temporaries, their leases once run out, leases of a parameter
        no longer in progress (older minionize wrote one per parameter). A fleet starting at once opens the
        sweep a minion after another: nothing here reads what live minions write."""
        for entry in os.scandir(self.directory):
            if entry.name.startswith((".inprogress.", ".sweeps.")) and entry.name.endswith(".tmp"):
                sweepfiles.remove(Path(entry.path))  # written under the lock, which we hold: a leftover
        keys: Optional[set[str]] = None
        now = self.clock()
        for entry in os.scandir(self._state / "leases"):
            if entry.name.startswith(sweepleases.MINION):
                continue
            if not entry.name.startswith("."):
                if keys is None:
                    keys = set(self._keys(self._sweep.in_progress).values())
                if entry.name not in keys:
                    sweepfiles.remove(Path(entry.path))
            elif now > sweepleases.modified(entry.path) + self.lease_seconds:
                # A lease's temporary: renewals write them without the lock, so only an old one is a leftover.
                sweepfiles.remove(Path(entry.path))
        self._prune_leases(now)

    def _keys(self, params: set[Any]) -> dict[Any, str]:
        """The key of each parameter (`param_key`), remembered while it is in progress (reclaims ask for
        every parameter in progress)."""
        cached = self._key_of
        keys = {param: cached.get(param) or param_key(param) for param in params}
        self._key_of = keys
        return keys

    # -- leases ----------------------------------------------------------

    def _write_leases(self) -> None:
        """This minion's lease: every parameter it holds (running, taken ahead, acked but not written)."""
        self._own_lease.write([*self._mine, *self._acked.values()])

    def _leased(self, sweep: SweepState) -> set[Any]:
        """The parameters with a lease: those in progress, should `inprogress` be lost."""
        keys = set(self._leases())
        if not keys:
            return set()
        return {param for param in sweep.sweeps if not sweep.settled(param) and param_key(param) in keys}

    def _leases(self) -> dict[str, float]:
        """When the lease of each parameter runs out (sweepleases.py)."""
        return sweepleases.expiries(self._leases_dir)

    def _prune_leases(self, now: float) -> None:
        # Looked up only if a lease file is old enough to be read, once.
        in_progress = functools.cache(lambda: set(self._keys(self._sweep.in_progress).values()))
        sweepleases.prune(self._leases_dir, now, self.lease_seconds, in_progress, keep=self._own_lease.path)

    def _lease_expired(self, key: str, now: float, leases: dict[str, float]) -> bool:
        expires = leases.get(key)
        if expires is None:
            # No lease, or a torn one: its lease period starts when this minion first sees it so.
            expires = self._unleased.setdefault(key, now + self.lease_seconds)
        else:
            self._unleased.pop(key, None)
        return now > expires + self.lease_seconds / 3

    def _expired(self, keys: dict[Any, str], leases: dict[str, float], now: float) -> set[Any]:
        """The parameters in progress (with their keys) whose lease expired, but this minion's; notes when
        the earliest of the others can expire."""
        known = set(keys.values())
        self._unleased = {key: end for key, end in self._unleased.items() if key in known}
        gone, due = set(), now + self.lease_seconds
        for param, key in keys.items():
            if key in self._mine:
                continue
            if self._lease_expired(key, now, leases):
                gone.add(param)
            else:
                due = min(due, leases.get(key, self._unleased.get(key, due)))
        self._reclaim_due = due + self.lease_seconds / 3
        return gone

    def _reclaim(self, files: dict[str, int]) -> None:
        """Take out of `inprogress` the parameters whose lease expired (and those settled among them).

        An expired lease is an attempt spent (its minion died in the run, or hung): it is
        journalled as one, so that a parameter that kills every minion that runs it is set
        aside after MINION_MAX_ATTEMPTS rather than reclaimed for ever. Until the earliest lease
        seen at the last reclaim can have run out, nothing is read: a parameter taken since has a
        lease (or a lease period from when it is seen without one) that runs out no sooner.
        """
        now = self.clock()
        if now <= self._reclaim_due:
            return
        keys = self._keys(self._sweep.in_progress)
        leases = self._leases()
        gone = self._expired(keys, leases, now)
        if gone:
            for param in gone:
                if self._sweep.open(param):
                    sweepfiles.append(files["journal"], ("nack", param, "its minion's lease expired"))
            self._sweep.read_journal(files)  # counted now: the parameter may be taken again at once
            self._sweep.write_in_progress(self._sweep.in_progress - gone)
            for param in gone:
                if keys[param] in leases:
                    sweepfiles.remove(self._leases_dir + keys[param])  # an older minionize's, if it is one
                self._unleased.pop(keys[param], None)
                if self._sweep.open(param):  # the journal read above gave it back to the walk
                    self._reclaimed.add(param)
        self._prune_leases(now)

    def extend(self, messages: list[Message]) -> None:
        """Renew the leases of `messages` and of those taken ahead; those kept as long as a renewal (the
        runs before them were longer than they looked) are given back, and acks held back are written."""
        self._give_back(self._kept.stale())
        if self._acked:
            self._write_held_acks()
        if self._mine or self._own_lease.written:
            self._write_leases()

    # -- the engine contract ----------------------------------------------

    def next(self, timeout: float) -> Optional[Message]:
        messages = self.next_many(1, timeout)
        return messages[0] if messages else None

    def next_many(self, limit: int, timeout: float) -> list[Message]:
        """Up to `limit` parameters, taken under one lock with one write of `inprogress`, then leased;
        with as many more as short runs call for, kept for the next calls (takeahead.py)."""
        self._give_back(self._kept.stale())
        if self._kept:
            return self._kept.give(limit)
        wanted = limit + self._kept.extra()
        with self._locked() as files:
            found = self._sweep.take(wanted)
            if not found:
                self._refill(files)
                found = self._sweep.take(wanted)
            if found:
                messages = self._take(found)
            elif not self._waiting_for_others():
                return []  # nothing can come back but what this minion runs: no need to wait
            else:
                messages = []
        if not messages:
            # Waiting for what others hold: at the end of a sweep, what a stopping minion had taken ahead
            # comes back at once; a longer wait, a look less often (a fleet's idle minions share the lock).
            time.sleep(min(timeout, self._idle_wait))
            self._idle_wait = min(_IDLE_WAIT_MOST, 2 * self._idle_wait)
            return []
        self._idle_wait = _IDLE_WAIT_LEAST
        self._lease(messages)
        self._kept.keep(messages[limit:])
        self._kept.handed(messages[:limit])
        return messages[:limit]

    def _give_back(self, messages: list[Message]) -> None:
        """Release kept messages (no attempt counted); one that cannot be comes back after its lease. Once
        this minion's lease ran out (kept through a pause without runs, which renew it), another minion
        may have reclaimed them: they are let go without a write, which would take them from it."""
        lapsed = self.clock() > self._own_lease.until
        for message in messages:
            if lapsed:
                self._mine.pop(message.id, None)
                continue
            with contextlib.suppress(OSError):
                self.release(message)

    def _lease(self, messages: list[Message]) -> None:
        """The lease of parameters just taken, written once the sweep's lock is let go: meanwhile, a
        minion that sees them in progress without a lease gives them a whole lease period, as to those
        of a minion killed in between. Should it fail, they are given back: nobody may run them."""
        try:
            self._write_leases()
        except OSError:
            for message in messages:
                with contextlib.suppress(OSError):  # left without a lease, reclaimed a lease period later
                    self.release(message)
            raise

    def _waiting_for_others(self) -> bool:
        """Parameters in progress elsewhere, which may come back (a nack, an expired lease): with nothing
        to take, whatever remains (neither done nor failed) is in progress."""
        return len(self._sweep.remaining) > sum(map(self._sweep.open, self._mine.values()))

    def _take(self, found: dict[int, Any]) -> list[Message]:
        """Put the parameters found (by their places) in `inprogress` (their leases come next: `_lease`)."""
        params = list(found.values())
        keys = [param_key(param) for param in params]
        self._key_of.update(zip(params, keys, strict=True))
        self._sweep.write_in_progress(self._sweep.in_progress | set(params))
        messages = []
        for key, param in zip(keys, params, strict=True):
            self._mine[key] = param
            message = Message(key, param, self._sweep.attempts.get(param, 0) + 1)
            message.reclaimed = param in self._reclaimed
            self._reclaimed.discard(param)
            messages.append(message)
        return messages

    def _refill(self, files: dict[str, int]) -> None:
        """Look harder when nothing seems left: a grown sweep, expired leases."""
        self._sweep.load()  # a grown sweep: its remaining set is computed afresh
        now = time.monotonic()
        if now - self._last_reclaim >= _RECLAIM_EVERY:
            self._last_reclaim = now
            self._reclaim(files)

    def drained(self) -> bool:
        with self._locked() as files:
            self._refill(files)
            if not self._mine:
                self._sweep.tidy()
            # Whatever remains (neither done nor failed) is taken, in progress or not.
            return not self._sweep.remaining and not self._mine

    def _settle(self, message: Message, event: str, detail: Any = None) -> None:
        """The record (durable), then `inprogress`, then the lease: a fault in between leaves the
        parameter settled and in progress, which the next reclaim tidies, or still leased to this
        minion, which stops renewing it: it comes back after its lease.

        An ack leaves its parameter in `inprogress` (done and in progress is done for every minion):
        the next take drops it in the write it makes anyway (or `drained`, `close`, a reclaim),
        which saves a write of `inprogress` per parameter. When runs are short (EXECO_TAKE_AHEAD), the
        record itself waits for the next lock of the sweep, a take's mostly (`_locked`): one write and
        one sync for several acks, and one lock fewer for each. Meanwhile the parameter is in progress,
        under its lease, for every other minion: a minion killed before the write has its last acks run
        again, as a minion killed in a run has its run."""
        param = self._mine.pop(message.id, message.param)
        self._kept.settled(message, ran=event != "release")
        if event == "done":
            self._acked[param] = message.id
            if not self._kept.extra():
                self._write_held_acks()
            return
        with self._locked() as files:
            # Read back by the next `SweepState.update`, like the records of other minions (a nack or a
            # release gives the parameter back to the walk then).
            sweepfiles.append(files["journal"], (event, param, detail))
            self._sweep.write_in_progress(self._sweep.in_progress - {param})

    def ack(self, message: Message) -> None:
        self._settle(message, "done")

    def nack(self, message: Message) -> None:
        self._settle(message, "nack")

    def release(self, message: Message) -> None:
        self._settle(message, "release")

    def fail(self, message: Message, reason: str) -> None:
        self._settle(message, "fail", reason)

    def push(self, params: list[Any]) -> str:
        try:
            (self._state / "leases").mkdir(parents=True, exist_ok=True)
            with self._locked():  # one push at a time: each adds to what is there
                if (self.directory / "sweeps").is_file():
                    self._sweep.load()
                given = sweepindex.hashable(params)
                merged = set(self._sweep.sweeps)  # first: a parameter there already keeps its pickle (sweepindex)
                size = len(merged)
                merged |= given
                new = len(merged) - size
                data = pickle.dumps(merged, protocol=sweepfiles.PROTOCOL)
                temporary = self.directory / f".sweeps.{self._tag}.tmp"
                sweepfiles.replace(self.directory / "sweeps", data, temporary, sync=True)
                index = self.directory / f".sweeps.{self._tag}.params.tmp"
                sweepindex.write(self._sweep.params_file, index, sweepindex.SweepIndex.of(merged),
                                 sweepindex.stamp_of(data))
        except OSError as exc:
            raise _unusable(self.directory, exc) from None
        pushed = Pushed(f"execo sweep {self.directory} ({len(merged)} parameters in the sweep)")
        pushed.new = new
        return pushed

    def dead_letters(self) -> list[DeadLetter]:
        """The parameters the journal records as failed, with their reasons (execo itself lists them as remaining)."""
        self.open()
        try:
            with self._locked():
                failed = dict(self._sweep.failed)
        except OSError as exc:
            raise _unusable(self.directory, exc) from None
        text = [p if isinstance(p, str) else json.dumps(p, default=str) for p in failed]
        return [DeadLetter(param, str(why)) for param, why in zip(text, failed.values(), strict=True)]

    def retry_failed(self) -> int:
        """Journal a new round for every failed parameter (execo itself never saw them as done)."""
        self.open()
        try:
            with self._locked() as files:
                failed = list(self._sweep.failed)
                for param in failed:
                    sweepfiles.append(files["journal"], ("retry", param, None))
                self._sweep.read_journal(files)
        except OSError as exc:
            raise _unusable(self.directory, exc) from None
        return len(failed)

    def remaining(self) -> Optional[int]:
        # Neither done nor failed, in progress or not, less what this minion acked and did not write yet.
        return len(self._sweep.remaining) - sum(map(self._sweep.open, self._acked))

    def close(self) -> None:
        self._give_back(self._kept.take_all())
        if self._sweep.untidy or self._acked:
            try:
                with self._locked():
                    self._sweep.tidy()
            except OSError:
                pass  # left to the next minion's reclaim, which drops settled parameters
        sweepfiles.remove(self._sweep.inprogress_temporary)  # what the last exchange left: the `inprogress` before
        self._own_lease.remove()
