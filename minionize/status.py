"""`minion-status`: how a fleet of minions is doing, from the json reporter's files.

    MINION_REPORTER=json minion-status            # REPORTER_JSON_DIRECTORY or ./minion-report
    minion-status --dir /nfs/minion-report --json
    minion-status --plot campaign.png             # pip install 'minionize[plot]'

It reads every `*.jsonl` of the directory (see `minionize.reporters.json` for
the records), while the minions run or after, and prints the fleet totals, one
row per minion, the throughput, the run durations, the remaining work with an
ETA, and the failed parameters grouped by cause (exit code, signal, timeout,
rejection reason). The work is done by pure functions (`load_records` ->
`summarize` -> `render`, in `minionize.fleet` for the first two) that tests
call directly; the command itself sums what the minions summed already
(`minionize.summaryfiles`) and the records after it, the same figures
without parsing every record. `--plot` draws the completion rate, in bins sized from the
campaign's length (per second for a short one, per minute or hour for longer
ones), and every run's duration against its end time, with matplotlib,
imported only then.
`mtop` shows the same directory live.

Exit codes: 0 (also for a directory with no report yet), 2 for a missing
directory, a bad setting, or --plot without matplotlib.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

from . import __version__, exitcodes
from .config import load_environment
from .errors import MinionizeError
from .fleet import STALE_AFTER, Record, ends, load_records, record_time, report_directory
from .fleet import summarize as summarize_at
from .reporters.json import DEFAULT_DIRECTORY
from .summaryfiles import read_directory
from .tally import Tally

__all__ = ["load_records", "main", "render", "summarize"]

PLOT_EXTRA = "pip install 'minionize[plot]'"


def summarize(records: Sequence[Record], now: Optional[float] = None, buckets: int = 10) -> Record:
    """The whole status of a fleet as plain data (what `--json` prints), as of `now`."""
    return summarize_at(records, time.time() if now is None else now, buckets)


# -- rendering ---------------------------------------------------------------


def span(seconds: float, precise: bool = True) -> str:
    """A short duration: 0.12s (when precise), 42s, 3m05s, 2h07m, 3d04h."""
    if seconds < 10 and precise:
        return f"{seconds:.2f}s"
    for unit, size, sub, sub_size in (("d", 86400, "h", 3600), ("h", 3600, "m", 60), ("m", 60, "s", 1)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}{int(seconds % size // sub_size):02d}{sub}"
    return f"{seconds:.0f}s"


def clock(moment: float, now: float) -> str:
    """A local time of day, with the date when it is not today."""
    same_day = time.localtime(moment)[:3] == time.localtime(now)[:3]
    return time.strftime("%H:%M:%S" if same_day else "%Y-%m-%d %H:%M:%S", time.localtime(moment))


def short(value: Any, limit: int = 60) -> str:
    """`value` on one line (JSON unless a string), cut to `limit` characters."""
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def render_totals(summary: Record) -> list[str]:
    t = summary["totals"]
    line = (f"fleet: {t['minions']} minion(s) ({t['active']} active) | {t['done']} done | "
            f"{t['failed']} failed | {t['retried']} retried | {t['running']} running | "
            f"{t['released']} released")
    extras = (f" | {t['held']} held (dry run)" if t["held"] else "") + (
        f" | {t['stale']} stale (silent for over {STALE_AFTER:.0f}s)" if t["stale"] else "")
    return [line + extras]


def render_minions(summary: Record) -> list[str]:
    """A table, one row per minion, columns aligned."""
    now = summary["generated"]
    table = [("MINION", "HOST", "JOB", "DONE", "FAILED", "RETRIED", "RUNNING", "LAST SEEN", "STATE")]
    for row in summary["minions"]:
        seen = row["last_seen"]
        table.append((
            row["minion"], row["host"] or "-", row["job_id"] or "-", str(row["done"]),
            str(row["failed"]), str(row["retried"]), str(row["running"]),
            "-" if seen is None else f"{span(max(0.0, now - seen), precise=False)} ago", row["state"],
        ))
    widths = [max(len(cells[i]) for cells in table) for i in range(len(table[0]))]
    return ["  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip() for cells in table]


def render_throughput(summary: Record) -> list[str]:
    rates = summary["throughput"]
    now = summary["generated"]
    buckets = rates["buckets"]
    top = max((b["completed"] for b in buckets), default=0) or 1
    lines = [f"completed per minute (done + failed), last {len(buckets)} minute(s), each up to the time shown:"]
    for bucket in buckets:
        bar = "#" * math.ceil(40 * bucket["completed"] / top)
        # Labelled by its end: a run done at 10:00:30 shows under 10:00:59, never under 09:59:59.
        end = bucket["start"] + rates["bucket_seconds"]
        lines.append(f"  {clock(end, now)}  {bucket['completed']:>5}  {bar}".rstrip())
    recent, overall = (("-" if r is None else f"{r:.1f}")
                       for r in (rates["recent_per_minute"], rates["overall_per_minute"]))
    return [*lines, f"rate: {recent}/min recently, {overall}/min overall"]


def render_durations(summary: Record) -> list[str]:
    stats = summary["durations"]
    if stats is None:
        return ["durations: no finished run yet"]
    parts = "  ".join(f"{k} {span(stats[k])}" for k in ("min", "median", "p90", "max"))
    return [f"durations ({stats['count']} runs): {parts}"]


def render_queue(summary: Record) -> list[str]:
    queue = summary["queue"]
    if queue is None:
        return ["remaining: unknown (no minion has reported its queue)"]
    now = summary["generated"]
    line = (f"remaining: {queue['remaining']} (reported by {queue['minion']}, "
            f"{span(max(0.0, now - queue['time']), precise=False)} ago); ")
    if queue["eta_seconds"] is None:
        return [line + "ETA: unknown, nothing completed yet"]
    if queue["remaining"] == 0:
        return [line + "ETA: done"]
    return [line + f"ETA: {span(queue['eta_seconds'])} (about {clock(queue['eta_time'], now)})"]


def render_failures(summary: Record) -> list[str]:
    groups = summary["failures"]
    if not groups:
        return ["failed parameters: none"]
    total = sum(group["count"] for group in groups)
    lines = [f"failed parameters ({total}), by cause:"]
    for group in groups:
        lines.append(f"  {group['count']:>5}  {short(group['cause'], 100)}")
        error = str(group.get("error") or "")
        if error and error not in group["cause"]:
            lines.append(f"         error: {short(error, 100)}")
        # JSON, so that a parameter can be told apart from the comma and pasted back.
        params = ", ".join(short(json.dumps(p, default=str)) for p in group["params"])
        lines.append(f"         e.g. {params}")
        tail = [line for line in group.get("stderr_tail", "").splitlines() if line.strip()]
        if tail:
            lines.append(f"         stderr: {short(tail[-1], 100)}")
    return lines


def render(summary: Record) -> str:
    """The summary as text for a terminal."""
    sections = (render_totals, render_minions, render_throughput, render_durations,
                render_queue, render_failures)
    return "\n\n".join("\n".join(section(summary)) for section in sections)


# -- plotting ----------------------------------------------------------------


#: Bin widths of the --plot throughput, in seconds: round ones, from a second to a day.
BIN_WIDTHS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 3 * 3600, 6 * 3600,
              12 * 3600, 86400)
#: At most this many bins: the narrowest round width that fits gives from about 20 to this many.
MOST_BINS = 60


def bin_width(first: float, last: float, most: int = MOST_BINS) -> int:
    """The narrowest round width whose bins, aligned on multiples of it, cover first..last in `most`."""
    for width in BIN_WIDTHS:
        if last // width - first // width < most:
            return width
    return 86400 * math.ceil((last - first + 86400) / (86400 * most))


def rate_unit(width: int) -> tuple[str, int]:
    """The unit a rate over bins of `width` seconds reads best in: per second, minute or hour."""
    return ("second", 1) if width < 60 else ("minute", 60) if width < 3600 else ("hour", 3600)


def timeline(records: Sequence[Record], most: int = MOST_BINS) -> Record:
    """What `--plot` draws: completions per bin, bins sized from the campaign's length, each with its
    rate per `rate_unit`; and every run's duration."""
    runs = [(t, r) for r in ends(records, ("acked", "failed", "retried")) if (t := record_time(r)) is not None]
    completed = sorted((t, r["verdict"]) for t, r in runs if r["verdict"] in ("acked", "failed"))
    points = [(t, float(r.get("duration") or 0.0), str(r["verdict"])) for t, r in runs]
    size = bin_width(completed[0][0], completed[-1][0], most) if completed else 60
    unit, unit_seconds = rate_unit(size)
    data: Record = {"bucket_seconds": size, "rate_unit": unit, "unit_seconds": unit_seconds, "buckets": [],
                    "points": points}
    if not completed:
        return data
    first = completed[0][0] // size * size
    count = int(completed[-1][0] // size - first // size) + 1
    buckets = [{"start": first + i * size, "done": 0, "failed": 0} for i in range(count)]
    for moment, verdict in completed:
        buckets[int(moment // size - first // size)]["done" if verdict == "acked" else "failed"] += 1
    for bucket in buckets:
        bucket["rate"] = (bucket["done"] + bucket["failed"]) * unit_seconds / size
    return {**data, "buckets": buckets}


def width_text(seconds: int) -> str:
    """A bin width: 5 s, 15 min, 3 h, 2 d."""
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds // size} {unit}"
    return f"{seconds} s"


def plot(records: Sequence[Record], path: Path, title: str) -> None:
    """Draw the throughput over time above the run durations over time, into a PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    data = timeline(records)
    figure = Figure(figsize=(11, 7), layout="constrained")
    FigureCanvasAgg(figure)  # Agg: no display needed, and pyplot's global state is never touched
    top, bottom = figure.subplots(2, 1, sharex=True)
    figure.suptitle(title)
    if data["points"]:
        _draw_throughput(top, data)
        _draw_durations(bottom, data)
    else:
        for axes in (top, bottom):
            axes.set_axis_off()
        top.text(0.5, 0.5, "no finished run yet", transform=top.transAxes, ha="center")
    figure.savefig(path, format="png", dpi=100)


def _draw_throughput(axes: Any, data: Record) -> None:
    """The completion rate per bin as bars, the failed share stacked in red on the done one."""
    import datetime

    width = datetime.timedelta(seconds=data["bucket_seconds"] * 0.9)
    starts = [datetime.datetime.fromtimestamp(b["start"]) for b in data["buckets"]]
    scale = data["unit_seconds"] / data["bucket_seconds"]
    done = [b["done"] * scale for b in data["buckets"]]
    axes.bar(starts, done, width=width, align="edge", color="tab:blue", label="done")
    axes.bar(starts, [b["failed"] * scale for b in data["buckets"]], width=width, align="edge", bottom=done,
             color="tab:red", label="failed")
    axes.set_ylabel(f"completed per {data['rate_unit']}\n({width_text(data['bucket_seconds'])} bins)")
    axes.legend(loc="upper left")


def _draw_durations(axes: Any, data: Record) -> None:
    """One dot per run at its end: how long it took, coloured by what became of it."""
    import datetime

    from matplotlib.dates import AutoDateLocator, ConciseDateFormatter

    for verdict, colour in (("acked", "tab:blue"), ("retried", "tab:orange"), ("failed", "tab:red")):
        chosen = [(datetime.datetime.fromtimestamp(t), d) for t, d, v in data["points"] if v == verdict]
        if chosen:
            xs, ys = zip(*chosen, strict=True)
            axes.scatter(xs, ys, s=8, color=colour, alpha=0.6, label=verdict)
    locator = AutoDateLocator()
    axes.xaxis.set_major_locator(locator)
    axes.xaxis.set_major_formatter(ConciseDateFormatter(locator))
    axes.set_ylabel("run duration (s)")
    axes.set_xlabel("end of the run (local time)")
    axes.legend(loc="upper left")


def _matplotlib_missing() -> bool:
    try:
        import matplotlib  # noqa: F401  (only when --plot is given: it takes a while)
    except ImportError:
        return True
    return False


# -- command line ------------------------------------------------------------


#: The most minutes --buckets shows: a week (each is a line, and a bucket in memory).
MOST_BUCKETS = 7 * 24 * 60


def _buckets(text: str) -> int:
    if not text.isdigit() or len(text) > 6 or not 1 <= int(text) <= MOST_BUCKETS:
        raise argparse.ArgumentTypeError(f"expected a whole number from 1 to {MOST_BUCKETS} (a week of "
                                         f"minutes), not {text[:20]!r}")
    return int(text)


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="minion-status", description="Summarize the reports "
                                     "that minions write with MINION_REPORTER=json.")
    parser.add_argument("--dir", help=f"the report directory (default: REPORTER_JSON_DIRECTORY "
                                      f"or {DEFAULT_DIRECTORY})")
    parser.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    parser.add_argument("--buckets", type=_buckets, default=10, metavar="N",
                        help="show the throughput of the last N minutes (default 10)")
    parser.add_argument("--plot", metavar="FILE.png", type=Path,
                        help=f"also draw throughput and run durations over time ({PLOT_EXTRA})")
    parser.add_argument("--failed", action="store_true", help="list the failed (dead-lettered) parameters "
                        "and why, from the queue of the engine that MINION_ENGINE chooses")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return parser.parse_args(argv)


def _one_field(text: str) -> str:
    """`text` as one field of a line: a tab, a line end or a NUL in it written as \\t, \\n, \\r, \\0,
    so that each failed parameter stays one line (--json has them as they are)."""
    return text.replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r").replace("\0", "\\0")


def _failed(as_json: bool) -> int:
    """`--failed`: what the engine's dead-letter place holds, one line each (parameter, tab, reason)."""
    from . import config
    from .assembly import build_engine, exit_code_of

    try:
        engine = build_engine(config.load())
        try:
            letters = engine.dead_letters()
        finally:
            engine.close()
    except NotImplementedError as exc:
        return _fail(str(exc))
    except MinionizeError as exc:
        print(f"minion-status: {exc}", file=sys.stderr)
        return exit_code_of(exc)
    if as_json:
        _emit(json.dumps([{"param": letter.param, "reason": letter.reason} for letter in letters]))
    else:
        _emit("\n".join(f"{_one_field(letter.param)}\t{_one_field(letter.reason)}" for letter in letters)
              or "no failed parameters")
    return exitcodes.OK


def _emit(text: str) -> None:
    try:
        print(text, flush=True)
    except BrokenPipeError:
        # `minion-status | head`: the reader left; say nothing more.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def _fail(message: str) -> int:
    print(f"minion-status: {message}", file=sys.stderr)
    return exitcodes.CONFIG


def _directory(args: argparse.Namespace) -> Path:
    load_environment(os.environ)
    return report_directory(args.dir, os.environ, "minion-status")


def _read(directory: Path, every_record: bool) -> tuple[Optional[list[Record]], Tally]:
    """The records, when they are all needed (--plot draws every run), and what they add up to."""
    if every_record:
        records, problems = load_records(directory)
        tally = Tally.of(records)
    else:
        # What the minions summed (minionize.summaryfiles), then the records after it.
        records, (tally, problems) = None, read_directory(directory)
    for problem in problems:
        print(f"minion-status: warning: {problem}", file=sys.stderr)
    return records, tally


def main(argv: Optional[Sequence[str]] = None) -> int:
    """The `minion-status` console script."""
    try:
        return _main(argv)
    except KeyboardInterrupt:
        print("minion-status: interrupted", file=sys.stderr)
        return exitcodes.INTERRUPTED


def _main(argv: Optional[Sequence[str]]) -> int:
    args = parse_args(argv)
    if args.failed:
        return _failed(args.json)
    try:
        directory = _directory(args)
    except MinionizeError as exc:
        return _fail(str(exc))
    if not directory.is_dir():
        return _fail(f"no reports in {directory}: not an existing directory "
                     f"(is MINION_REPORTER=json set for the minions?)")
    if args.plot and _matplotlib_missing():
        return _fail(f"--plot needs matplotlib: {PLOT_EXTRA}")
    records, tally = _read(directory, args.plot is not None)
    summary = {"directory": str(directory), **tally.summary(time.time(), args.buckets)}
    if args.plot:
        try:
            plot(records or [], args.plot, f"{directory}: {summary['totals']['done']} done, "
                                     f"{summary['totals']['failed']} failed")
        except OSError as exc:
            return _fail(f"cannot write {args.plot}: {exc.strerror or exc}")
    if args.json:
        _emit(json.dumps(summary, default=str))
    elif not tally.records:
        _emit(f"no reports in {directory} yet (is MINION_REPORTER=json set for the minions?)")
    else:
        _emit(render(summary) + (f"\n\nplot: {args.plot}" if args.plot else ""))
    return exitcodes.OK


if __name__ == "__main__":
    sys.exit(main())
