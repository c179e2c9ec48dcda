"""The fleet as data: the json reporter's files, read incrementally, and what they add up to.

Shared by `minion-status` (one read, then `summarize`) and `mtop` (a read
every second that parses only the bytes appended since the previous one, fed
into per-minion `MinionState`s). See `minionize.reporters.json` for the
records. Everything here is a pure function of the records, except
`ReportReader.poll`, which reads the files, and `report_directory`, which
reads the settings.
"""

from __future__ import annotations

import json
import math
import os
import signal
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from .config import EnvReader
from .errors import ConfigError
from .reporters.base import HEARTBEAT
from .reporters.json import DEFAULT_DIRECTORY

Record = dict[str, Any]
#: Verdicts after which a parameter has left the queue for good.
COMPLETED = ("acked", "failed")
#: Verdict -> column (a "held" run belongs to a dry run).
COUNTED = {"acked": "done", "failed": "failed", "retried": "retried", "released": "released", "held": "held"}
BUCKET_SECONDS = 60
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
            record = json.loads(line)
        except ValueError:
            record = None
        if isinstance(record, dict):
            record["minion"] = record.get("minion") or stem
            records.append(record)
        else:
            bad += 1
    return records, bad


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


def minion_states(records: Iterable[Record]) -> dict[str, MinionState]:
    """Every minion of `records`, by id, in order of appearance."""
    states: dict[str, MinionState] = {}
    for record in records:
        minion = str(record.get("minion"))
        state = states.get(minion)
        if state is None:
            state = states[minion] = MinionState(minion)
        state.apply(record)
    return states


# -- the fleet ---------------------------------------------------------------


def fleet_totals(rows: Sequence[Record]) -> dict[str, int]:
    """The sums over every minion, how many are active (neither stopped nor stale), and how many stale.

    A stale minion was most likely killed: its runs died with it and their
    parameters come back to another minion, so they are not counted as running.
    """
    totals = {"minions": len(rows), "active": sum(1 for row in rows if not row["stopped"] and not row["stale"]),
              "stale": sum(1 for row in rows if row["stale"])}
    for column in COUNTED.values():
        totals[column] = sum(row[column] for row in rows)
    totals["running"] = sum(row["running"] for row in rows if not row["stale"])
    return totals


def ends(records: Iterable[Record], verdicts: Iterable[str]) -> list[Record]:
    """The end records with one of `verdicts`."""
    wanted = set(verdicts)
    return [r for r in records if r.get("type") == "end" and r.get("verdict") in wanted]


def throughput(records: Sequence[Record], now: float, buckets: int, active: bool) -> Record:
    """Parameters completed (done or failed) per minute: recent buckets and overall rates.

    The buckets end now while a minion is still active, else at the last
    record, so that a finished campaign still shows its last minutes.
    """
    times = [t for t in map(record_time, records) if t is not None]
    completed = sorted(t for t in map(record_time, ends(records, COMPLETED)) if t is not None)
    first, last = (min(times), max(times)) if times else (now, now)
    anchor = now if active else last
    window_start = anchor - buckets * BUCKET_SECONDS
    counts = [0] * buckets
    for moment in completed:
        if window_start <= moment <= anchor:
            index = min(int((moment - window_start) // BUCKET_SECONDS), buckets - 1)
            counts[index] += 1
    span = anchor - max(first, window_start)
    elapsed = (completed[-1] - first) if completed else 0.0
    starts = (window_start + i * BUCKET_SECONDS for i in range(buckets))
    return {
        "bucket_seconds": BUCKET_SECONDS,
        "buckets": [{"start": start, "completed": n} for start, n in zip(starts, counts, strict=True)],
        "recent_per_minute": sum(counts) * 60 / span if span > 0 else None,
        "overall_per_minute": len(completed) * 60 / elapsed if elapsed > 0 else None,
    }


def duration_stats(records: Iterable[Record]) -> Optional[dict[str, float]]:
    """min, median, p90 (nearest rank) and max of the runs that were not cut short."""
    # A released run was cut short by a stop: its duration says nothing.
    finished = ends(records, ("acked", "failed", "retried"))
    durations = sorted(d for d in (number(r.get("duration")) for r in finished) if d is not None)
    if not durations:
        return None
    p90 = durations[max(0, math.ceil(0.9 * len(durations)) - 1)]
    median = statistics.median(durations)
    return {"count": len(durations), "min": durations[0], "median": median, "p90": p90, "max": durations[-1]}


def eta(remaining: int, at: float, per_minute: Optional[float]) -> Record:
    """When `remaining` parameters (counted at `at`) should be done at `per_minute`."""
    seconds = 0.0 if remaining == 0 else remaining * 60 / per_minute if per_minute else None
    return {"eta_seconds": seconds, "eta_time": None if seconds is None else at + seconds}


def queue_eta(records: Iterable[Record], per_minute: Optional[float]) -> Optional[Record]:
    """The newest "queue" record of the fleet, and when the work should be over at `per_minute`."""
    queues = [r for r in records if r.get("type") == "queue" and record_time(r) is not None]
    if not queues:
        return None
    newest = max(queues, key=lambda r: record_time(r) or 0.0)
    remaining, at = int(number(newest.get("remaining")) or 0), record_time(newest) or 0.0
    return {"remaining": remaining, "time": at, "minion": newest.get("minion"), **eta(remaining, at, per_minute)}


def failure_cause(record: Record) -> str:
    """Why a run failed, coarse enough to group on: exit code, signal, timeout, or the reason."""
    if record.get("status") == "rejected":
        return f"rejected: {record.get('error') or 'no reason given'}"
    if record.get("timed_out"):
        return "timeout"
    signum = number(record.get("signal"))
    if signum is not None:
        try:
            return f"signal {int(signum)} ({signal.Signals(int(signum)).name})"
        except ValueError:
            return f"signal {int(signum)}"
    exit_code = number(record.get("exit_code"))
    if exit_code is not None and exit_code != 0:
        return f"exit code {int(exit_code)}"
    return str(record.get("error") or "(no error message)")


def failure_groups(records: Iterable[Record]) -> list[Record]:
    """The parameters set aside, grouped by cause, most frequent first, with samples."""
    groups: dict[str, Record] = {}
    for record in ends(records, ("failed",)):
        cause = failure_cause(record)
        group = groups.setdefault(cause, {"cause": cause, "count": 0, "error": record.get("error"), "params": []})
        group["count"] += 1
        if len(group["params"]) < FAILED_SAMPLES:
            group["params"].append(record.get("param"))
        if "stderr_tail" not in group and record.get("stderr_tail"):
            group["stderr_tail"] = str(record["stderr_tail"])
    return sorted(groups.values(), key=lambda g: (-g["count"], g["cause"]))


def summarize(records: Sequence[Record], now: float, buckets: int = 10) -> Record:
    """The whole status of a fleet as plain data (what `minion-status --json` prints)."""
    rows = [state.row(now) for state in minion_states(records).values()]
    totals = fleet_totals(rows)
    rates = throughput(records, now, max(1, buckets), active=totals["active"] > 0)
    # The ETA follows the fleet as it is now (minions come and go), hence the recent rate.
    rate = rates["recent_per_minute"] or rates["overall_per_minute"]
    return {"generated": now, "totals": totals, "minions": rows, "throughput": rates,
            "durations": duration_stats(records), "queue": queue_eta(records, rate),
            "failures": failure_groups(records)}
