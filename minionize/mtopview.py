"""What `mtop` shows, as pure functions of the fleet so far (`mtop.Live`) and the user's choices.

Kept apart from the terminal so that tests can read every line of the
screen for any width and height. The header is made of short segments that
wrap onto more lines when the terminal is narrow, and the table sheds its
least useful columns first (`NARROW`), so that at 80 columns the header stays
readable and each row keeps its parameter and a useful part of its last
stderr line.
"""

from __future__ import annotations

import curses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from .fleet import STALE_AFTER, MinionState, Record, number
from .status import clock, short, span
from .tally import eta

if TYPE_CHECKING:
    from .mtop import Live

#: Between two segments of a header line.
GAP = "   "


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
#: In a narrow terminal, in this order until PARAM and LAST STDERR have SHARED_LEAST
#: characters: a column dropped (0) or cut to that width.
NARROW = (("job_id", 0), ("pid", 0), ("attempt", 0), ("running", 0), ("host", 12), ("state", 10),
          ("elapsed", 0), ("failed", 0))
SHARED_LEAST = 32

KEYS = (
    ("s", "sort on the next column"),
    ("1-9", "sort on that column (below)"),
    ("r", "reverse the sort"),
    ("Up Down j k", "scroll one row"),
    ("PgUp PgDn Space", "scroll one page"),
    ("Home End", "first or last rows"),
    ("?", "this help; any key goes back"),
    ("q Ctrl-C", "quit"),
)
LEGEND = (
    "RUN      runs in flight / slots (MINION_CONCURRENCY)",
    "TRY      attempt of the oldest run in flight",
    "ELAPSED  time of that run / MINION_TIMEOUT",
    f"stale    silent for over {STALE_AFTER:.0f}s without saying it stopped (killed?):",
    "         its runs are not counted as running",
)


@dataclass
class View:
    """What the user chose: the sort column, its direction, the first row shown, the help."""

    sort: int = 0
    reverse: bool = False
    top: int = 0
    help: bool = False
    #: How many rows the last screen had room for (a page, for PgUp and PgDn).
    page: int = 1


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


# -- the header ------------------------------------------------------------------


def wrap(segments: Sequence[str], width: int) -> list[str]:
    """`segments` on as few lines of `width` as whole segments allow; one that opens with "(" sticks to
    the previous one."""
    lines: list[str] = []
    for segment in segments:
        gap = " " if segment.startswith("(") else GAP
        if lines and len(lines[-1]) + len(gap) + len(segment) < width:
            lines[-1] += gap + segment
        else:
            lines.append(segment)
    return lines


def header(live: Live, view: View, now: float, rows: Sequence[Record], width: int) -> list[str]:
    """The lines above the table: the fleet, its throughput and progress, the sort and the keys."""
    states = live.minions.values()
    stale = sum(1 for m in states if m.stale(now))
    stopped = sum(1 for m in states if m.stopped)
    done, failed = (sum(m.counts[k] for m in states) for k in ("done", "failed"))
    # A stale minion was most likely killed: what it ran comes back to another one.
    running = sum(row["running"] for row in rows if row["state"] != "stale")
    recent, overall = (("-" if r is None else f"{r:.1f}/min") for r in live.rates(now))
    column = SORTABLE[view.sort]
    arrow = "v" if column.descending != view.reverse else "^"
    last = min(view.top + view.page, len(rows))
    directory = str(live.directory)
    room = max(8, width - len("mtop  ") - 1)
    directory = directory if len(directory) <= room else "~" + directory[-(room - 1):]
    fleet = [f"mtop  {directory}", clock(now, now),
             f"minions: {len(rows)} ({len(rows) - stopped - stale} live, {stale} stale, {stopped} stopped)",
             f"running: {running}"]
    progress = [f"throughput: {recent} recent, {overall} overall", f"ETA: {_eta(live, now)}",
                *_progress(live, done, failed, now)]
    sort = [f"sort: {column.title} {arrow}", f"rows {min(view.top + 1, last)}-{last} of {len(rows)}",
            "? keys, q quit"]
    return [line for segments in (fleet, progress, sort) for line in wrap(segments, width)]


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


def _progress(live: Live, done: int, failed: int, now: float) -> list[str]:
    counts = f"progress: {done} done, {failed} failed"
    if live.queue is None:
        return [f"{counts}, remaining unknown"]
    remaining = live.queue["remaining"]
    total = done + failed + remaining
    percent = f"{100 * (done + failed) / total:.0f}% complete; " if total else ""
    ago = span(max(0.0, now - live.queue["time"]), precise=False)
    return [f"{counts}, {remaining} remaining", f"({percent}counted {ago} ago)"]


# -- the table -------------------------------------------------------------------


def widths(rows: Sequence[Record], width: int) -> list[tuple[Column, int]]:
    """The columns shown and their widths: each fits its longest cell (capped), and PARAM and
    LAST STDERR share what is left, columns shed in the NARROW order until they have SHARED_LEAST."""
    sizes = {c.key: max(len(c.title), min(c.most, max((len(cell(row, c.key)) for row in rows), default=0)))
             for c in COLUMNS[:-2]}
    titles = {c.key: c.title for c in COLUMNS}

    def left() -> int:  # the last screen column stays empty; two spaces between columns
        return width - 1 - sum(sizes.values()) - 2 * (len(sizes) + 1)

    for key, cap in NARROW:
        if left() >= SHARED_LEAST:
            break
        if cap:
            sizes[key] = min(sizes[key], max(cap, len(titles[key])))
        else:
            del sizes[key]
    longest = max((len(row["param"]) for row in rows), default=0)
    # PARAM takes what it needs up to half; a short parameter leaves more to the stderr line.
    param = max(len("PARAM"), min(longest, left() // 2))
    shown = [(c, sizes[c.key]) for c in COLUMNS[:-2] if c.key in sizes]
    return [*shown, (COLUMNS[-2], param), (COLUMNS[-1], max(len("LAST STDERR"), left() - param))]


def fit(text: str, size: int) -> str:
    return text.ljust(size) if len(text) <= size else text[: max(0, size - 1)] + "~"


def shown_cell(row: Record, column: Column, size: int) -> str:
    text = cell(row, column.key)
    if column.key == "state" and len(text) > size:
        text = text.split(":")[0]  # "stopped: drained" -> "stopped"
    return fit(text, size)


def screen_lines(live: Live, view: View, now: float, width: int, height: int) -> list[tuple[str, str]]:
    """Every line of the screen with its style (title, head, stale, warn, problem or plain)."""
    if view.help:
        return _clip(help_lines(), width)
    rows = sort_rows([minion_row(state, now) for state in live.minions.values()], view)
    notes = _notes(live, rows, width)
    # The header's length depends on the rows shown and the other way round: measure, then write.
    view.page = max(1, height - len(header(live, view, now, rows, width)) - 2 - len(notes))
    view.top = max(0, min(view.top, len(rows) - view.page))
    sizes = widths(rows, width)
    lines = [(text, "title") for text in header(live, view, now, rows, width)]
    lines.append(("", "plain"))
    lines.append(("  ".join(fit(c.title, w) for c, w in sizes).rstrip(), "head"))
    for row in rows[view.top:view.top + view.page]:
        text = "  ".join(shown_cell(row, c, w) for c, w in sizes).rstrip()
        late = row["timeout"] and row["elapsed"] is not None and row["elapsed"] > 0.8 * row["timeout"]
        lines.append((text, "stale" if row["state"] == "stale" else "warn" if late else "plain"))
    return _clip([*lines, *notes], width)


def _notes(live: Live, rows: Sequence[Record], width: int) -> list[tuple[str, str]]:
    """The lines under the table: why it is empty, the last problem met."""
    notes: list[tuple[str, str]] = []
    if live.missing:
        segments = [f"waiting for {live.directory} to appear", "(the minions create it: MINION_REPORTER=json)"]
        notes.extend((line, "problem") for line in wrap(segments, width))
    elif not rows:
        notes.extend((line, "plain") for line in wrap([f"no reports in {live.directory} yet:",
                                                        "waiting for the minions"], width))
    if live.problems:
        notes.append(("warning: " + live.problems[-1], "problem"))
    return notes


def help_lines() -> list[tuple[str, str]]:
    """The `?` screen: the keys, the columns they sort on, what the less obvious columns mean."""
    size = max(len(keys) for keys, _ in KEYS)
    columns = [f"{i} {c.title}" for i, c in enumerate(SORTABLE, start=1)]
    return [("mtop keys (any key goes back to the fleet)", "title"), ("", "plain"),
            *((f"  {keys.ljust(size)}  {what}", "plain") for keys, what in KEYS), ("", "plain"),
            ("columns that 1-9 sort on:", "plain"), ("  " + "  ".join(columns[:5]), "plain"),
            ("  " + "  ".join(columns[5:]), "plain"), ("", "plain"),
            *((f"  {line}", "plain") for line in LEGEND)]


def _clip(lines: Sequence[tuple[str, str]], width: int) -> list[tuple[str, str]]:
    # Never the last column: curses raises on writing the bottom-right cell.
    return [(text[: max(0, width - 1)], style) for text, style in lines]


def handle_key(view: View, key: int) -> bool:
    """Apply one key press to `view`; False for q."""
    if key in (ord("q"), ord("Q")):
        return False
    if key == curses.KEY_RESIZE:
        return True
    if view.help or key == ord("?"):
        view.help = not view.help
    elif key == ord("s"):
        view.sort, view.reverse = (view.sort + 1) % len(SORTABLE), False
    elif ord("1") <= key < ord("1") + len(SORTABLE):
        view.sort, view.reverse = key - ord("1"), False
    elif key == ord("r"):
        view.reverse = not view.reverse
    else:
        page = view.page
        moves = {curses.KEY_DOWN: 1, ord("j"): 1, curses.KEY_UP: -1, ord("k"): -1, curses.KEY_NPAGE: page,
                 ord(" "): page, curses.KEY_PPAGE: -page, curses.KEY_HOME: -10**9, curses.KEY_END: 10**9}
        view.top = max(0, view.top + moves.get(key, 0))
    return True
