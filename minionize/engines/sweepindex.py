"""An execo sweep's parameters held compactly: pickled one by one, side by side, found by their pickle.

A million short parameters as Python objects, in a set for the sweep and
another for what remains of it, take about 125 MB in a minion. A
`SweepIndex` keeps each parameter's pickle in one buffer (about 20 bytes for
a short string), its offset (8 bytes) and a slot of an open-addressing
table keyed by the crc32 of the pickle (at most half full: 8 bytes);
`Done` and `Remaining` are a byte per parameter. A parameter is unpickled
when it is handed out; one read from `done`, `inprogress` or the journal is
found by its pickle, which is the sweep's: minionize and plain execo write
there the parameters they took from the sweep. (So a value equal to a
parameter but of another type, 1.0 for 1, is another parameter here, where
execo's set takes the two for one.)

execo's `sweeps` file is the pickle of a set, which can only be loaded
whole: every parameter at once, the peak that this module avoids. So
minion-push also writes `.minionize/params` (`write`): the header, the
offsets, the table and the pickles, stamped with the size and crc32 of the
`sweeps` file they were made from. A minion reads it (`read`: no parameter
unpickled, nothing hashed) when its stamp matches, and the set otherwise (a
sweep written by plain execo or an older minionize, or the file torn by a
crash: a cache that does not match is never used), then writes it for the
minions that open the sweep after it.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import pickle
import zlib
from array import array
from collections.abc import Iterable, Iterator
from typing import Any, Optional, Union

from .. import jsontext
from . import sweepfiles
from .sweepfiles import StrPath

VERSION = 2
_EMPTY = -1


def _key(param: Any) -> bytes:
    """What a parameter is known by: its pickle (what `done`, `inprogress` and the journal hold, too)."""
    return pickle.dumps(param, protocol=sweepfiles.PROTOCOL)


class SweepIndex:
    """The parameters of a sweep, each at a position, found by their pickle (a crc32, then the bytes)."""

    def __init__(self, offsets: array, blob: Union[bytes, bytearray], table: Optional[array] = None) -> None:
        #: Where each parameter's pickle starts in `blob` (and the last ends).
        self.offsets = offsets
        self.blob = blob
        self._blob = memoryview(blob)
        #: Open addressing, at most half full: the position of a parameter in the slot of its crc32 or after.
        self.table = table if table is not None else self._placed()
        self._mask = len(self.table) - 1

    def _placed(self) -> array:
        size = 8
        while size < 2 * len(self):
            size *= 2
        table, mask = array("i", [_EMPTY]) * size, size - 1
        offsets = self.offsets
        pickles = map(self._blob.__getitem__, map(slice, offsets, itertools.islice(offsets, 1, None)))
        for position, digest in enumerate(map(zlib.crc32, pickles)):
            slot = digest & mask
            while table[slot] != _EMPTY:
                slot = (slot + 1) & mask
            table[slot] = position
        return table

    @classmethod
    def of(cls, params: Iterable[Any]) -> SweepIndex:
        """The index of distinct parameters (a set's)."""
        offsets, blob = pickled(params)
        return cls(offsets, blob)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, position: int) -> Any:
        return sweepfiles.loads(self._blob[self.offsets[position] : self.offsets[position + 1]])

    def __iter__(self) -> Iterator[Any]:
        return map(self.__getitem__, range(len(self)))

    def position(self, param: Any) -> Optional[int]:
        """Where `param` is, or None when it is not part of the sweep."""
        return self.position_of(_key(param))

    def position_of(self, key: Union[bytes, memoryview]) -> Optional[int]:
        """Where the parameter pickled as `key` is, or None."""
        table, mask, offsets, blob = self.table, self._mask, self.offsets, self._blob
        slot = zlib.crc32(key) & mask
        while (position := table[slot]) != _EMPTY:
            if blob[offsets[position] : offsets[position + 1]] == key:
                return position
            slot = (slot + 1) & mask
        return None

    def __contains__(self, param: Any) -> bool:
        return self.position(param) is not None


def pickled(params: Iterable[Any]) -> tuple[array, bytearray]:
    """Each parameter's pickle, side by side, and where each starts (and the last ends)."""
    offsets, blob = array("Q", [0]), bytearray()
    for param in params:
        blob += _key(param)
        offsets.append(len(blob))
    return offsets, blob


class Done:
    """The parameters done: a byte per parameter of the sweep, and a set of those outside it."""

    def __init__(self, index: SweepIndex) -> None:
        self.index = index
        self.flags = bytearray(len(index))
        self.others: set[Any] = set()

    def add(self, param: Any) -> Optional[int]:
        """Mark `param` done; where it is in the sweep (None: not part of it)."""
        position = self.index.position(param)
        if position is None:
            self.others.add(param)
        else:
            self.flags[position] = 1
        return position

    def __contains__(self, param: Any) -> bool:
        return self.has(param, self.index.position(param))

    def has(self, param: Any, position: Optional[int]) -> bool:
        """Whether `param`, at `position` in the sweep (None: outside it), is done."""
        return param in self.others if position is None else bool(self.flags[position])

    def __iter__(self) -> Iterator[Any]:
        position = self.flags.find(1)
        while position >= 0:
            yield self.index[position]
            position = self.flags.find(1, position + 1)
        yield from self.others

    def onto(self, index: SweepIndex) -> Done:
        """The same parameters done, on the sweep reloaded as `index`."""
        done = Done(index)
        for param in self:
            done.add(param)
        return done


_NOT = bytes([1, 0]) + bytes(254)


class Remaining:
    """What remains of a sweep to take: a byte per parameter, walked from where the last take stopped."""

    def __init__(self, index: SweepIndex, taken: Iterable[Any] = (), done: Optional[Done] = None) -> None:
        self.index = index
        self.done = done if done is not None and done.index is index else Done(index)
        self._flags = self.done.flags.translate(_NOT)  # 1 where not done
        self._count = self._flags.count(1)
        self._next = 0
        self.difference_update(taken)

    def mark_done(self, param: Any) -> None:
        """`param` is done (read from `done`): it no longer remains."""
        self.mark_done_at(param, self.index.position(param))

    def mark_done_at(self, param: Any, position: Optional[int]) -> None:
        """`mark_done`, for `param` at `position` in the sweep (None: outside it)."""
        if position is None:
            self.done.others.add(param)
        else:
            self.done_at(position)

    def mark_done_pickle(self, key: memoryview) -> bool:
        """The parameter pickled as `key` is done, if it is part of the sweep (a record of `done` read
        without unpickling it: `sweepfiles.scan_appended`)."""
        position = self.index.position_of(key)
        if position is not None:
            self.done_at(position)
        return position is not None

    def done_at(self, position: int) -> None:
        self.done.flags[position] = 1
        if self._flags[position]:
            self._flags[position] = 0
            self._count -= 1

    def __len__(self) -> int:
        return self._count

    def __bool__(self) -> bool:
        return self._count > 0

    def add(self, param: Any) -> None:
        """Take it again (it must be part of the sweep: the engine adds only open parameters)."""
        position = self.index.position(param)
        if position is not None:
            self.add_at(position)

    def add_at(self, position: int) -> None:
        if not self._flags[position]:
            self._flags[position] = 1
            self._count += 1
            self._next = min(self._next, position)

    def discard(self, param: Any) -> None:
        position = self.index.position(param)
        if position is not None:
            self.discard_at(position)

    def discard_at(self, position: int) -> None:
        if self._flags[position]:
            self._flags[position] = 0
            self._count -= 1

    def update(self, params: Iterable[Any]) -> None:
        for param in params:
            self.add(param)

    def difference_update(self, *groups: Iterable[Any]) -> None:
        for param in itertools.chain(*groups):
            self.discard(param)

    def __ior__(self, params: Iterable[Any]) -> Remaining:
        self.update(params)
        return self

    def __isub__(self, params: Iterable[Any]) -> Remaining:
        self.difference_update(params)
        return self

    def __iter__(self) -> Iterator[Any]:
        """The remaining parameters in sweep order, from the first that may remain."""
        return map(self.index.__getitem__, self.positions())

    def has_at(self, position: int) -> bool:
        return bool(self._flags[position])

    def positions(self, start: int = 0) -> Iterator[int]:
        """Where the remaining parameters are, in sweep order from `start`, then round from the first."""
        flags = self._flags
        position = flags.find(1, max(start, self._next))
        if start <= self._next:
            self._next = max(0, position)
        while position >= 0:
            yield position
            position = flags.find(1, position + 1)
        if start > self._next:
            position = flags.find(1, self._next, start)
            while position >= 0:
                yield position
                position = flags.find(1, position + 1, start)


# -- the files -------------------------------------------------------------------------


def hashable(params: Iterable[Any]) -> set[Any]:
    """Parameters as a sweep holds them: dicts as execo's HashableDict (sweeps of dicts must unpickle as
    execo's own), lists as tuples."""
    from execo_engine.sweep import HashableDict

    def convert(value: Any) -> Any:
        if isinstance(value, dict):
            return HashableDict({k: convert(v) for k, v in value.items()})
        if isinstance(value, list):
            return tuple(convert(v) for v in value)
        return value

    return {convert(param) for param in params}


def stamp_of(data: bytes) -> tuple[int, int]:
    """What identifies a `sweeps` file: its size and crc32 (a copy of the directory keeps its cache valid;
    plain execo's rewrite in place does not)."""
    return (len(data), zlib.crc32(data))


def load(data: bytes, path: str) -> SweepIndex:
    """The index of execo's `sweeps` file (a set, or a list), every parameter unpickled at once; written
    to `path` for the next minions (its temporary is one the execo engine cleans up)."""
    loaded = sweepfiles.loads(data)
    index = SweepIndex.of(loaded if isinstance(loaded, (set, frozenset)) else set(loaded))
    del loaded
    temporary = os.path.join(os.path.dirname(os.path.dirname(path)), f".sweeps.{os.getpid()}.{os.urandom(3).hex()}.tmp")
    write(path, temporary, index, stamp_of(data))
    return index


def write(path: StrPath, temporary: StrPath, index: SweepIndex, stamp: tuple[int, int]) -> None:
    """Write `index`, of the `sweeps` file of `stamp`. A cache: should the write fail, the push stands,
    and minions read the set."""
    header = json.dumps({"version": VERSION, "sweeps": list(stamp), "count": len(index), "bytes": len(index.blob),
                         "slots": len(index.table)}).encode() + b"\n"
    # Not synced: torn or lost with the machine, it no longer matches, and the set is read instead.
    with contextlib.suppress(OSError):
        sweepfiles.replace(path, header + index.offsets.tobytes() + index.table.tobytes() + index.blob, temporary,
                           sync=False)


def read(path: str, stamp: tuple[int, int]) -> Optional[SweepIndex]:
    """The index written for the `sweeps` file of `stamp`, or None (none, another sweep's, torn)."""
    offsets, table = array("Q"), array("i")
    try:
        with open(path, "rb") as handle:
            header = jsontext.loads(handle.readline(4096))
            count, size, slots = int(header["count"]), int(header["bytes"]), int(header["slots"])
            if header["version"] != VERSION or tuple(header["sweeps"]) != stamp or slots & (slots - 1):
                return None
            offsets.frombytes(handle.read(offsets.itemsize * (count + 1)))
            table.frombytes(handle.read(table.itemsize * slots))
            blob = handle.read(size + 1)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if len(offsets) != count + 1 or len(table) != slots or len(blob) != size or offsets[-1] != size:
        return None
    return SweepIndex(offsets, blob, table)
