"""The leases of an execo sweep's minions, in `.minionize/leases/`: one file per minion.

A minion keeps its file (`minion.<host>_<pid>_<id>`) open and rewrites it in
place at each take and renewal: when its lease runs out, and the keys of
every parameter it holds. Creating a file per parameter cost more than the
rest of a take. A reader that finds a file torn (read while rewritten, or
its writer killed in the write) takes it as no lease: its parameters get a
whole lease period from when a minion first sees them so. Older minionize
wrote one file per parameter, named by its key, holding when it runs out:
still read, never written. Names that start with a dot are temporaries.
"""

from __future__ import annotations

import contextlib
import json
import os
from typing import Callable, Optional

from .. import jsontext
from . import sweepfiles

MINION = "minion."  # the prefix of a minion's lease file


def read(path: str) -> Optional[tuple[float, list[str]]]:
    """A lease file's expiry and the keys it names (a minion's), or None: gone, or torn."""
    try:
        record = jsontext.loads(sweepfiles.read_whole(path))
        keys = record.get("keys", [])
        return float(record["expires"]), [key for key in keys if isinstance(key, str)] if isinstance(keys, list) else []
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def modified(path: str) -> float:
    try:
        return os.stat(path).st_mtime
    except FileNotFoundError:
        return float("inf")  # gone meanwhile


def expiries(directory: str) -> dict[str, float]:
    """When the lease of each parameter runs out, from every lease file in `directory` (the latest, should
    two name it: a minion that gave it back names it until its next write)."""
    expiry: dict[str, float] = {}
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        return expiry
    for entry in entries:
        if entry.name.startswith("."):
            continue
        record = read(entry.path)
        if record is None:
            continue
        expires, keys = record
        for key in keys if entry.name.startswith(MINION) else [entry.name]:
            expiry[key] = max(expiry.get(key, expires), expires)
    return expiry


def prune(directory: str, now: float, seconds: float, in_progress: Callable[[], set[str]], keep: str) -> None:
    """Under the sweep's lock: delete the files of minions whose lease ran out a third of a lease ago (as a
    reclaim counts it) and that name nothing in progress (keys), and torn ones older than a lease; never
    `keep` (this minion's). A live minion rewrites its own every third of a lease while it holds something,
    and writes it anew should it find it deleted."""
    for entry in os.scandir(directory):
        if not entry.name.startswith(MINION) or entry.path == keep:
            continue
        with contextlib.suppress(OSError):
            if entry.stat().st_mtime > now - seconds:
                continue  # rewritten within a lease: not to prune (read, it would cost a fleet opening at once)
        record = read(entry.path)
        expires, keys = record if record else (modified(entry.path) + seconds * 2 / 3, [])
        if now > expires + seconds / 3 and not in_progress().intersection(keys):
            sweepfiles.remove(entry.path)


class MinionLease:
    """This minion's lease file, rewritten in place."""

    def __init__(self, directory: str, tag: str, minion: str, seconds: float, clock: Callable[[], float]) -> None:
        self.path = os.path.join(directory, MINION + tag)
        self.minion = minion
        self.seconds = seconds
        self.clock = clock
        #: When the lease last written runs out.
        self.until = 0.0
        self._fd: Optional[int] = None

    @property
    def written(self) -> bool:
        return self._fd is not None

    def write(self, keys: list[str]) -> None:
        """The lease of `keys` (every parameter this minion holds), from now."""
        expires = self.clock() + self.seconds
        record = json.dumps({"minion": self.minion, "expires": expires, "keys": keys})
        if self._fd is None or os.fstat(self._fd).st_nlink == 0:  # deleted as run out: anew
            self._close()
            self._fd = sweepfiles.open_writable(self.path)
        sweepfiles.rewrite(self._fd, record.encode())
        self.until = expires

    def remove(self) -> None:
        """At close: what this minion still holds comes back a lease period after a minion sees it so."""
        if self._fd is not None:
            self._close()
            sweepfiles.remove(self.path)

    def _close(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None
