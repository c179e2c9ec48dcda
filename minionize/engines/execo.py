"""A sweep in a shared directory, in the format of execo's ParamSweeper.

What it is
    The default engine: no server, only a directory on a file system that
    every minion sees (NFS on a cluster). The directory is the one execo's
    `ParamSweeper(dir, sweeps=..., save_sweeps=True)` creates (files `sweeps`,
    `done`, `inprogress`), read and written here with the same `lockf`
    protocol, so execo keeps reading it. Minionize adds `.minionize/` beside
    them: a journal of retries and failures and one lease file per parameter
    in progress.

Environment
    EXECO_PERSISTENCE_DIR (path, default `sweeps`): the sweep directory.
    MINION_LEASE_SECONDS (seconds, default 60): how long a parameter stays
        reserved for a minion that stopped renewing it.

Ack and nack
    Ack marks the parameter done (execo's `done`). Nack takes it out of
    `inprogress` (execo's `cancel`) and counts the attempt in the journal, so
    that any minion picks it up again; a release (a stopped minion) does the
    same without counting an attempt, so that preemptions never set a
    parameter aside. Fail sets it aside (execo's `skip`),
    recorded in the journal with the reason, so that no minion takes it again.

A crashed minion
    A minion renews the lease of each parameter it runs every third of
    MINION_LEASE_SECONDS. A minion that finds nothing left to take reclaims
    the parameters whose lease expired more than a third of the lease ago
    (the margin tolerates that much clock skew between hosts).

Caveats
    A parameter put in `inprogress` by plain execo code has no lease and is
    never reclaimed. Parameters must be picklable and hashable (execo's own
    rule). Failed parameters are not `skipped` for a plain ParamSweeper,
    which keeps skips in memory only.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import pickle
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Optional

from ..config import EnvReader
from ..errors import ConfigError, QueueUnreachable
from ..message import Message
from .base import Engine

# POSIX record locks are per process: threads of one process need this too.
_PROCESS_LOCK = threading.RLock()
_RECLAIM_EVERY = 1.0


def param_key(param: Any) -> str:
    """A stable name for a parameter, the same in every minion."""
    return hashlib.sha1(pickle.dumps(param, protocol=4)).hexdigest()[:20]


def _load_appended(handle: IO[bytes], position: int) -> tuple[list[Any], int]:
    """Read the pickles appended after `position`; drop a torn last record as execo does."""
    handle.seek(position)
    records = []
    while True:
        try:
            records.append(pickle.load(handle))
            position = handle.tell()
        except EOFError:
            break
        except (pickle.UnpicklingError, ValueError, IndexError):
            handle.truncate(position)
            break
    return records, position


class ExecoEngine(Engine):
    name = "execo"
    any_thread = True

    def __init__(self, directory: str = "sweeps", lease_seconds: float = 60.0) -> None:
        self.directory = Path(directory)
        self.lease_seconds = lease_seconds
        self.lease_interval = lease_seconds / 3
        self.minion = f"{os.uname().nodename}:{os.getpid()}:{os.urandom(3).hex()}"
        self._sweeps: set[Any] = set()
        self._sweeps_stat: tuple[int, int] = (0, 0)
        self._done: set[Any] = set()
        self._done_pos = 0
        self._attempts: dict[Any, int] = {}
        self._failed: dict[Any, str] = {}
        self._journal_pos = 0
        self._in_progress: set[Any] = set()
        self._remaining: set[Any] = set()
        self._mine: dict[str, Any] = {}
        self._reclaimed: set[Any] = set()
        self._last_reclaim = 0.0
        self._rewrote = False

    @classmethod
    def from_env(cls, env: EnvReader) -> ExecoEngine:
        directory = env.get("EXECO_PERSISTENCE_DIR", "sweeps") or "sweeps"
        lease = env.seconds("MINION_LEASE_SECONDS", 60.0) or 0.0
        if lease < 1:
            raise ConfigError(
                "MINION_LEASE_SECONDS", env.raw("MINION_LEASE_SECONDS"), "expected a number of seconds >= 1"
            )
        return cls(directory, lease)

    def describe(self) -> str:
        return f"execo sweep {self.directory}"

    # -- the files -------------------------------------------------------

    @property
    def _state(self) -> Path:
        return self.directory / ".minionize"

    def open(self) -> None:
        if not (self.directory / "sweeps").is_file():
            raise ConfigError(
                "EXECO_PERSISTENCE_DIR",
                str(self.directory),
                "no sweep there: create one with execo's ParamSweeper(dir, sweeps=..., "
                "save_sweeps=True)",
            )
        try:
            (self._state / "leases").mkdir(parents=True, exist_ok=True)
            self._load_sweeps()
            with self._locked():
                pass
        except OSError as exc:
            raise QueueUnreachable(f"cannot use the sweep in {self.directory}: {exc}") from None

    def _load_sweeps(self) -> bool:
        """(Re)load the sweep when its file changed; True when it did."""
        path = self.directory / "sweeps"
        stat = path.stat()
        if (stat.st_mtime_ns, stat.st_size) == self._sweeps_stat:
            return False
        with open(path, "rb") as handle:
            fcntl.lockf(handle, fcntl.LOCK_SH)
            try:
                self._sweeps = set(pickle.load(handle))
            finally:
                fcntl.lockf(handle, fcntl.LOCK_UN)
        self._sweeps_stat = (stat.st_mtime_ns, stat.st_size)
        self._remaining = self._sweeps - self._done - set(self._failed) - self._in_progress
        return True

    @contextmanager
    def _locked(self) -> Iterator[dict[str, IO[bytes]]]:
        """Hold execo's locks (done, then inprogress) and bring the state up to date."""
        with _PROCESS_LOCK, open(self.directory / "done", "ab+") as done, open(
            self.directory / "inprogress", "ab+"
        ) as in_progress, open(self._state / "journal", "ab+") as journal:
            files: dict[str, IO[bytes]] = {"done": done, "inprogress": in_progress, "journal": journal}
            fcntl.lockf(done, fcntl.LOCK_EX)
            fcntl.lockf(in_progress, fcntl.LOCK_EX)
            size = {name: os.fstat(handle.fileno()).st_size for name, handle in files.items()}
            self._rewrote = False
            try:
                self._update(files)
                yield files
            finally:
                for name, handle in files.items():
                    handle.flush()
                    # inprogress is rewritten in place: its size may not change.
                    rewritten = name == "inprogress" and self._rewrote
                    if rewritten or os.fstat(handle.fileno()).st_size != size[name]:
                        os.fsync(handle.fileno())
                fcntl.lockf(in_progress, fcntl.LOCK_UN)
                fcntl.lockf(done, fcntl.LOCK_UN)

    def _update(self, files: dict[str, IO[bytes]]) -> None:
        new_done, self._done_pos = _load_appended(files["done"], self._done_pos)
        self._done.update(new_done)
        events, self._journal_pos = _load_appended(files["journal"], self._journal_pos)
        for event, param, detail in events:
            if event == "nack":
                self._attempts[param] = self._attempts.get(param, 0) + 1
            elif event == "fail":
                self._failed[param] = detail
        files["inprogress"].seek(0)
        try:
            current = pickle.load(files["inprogress"])
        except (EOFError, pickle.UnpicklingError, ValueError):
            current = set()
        # What left `inprogress` without being done or failed was given back.
        released = (self._in_progress - current) & self._sweeps
        self._remaining |= released
        self._in_progress = set(current)
        self._remaining -= self._in_progress
        self._remaining.difference_update(new_done)
        self._remaining.difference_update(self._failed)

    def _write_in_progress(self, files: dict[str, IO[bytes]]) -> None:
        handle = files["inprogress"]
        self._rewrote = True
        handle.truncate(0)
        pickle.dump(self._in_progress, handle)

    def _journal(self, files: dict[str, IO[bytes]], event: str, param: Any, detail: Any) -> None:
        files["journal"].seek(0, os.SEEK_END)
        pickle.dump((event, param, detail), files["journal"])

    # -- leases ----------------------------------------------------------

    def _lease_path(self, key: str) -> Path:
        return self._state / "leases" / key

    def _write_lease(self, key: str) -> None:
        record = {"minion": self.minion, "expires": time.time() + self.lease_seconds}
        path = self._lease_path(key)
        temporary = path.with_name(f".{key}.{self.minion.replace(':', '_')}")
        temporary.write_text(json.dumps(record))
        os.replace(temporary, path)  # atomic on POSIX and NFS

    def _lease_expired(self, key: str, now: float) -> bool:
        try:
            record = json.loads(self._lease_path(key).read_text())
            expires = float(record["expires"])
        except FileNotFoundError:
            return False  # taken by plain execo code: never reclaimed
        except (OSError, ValueError, KeyError, TypeError):
            return True
        return now > expires + self.lease_seconds / 3

    def _reclaim(self, files: dict[str, IO[bytes]]) -> None:
        now = time.time()
        expired = [
            param
            for param in self._in_progress
            if param_key(param) not in self._mine and self._lease_expired(param_key(param), now)
        ]
        for param in expired:
            self._in_progress.discard(param)
            self._lease_path(param_key(param)).unlink(missing_ok=True)
            self._journal(files, "reclaim", param, self.minion)
            self._reclaimed.add(param)
            if param in self._sweeps:
                self._remaining.add(param)
        if expired:
            self._write_in_progress(files)

    def extend(self, messages: list[Message]) -> None:
        for message in messages:
            if message.id in self._mine:
                self._write_lease(message.id)

    # -- the engine contract ----------------------------------------------

    def next(self, timeout: float) -> Optional[Message]:
        with self._locked() as files:
            if not self._remaining:
                self._refill(files)
            if self._remaining:
                param = self._remaining.pop()
                self._in_progress.add(param)
                self._write_in_progress(files)
                key = param_key(param)
                self._write_lease(key)
                self._mine[key] = param
                message = Message(key, param, self._attempts.get(param, 0) + 1)
                message.reclaimed = param in self._reclaimed
                self._reclaimed.discard(param)
                return message
        time.sleep(min(timeout, 0.5))
        return None

    def _refill(self, files: dict[str, IO[bytes]]) -> None:
        """Look harder when nothing seems left: a grown sweep, expired leases."""
        if self._load_sweeps():
            self._update(files)
        now = time.monotonic()
        if now - self._last_reclaim >= _RECLAIM_EVERY:
            self._last_reclaim = now
            self._reclaim(files)

    def drained(self) -> bool:
        with self._locked() as files:
            self._refill(files)
            return not self._remaining and not (self._in_progress & self._sweeps) and not self._mine

    def _settle(self, message: Message, event: str, detail: Any = None) -> None:
        param = self._mine.pop(message.id, message.param)
        with self._locked() as files:
            if event == "done":
                files["done"].seek(0, os.SEEK_END)
                pickle.dump(param, files["done"])
                self._done.add(param)
            else:
                # Read back by the next `_update`, like the records of other minions.
                self._journal(files, event, param, detail)
                if event in ("nack", "release") and param in self._sweeps:
                    self._remaining.add(param)
            self._in_progress.discard(param)
            self._write_in_progress(files)
            self._lease_path(message.id).unlink(missing_ok=True)

    def ack(self, message: Message) -> None:
        self._settle(message, "done")

    def nack(self, message: Message) -> None:
        self._settle(message, "nack")

    def release(self, message: Message) -> None:
        self._settle(message, "release")

    def fail(self, message: Message, reason: str) -> None:
        self._settle(message, "fail", reason)

    def push(self, params: list[Any]) -> str:
        # execo's own class writes the sweep: the reference for its format.
        from execo_engine.sweep import HashableDict, ParamSweeper

        def hashable(value: Any) -> Any:
            if isinstance(value, dict):
                return HashableDict({k: hashable(v) for k, v in value.items()})
            if isinstance(value, list):
                return tuple(hashable(v) for v in value)
            return value

        existing: set[Any] = set()
        if (self.directory / "sweeps").is_file():
            self._load_sweeps()
            existing = self._sweeps
        merged = existing | {hashable(p) for p in params}
        ParamSweeper(str(self.directory), sweeps=merged, save_sweeps=True)
        return f"execo sweep {self.directory} ({len(merged)} parameters in the sweep)"

    def remaining(self) -> Optional[int]:
        return len(self._remaining) + len(self._in_progress & self._sweeps)

    def close(self) -> None:
        for key in list(self._mine):
            self._lease_path(key).unlink(missing_ok=True)
