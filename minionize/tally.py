"""The fleet's sums, folded one record at a time: what `minion-status` prints, without keeping the records.

A `Tally` takes the json reporter's records in write order (`add`) and keeps
only what the summary needs: one `fleet.MinionState` per minion, the first
and last record times, the newest "queue" record, the failures grouped by
cause with their samples, and, per finished run, two floats (its end time
when it completed, its duration) in a flat `array` of 16 bytes a run. Tallies
of separate files add up (`merge`, in file order) to the tally of their
records read one after the other, and one can be written down and read back
(`to_json`, `from_json`), which is how `minionize.summaryfiles` lets a reader
skip the records a minion has already summed.
"""

from __future__ import annotations

import math
import signal
import statistics
from array import array
from collections.abc import Iterable, Sequence
from typing import Optional

from .fleet import COMPLETED, COUNTED, FAILED_SAMPLES, MinionState, Record, fold, number

BUCKET_SECONDS = 60
#: The most failure causes a tally keeps apart. A callback whose error names its parameter makes a cause
#: per failure: past this many, failures of new causes are counted together, so that the summary a minion
#: rewrites every few seconds, and what `minion-status` prints, do not grow with them.
CAUSES = 100
OTHER_CAUSES = f"(causes past the first {CAUSES})"
#: The verdicts of runs that were not cut short: their duration counts.
FINISHED = ("acked", "failed", "retried")
_NAN = float("nan")


class Tally:
    """The sums of some records, in the order they were written."""

    def __init__(self) -> None:
        self.records = 0
        self.minions: dict[str, MinionState] = {}
        self.first: Optional[float] = None
        self.last: Optional[float] = None
        #: Per finished run: its end time if it completed (else NaN), its duration (else NaN).
        self.runs = array("d")
        self.queue: Optional[Record] = None
        self.failures: dict[str, Record] = {}

    @classmethod
    def of(cls, records: Iterable[Record]) -> Tally:
        tally = cls()
        for record in records:
            tally.add(record)
        return tally

    def add(self, record: Record) -> None:
        self.records += 1
        moment, (self.first, self.last) = fold(self.minions, record, (self.first, self.last))
        kind = record.get("type")
        if kind == "end":
            self._ended(record, moment)
        elif kind == "queue" and moment is not None and (self.queue is None or moment > self.queue["time"]):
            self.queue = {"remaining": int(number(record.get("remaining")) or 0), "time": moment,
                          "minion": record.get("minion")}

    def _ended(self, record: Record, moment: Optional[float]) -> None:
        verdict = record.get("verdict")
        completed = moment if verdict in COMPLETED and moment is not None else None
        duration = number(record.get("duration")) if verdict in FINISHED else None
        if completed is not None or duration is not None:
            self.runs.append(_NAN if completed is None else completed)
            self.runs.append(_NAN if duration is None else duration)
        if verdict == "failed":
            group = self._group(failure_cause(record), record.get("error"))
            group["count"] += 1
            if len(group["params"]) < FAILED_SAMPLES:
                group["params"].append(record.get("param"))
            if "stderr_tail" not in group and record.get("stderr_tail"):
                group["stderr_tail"] = str(record["stderr_tail"])

    def merge(self, later: Tally) -> None:
        """Add the tally of records written after (or in a file after) this one's."""
        self.records += later.records
        for minion, state in later.minions.items():
            if minion in self.minions:
                raise ValueError(f"minion {minion} in two tallies: read its records in one")
            self.minions[minion] = state
        self.first = min((t for t in (self.first, later.first) if t is not None), default=None)
        self.last = max((t for t in (self.last, later.last) if t is not None), default=None)
        self.runs.extend(later.runs)
        if later.queue is not None and (self.queue is None or later.queue["time"] > self.queue["time"]):
            self.queue = later.queue
        for cause, group in later.failures.items():
            mine = self._group(cause, group.get("error"))
            mine["count"] += group["count"]
            mine["params"] = (mine["params"] + group["params"])[:FAILED_SAMPLES]
            if "stderr_tail" not in mine and "stderr_tail" in group:
                mine["stderr_tail"] = group["stderr_tail"]

    def _group(self, cause: str, error: object) -> Record:
        """The failures of `cause`, or of every cause past the first CAUSES."""
        group = self.failures.get(cause)
        if group is None:
            if len(self.failures) >= CAUSES:
                cause, error = OTHER_CAUSES, None
                group = self.failures.get(cause)
            if group is None:
                group = self.failures[cause] = {"cause": cause, "count": 0, "error": error, "params": []}
        return group

    # -- the summary ---------------------------------------------------------

    def summary(self, now: float, buckets: int = 10) -> Record:
        """The whole status of a fleet as plain data (what `minion-status --json` prints)."""
        rows = [state.row(now) for state in self.minions.values()]
        totals = fleet_totals(rows)
        completed = sorted(t for t in self.runs[0::2] if not math.isnan(t))
        rates = throughput(completed, self.first, self.last, now, max(1, buckets), active=totals["active"] > 0)
        # The ETA follows the fleet as it is now (minions come and go), hence the recent rate.
        rate = rates["recent_per_minute"] or rates["overall_per_minute"]
        durations = sorted(d for d in self.runs[1::2] if not math.isnan(d))
        queue = None if self.queue is None else {**self.queue, **eta(self.queue["remaining"],
                                                                     self.queue["time"], rate)}
        failures = sorted(self.failures.values(), key=lambda g: (-g["count"], g["cause"]))
        return {"generated": now, "totals": totals, "minions": rows, "throughput": rates,
                "durations": duration_stats(durations), "queue": queue, "failures": failures}

    # -- written down --------------------------------------------------------

    def to_json(self) -> Record:
        """Everything but `runs` (kept apart, as bytes: see `minionize.summaryfiles`)."""
        return {"records": self.records, "first": self.first, "last": self.last, "queue": self.queue,
                "failures": list(self.failures.values()),
                "minions": [vars(state) for state in self.minions.values()]}

    @classmethod
    def from_json(cls, data: Record, runs: bytes = b"") -> Tally:
        tally = cls()
        tally.records = int(data["records"])
        tally.first, tally.last, tally.queue = data["first"], data["last"], data["queue"]
        tally.failures = {group["cause"]: group for group in data["failures"]}
        for fields in data["minions"]:
            state = tally.minions[fields["minion"]] = MinionState(fields["minion"])
            vars(state).update(fields)
        tally.runs.frombytes(runs)
        return tally


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


def throughput(completed: Sequence[float], first: Optional[float], last: Optional[float], now: float,
               buckets: int, active: bool) -> Record:
    """Parameters completed (done or failed) per minute: recent buckets and overall rates.

    `completed` are the sorted end times of the completed runs, `first` and
    `last` the times of the first and last records. The buckets end now while
    a minion is still active, else at the last record, so that a finished
    campaign still shows its last minutes.
    """
    first, last = (now, now) if first is None or last is None else (first, last)
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


def duration_stats(durations: Sequence[float]) -> Optional[dict[str, float]]:
    """min, median, p90 (nearest rank) and max of sorted durations (those of runs not cut short)."""
    if not durations:
        return None
    p90 = durations[max(0, math.ceil(0.9 * len(durations)) - 1)]
    median = statistics.median(durations)
    return {"count": len(durations), "min": durations[0], "median": median, "p90": p90, "max": durations[-1]}


def eta(remaining: int, at: float, per_minute: Optional[float]) -> Record:
    """When `remaining` parameters (counted at `at`) should be done at `per_minute`."""
    seconds = 0.0 if remaining == 0 else remaining * 60 / per_minute if per_minute else None
    return {"eta_seconds": seconds, "eta_time": None if seconds is None else at + seconds}


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
