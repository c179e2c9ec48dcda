"""The summaries a minion writes beside its report (minionize.summaryfiles), and what readers make of them.

Whatever the summaries say, `read_directory` must sum a report directory
exactly as a read of every record does (`fleet.summarize`): with summaries
written mid-way and records after them, with none (an older minionize),
with summaries that no longer match their report, and after a minion died
or could not write.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from minionize import fleet, mtop
from minionize.message import Outcome
from minionize.reporters.base import MinionInfo, Probe, RunRecord
from minionize.reporters.json import JsonReporter
from minionize.summaryfiles import SUMMARY_DIRECTORY, read_directory, read_summary

NOW = time.time()
BASE = NOW - 500
FAILURES = (
    Outcome.failure("exit code 3", exit_code=3, stderr_tail="Traceback\nValueError: bad\n"),
    Outcome.failure("timed out after 8s", timed_out=True),
    Outcome.failure("killed", signal=9, stderr_tail="oom\n"),
    Outcome.rejected("not a number"),
)
PROBE = Probe(alive=True, ready=True, draining=False, in_flight=1, free_slots=1)


def run(reporter: JsonReporter, number: int, outcome: Outcome, verdict: str) -> None:
    record = RunRecord(f"id-{number}", {"n": number, "s": f"p\"{number}\\"}, 1 + number % 3, number % 2,
                       BASE + number)
    reporter.started(record)
    record.end, record.outcome, record.verdict = record.start + 0.5 + number % 7, outcome, verdict
    reporter.finished(record)


def campaign(directory: Path, minions: int = 3, runs: int = 60) -> list[JsonReporter]:
    """Minions that run, fail in several ways, beat (writing summaries) and report their queue; the
    first stops, the others still run one parameter each, with records after their last summary."""
    reporters = []
    for index in range(minions):
        reporter = JsonReporter(directory, timeout=30.0 if index else None)
        reporter.open(MinionInfo(f"node-{index}-{index}-abcdef", f"node-{index}", index, "J1", "execo", 2,
                                 BASE - index))
        reporters.append(reporter)
    for number in range(runs):
        reporter = reporters[number % minions]
        verdict = ("acked", "failed", "retried", "released", "held")[number % 5]
        run(reporter, number, FAILURES[number % 4] if verdict in ("failed", "retried") else Outcome.success(),
            verdict)
        if number % 7 == 0:
            reporter.heartbeat(PROBE)
        if number % 11 == 0:
            reporter.queue(1000 - number)
    for reporter in reporters[1:]:
        reporter.started(RunRecord("id-long", "long one", 1, 0, BASE + runs))
    reporters[0].close("drained")
    return reporters


def full_read(directory: Path, now: float = NOW) -> tuple[dict[str, Any], list[str]]:
    records, problems = fleet.load_records(directory)
    return fleet.summarize(records, now), problems


def summed(directory: Path, now: float = NOW) -> tuple[dict[str, Any], list[str]]:
    tally, problems = read_directory(directory)
    return tally.summary(now), problems


def covered(report: Path) -> int:
    """How many bytes of `report` its summary covers (0: none, or one that does not match)."""
    stat = report.stat()
    return read_summary(report, stat.st_ino, stat.st_size)[1]


def test_summaries_and_the_records_after_them_add_up_to_a_full_read(tmp_path: Path) -> None:
    campaign(tmp_path)
    reports = sorted(tmp_path.glob("*.jsonl"))
    assert len(reports) == 3
    for report in reports:
        # Summed up to a heartbeat or the stop; the two minions still running wrote records since.
        assert 0 < covered(report) <= report.stat().st_size
    assert covered(reports[0]) == reports[0].stat().st_size
    assert all(covered(report) < report.stat().st_size for report in reports[1:])
    whole = full_read(tmp_path)
    assert whole[0]["totals"]["failed"] == 12 and len(whole[0]["failures"]) == 4
    assert summed(tmp_path) == whole
    # minion-status --json: the same figures either way (all but "generated", the clock).
    result = subprocess.run([sys.executable, "-m", "minionize.status", "--dir", str(tmp_path), "--json"],
                            capture_output=True, text=True, timeout=60, check=True)
    printed = json.loads(result.stdout)
    assert printed["totals"] == whole[0]["totals"] and printed["failures"] == whole[0]["failures"]
    assert printed["durations"] == whole[0]["durations"]


def test_a_report_without_summaries_is_read_whole(tmp_path: Path) -> None:
    campaign(tmp_path)
    expected = full_read(tmp_path)
    for path in (tmp_path / SUMMARY_DIRECTORY).iterdir():
        path.unlink()
    assert summed(tmp_path) == expected


@pytest.mark.parametrize("damage", ["rewritten", "truncated", "runs-lost", "torn-summary", "other-version"])
def test_a_summary_that_does_not_match_its_report_is_not_trusted(tmp_path: Path, damage: str) -> None:
    campaign(tmp_path)
    report = sorted(tmp_path.glob("*.jsonl"))[1]
    summary = tmp_path / SUMMARY_DIRECTORY / (report.name[: -len(".jsonl")] + ".json")
    if damage == "rewritten":
        # The same file (inode) written again by a minion of the same id, started at another time.
        first, rest = report.read_text().split("\n", 1)
        report.write_text(first.replace(f'"time": {BASE - 1}', f'"time": {BASE + 1}') + "\n" + rest)
    elif damage == "truncated":
        with open(report, "r+b") as handle:
            handle.truncate(covered(report) // 2)
    elif damage == "runs-lost":
        runs = summary.with_suffix(".runs")
        runs.write_bytes(runs.read_bytes()[:-16])
    elif damage == "torn-summary":
        summary.write_bytes(summary.read_bytes()[:40])
    else:
        summary.write_text(json.dumps({**json.loads(summary.read_text()), "version": 0}))
    assert covered(report) == 0
    assert summed(tmp_path) == full_read(tmp_path)


def test_a_minion_s_records_in_two_files_are_summed_in_one_pass(tmp_path: Path) -> None:
    campaign(tmp_path, minions=2)
    first = sorted(tmp_path.glob("*.jsonl"))[0]
    # Another file that carries records of the same minion (a copy of its first lines).
    (tmp_path / "zz-copy.jsonl").write_text("".join(first.read_text().splitlines(keepends=True)[:5]))
    assert summed(tmp_path) == full_read(tmp_path)


KILLED = textwrap.dedent("""
    import sys, time
    from minionize.message import Outcome
    from minionize.reporters.base import MinionInfo, Probe, RunRecord
    from minionize.reporters.json import JsonReporter
    reporter = JsonReporter(sys.argv[1])
    reporter.open(MinionInfo("killed-1-abcdef", "h", 1, None, "execo", 1, time.time()))
    probe = Probe(alive=True, ready=True, draining=False, in_flight=1, free_slots=0)
    number = 0
    while True:
        record = RunRecord(f"id-{number}", "x" * (number % 300), 1, 0, time.time())
        reporter.started(record)
        record.end, record.outcome, record.verdict = time.time(), Outcome.success(), "acked"
        reporter.finished(record)
        if number % 50 == 0:
            reporter.heartbeat(probe)
        if number == 200:
            print("ready", flush=True)
        number += 1
""")


def test_a_minion_killed_while_it_writes_leaves_a_report_that_adds_up(tmp_path: Path) -> None:
    """SIGKILL at an arbitrary instant: in a record, between a record and its summary, in a summary."""
    for attempt in range(5):
        directory = tmp_path / f"kill-{attempt}"
        child = subprocess.Popen([sys.executable, "-c", KILLED, str(directory)], stdout=subprocess.PIPE)
        assert child.stdout is not None and child.stdout.readline() == b"ready\n"
        time.sleep(0.01 * attempt)
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
        [report] = directory.glob("*.jsonl")
        assert covered(report) > 0
        assert summed(directory) == full_read(directory)


WRITE_ERROR = textwrap.dedent("""
    import resource, signal, sys, time
    from minionize.message import Outcome
    from minionize.reporters.base import MinionInfo, Probe, RunRecord
    from minionize.reporters.json import JsonReporter
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write beyond the limit fails with EFBIG instead
    reporter = JsonReporter(sys.argv[1])
    reporter.open(MinionInfo("cut-1-abcdef", "h", 1, None, "execo", 1, time.time()))
    probe = Probe(alive=True, ready=True, draining=False, in_flight=1, free_slots=0)
    for number in range(400):
        if number == 100:
            resource.setrlimit(resource.RLIMIT_FSIZE, (60_000, 60_000))
        record = RunRecord(f"id-{number}", "p", 1, 0, time.time())
        reporter.started(record)
        record.end, record.outcome, record.verdict = time.time(), Outcome.success(), "acked"
        reporter.finished(record)
        if number % 10 == 0:
            reporter.heartbeat(probe)
    reporter.close("drained")
""")


def test_a_write_error_stops_the_summaries_and_the_report_still_adds_up(tmp_path: Path) -> None:
    subprocess.run([sys.executable, "-c", WRITE_ERROR, str(tmp_path)], check=True, timeout=60)
    [report] = tmp_path.glob("*.jsonl")
    size = report.stat().st_size
    assert size == 60_000  # cut mid-record by the limit: the rest of the records were dropped
    assert 0 < covered(report) < size
    summary, problems = summed(tmp_path)
    assert (summary, problems) == full_read(tmp_path)
    assert 100 <= summary["totals"]["done"] < 400


def test_mtop_starts_from_the_summaries_and_follows_the_records(tmp_path: Path) -> None:
    reporters = campaign(tmp_path)
    live = mtop.Live(tmp_path)
    live.refresh()
    run(reporters[1], 1000, Outcome.success(), "acked")
    reporters[2].heartbeat(PROBE)
    live.refresh()
    summary = full_read(tmp_path, now=time.time())[0]
    now = summary["generated"]
    assert {m: s.row(now) for m, s in live.minions.items()} == {r["minion"]: r for r in summary["minions"]}
    assert live.completed == summary["totals"]["done"] + summary["totals"]["failed"]
    assert live.queue is not None and live.queue["remaining"] == summary["queue"]["remaining"]
    records, _ = fleet.load_records(tmp_path)
    assert live.first == min(t for r in records if (t := fleet.record_time(r)) is not None)


def test_a_report_written_again_from_an_old_summary_directory(tmp_path: Path) -> None:
    """A directory used for a second campaign keeps the first one's summaries: a new minion of the
    same id (a rerun with fixed ids) starts its runs file afresh."""
    campaign(tmp_path, minions=1)
    for report in tmp_path.glob("*.jsonl"):
        report.unlink()
    reporter = JsonReporter(tmp_path)
    reporter.open(MinionInfo("node-0-0-abcdef", "node-0", 0, "J1", "execo", 2, BASE))
    run(reporter, 5000, Outcome.success(), "acked")
    reporter.close("drained")
    [report] = tmp_path.glob("*.jsonl")
    assert covered(report) == report.stat().st_size
    summary = summed(tmp_path)
    assert summary == full_read(tmp_path) and summary[0]["totals"]["done"] == 1
    assert os.path.getsize(tmp_path / SUMMARY_DIRECTORY / "node-0-0-abcdef.runs") == 16


def test_failures_of_ever_new_causes_are_counted_together_past_a_limit(tmp_path: Path) -> None:
    """A callback whose error names its parameter makes a cause per failure: the summary a minion rewrites
    and what minion-status prints must not grow with them."""
    from minionize import tally as tallies
    from minionize.status import render_failures

    def failed(number: int) -> dict[str, Any]:
        return {"type": "end", "minion": "m1", "time": 1000.0 + number, "verdict": "failed",
                "param": number, "error": f"ValueError: bad value {number}", "duration": 0.1}

    one = tallies.Tally.of(failed(number) for number in range(5000))
    assert len(one.failures) == tallies.CAUSES + 1
    assert sum(group["count"] for group in one.failures.values()) == 5000
    other = one.failures[tallies.OTHER_CAUSES]
    assert other["count"] == 5000 - tallies.CAUSES and len(other["params"]) == fleet.FAILED_SAMPLES
    assert len(json.dumps(one.to_json())) < 40_000
    lines = render_failures(one.summary(now=7000.0))
    assert lines[0] == "failed parameters (5000), by cause:" and len(lines) < 4 * (tallies.CAUSES + 2)
    # Tallies of two files add up under the same limit, every failure counted.
    first = tallies.Tally.of(failed(number) for number in range(80))
    second = tallies.Tally.of({**failed(number), "minion": "m2"} for number in range(80, 160))
    first.merge(second)
    assert len(first.failures) == tallies.CAUSES + 1
    assert sum(group["count"] for group in first.failures.values()) == 160
    assert first.failures[tallies.OTHER_CAUSES]["count"] == 60
    # Read back from what a minion writes down, the same.
    again = tallies.Tally.from_json(json.loads(json.dumps(first.to_json())))
    assert again.failures == first.failures
