"""`mtop`: the fleet live in a terminal, like top, from the json reporter's files.

    mtop                                  # REPORTER_JSON_DIRECTORY or ./minion-report
    mtop --dir /nfs/minion-report --interval 2

There is no master: mtop reads the per-minion files that `minion-status`
reads (see `minionize.reporters.json`), from any host that sees the
directory. Each refresh parses only the bytes appended since the previous one
(`fleet.ReportReader`) and folds the new records into per-minion aggregates
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
host or the shared file system is gone. Times come from the minions' clocks.

Keys: s next sort column, 1-9 sort by that column, r reverse, arrows, PgUp,
PgDn, Home, End scroll, q quit. Exit codes: 0, 2 for a missing directory, a
bad setting, or no terminal.
"""

from __future__ import annotations

import argparse
import contextlib
import curses
import os
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from . import __version__, exitcodes
from .config import load_environment
from .errors import MinionizeError
from .fleet import COMPLETED, MinionState, Record, ReportReader, eta, number, record_time, report_directory
from .status import clock, short, span

#: Seconds of completions behind the "recent" throughput of the header.
RATE_WINDOW = 300
#: Lines above the table: three of header, a blank one, the column names.
HEADER_LINES = 5
MAX_PROBLEMS = 3


class Live:
    """The fleet so far: per-minion aggregates and what the header needs, fed incrementally."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
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

    def refresh(self) -> int:
        """Read what the minions appended since the last refresh; how many records that was."""
        try:
            records, problems = self.reader.poll()
        except OSError as exc:
            self._problem(f"{self.directory}: cannot be read ({exc.strerror or exc})")
            return 0
        if self.reader.rewound:
            # A file shrank or vanished (a new campaign in the same directory): count again.
            self._reset()
            records, problems = self.reader.poll()
        for problem in problems:
            self._problem(problem)
        for record in records:
            self.apply(record)
        return len(records)

    def _problem(self, text: str) -> None:
        if text not in self.problems:
            self.problems = [*self.problems, text][-MAX_PROBLEMS:]

    def apply(self, record: Record) -> None:
        minion = str(record.get("minion"))
        state = self.minions.get(minion)
        if state is None:
            state = self.minions[minion] = MinionState(minion)
        state.apply(record)
        moment = record_time(record)
        if moment is None:
            return
        self.first = moment if self.first is None else min(self.first, moment)
        self.last = moment if self.last is None else max(self.last, moment)
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


# -- what the screen shows (pure) ---------------------------------------------


@dataclass(frozen=True)
class Column:
    title: str
    key: str
    numeric: bool = False
    #: Longest cell shown; 0 for the last two columns, which share the width left.
    most: int = 24
    #: The first direction of a sort on this column (r flips it): counts and times biggest first.
    descending: bool = False


COLUMNS = (
    Column("HOST", "host"), Column("PID", "pid", True, 8), Column("JOB", "job_id", most=16),
    Column("STATE", "state", most=20), Column("RUN", "running", True, 7, True),
    Column("TRY", "attempt", True, 3, True), Column("ELAPSED", "elapsed", True, 15, True),
    Column("DONE", "done", True, 7, True), Column("FAIL", "failed", True, 7, True),
    Column("PARAM", "param", most=0), Column("LAST STDERR", "stderr", most=0),
)
#: The columns that keys 1-9 (and s, in turn) sort on.
SORTABLE = COLUMNS[:9]


@dataclass
class View:
    """What the user chose: the sort column, its direction, the first row shown."""

    sort: int = 0
    reverse: bool = False
    top: int = 0


def minion_row(state: MinionState, now: float) -> Record:
    """The values of one row (sorted on), and how to show them."""
    current = state.current()
    oldest = current[0] if current else None
    since = oldest["since"] if oldest else None
    timeout = state.info.get("timeout")
    return {
        "minion": state.minion, "host": state.info.get("host") or state.minion, "pid": state.info.get("pid"),
        "job_id": state.info.get("job_id"), "state": state.state(now),
        "running": len(current), "concurrency": state.info.get("concurrency"),
        "attempt": oldest["attempt"] if oldest else None,
        "elapsed": None if since is None else max(0.0, now - since), "timeout": timeout,
        "done": state.counts["done"], "failed": state.counts["failed"],
        "param": " | ".join(short(run["param"], 80) for run in current), "stderr": state.last_stderr,
    }


def cell(row: Record, key: str) -> str:
    value = row[key]
    if key == "running":
        return f"{value}/{row['concurrency']}" if row["concurrency"] else str(value)
    if key == "elapsed":
        if value is None:
            return "-"
        return span(value, precise=False) + (f"/{span(row['timeout'], precise=False)}" if row["timeout"] else "")
    return "-" if value is None or value == "" else str(value)


def sort_rows(rows: list[Record], view: View) -> list[Record]:
    """In the column's first direction (r flips it), rows without a value last."""
    column = SORTABLE[view.sort]
    # Numbers come from JSON that any program may have written: a "pid" may be anything.
    value: Callable[[Record], Any] = (lambda row: number(row[column.key])) if column.numeric else (
        lambda row: None if row[column.key] is None else str(row[column.key]))
    rows = sorted(rows, key=lambda row: (str(row["host"]), str(row["minion"])))
    valued = [row for row in rows if value(row) is not None]
    empty = [row for row in rows if value(row) is None]
    return sorted(valued, key=value, reverse=column.descending != view.reverse) + empty


def header(live: Live, view: View, now: float, rows: Sequence[Record], shown: int) -> list[str]:
    """The three lines above the table; `shown` rows fit under it."""
    states = live.minions.values()
    stale = sum(1 for m in states if m.stale(now))
    stopped = sum(1 for m in states if m.stopped)
    done, failed = (sum(m.counts[k] for m in states) for k in ("done", "failed"))
    recent, overall = (("-" if r is None else f"{r:.1f}/min") for r in live.rates(now))
    first = (f"mtop  {live.directory}  {clock(now, now)}   minions: {len(rows)} "
             f"({len(rows) - stopped - stale} live, {stale} stale, {stopped} stopped)   "
             f"running: {sum(row['running'] for row in rows)}")
    second = (f"throughput: {recent} recent, {overall} overall   ETA: {_eta(live, now)}   "
              f"progress: {done} done, {failed} failed, {_remaining(live, done + failed, now)}")
    column = SORTABLE[view.sort]
    arrow = "v" if column.descending != view.reverse else "^"
    last = min(view.top + shown, len(rows))
    third = (f"sort: {column.title} {arrow}   (s next, 1-9 column, r reverse, arrows/PgUp/PgDn scroll, "
             f"q quit)   rows {min(view.top + 1, last)}-{last} of {len(rows)}")
    return [first, second, third]


def _eta(live: Live, now: float) -> str:
    if live.queue is None:
        return "unknown (no queue size reported)"
    remaining = live.queue["remaining"]
    if remaining == 0:
        return "done"
    recent, overall = live.rates(now)
    # The recent rate follows the fleet as it is now (minions come and go).
    found = eta(remaining, live.queue["time"], recent or overall)
    if found["eta_seconds"] is None:
        return "unknown (nothing completed yet)"
    return f"{span(found['eta_seconds'], precise=False)} (about {clock(found['eta_time'], now)})"


def _remaining(live: Live, completed: int, now: float) -> str:
    if live.queue is None:
        return "remaining unknown"
    remaining = live.queue["remaining"]
    total = completed + remaining
    percent = f"{100 * completed / total:.0f}% complete; " if total else ""
    ago = span(max(0.0, now - live.queue["time"]), precise=False)
    return f"{remaining} remaining ({percent}counted {ago} ago)"


def widths(rows: Sequence[Record], width: int) -> list[int]:
    """Each column fits its longest cell (capped); PARAM and LAST STDERR share what is left."""
    fixed = [min(c.most, max((len(cell(row, c.key)) for row in rows), default=0)) for c in COLUMNS[:-2]]
    fixed = [max(w, len(c.title)) for w, c in zip(fixed, COLUMNS, strict=False)]
    left = max(0, width - sum(fixed) - 2 * len(COLUMNS))
    param = max(len("PARAM"), left * 3 // 5)
    return [*fixed, param, max(len("LAST STDERR"), left - param)]


def fit(text: str, size: int) -> str:
    return text.ljust(size) if len(text) <= size else text[: max(0, size - 1)] + "~"


def screen_lines(live: Live, view: View, now: float, width: int, height: int) -> list[tuple[str, str]]:
    """Every line of the screen with its style (title, head, stale, warn, problem or plain)."""
    rows = sort_rows([minion_row(state, now) for state in live.minions.values()], view)
    shown = max(1, height - HEADER_LINES - (1 if live.problems else 0))
    view.top = max(0, min(view.top, len(rows) - shown))
    sizes = widths(rows, width)
    lines = [(text, "title") for text in header(live, view, now, rows, shown)]
    lines.append(("", "plain"))
    lines.append(("  ".join(fit(c.title, w) for c, w in zip(COLUMNS, sizes, strict=True)).rstrip(), "head"))
    for row in rows[view.top:view.top + shown]:
        text = "  ".join(fit(cell(row, c.key), w) for c, w in zip(COLUMNS, sizes, strict=True)).rstrip()
        late = row["timeout"] and row["elapsed"] is not None and row["elapsed"] > 0.8 * row["timeout"]
        lines.append((text, "stale" if row["state"] == "stale" else "warn" if late else "plain"))
    if live.problems:
        lines.append(("warning: " + live.problems[-1], "problem"))
    # Never the last column: curses raises on writing the bottom-right cell.
    return [(text[: max(0, width - 1)], style) for text, style in lines]


def handle_key(view: View, key: int, page: int) -> bool:
    """Apply one key press to `view`; False for q."""
    if key in (ord("q"), ord("Q")):
        return False
    if key == ord("s"):
        view.sort, view.reverse = (view.sort + 1) % len(SORTABLE), False
    elif ord("1") <= key < ord("1") + len(SORTABLE):
        view.sort, view.reverse = key - ord("1"), False
    elif key == ord("r"):
        view.reverse = not view.reverse
    else:
        moves = {curses.KEY_DOWN: 1, ord("j"): 1, curses.KEY_UP: -1, ord("k"): -1, curses.KEY_NPAGE: page,
                 ord(" "): page, curses.KEY_PPAGE: -page, curses.KEY_HOME: -10**9, curses.KEY_END: 10**9}
        view.top = max(0, view.top + moves.get(key, 0))
    return True


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
        if key != -1 and not handle_key(view, key, page=max(1, height - HEADER_LINES)):
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
    if not directory.is_dir():
        print(f"mtop: no reports in {directory}: not an existing directory "
              f"(is MINION_REPORTER=json set for the minions?)", file=sys.stderr)
        return exitcodes.CONFIG
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        print("mtop: needs a terminal (minion-status prints a summary anywhere)", file=sys.stderr)
        return exitcodes.CONFIG
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C is a way to quit too
        curses.wrapper(loop, Live(directory), args.interval)
    return exitcodes.OK


if __name__ == "__main__":
    sys.exit(main())
