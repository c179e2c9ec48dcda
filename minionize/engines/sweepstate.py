"""What one minion knows of an execo sweep: its parameters, and which are done, failed, in progress, remaining.

The execo engine (execo.py) brings it up to date under the sweep's lock,
from the files every minion appends to (`done`, the journal) or replaces
(`inprogress`), then decides what to take and what to write. Each minion
reads every record the others write, under the lock: the bookkeeping here
is what a fleet pays per parameter and per minion, so none of it is done
per parameter in progress. `inprogress` is read as a set (one unpickle,
skipped when its bytes did not change) and never looked up parameter by
parameter: what remains (`remaining`) is what is neither done nor failed,
in progress or not, and a take walks it from where this minion last took
(`take`), passing over what is in the set; a minion that finds others at
work starts its walk at a place of its own in the sweep, so that a fleet
does not walk over what the others just took. `done` is read record by
record (by their pickles when there are many: a minion catching up); the
parameters it names are dropped from `inprogress` at this minion's next
write of it.

An ack also appends to `.minionize/donemap` where its records start in
`done`, their lengths and the places in the sweep of their parameters (16
bytes each). A reader takes a record from there when its bytes are those
of the sweep's pickle at that place, starting where the last record read
ended: it finds neither the record's end (an unpickling) nor its parameter
(a lookup by its bytes). A place is only a shortcut: one that does not hold
(the sweep was reloaded, `done` lost its end in a crash or was rewritten)
is passed over and its record read as plain execo's records are; under the
sweep's lock, a torn place and those beyond the end of `done` are cut, so
that the next records appended there are not taken for theirs.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pickle
import struct
import zlib
from collections import deque
from typing import Any, Callable, Optional

from ..errors import ConfigError
from . import sweepfiles, sweepindex

#: The most parameters read from `done` kept for the next write of `inprogress` (beyond it, that write looks
#: each parameter in progress up instead, as after a minion catches up).
_DONE_READ_MOST = 1 << 16
#: A record of `.minionize/donemap`: where a record of `done` starts, its length, and the place in the sweep
#: of the parameter it names (which a reader checks against the record's bytes before it trusts it).
_PLACE = struct.Struct("<QII")
_PLACES_READ = _PLACE.size << 16


class SweepState:
    """The sweep in `directory` as this minion last read it; `leased` gives the parameters with a lease, which
    stand for `inprogress` when that file is empty (never written, or plain execo killed in its rewrite)."""

    def __init__(self, directory: str, tag: str, leased: Callable[[SweepState], set[Any]]) -> None:
        self.directory = directory
        self._leased = leased
        self.inprogress_file = os.path.join(directory, "inprogress")
        self.inprogress_temporary = os.path.join(directory, f".inprogress.{tag}.tmp")
        self.params_file = os.path.join(directory, ".minionize", "params")  # the sweep, compact (sweepindex)
        self.donemap_file = os.path.join(directory, ".minionize", "donemap")  # where `done`'s records are
        self._places_pos = 0
        self.sweeps = sweepindex.SweepIndex.of(())
        self._sweeps_stat: tuple[int, int, int] = (0, 0, 0)
        self.done = sweepindex.Done(self.sweeps)
        self.done_pos = 0
        self.attempts: dict[Any, int] = {}
        self.failed: dict[Any, str] = {}
        self._journal_pos = 0
        #: `inprogress` as last read or written, and its bytes (None: not read from the file, see `_leased`).
        self.in_progress: set[Any] = set()
        self._in_progress_data: Optional[bytes] = None
        #: What is neither done nor failed, in progress or not (`take` passes over what is in progress).
        self.remaining = sweepindex.Remaining(self.sweeps, done=self.done)
        #: The parameters read from `done` (and failed in the journal) since this minion last wrote
        #: `inprogress`, which its next write drops (an ack leaves its parameter there); `_look_up_all`: some
        #: were read by their pickle only, so that write looks up every parameter in progress instead.
        self._settled_read: set[Any] = set()
        self._look_up_all = False
        #: Where this minion's walk of the sweep goes on (None: not started), and the places of parameters
        #: given back (a nack, a release, a reclaim, a new round), which a take tries first.
        self._cursor: Optional[int] = None
        self._start = zlib.crc32(tag.encode())
        self._returned: deque[int] = deque()
        #: The `inprogress` of a walk that found nothing to take: the next walk is skipped while it holds.
        self._exhausted: Optional[bytes] = None
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
        # Places in the sweep loaded before.
        self._cursor, self._exhausted = None, None
        self._returned.clear()
        self.done = self.done.onto(sweeps)
        self.remaining = sweepindex.Remaining(sweeps, self.failed, self.done)
        return True

    # -- reading what the minions wrote -------------------------------------

    def scan_done(self, done: int, cut: bool = True) -> None:
        """Read the records appended to `done` since the last read, those with a place (`donemap`) by it;
        not `cut`: without the sweep's lock (a torn record, maybe being written, is left for the next
        read)."""
        try:
            places = os.open(self.donemap_file, os.O_RDWR)
        except FileNotFoundError:
            places = None
        try:
            data = sweepfiles.read_from(done, self.done_pos)
            at = 0 if places is None else self._read_placed(data, places, cut)
        finally:
            if places is not None:
                os.close(places)
        if not data:
            return
        good, torn = sweepfiles.scan_records(data, at, len(data), self._mark_done, self._done_pickle)
        if torn and cut:
            os.ftruncate(done, self.done_pos + good)
        self.done_pos += good
        if len(self._settled_read) > _DONE_READ_MOST:
            self._settled_read.clear()
            self._look_up_all = True

    def _read_placed(self, data: bytes, places: int, cut: bool) -> int:
        """Read the records of `data` (what `done` holds after `done_pos`) that the places appended to
        `donemap` since the last read name, and those before them that they do not (plain execo's, or
        written as a place could not be); returns where the records read end. A record is then neither
        unpickled to find its end nor looked up by its bytes to find its parameter: its bytes are only
        compared with those of the sweep's pickle. The places are read a mebibyte at a time (a minion
        catching up on a million records does not hold their 16 MB); under the lock, a torn one is cut."""
        size = os.fstat(places).st_size
        whole = size - max(0, size - self._places_pos) % _PLACE.size
        if cut and whole < size:
            os.ftruncate(places, whole)
        if (whole - self._places_pos) // _PLACE.size > _DONE_READ_MOST:
            self._look_up_all = True  # a minion catching up: the parameters in progress are looked up instead
        at, going = 0, True
        while going and self._places_pos < whole:
            chunk = os.pread(places, min(_PLACES_READ, whole - self._places_pos), self._places_pos)
            if not chunk:
                break
            at, going = self._read_chunk(data, chunk[: len(chunk) - len(chunk) % _PLACE.size], at, places, cut)
        return at

    def _read_chunk(self, data: bytes, chunk: bytes, at: int, places: int, cut: bool) -> tuple[int, bool]:
        """`_read_placed`, for the places of `chunk`, from `at`; returns where the records read end, and
        whether the next places may be read too."""
        used, collect = 0, not self._look_up_all
        going = True
        for start, length, position in _PLACE.iter_unpack(chunk):
            start -= self.done_pos
            if start >= at:
                if start + length > len(data):
                    if cut:  # under the lock, nobody is writing: `done` lost its end in a crash, not these
                        os.ftruncate(places, self._places_pos + used)
                    going = False
                    break
                if start > at:
                    at, torn = sweepfiles.scan_records(data, at, start, self._mark_done, self._done_pickle)
                    if torn or at != start:
                        going = False
                        break  # not a record's start: the rest is read record by record
                record = data[start : start + length]
                if self._place_holds(position, record):
                    self.remaining.done_at(position)
                    if collect:
                        self._settled_read.add(sweepfiles.loads(record))
                    at = start + length
            used += _PLACE.size
        self._places_pos += used
        return at, going

    def _place_holds(self, position: int, record: bytes) -> bool:
        """Whether `record` is the sweep's pickle of the parameter at `position`: a place is trusted only
        then (the sweep may have been reloaded since it was written, `done` cut or rewritten)."""
        offsets = self.sweeps.offsets
        if not 0 <= position < len(offsets) - 1:
            return False
        return self.sweeps.blob[offsets[position] : offsets[position + 1]] == record

    def ack_records(self, params: list[Any]) -> tuple[bytes, list[Optional[int]]]:
        """The records of `done` for `params` (the sweep's own pickles) and their places in the sweep."""
        pickles, positions = [], []
        blob, offsets = self.sweeps.blob, self.sweeps.offsets
        for param in params:
            position = self.sweeps.position(param)
            if position is None:
                pickles.append(pickle.dumps(param, protocol=sweepfiles.PROTOCOL))
            else:
                pickles.append(bytes(blob[offsets[position] : offsets[position + 1]]))
            positions.append(position)
        return b"".join(pickles), positions

    def write_places(self, start: int, positions: list[Optional[int]]) -> None:
        """Append to `donemap` where the records of `done` just written at `start` are, and which parameters
        they are. Only a shortcut for the readers: a write that fails is let go."""
        places, at = [], start
        offsets = self.sweeps.offsets
        for position in positions:
            if position is None:
                return  # a parameter outside the sweep: the records of this write are read as records
            length = offsets[position + 1] - offsets[position]
            places.append(_PLACE.pack(at, length, position))
            at += length
        with contextlib.suppress(OSError):
            fd = sweepfiles.open_appendable(self.donemap_file)
            try:
                sweepfiles.append_bytes(fd, b"".join(places), sync=False)
            finally:
                os.close(fd)

    def _mark_done(self, param: Any, key: memoryview) -> None:
        """A record of `done`, found in the sweep by its bytes (those of the sweep's own pickle, as
        minionize writes it), else by the parameter's pickle (plain execo's may be another)."""
        position = self.sweeps.position_of(key)
        if position is None:
            self.remaining.mark_done(param)
        else:
            self.remaining.done_at(position)
        self._settled_read.add(param)

    def _done_pickle(self, key: memoryview) -> bool:
        """A record of `done` read as its bytes (many of them: a minion catching up)."""
        self._look_up_all = True
        return self.remaining.mark_done_pickle(key)

    def update(self, files: dict[str, int]) -> None:
        """Read what changed since the last read: `done`, the journal, `inprogress`."""
        self.scan_done(files["done"])
        new_failed = self.read_journal(files)
        self._read_in_progress()
        self.remaining.difference_update(new_failed)

    def read_journal(self, files: dict[str, int]) -> list[Any]:
        """Count the attempts journalled since the last read; returns the parameters newly failed."""
        events, self._journal_pos = sweepfiles.read_appended(files["journal"], self._journal_pos)
        new_failed = []
        for event, param, detail in events:
            if event == "nack":
                self.attempts[param] = self.attempts.get(param, 0) + 1
                self.given_back(param)
            elif event == "release":
                self.given_back(param)
            elif event == "fail":
                self.failed[param] = detail
                new_failed.append(param)
                self._settled_read.add(param)
            elif event == "retry" and self.failed.pop(param, None) is not None:
                # minion-push --retry-failed: a new round, with all its attempts.
                self.attempts.pop(param, None)
                if self.open(param):
                    self.remaining.add(param)
                    self.given_back(param)
        return [param for param in new_failed if param in self.failed]

    def _read_in_progress(self) -> None:
        data = sweepfiles.read_whole(self.inprogress_file)
        if data and data == self._in_progress_data:
            return  # unchanged since this minion last read or wrote it
        if data:
            try:
                self.in_progress, self._in_progress_data = set(sweepfiles.loads(data)), data
                return
            except sweepfiles.TORN:
                pass
        # Empty: never written, or plain execo was killed between its truncate and its write.
        self.in_progress, self._in_progress_data = self._leased(self), None

    # -- taking ----------------------------------------------------------------

    def given_back(self, param: Any) -> None:
        """`param` left `inprogress` unsettled (a nack, a release, a reclaim): the next take tries it first."""
        position = self.sweeps.position(param)
        if position is not None:
            self._returned.append(position)
            self._exhausted = None

    def take(self, wanted: int) -> dict[int, Any]:
        """Up to `wanted` parameters to take, by their places: remaining, not in progress. Those given back
        first, then the walk from where this minion last took, round the sweep."""
        found: dict[int, Any] = {}
        in_progress, sweeps, flags = self.in_progress, self.sweeps, self.remaining
        while self._returned and len(found) < wanted:
            position = self._returned.popleft()
            if flags.has_at(position) and position not in found:
                param = sweeps[position]
                if param not in in_progress:
                    found[position] = param
        if len(found) == wanted or (self._exhausted is not None and self._exhausted == self._in_progress_data):
            return found
        if self._cursor is None:
            # Alone (nothing else in progress), from the start; else from a place of its own.
            self._cursor = self._start % len(sweeps) if in_progress and len(sweeps) else 0
        for position in flags.positions(self._cursor):
            if position in found:
                continue
            param = sweeps[position]
            if param in in_progress:
                continue
            found[position] = param
            if len(found) == wanted:
                self._cursor = position + 1
                return found
        # Round the sweep: the rest is in progress until `inprogress` changes.
        self._exhausted = self._in_progress_data
        return found

    # -- what is settled, what is open ---------------------------------------

    def settled(self, param: Any) -> bool:
        return param in self.done or param in self.failed

    def open(self, param: Any) -> bool:
        """In progress for good: part of this sweep, neither done nor failed."""
        return param in self.sweeps and not self.settled(param)

    # -- writing `inprogress` -------------------------------------------------

    def write_in_progress(self, params: set[Any]) -> None:
        """Write `inprogress`, less the parameters settled meanwhile (those an ack left there)."""
        if self._look_up_all:
            kept = {param for param in params if not self.settled(param)}
        else:
            kept = params - self._settled_read
        data = pickle.dumps(kept, protocol=sweepfiles.PROTOCOL)
        sweepfiles.swap(self.inprogress_file, data, self.inprogress_temporary)
        self.in_progress, self._in_progress_data = kept, data
        self._settled_read.clear()
        self._look_up_all = self.untidy = False

    def tidy(self) -> None:
        """Take the parameters acked here out of `inprogress`, when no take did it since."""
        if self.untidy:
            self.write_in_progress(self.in_progress)
