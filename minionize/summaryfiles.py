"""What a minion has summed of its own report, written beside it, so that readers skip what it sums.

The json reporter folds every record it writes into a `minionize.tally.Tally`
(`SummaryWriter`) and, at each heartbeat, every SUMMARY_RUNS runs and when it
closes, writes the sums down in `<directory>/.summary/`:

    <stem>.runs   16 bytes a finished run (its end time if it completed, its
                  duration; NaN for neither), appended
    <stem>.json   {"version", "report": {"inode", "offset", "head", "end"},
                   "runs", "tally"}, replaced through a rename: the sums of
                  the report's first `offset` bytes, which start with `head`
                  (the first record: the minion and when it started) and end
                  with `end`, and of the first `runs` runs of `<stem>.runs`

`read_directory` (minion-status) and `mtop` take such sums for a report's
first `offset` bytes and parse only the records after them: a million runs
are read as their summaries and 16 MB of floats. A summary that does not
match its report (another inode, a shorter file, another first record or
other bytes before `offset`, runs missing), or a report without one (written by an older
minionize, or by a minion killed before its first heartbeat) is read whole,
record by record, as before: a summary only saves time, and a reader never
trusts one it cannot check. The minion stops writing them at its first
write error (the reporter's or its own): its report is then read whole.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Optional

from . import jsontext
from .fleet import Record, load_records, parse_lines, regular_report
from .tally import Tally

log = logging.getLogger("minionize.summaryfiles")

SUMMARY_DIRECTORY = ".summary"
VERSION = 1
#: Runs summed in memory at most before they are written down (without waiting for a heartbeat).
SUMMARY_RUNS = 32768
#: How many of the report's first and last summed bytes a summary keeps, to tell its report from another.
_HEAD, _END = 1024, 64
_RUN = 16  # two doubles


def _paths(report: Path) -> tuple[Path, Path]:
    stem = report.name[: -len(".jsonl")]
    directory = report.parent / SUMMARY_DIRECTORY
    return directory / f"{stem}.json", directory / f"{stem}.runs"


class SummaryWriter:
    """The sums of one report as its json reporter writes it (a single writer, as the report)."""

    def __init__(self, report: Path) -> None:
        self.report = report
        self.stem = report.name[: -len(".jsonl")]
        self.tally = Tally()
        self.inode: Optional[int] = None
        self.offset = 0
        self.head = self.end = ""
        self.written = 0  # runs already in <stem>.runs
        self.working = True

    def opened(self, fd: int) -> None:
        """The report was opened for appending: sums are kept only of a report written from its start."""
        stat = os.fstat(fd)
        if self.inode is None and stat.st_size == 0:
            self.inode = stat.st_ino
        elif (stat.st_ino, stat.st_size) != (self.inode, self.offset):
            self.working = False

    def wrote(self, line: str) -> None:
        """`line` (a record and its newline) is in the report, whole."""
        if not self.working or self.inode is None:
            return
        record = jsontext.loads(line)
        record["minion"] = record.get("minion") or self.stem  # as readers do (fleet.parse_lines)
        self.tally.add(record)
        self.offset += len(line.encode())
        if not self.head:
            self.head = line[:_HEAD]
        self.end = (self.end + line)[-_END:]
        if len(self.tally.runs) >= 2 * SUMMARY_RUNS:
            self.write()

    def failed(self) -> None:
        """A write of the report failed: it may hold half a line, which no summary may cover."""
        self.working = False

    def write(self) -> None:
        """Append the runs summed since the last write, then replace the summary."""
        if not self.working or self.inode is None:
            return
        summary, runs = _paths(self.report)
        try:
            summary.parent.mkdir(exist_ok=True)
            if self.tally.runs:
                # The first write starts the file afresh: a report directory used again may hold an old one.
                with open(runs, "ab" if self.written else "wb") as out:
                    out.write(self.tally.runs.tobytes())
                self.written += len(self.tally.runs) // 2
                del self.tally.runs[:]
            data = {"version": VERSION, "report": {"inode": self.inode, "offset": self.offset, "head": self.head,
                                                "end": self.end},
                    "runs": self.written, "tally": self.tally.to_json()}
            temporary = summary.with_name(f".{summary.name}.tmp")
            temporary.write_text(json.dumps(data))
            os.replace(temporary, summary)
        except OSError as exc:
            # Half a run may be in <stem>.runs: stop here, readers read the report whole from the last summary.
            log.debug("summary of %s: %s; no more summaries", self.report, exc)
            self.working = False


def read_summary(report: Path, inode: int, size: int) -> tuple[Optional[Tally], int]:
    """The sums of `report`'s first bytes and how many bytes they cover, when they match the report."""
    summary, runs = _paths(report)
    try:
        data = jsontext.loads(summary.read_bytes())
        head = data["report"]
        offset, count = int(head["offset"]), int(data["runs"])
        first, end = str(head["head"]).encode(), str(head["end"]).encode()
        if data["version"] != VERSION or head["inode"] != inode or not len(first) <= offset <= size:
            return None, 0
        with open(report, "rb") as handle:
            if handle.read(len(first)) != first:
                return None, 0
            handle.seek(offset - len(end))
            if handle.read(len(end)) != end:
                return None, 0
        floats = b""
        if count:
            with open(runs, "rb") as handle:
                floats = handle.read(count * _RUN)
        if len(floats) != count * _RUN:
            return None, 0
        return Tally.from_json(data["tally"], floats), offset
    except FileNotFoundError:
        return None, 0
    except (OSError, ValueError, KeyError, TypeError):
        # Unreadable or from another version: the report is read whole.
        return None, 0


def read_report(report: Path, inode: int, size: int) -> tuple[Tally, int]:
    """The tally of one report, from its summary and the records after it; and how many lines were not JSON."""
    tally, offset = read_summary(report, inode, size)
    with open(report, "rb") as handle:
        handle.seek(offset)
        data = handle.read(size - offset)
    # A torn last line is being written: left for the next read, as fleet.ReportReader does.
    records, bad = parse_lines(data[: data.rfind(b"\n") + 1], report.name[: -len(".jsonl")])
    tally = tally or Tally()
    for record in records:
        tally.add(record)
    return tally, bad


def read_directory(directory: Path) -> tuple[Tally, list[str]]:
    """The tally of every report of `directory`, file by file in name order, and the problems met."""
    tally = Tally()
    problems: list[str] = []
    with os.scandir(directory) as scan:
        entries = sorted((e for e in scan if e.name.endswith(".jsonl")), key=lambda e: e.name)
    for entry in entries:
        if not regular_report(entry, problems):
            continue
        try:
            stat = entry.stat()
            part, bad = read_report(Path(entry.path), stat.st_ino, stat.st_size)
        except OSError as exc:
            problems.append(f"{entry.name}: could not be read ({exc.strerror or exc})")
            continue
        if bad:
            problems.append(f"{entry.name}: {bad} unreadable line(s) skipped")
        try:
            tally.merge(part)
        except ValueError:
            # A minion's records in two files: fold every record in one pass, the way they were written.
            return _whole(directory)
    return tally, problems


def _whole(directory: Path) -> tuple[Tally, list[str]]:
    records: list[Record]
    records, problems = load_records(directory)
    return Tally.of(records), problems
