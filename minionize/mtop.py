"""`mtop`: the fleet live in a terminal, like top, from the json reporter's files.

    mtop                                  # REPORTER_JSON_DIRECTORY or ./minion-report
    mtop --dir /nfs/minion-report --interval 2

There is no master: mtop reads the per-minion files that `minion-status`
reads (see `minionize.reporters.json`), from any host that sees the
directory. The first read starts from what the minions summed of their
reports (`minionize.summaryfiles`); each refresh parses only the bytes
appended since the previous one (`fleet.ReportReader`) and folds the new records into per-minion aggregates
(`fleet.MinionState`), so that a refresh costs the same after 100,000 records
as after 100.

The header shows the throughput (completions per minute over the last five
minutes, and overall), the ETA and the progress: done and failed from the
records, remaining from the newest "queue" record of the fleet. Each row is a
minion: host, pid, batch job, state, runs in flight, the attempt and elapsed
time of its oldest run (against MINION_TIMEOUT when the minion wrote it),
done and failed counts, what it runs now, and the last stderr line of its last
run. A minion is `stale` when it wrote nothing, not even a heartbeat, for
`fleet.STALE_AFTER` seconds and did not say it stopped: it was killed, or its
host or the shared file system is gone; its runs no longer count as running.
Times come from the minions' clocks. What the screen shows is in
`minionize.mtopview`; a narrow terminal wraps the header and drops the least
useful columns first.

mtop may start before the fleet: it waits for the directory to appear.
Keys: ? lists them, s next sort column, 1-9 sort by that column, r reverse,
arrows, PgUp, PgDn, Home, End scroll, q quit. Exit codes: 0, 2 for a path
that is not a directory, a bad setting, or no terminal.
"""

from __future__ import annotations

import argparse
import contextlib
import curses
import math
import os
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

from . import __version__, exitcodes
from .config import load_environment
from .errors import MinionizeError
from .fleet import COMPLETED, MinionState, Record, ReportReader, fold, number, report_directory, widen
from .mtopview import View, handle_key, screen_lines
from .summaryfiles import read_summary

__all__ = ["Live", "View", "handle_key", "main", "screen_lines"]

#: Seconds of completions behind the "recent" throughput of the header.
RATE_WINDOW = 300
MAX_PROBLEMS = 3


class Live:
    """The fleet so far: per-minion aggregates and what the header needs, fed incrementally."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        #: The directory is not there (yet): mtop was started before the fleet.
        self.missing = False
        self._reset()

    def _reset(self) -> None:
        self.reader = ReportReader(self.directory)
        self.minions: dict[str, MinionState] = {}
        #: Completions (done or failed) per whole second of their end.
        self.completions: Counter[int] = Counter()
        self.completed = 0
        self.first: Optional[float] = None
        self.last: Optional[float] = None
        self.last_completion: Optional[float] = None
        self.queue: Optional[Record] = None
        self.problems: list[str] = []
        self._summed = 0

    def refresh(self) -> int:
        """Read what the minions appended since the last refresh; how many records that was (those of
        the summaries included)."""
        self.missing = not self.directory.exists()
        if self.missing:
            # Not created yet, or removed for a new campaign: wait for it, from nothing.
            self._reset()
            return 0
        try:
            records, problems = self._poll()
        except OSError as exc:
            self._problem(f"{self.directory}: cannot be read ({exc.strerror or exc})")
            return 0
        if self.reader.rewound:
            # A file shrank or vanished (a new campaign in the same directory): count again.
            self._reset()
            records, problems = self._poll()
        for problem in problems:
            self._problem(problem)
        for record in records:
            self.apply(record)
        return len(records) + self._summed

    def _poll(self) -> tuple[list[Record], list[str]]:
        self._summed = self._start_from_summaries() if self.reader.fresh else 0
        return self.reader.poll()

    def _start_from_summaries(self) -> int:
        """Take what the minions summed of their reports (minionize.summaryfiles) instead of their first
        records, and say how many: the reader goes on after them. (Each minion's records are in its own
        file.)"""
        summed = 0
        with os.scandir(self.directory) as scan:
            entries = sorted((e for e in scan if e.name.endswith(".jsonl")), key=lambda e: e.name)
        for entry in entries:
            stat = entry.stat()
            tally, offset = read_summary(Path(entry.path), stat.st_ino, stat.st_size)
            if tally is None or not tally.minions.keys().isdisjoint(self.minions):
                continue
            self.reader.skip(entry.name, stat.st_ino, offset)
            self.minions.update(tally.minions)
            completed = [t for t in tally.runs[0::2] if not math.isnan(t)]
            self.completions.update(map(int, completed))
            self.completed += len(completed)
            self.last_completion = max([*completed, *filter(None, [self.last_completion])], default=None)
            for moment in filter(None, (tally.first, tally.last)):
                self.first, self.last = widen((self.first, self.last), moment)
            if tally.queue and (self.queue is None or tally.queue["time"] >= self.queue["time"]):
                self.queue = {"remaining": tally.queue["remaining"], "time": tally.queue["time"]}
            summed += tally.records
        return summed

    def _problem(self, text: str) -> None:
        if text not in self.problems:
            self.problems = [*self.problems, text][-MAX_PROBLEMS:]

    def apply(self, record: Record) -> None:
        moment, (self.first, self.last) = fold(self.minions, record, (self.first, self.last))
        if moment is None:
            return
        kind = record.get("type")
        if kind == "end" and record.get("verdict") in COMPLETED:
            self.completions[int(moment)] += 1
            self.completed += 1
            self.last_completion = max(self.last_completion or moment, moment)
        elif kind == "queue" and (self.queue is None or moment >= self.queue["time"]):
            self.queue = {"remaining": int(number(record.get("remaining")) or 0), "time": moment}

    def rates(self, now: float) -> tuple[Optional[float], Optional[float]]:
        """Completions per minute: over the last RATE_WINDOW seconds, and since the first record."""
        if self.first is None:
            return None, None
        # Once every minion stopped, the window ends at the last record, as in minion-status.
        anchor = now if any(not m.stopped for m in self.minions.values()) else (self.last or now)
        end = int(anchor)
        recent = sum(self.completions.get(second, 0) for second in range(end - RATE_WINDOW + 1, end + 1))
        window = anchor - max(self.first, anchor - RATE_WINDOW)
        elapsed = (self.last_completion or self.first) - self.first
        return (recent * 60 / window if window > 0 else None,
                self.completed * 60 / elapsed if elapsed > 0 else None)


# -- the terminal --------------------------------------------------------------


def _styles() -> dict[str, int]:
    styles = {"title": curses.A_BOLD, "head": curses.A_REVERSE, "stale": curses.A_BOLD,
              "warn": curses.A_BOLD, "problem": curses.A_BOLD, "plain": curses.A_NORMAL}
    if curses.has_colors():
        curses.use_default_colors()
        for number, (style, colour) in enumerate((("stale", curses.COLOR_RED), ("warn", curses.COLOR_YELLOW),
                                                  ("problem", curses.COLOR_MAGENTA)), start=1):
            curses.init_pair(number, colour, -1)
            styles[style] |= curses.color_pair(number)
    return styles


def draw(screen: Any, lines: Sequence[tuple[str, str]], styles: dict[str, int]) -> None:
    height, width = screen.getmaxyx()
    screen.erase()
    for y, (text, style) in enumerate(lines[:height]):
        with contextlib.suppress(curses.error):  # a line that does not fit
            screen.addnstr(y, 0, text, max(0, width - 1), styles[style])
    screen.refresh()


def loop(screen: Any, live: Live, interval: float) -> None:
    """Read, draw, wait for a key or the next refresh; until q."""
    with contextlib.suppress(curses.error):  # a terminal that cannot hide the cursor
        curses.curs_set(0)
    styles, view, next_read = _styles(), View(), 0.0
    # The first read parses everything (about 1.5 s for 100,000 records): say so meanwhile.
    draw(screen, [(f"mtop: reading the reports in {live.directory}...", "title")], styles)
    while True:
        if time.monotonic() >= next_read:
            live.refresh()
            next_read = time.monotonic() + interval
        height, width = screen.getmaxyx()
        draw(screen, screen_lines(live, view, time.time(), width, height), styles)
        screen.timeout(max(10, int((next_read - time.monotonic()) * 1000)))
        key = screen.getch()
        if key != -1 and not handle_key(view, key):
            return


# -- command line ------------------------------------------------------------


def _interval(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.05 <= value <= 3600:
        raise argparse.ArgumentTypeError(f"expected seconds between 0.05 and 3600, not {text!r}")
    return value


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="mtop", description="Watch a fleet of minions live, from the "
                                     "reports they write with MINION_REPORTER=json.")
    parser.add_argument("--dir", help="the report directory (default: REPORTER_JSON_DIRECTORY or minion-report)")
    parser.add_argument("--interval", type=_interval, default=1.0, metavar="SECONDS",
                        help="seconds between two reads of the reports (default 1)")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """The `mtop` console script."""
    args = parse_args(argv)
    try:
        load_environment(os.environ)
        directory = report_directory(args.dir, os.environ, "mtop")
    except MinionizeError as exc:
        print(f"mtop: {exc}", file=sys.stderr)
        return exitcodes.CONFIG
    if directory.exists() and not directory.is_dir():
        # A missing one is fine: the fleet creates it once it starts.
        print(f"mtop: no reports in {directory}: not a directory", file=sys.stderr)
        return exitcodes.CONFIG
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        print("mtop: needs a terminal (minion-status prints a summary anywhere)", file=sys.stderr)
        return exitcodes.CONFIG
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C is a way to quit too
        curses.wrapper(loop, Live(directory), args.interval)
    return exitcodes.OK


if __name__ == "__main__":
    sys.exit(main())
