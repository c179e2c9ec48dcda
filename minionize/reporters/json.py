"""A reporter that appends one JSON object per line to a file of its own.

Variables:
    REPORTER_JSON_DIRECTORY  path  minion-report  where the files go (created when missing)

Each minion writes `<directory>/<minion id>.jsonl`. The id is unique
(host-pid-random), so minions on many hosts can share one directory (NFS)
without clobbering each other, and each file has a single writer. Every
record is flushed as it is written, so that `minion-status` sees the fleet
while it runs. Records (times are Unix seconds):

    {"type": "minion", minion, host, pid, job_id, engine, concurrency, time[, timeout]}
    {"type": "start", minion, id, param, attempt, slot, time}
    {"type": "end", minion, id, param, attempt, slot, start, end, duration,
     status, exit_code, signal, timed_out, verdict, error, host, job_id,
     stdout_tail, stderr_tail}
    {"type": "queue", minion, remaining, time}
    {"type": "heartbeat", minion, time, in_flight, free_slots, draining}
    {"type": "strike", minion, strike, max_strikes, failures, pause, error, time}
    {"type": "stop", minion, reason, time}

`timeout` is MINION_TIMEOUT in seconds, only when one is set. A heartbeat
is written every 10 s (`minionize.reporters.base.HEARTBEAT`), so that `mtop` can
tell a busy minion from a silent one. At each heartbeat and when it closes, a
minion also writes down what its records add up to, in `.summary/` (see
`minionize.summaryfiles`): `minion-status` and `mtop` read those sums and
parse only the records written after them. `verdict` is what the worker did with the message: acked, retried, failed
(set aside), released (given back by a stop) or held (dry run). Parameters
that JSON cannot encode are written as strings, and so are parameters that
are longer than 16 KiB or nested deeper than 100 levels: their first 16 KiB
(whatever a queue holds, a report line is written and readers can load it). No environment variable is
ever written: they may hold secrets.

Caveat: a write error (full disk, lost NFS mount, permission) is logged once
and the records are dropped until writing works again; it never fails a run.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import time
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Optional, Union

from ..config import EnvReader
from ..excerpt import excerpt, render
from ..health import Strike
from .base import MinionInfo, Probe, Reporter, RunRecord

if TYPE_CHECKING:
    from ..summaryfiles import SummaryWriter

log = logging.getLogger("minionize.reporters.json")

DEFAULT_DIRECTORY = "minion-report"
#: Longest parameter written whole (as JSON text): a longer one is cut, so that
#: a megabyte parameter does not cost a megabyte per record.
PARAM_MAX = 16 * 1024
#: Deepest nesting written whole: json.loads (minion-status, mtop) gives up near 1,000.
_DEPTH_MAX = 100


def report_path(directory: Path, minion_id: str) -> Path:
    """The file of one minion (the id is made safe to use as a file name)."""
    return directory / (re.sub(r"[^A-Za-z0-9._-]", "_", minion_id) + ".jsonl")


def encode(record: dict[str, Any]) -> str:
    """One line of JSON, whatever the parameter (see `report_param`)."""
    if "param" in record:
        record = dict(record, param=report_param(record["param"]))
    try:
        return json.dumps(record, default=str)
    except (TypeError, ValueError, RecursionError):
        # e.g. a dict with tuple keys, a structure that contains itself, a 4,300-digit integer.
        return json.dumps(dict(record, param=_as_string(record.get("param"))), default=str)


def _as_string(param: Any) -> str:
    try:
        return repr(param) if report_param(param) is param else excerpt(param, PARAM_MAX)
    except Exception:  # repr refuses what json.dumps refused (a 4,300-digit integer)
        return excerpt(param, PARAM_MAX)


def report_param(param: Any) -> Any:
    """The parameter as reports write it: itself, or its first PARAM_MAX characters as a string
    when it is longer or nested deeper than readers of the reports can take."""
    _, complete = render(param, PARAM_MAX)
    if complete and _depth(param) <= _DEPTH_MAX:
        return param
    return excerpt(param, PARAM_MAX)


def _depth(param: Any) -> int:
    """How deeply lists and dicts nest in `param` (called on a bounded one: `render` completed)."""
    depth, level = 0, [param]
    while level:
        depth += 1
        if depth > _DEPTH_MAX:
            return depth
        level = [
            child
            for item in level
            if isinstance(item, (list, tuple, dict))
            for child in (item.values() if isinstance(item, dict) else item)
        ]
    return depth - 1


def end_record(minion: Optional[MinionInfo], run: RunRecord) -> dict[str, Any]:
    """The "end" record of a finished run."""
    outcome = run.outcome
    end = run.end if run.end is not None else time.time()
    return {
        "type": "end",
        "minion": minion.id if minion else None,
        "id": run.message_id,
        "param": run.param,
        "attempt": run.attempt,
        "slot": run.slot,
        "start": run.start,
        "end": end,
        "duration": end - run.start,
        "status": outcome.status.value if outcome else None,
        "exit_code": outcome.exit_code if outcome else None,
        "signal": outcome.signal if outcome else None,
        "timed_out": outcome.timed_out if outcome else False,
        "verdict": run.verdict,
        "error": outcome.error if outcome else None,
        "host": minion.host if minion else None,
        "job_id": minion.job_id if minion else None,
        "stdout_tail": outcome.stdout_tail if outcome else "",
        "stderr_tail": outcome.stderr_tail if outcome else "",
    }


class JsonReporter(Reporter):
    """Appends the records of one minion to `<directory>/<minion id>.jsonl`."""

    def __init__(
        self, directory: Union[str, os.PathLike[str]] = DEFAULT_DIRECTORY, timeout: Optional[float] = None
    ) -> None:
        # Absolute now: an in-process callback may change the working directory.
        self.directory = Path(os.path.abspath(directory))
        #: MINION_TIMEOUT, written in the "minion" record so that mtop can show elapsed/timeout.
        self.timeout = timeout
        self.path: Optional[Path] = None
        self._minion: Optional[MinionInfo] = None
        self._file: Optional[IO[str]] = None
        self._summary: Optional[SummaryWriter] = None
        self._failing = False
        self._warned = False

    @classmethod
    def from_env(cls, env: EnvReader) -> JsonReporter:
        # MinionInfo does not carry the timeout: read it the way config.Settings does.
        timeout = env.seconds("MINION_TIMEOUT", None)
        return cls(env.get("REPORTER_JSON_DIRECTORY") or DEFAULT_DIRECTORY, timeout)

    def open(self, minion: MinionInfo) -> None:
        # Imported here: only a minion that writes reports folds them (fleet's code).
        from ..summaryfiles import SummaryWriter

        self._minion = minion
        self.path = report_path(self.directory, minion.id)
        self._summary = SummaryWriter(self.path)
        record: dict[str, Any] = {
            "type": "minion",
            "minion": minion.id,
            "host": minion.host,
            "pid": minion.pid,
            "job_id": minion.job_id,
            "engine": minion.engine,
            "concurrency": minion.concurrency,
            "time": minion.started,
        }
        if self.timeout is not None:
            record["timeout"] = self.timeout
        self._write(record)

    def started(self, run: RunRecord) -> None:
        self._write(
            {
                "type": "start",
                "minion": self._minion_id,
                "id": run.message_id,
                "param": run.param,
                "attempt": run.attempt,
                "slot": run.slot,
                "time": run.start,
            }
        )

    def finished(self, run: RunRecord) -> None:
        self._write(end_record(self._minion, run))

    def queue(self, remaining: int) -> None:
        record = {"type": "queue", "minion": self._minion_id, "remaining": remaining}
        self._write({**record, "time": time.time()})

    def heartbeat(self, probe: Probe) -> None:
        self._write({
            "type": "heartbeat",
            "minion": self._minion_id,
            "time": time.time(),
            "in_flight": probe.in_flight,
            "free_slots": probe.free_slots,
            "draining": probe.draining,
        })
        self._write_summary()

    def strike(self, strike: Strike) -> None:
        self._write({
            "type": "strike",
            "minion": self._minion_id,
            "strike": strike.number,
            "max_strikes": strike.limit,
            "failures": strike.failures,
            "pause": strike.pause,
            "error": strike.error,
            "time": time.time(),
        })

    def close(self, reason: str) -> None:
        now = time.time()
        self._write({"type": "stop", "minion": self._minion_id, "reason": reason, "time": now})
        self._write_summary()
        self._close_file()

    @property
    def _minion_id(self) -> Optional[str]:
        return self._minion.id if self._minion else None

    def _write(self, record: dict[str, Any]) -> None:
        """Append one record and flush it; on an I/O error, warn once and go on."""
        if self.path is None:
            return
        line = encode(record) + "\n"
        if self._failing:
            # The last write may have left half a line: start on a fresh one.
            line = "\n" + line
        try:
            if self._file is None:
                self.directory.mkdir(parents=True, exist_ok=True)
                self._file = open(self.path, "a", buffering=1, encoding="utf-8")  # noqa: SIM115
                if self._summary:
                    self._summary.opened(self._file.fileno())
            self._file.write(line)
            self._file.flush()
        except (OSError, ValueError) as exc:
            self._broken(exc)
            return
        if self._summary:
            self._summary.wrote(line)
        if self._failing:
            log.info("json reporter: writing to %s again", self.path)
        self._failing = False

    def _write_summary(self) -> None:
        if self._summary and not self._failing:
            self._summary.write()

    def _broken(self, exc: Exception) -> None:
        if not self._warned:
            log.warning(
                "json reporter: cannot write to %s (%s); records are dropped until it works again",
                self.path,
                exc,
            )
            self._warned = True
        self._failing = True
        if self._summary:
            self._summary.failed()
        # Reopened at the next record: the mount or the disk may come back.
        self._close_file()

    def _close_file(self) -> None:
        if self._file is not None:
            with contextlib.suppress(OSError, ValueError):
                self._file.close()
            self._file = None
