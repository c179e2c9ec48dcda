"""The fleet as data: the json reporter's files, read incrementally, and what they add up to.

Shared by `minion-status` (one read, summed by `minionize.tally`) and `mtop` (a read
every second that parses only the bytes appended since the previous one, fed
into per-minion `MinionState`s). See `minionize.reporters.json` for the
records. Everything here is a pure function of the records, except
`ReportReader.poll`, which reads the files, and `report_directory`, which
reads the settings.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from . import jsontext
from .config import EnvReader
from .errors import ConfigError
from .reporters.base import HEARTBEAT
from .reporters.json import DEFAULT_DIRECTORY

Record = dict[str, Any]
#: Verdicts after which a parameter has left the queue for good.
COMPLETED = ("acked", "failed")
#: Verdict -> column (a "held" run belongs to a dry run).
COUNTED = {"acked": "done", "failed": "failed", "retried": "retried", "released": "released", "held": "held"}
FAILED_SAMPLES = 5
#: A minion that wrote nothing for three heartbeats, and did not say it stopped, is stale.
STALE_AFTER = 3 * HEARTBEAT


# -- reading -----------------------------------------------------------------


@dataclass
class _Tail:
    """How far one file has been read."""

    inode: int
    offset: int = 0
    #: The bytes after the last newline: a line still being written, completed by a later read.
    partial: bytes = b""


def parse_lines(data: bytes, stem: str) -> tuple[list[Record], int]:
    """The records of complete lines, and how many lines were not JSON objects."""
    records, bad = [], 0
    for line in data.decode("utf-8", errors="replace").split("\n"):
        if not line.strip():
            continue
        try:
            record = jsontext.loads(line)
        except ValueError:
            record = None
        if isinstance(record, dict):
            record["minion"] = record.get("minion") or stem
            records.append(record)
        else:
            bad += 1
    return records, bad


def regular_report(entry: os.DirEntry[str], problems: list[str]) -> bool:
    """Whether the report file `entry` may be read: a FIFO would block the read, a device never end
    it; those are said in `problems` and skipped."""
    if entry.is_file():
        return True
    problems.append(f"{entry.name}: not a regular file: skipped")
    return False


class ReportReader:
    """Reads the `*.jsonl` files of a directory, each one from where the previous poll stopped.

    A torn last line (its minion is writing it) is kept back until its
    newline arrives. A file that shrank, was replaced or disappeared sets
    `rewound`: whatever was built from the earlier records no longer adds up.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.rewound = False
        self._tails: dict[str, _Tail] = {}

    @property
    def fresh(self) -> bool:
        """Nothing read yet."""
        return not self._tails

    def skip(self, name: str, inode: int, offset: int) -> None:
        """Read file `name` (of that inode) from `offset` on: what comes before is known already."""
        self._tails[name] = _Tail(inode, offset)

    def poll(self) -> tuple[list[Record], list[str]]:
        """The records appended since the last poll, file by file in write order, and the problems met."""
        records: list[Record] = []
        problems: list[str] = []
        seen = set()
        with os.scandir(self.directory) as scan:
            entries = sorted(scan, key=lambda e: e.name)
        for entry in entries:
            if not entry.name.endswith(".jsonl"):
                continue
            seen.add(entry.name)
            if not regular_report(entry, problems):
                continue
            try:
                found, bad = self._read(entry)
            except OSError as exc:
                problems.append(f"{entry.name}: could not be read ({exc.strerror or exc})")
                continue
            records.extend(found)
            if bad:
                problems.append(f"{entry.name}: {bad} unreadable line(s) skipped")
        for gone in self._tails.keys() - seen:
            del self._tails[gone]
            self.rewound = True
        return records, problems

    def _read(self, entry: os.DirEntry[str]) -> tuple[list[Record], int]:
        stat = entry.stat()
        tail = self._tails.get(entry.name)
        if tail is None or tail.inode != stat.st_ino or stat.st_size < tail.offset:
            self.rewound = self.rewound or tail is not None
            tail = self._tails[entry.name] = _Tail(stat.st_ino)
        if stat.st_size == tail.offset:
            return [], 0
        with open(entry.path, "rb") as handle:
            handle.seek(tail.offset)
            # Up to the size seen, never beyond: then a smaller size later means a truncated file.
            data = handle.read(stat.st_size - tail.offset)
        tail.offset += len(data)
        data = tail.partial + data
        cut = data.rfind(b"\n") + 1
        tail.partial = data[cut:]
        return parse_lines(data[:cut], entry.name[: -len(".jsonl")])


def load_records(directory: Path) -> tuple[list[Record], list[str]]:
    """All the records of `directory`, file by file in write order, and the problems met."""
    return ReportReader(directory).poll()


def report_directory(directory: Optional[str], environ: Mapping[str, str], prog: str) -> Path:
    """The directory to read: `directory` (--dir), else the json reporter's, as the minions see it."""
    if directory:
        return Path(directory)
    env = EnvReader(environ)
    reporter = env.get("MINION_REPORTER", "json") or "json"
    if reporter.lower() != "json":
        raise ConfigError("MINION_REPORTER", reporter, f"{prog} reads the json reporter's "
                          "directory: set it to json, leave it unset, or use --dir")
    return Path(env.get("REPORTER_JSON_DIRECTORY") or DEFAULT_DIRECTORY)


# -- one minion --------------------------------------------------------------


def number(value: Any) -> Optional[float]:
    """`value` as a finite float, or None (JSON may hold anything)."""
    is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
    return float(value) if is_number and math.isfinite(value) else None


def record_time(record: Record) -> Optional[float]:
    """When a record was written: its "time", or the "end" of an end record."""
    return number(record.get("time", record.get("end")))


def stderr_line(tail: Any) -> str:
    """The last non-blank line of a stderr tail."""
    lines = [line for line in str(tail or "").splitlines() if line.strip()]
    return lines[-1].strip() if lines else ""


def fold(minions: dict[str, MinionState], record: Record, span: tuple[Optional[float], Optional[float]]
         ) -> tuple[Optional[float], tuple[Optional[float], Optional[float]]]:
    """Applies `record` to its minion's state in `minions` (made at its first record); returns the
    record's time and the (first, last) `span` of record times widened to it."""
    minion = str(record.get("minion"))
    state = minions.get(minion)
    if state is None:
        state = minions[minion] = MinionState(minion)
    state.apply(record)
    moment = record_time(record)
    return moment, widen(span, moment)


def widen(span: tuple[Optional[float], Optional[float]], moment: Optional[float]
          ) -> tuple[Optional[float], Optional[float]]:
    """The (first, last) span of record times, widened to `moment` (None: unchanged)."""
    first, last = span
    if moment is None:
        return span
    return (moment if first is None else min(first, moment), moment if last is None else max(last, moment))


class MinionState:
    """One minion as its records describe it so far; `apply` them in write order."""

    def __init__(self, minion: str) -> None:
        self.minion = minion
        self.info: Record = dict.fromkeys(("host", "pid", "job_id", "engine", "concurrency", "timeout"))
        self.counts = dict.fromkeys(COUNTED.values(), 0)
        #: The start records of the runs that have not ended, by message id and attempt.
        self.running: dict[str, Record] = {}
        self.last_seen: Optional[float] = None
        self.stopped: Optional[str] = None
        self.heartbeat: Optional[Record] = None
        #: The last stderr line of the last run that ended.
        self.last_stderr = ""

    def apply(self, record: Record) -> None:
        kind = record.get("type")
        if kind == "minion":
            self.info.update({key: record.get(key) for key in self.info})
            self.stopped = None  # the same id opened again: a new life
        elif kind == "start":
            self.running[f"{record.get('id')}/{record.get('attempt')}"] = record
        elif kind == "end":
            self._ended(record)
        elif kind == "heartbeat":
            self.heartbeat = record
        elif kind == "stop":
            # A stopped minion gave back whatever it still held.
            self.stopped = str(record.get("reason") or "stopped")
            self.running.clear()
        seen = record_time(record)
        if seen is not None and (self.last_seen is None or seen > self.last_seen):
            self.last_seen = seen

    def _ended(self, record: Record) -> None:
        self.running.pop(f"{record.get('id')}/{record.get('attempt')}", None)
        column = COUNTED.get(str(record.get("verdict")))
        if column:
            self.counts[column] += 1
        for key in ("host", "job_id"):
            self.info[key] = self.info[key] or record.get(key)
        self.last_stderr = stderr_line(record.get("stderr_tail"))

    def stale(self, now: float) -> bool:
        """Silent for more than STALE_AFTER seconds without having said it stopped."""
        return not self.stopped and self.last_seen is not None and now - self.last_seen > STALE_AFTER

    def state(self, now: float) -> str:
        """stopped: <reason>, stale, draining, running or idle."""
        if self.stopped:
            return f"stopped: {self.stopped}"
        if self.stale(now):
            return "stale"
        if self.heartbeat and self.heartbeat.get("draining"):
            return "draining"
        return "running" if self.running else "idle"

    def current(self) -> list[Record]:
        """What runs now, oldest first: parameter, attempt, since when."""
        runs = [{"param": r.get("param"), "attempt": r.get("attempt"), "since": record_time(r)}
                for r in self.running.values()]
        return sorted(runs, key=lambda run: run["since"] or 0.0)

    def row(self, now: float) -> Record:
        """The minion as plain data (a row of `minion-status --json`)."""
        return {"minion": self.minion, **self.info, **self.counts, "running": len(self.running),
                "current": self.current(), "last_seen": self.last_seen, "stopped": self.stopped,
                "state": self.state(now), "stale": self.stale(now), "last_stderr": self.last_stderr}


def ends(records: Iterable[Record], verdicts: Iterable[str]) -> list[Record]:
    """The end records with one of `verdicts`."""
    wanted = set(verdicts)
    return [r for r in records if r.get("type") == "end" and r.get("verdict") in wanted]


def summarize(records: Iterable[Record], now: float, buckets: int = 10) -> Record:
    """The whole status of a fleet as plain data (what `minion-status --json` prints)."""
    from .tally import Tally  # which folds records with this module's MinionState

    return Tally.of(records).summary(now, buckets)
