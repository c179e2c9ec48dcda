"""What one minion knows of an execo sweep: its parameters, and which are done, failed, in progress, remaining.

The execo engine (execo.py) brings it up to date under the sweep's lock,
from the files every minion appends to (`done`, the journal) or replaces
(`inprogress`), then decides what to take and what to write. Each minion
reads every record the others write: the bookkeeping here is what a fleet
pays per parameter and per minion, so the parameters in progress are
placed in the sweep once each (`position`, `look_ahead`), and `done` is
read by the pickles of its records when there are many (a minion catching
up).
"""

from __future__ import annotations

import fcntl
import itertools
import os
import pickle
from typing import Any, Callable, Optional

from ..errors import ConfigError
from . import sweepfiles, sweepindex


class SweepState:
    """The sweep in `directory` as this minion last read it; `leased` gives the parameters with a lease, which
    stand for `inprogress` when that file is empty (never written, or plain execo killed in its rewrite)."""

    def __init__(self, directory: str, tag: str, leased: Callable[[SweepState], set[Any]]) -> None:
        self.directory = directory
        self._leased = leased
        self.inprogress_file = os.path.join(directory, "inprogress")
        self.inprogress_temporary = os.path.join(directory, f".inprogress.{tag}.tmp")
        self.params_file = os.path.join(directory, ".minionize", "params")  # the sweep, compact (sweepindex)
        self.sweeps = sweepindex.SweepIndex.of(())
        self._sweeps_stat: tuple[int, int, int] = (0, 0, 0)
        self.done = sweepindex.Done(self.sweeps)
        self.done_pos = 0
        self.attempts: dict[Any, int] = {}
        self.failed: dict[Any, str] = {}
        self._journal_pos = 0
        self.in_progress: set[Any] = set()
        #: Each parameter in progress (as last read, and those taken here): its place in the sweep (None:
        #: outside it), looked up once while it is in progress (`position`, `look_ahead`): each take of a
        #: fleet's minion reads as many parameters newly in progress as the fleet has minions.
        self.where: dict[Any, Optional[int]] = {}
        self.finished: set[Any] = set()  # those of them done or failed
        self._ahead: dict[Any, int] = {}  # parameters just after where this minion takes (`look_ahead`)
        self._caught_up = False  # `done` read by the pickles of its records (`scan_done`)
        self.remaining = sweepindex.Remaining(self.sweeps, done=self.done)
        self.untidy = False  # `inprogress` still names parameters acked here (see ExecoEngine._settle)

    def load(self) -> bool:
        """(Re)load the sweep when its file changed; True when it did."""
        path = os.path.join(self.directory, "sweeps")
        stat = os.stat(path)
        if (stat.st_ino, stat.st_mtime_ns, stat.st_size) == self._sweeps_stat:
            return False
        with open(path, "rb") as handle:
            # Plain execo's save_sweeps rewrites the file in place under LOCK_EX.
            fcntl.lockf(handle, fcntl.LOCK_SH)
            stat = os.fstat(handle.fileno())
            try:
                data = handle.read()
                sweeps = sweepindex.read(self.params_file, sweepindex.stamp_of(data)) or sweepindex.load(
                    data, self.params_file)
            except sweepfiles.TORN as exc:
                if self._sweeps_stat != (0, 0, 0):
                    return False  # being rewritten by plain execo: keep the last one, read it next time
                accepted = f"its sweeps file cannot be read ({type(exc).__name__}: {exc}): write the sweep again"
                raise ConfigError("EXECO_PERSISTENCE_DIR", self.directory, accepted) from None
            finally:
                fcntl.lockf(handle, fcntl.LOCK_UN)
        self.sweeps, self._sweeps_stat = sweeps, (stat.st_ino, stat.st_mtime_ns, stat.st_size)
        # Positions in the sweep loaded before.
        self.where, self.finished, self._ahead = {}, set(), {}
        self.done = self.done.onto(sweeps)
        self.remaining = sweepindex.Remaining(sweeps, itertools.chain(self.failed, self.in_progress), self.done)
        return True

    # -- reading what the minions wrote -------------------------------------

    def scan_done(self, done: int) -> None:
        """Read the records appended to `done` since the last read."""
        self._caught_up = False
        self.done_pos = sweepfiles.scan_appended(done, self.done_pos, self._mark_done, self._done_pickle)
        if self._caught_up:  # records found by their pickle: which of the parameters in progress are done?
            self.finished = {param for param, position in self.where.items() if self.settled_at(param, position)}

    def _mark_done(self, param: Any) -> None:
        """A record of `done`: most name a parameter this minion saw in progress."""
        if param not in self.where:
            self.remaining.mark_done(param)
            return
        self.remaining.mark_done_at(param, self.where[param])
        self.finished.add(param)

    def _done_pickle(self, key: memoryview) -> bool:
        """A record of `done` read as its bytes (many of them: a minion catching up)."""
        self._caught_up = True
        return self.remaining.mark_done_pickle(key)

    def update(self, files: dict[str, int]) -> None:
        """Read what changed since the last read: `done`, the journal, `inprogress`."""
        self.scan_done(files["done"])
        new_failed = self.read_journal(files)
        current = self._read_in_progress()
        left = self.in_progress - current
        # Only what is newly in progress can still be remaining (nothing in progress ever is).
        new = current - self.in_progress
        self._look_ahead(new)
        for param in new:
            position = self.position(param)
            if position is not None:
                self.remaining.discard_at(position)
        # What left `inprogress` without being done or failed was given back.
        for param in left - self.finished:
            position = self.position(param)
            if position is not None and not self.settled_at(param, position):
                self.remaining.add_at(position)
        self.forget(left)
        self.in_progress = current
        self.remaining.difference_update(new_failed)

    def read_journal(self, files: dict[str, int]) -> list[Any]:
        """Count the attempts journalled since the last read; returns the parameters newly failed."""
        events, self._journal_pos = sweepfiles.read_appended(files["journal"], self._journal_pos)
        new_failed = []
        for event, param, detail in events:
            if event == "nack":
                self.attempts[param] = self.attempts.get(param, 0) + 1
            elif event == "fail":
                self.failed[param] = detail
                new_failed.append(param)
                if param in self.where:
                    self.finished.add(param)
            elif event == "retry" and self.failed.pop(param, None) is not None:
                # minion-push --retry-failed: a new round, with all its attempts.
                self.attempts.pop(param, None)
                self.finished.discard(param)
                if self.open(param) and param not in self.in_progress:
                    self.remaining.add(param)
        return [param for param in new_failed if param in self.failed]

    def _read_in_progress(self) -> set[Any]:
        data = sweepfiles.read_whole(self.inprogress_file)
        if data:
            try:
                return set(sweepfiles.loads(data))
            except sweepfiles.TORN:
                pass
        # Empty: never written, or plain execo was killed between its truncate and its write.
        return self._leased(self)

    # -- where the parameters in progress are --------------------------------

    def position(self, param: Any) -> Optional[int]:
        """Where a parameter in progress is in the sweep (None: outside it), looked up once while it is."""
        try:
            return self.where[param]
        except KeyError:
            position = self.sweeps.position(param)
            self._place(param, position)
            return position

    def _place(self, param: Any, position: Optional[int]) -> None:
        """Keep where a parameter newly in progress is, and whether it is settled already."""
        self.where[param] = position
        if self.settled_at(param, position):
            self.finished.add(param)

    def _look_ahead(self, params: set[Any]) -> None:
        """Find parameters newly in progress among the first that remain here, an unpickle each rather
        than a pickle and a lookup: in a fleet, most are what the other minions took since this one's
        last look. (A sweep is a set: no two of its parameters are equal.)"""
        missing = params - self.where.keys()
        if not missing:
            return
        if not missing <= self._ahead.keys():
            positions = itertools.islice(self.remaining.positions(), 2 * len(missing) + 16)
            self._ahead = {self.sweeps[position]: position for position in positions}
        for param in missing & self._ahead.keys():
            self._place(param, self._ahead.pop(param))

    def forget(self, params: set[Any]) -> None:
        """`position`'s parameters no longer in progress."""
        for param in params:
            self.where.pop(param, None)
        self.finished -= params

    # -- what is settled, what is open ---------------------------------------

    def settled(self, param: Any) -> bool:
        return param in self.done or param in self.failed

    def settled_at(self, param: Any, position: Optional[int]) -> bool:
        return param in self.failed or self.done.has(param, position)

    def open_in_progress(self, param: Any) -> bool:
        """`open`, for a parameter in progress."""
        position = self.position(param)
        return position is not None and not self.settled_at(param, position)

    def open(self, param: Any) -> bool:
        """In progress for good: part of this sweep, neither done nor failed."""
        return param in self.sweeps and not self.settled(param)

    # -- writing `inprogress` -------------------------------------------------

    def write_in_progress(self, params: set[Any]) -> None:
        """Write `inprogress`, less the parameters settled meanwhile (those an ack left there)."""
        for param in params - self.where.keys():
            self.position(param)  # tells whether it is settled
        kept = params - self.finished
        self.forget((self.in_progress | params) - kept)
        params = kept
        data = pickle.dumps(params, protocol=sweepfiles.PROTOCOL)
        sweepfiles.swap(self.inprogress_file, data, self.inprogress_temporary)
        self.in_progress = params
        self.untidy = False

    def tidy(self) -> None:
        """Take the parameters acked here out of `inprogress`, when no take did it since."""
        if self.untidy:
            self.write_in_progress(self.in_progress)
