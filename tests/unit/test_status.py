"""minion-status over real files written by the real json reporter of two minions.

The fleet (see `fleet`): node-1 (job 4242) is still running one parameter
and reported 10 parameters left; node-2 stopped ("drained"). Durations of
the runs that were not cut short are 1..10 s.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from minionize import status
from minionize.message import Outcome
from minionize.reporters.base import MinionInfo, RunRecord
from minionize.reporters.json import JsonReporter
from tests.conftest import minion_env, require

NOW = time.time()
BASE = NOW - 500
EXIT_3 = Outcome.failure("exit code 3", exit_code=3, stderr_tail="Traceback\nValueError: bad\n")
TIMEOUT = Outcome.failure("timed out after 8s", timed_out=True)


def run(reporter: JsonReporter, param: str, offset: float, duration: float,
        outcome: Outcome, verdict: str, attempt: int = 1) -> None:
    record = RunRecord(f"id-{param}", param, attempt, 0, BASE + offset)
    reporter.started(record)
    record.end, record.outcome, record.verdict = record.start + duration, outcome, verdict
    reporter.finished(record)


@pytest.fixture
def fleet(tmp_path: Path) -> Path:
    directory = tmp_path / "minion-report"
    one = JsonReporter(directory)
    one.open(MinionInfo("node-1-100-aaaaaa", "node-1", 100, "4242", "execo", 2, BASE - 10))
    two = JsonReporter(directory)
    two.open(MinionInfo("node-2-200-bbbbbb", "node-2", 200, None, "execo", 1, BASE))
    for i, param in enumerate(("a1", "a2", "a3", "a4")):
        run(one, param, 30 * i, i + 1, Outcome.success(), "acked")
    run(one, "a5", 150, 5, EXIT_3, "retried")
    run(one, "a9", 180, 9, EXIT_3, "failed", attempt=3)
    one.started(RunRecord("id-a10", "a10", 1, 1, BASE + 200))  # still running
    run(two, "b6", 0, 6, Outcome.success(), "acked")
    run(two, "b7", 30, 7, Outcome.success(), "acked")
    run(two, "b8", 60, 8, TIMEOUT, "failed", attempt=3)
    run(two, "b10", 90, 10, EXIT_3, "failed", attempt=3)
    run(two, "b11", 120, 0.5, Outcome.interrupted(), "released")  # given back by a stop
    two.queue(20)
    time.sleep(0.01)  # the queue record of node-1 is the newest
    one.queue(10)
    two.close("drained")
    return directory


def summary_of(directory: Path, now: float = NOW + 1) -> dict[str, Any]:
    records, problems = status.load_records(directory)
    assert problems == []
    return status.summarize(records, now=now)


def minion_status(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "minionize.status", *args],
        cwd=cwd, env={**os.environ, **env}, capture_output=True, text=True, timeout=60,
    )


def test_totals_count_verdicts_and_running_runs(fleet: Path) -> None:
    totals = summary_of(fleet)["totals"]
    assert totals == {
        "minions": 2, "active": 1, "stale": 0, "done": 6, "failed": 3, "retried": 1, "released": 1,
        "held": 0, "running": 1,
    }


def test_a_silent_minion_is_stale_until_it_stops(fleet: Path) -> None:
    # node-2 stopped: silence is normal for it.
    seen = max(row["last_seen"] for row in summary_of(fleet)["minions"])  # node-1's queue record
    early, late = summary_of(fleet, now=seen + 29), summary_of(fleet, now=seen + 31)
    assert early["totals"]["stale"] == 0 and late["totals"]["stale"] == 1
    # Most likely SIGKILLed: not active, and its run died with it (another minion will run it).
    assert (early["totals"]["active"], early["totals"]["running"]) == (1, 1)
    assert (late["totals"]["active"], late["totals"]["running"]) == (0, 0)
    states = {row["minion"]: row["state"] for row in late["minions"]}
    assert states == {"node-1-100-aaaaaa": "stale", "node-2-200-bbbbbb": "stopped: drained"}
    assert "| 1 stale (silent for over 30s)" in status.render(late)


def test_one_row_per_minion(fleet: Path) -> None:
    rows = {row["minion"]: row for row in summary_of(fleet)["minions"]}
    one, two = rows["node-1-100-aaaaaa"], rows["node-2-200-bbbbbb"]
    assert (one["host"], one["job_id"], one["done"], one["failed"], one["retried"]) == (
        "node-1", "4242", 4, 1, 1
    )
    assert (one["running"], one["stopped"]) == (1, None)
    assert [(run["param"], run["since"]) for run in one["current"]] == [("a10", BASE + 200)]
    assert one["last_stderr"] == "ValueError: bad"  # of its last run, a9
    assert (two["host"], two["job_id"], two["done"], two["failed"], two["released"]) == (
        "node-2", None, 2, 2, 1
    )
    # node-2 stopped: whatever it started is no longer running.
    assert (two["running"], two["stopped"]) == (0, "drained")
    assert NOW - 5 < one["last_seen"] <= time.time()


def test_durations_ignore_released_runs(fleet: Path) -> None:
    assert summary_of(fleet)["durations"] == {
        "count": 10, "min": 1.0, "median": 5.5, "p90": 9.0, "max": 10.0
    }


def test_throughput_and_eta_from_the_newest_queue_record(fleet: Path) -> None:
    summary = summary_of(fleet, now=NOW + 1)
    rates = summary["throughput"]
    assert len(rates["buckets"]) == 10
    assert sum(b["completed"] for b in rates["buckets"]) == 9  # done + failed
    # The fleet started at BASE - 10 (node-1's start), within the 10-minute window.
    span = (NOW + 1) - (BASE - 10)
    assert rates["recent_per_minute"] == pytest.approx(9 * 60 / span)
    queue = summary["queue"]
    assert (queue["remaining"], queue["minion"]) == (10, "node-1-100-aaaaaa")
    assert queue["eta_seconds"] == pytest.approx(10 * span / 9)
    assert queue["eta_time"] == pytest.approx(queue["time"] + queue["eta_seconds"])


def test_a_finished_campaign_shows_its_last_minutes() -> None:
    then = time.time() - 7200
    records = [
        {"type": "minion", "minion": "m", "time": then},
        {"type": "end", "minion": "m", "verdict": "acked", "end": then + 30, "duration": 1},
        {"type": "end", "minion": "m", "verdict": "acked", "end": then + 90, "duration": 1},
        {"type": "stop", "minion": "m", "reason": "drained", "time": then + 91},
    ]
    summary = status.summarize(records, buckets=3)
    rates = summary["throughput"]
    assert [b["completed"] for b in rates["buckets"]] == [0, 1, 1]
    # Each bar is labelled by its end: the last one ends with the campaign (its last record).
    # (Two hours ago is yesterday between midnight and two: the label then has its date, a space inside.)
    bars = [line.strip() for line in status.render_throughput(summary)[1:4]]
    labels = [status.clock(then + 91 - 60 * i, time.time()) for i in (2, 1, 0)]
    assert [bar[len(label):].split()[0] for bar, label in zip(bars, labels, strict=True)] == ["0", "1", "1"]
    assert all(bar.startswith(label + " ") for bar, label in zip(bars, labels, strict=True)), bars
    assert rates["overall_per_minute"] == pytest.approx(2 * 60 / 90)


def test_failures_grouped_by_cause_with_samples(fleet: Path) -> None:
    groups = summary_of(fleet)["failures"]
    assert [(g["cause"], g["count"], g["params"]) for g in groups] == [
        ("exit code 3", 2, ["a9", "b10"]),
        ("timeout", 1, ["b8"]),
    ]
    assert groups[0]["stderr_tail"].endswith("ValueError: bad\n")
    assert groups[1]["error"] == "timed out after 8s"


def causes(directory: Path) -> Path:
    """A minion whose failures have every kind of cause; retried runs are not failures yet."""
    reporter = JsonReporter(directory)
    reporter.open(MinionInfo("node-3-300-cccccc", "node-3", 300, None, "execo", 1, BASE))
    failures = [
        ("p1", Outcome.failure("exit code 3", exit_code=3)), ("p2", Outcome.failure("exit code 3", exit_code=3)),
        ("p3", Outcome.failure("exit code 1", exit_code=1)),
        ("p4", Outcome.failure("killed by SIGKILL", signal=9)),
        ("p5", Outcome.failure("timed out after 8s", 143, signal=15, timed_out=True)),
        ("p6", Outcome.failure("timed out after 9s", None, signal=9, timed_out=True)),
        ("p7", Outcome.rejected("unbalanced quotes")),
        ("p8", Outcome.failure("ValueError: no")),
    ]
    for i, (param, outcome) in enumerate(failures):
        run(reporter, {"n": param}, 10 * i, 1, outcome, "failed", attempt=3)
    run(reporter, "p9", 100, 1, Outcome.failure("exit code 3", exit_code=3), "retried")
    reporter.close("drained")
    return directory


def test_failures_group_on_exit_code_signal_timeout_or_reason(tmp_path: Path) -> None:
    records, _ = status.load_records(causes(tmp_path))
    groups = status.summarize(records)["failures"]
    assert [(g["cause"], g["count"], g["params"]) for g in groups] == [
        ("exit code 3", 2, [{"n": "p1"}, {"n": "p2"}]),
        ("timeout", 2, [{"n": "p5"}, {"n": "p6"}]),
        ("ValueError: no", 1, [{"n": "p8"}]),
        ("exit code 1", 1, [{"n": "p3"}]),
        ("rejected: unbalanced quotes", 1, [{"n": "p7"}]),
        ("signal 9 (SIGKILL)", 1, [{"n": "p4"}]),
    ]
    text = status.render(status.summarize(records))
    assert "failed parameters (8), by cause:" in text
    assert '      2  exit code 3\n         e.g. {"n": "p1"}, {"n": "p2"}' in text
    assert "      2  timeout\n         error: timed out after 8s\n" in text


def test_render_shows_every_section(fleet: Path) -> None:
    text = status.render(summary_of(fleet))
    assert "fleet: 2 minion(s) (1 active) | 6 done | 3 failed | 1 retried | 1 running" in text
    row = next(line for line in text.splitlines() if line.startswith("node-1-100-aaaaaa"))
    assert row.split()[:7] == ["node-1-100-aaaaaa", "node-1", "4242", "4", "1", "1", "1"]
    assert "stopped: drained" in text
    assert "durations (10 runs): min 1.00s  median 5.50s  p90 9.00s  max 10s" in text
    assert "remaining: 10 (reported by node-1-100-aaaaaa" in text and "ETA: 9m" in text
    assert "exit code 3" in text and '"a9", "b10"' in text and "ValueError: bad" in text


def test_torn_last_line_is_skipped_silently_but_a_bad_line_is_reported(fleet: Path) -> None:
    before = summary_of(fleet)["totals"]
    report = fleet / "node-1-100-aaaaaa.jsonl"
    with open(report, "a") as handle:
        handle.write('{"type": "end", "minion": "node-1-100-aaaaaa", "verdict": "ack')
    records, problems = status.load_records(fleet)
    assert problems == []
    assert status.summarize(records, now=NOW + 1)["totals"] == before
    result = minion_status("--dir", str(fleet), cwd=fleet.parent)
    assert result.returncode == 0 and result.stderr == ""
    assert "| 6 done |" in result.stdout

    with open(report, "a") as handle:
        handle.write("\n")  # the torn line is now a complete, broken one
    assert status.load_records(fleet)[1] == ["node-1-100-aaaaaa.jsonl: 1 unreadable line(s) skipped"]


def test_console_prints_the_summary(fleet: Path) -> None:
    result = minion_status("--dir", str(fleet), cwd=fleet.parent)
    assert result.returncode == 0, result.stderr
    assert "| 6 done | 3 failed | 1 retried | 1 running | 1 released" in result.stdout
    assert "node-2-200-bbbbbb" in result.stdout and "ETA:" in result.stdout


def test_console_json_is_one_object(fleet: Path) -> None:
    result = minion_status("--dir", str(fleet), "--json", cwd=fleet.parent)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["directory"] == str(fleet)
    assert summary["totals"]["done"] == 6 and len(summary["minions"]) == 2
    assert summary["queue"]["remaining"] == 10 and summary["queue"]["eta_seconds"] > 0


def test_console_reads_the_documented_variables(fleet: Path, tmp_path: Path) -> None:
    by_env = minion_status("--json", cwd=tmp_path, MINION_REPORTER="json",
                           REPORTER_JSON_DIRECTORY=str(fleet))
    assert json.loads(by_env.stdout)["totals"]["done"] == 6
    # Unset: the default directory, ./minion-report (the fixture's name).
    by_default = minion_status("--json", cwd=fleet.parent)
    assert json.loads(by_default.stdout)["totals"]["done"] == 6


def test_console_reads_dotenv_without_overriding_the_environment(fleet: Path, tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    (work / ".env").write_text(f"REPORTER_JSON_DIRECTORY={fleet}\n")
    from_dotenv = minion_status("--json", cwd=work)
    assert json.loads(from_dotenv.stdout)["totals"]["done"] == 6
    overridden = minion_status(cwd=work, REPORTER_JSON_DIRECTORY=str(tmp_path / "nowhere"))
    assert overridden.returncode == 2 and str(tmp_path / "nowhere") in overridden.stderr


def test_console_refuses_another_reporter(fleet: Path) -> None:
    result = minion_status(cwd=fleet.parent, MINION_REPORTER="stdout")
    assert result.returncode == 2 and result.stdout == ""
    assert "MINION_REPORTER='stdout'" in result.stderr and "json" in result.stderr
    assert result.stderr.count("\n") == 1


def test_empty_directory_is_no_work_yet_but_a_missing_one_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    empty = minion_status("--dir", "empty", cwd=tmp_path)
    assert empty.returncode == 0 and "no reports in empty yet" in empty.stdout
    missing = minion_status("--dir", "missing", cwd=tmp_path)
    assert missing.returncode == 2 and missing.stdout == ""
    assert "no reports in missing" in missing.stderr and "MINION_REPORTER=json" in missing.stderr


# -- --plot --------------------------------------------------------------------


def test_timeline_bins_follow_the_campaign_and_keep_every_duration() -> None:
    minute = 1_700_000_040.0  # a whole minute
    records = [
        {"type": "end", "verdict": "acked", "end": minute + 1, "duration": 2.0},
        {"type": "end", "verdict": "failed", "end": minute + 50, "duration": 9.0},
        {"type": "end", "verdict": "retried", "end": minute + 70, "duration": 4.0},
        {"type": "end", "verdict": "released", "end": minute + 80, "duration": 0.1},
        {"type": "end", "verdict": "acked", "end": minute + 185, "duration": 3.0},
    ]
    data = status.timeline(records)
    # 3 minutes: 2 s bins would be 93 of them, 5 s bins are 38.
    assert (data["bucket_seconds"], data["rate_unit"], len(data["buckets"])) == (5, "second", 38)
    counted = [(b["start"] - minute, b["done"], b["failed"], b["rate"]) for b in data["buckets"] if b["rate"]]
    assert counted == [(0, 1, 0, 0.2), (50, 0, 1, 0.2), (185, 1, 0, 0.2)]
    # A retried run took time too; a released one was cut short.
    assert sorted(d for _, d, _ in data["points"]) == [2.0, 3.0, 4.0, 9.0]
    # A week: 3-hour bins, at most 60 of them, a rate per hour.
    week = [{"type": "end", "verdict": "acked", "end": minute + i * 3600, "duration": 1} for i in range(168)]
    long = status.timeline(week)
    assert (long["bucket_seconds"], long["rate_unit"]) == (3 * 3600, "hour") and len(long["buckets"]) <= 60
    assert sum(b["done"] for b in long["buckets"]) == 168
    assert max(b["rate"] for b in long["buckets"]) == pytest.approx(1.0)  # one an hour


def campaign(seconds: float, runs: int, start: float = 1_699_920_000.0) -> list[dict[str, Any]]:
    """`runs` completions evenly spread over `seconds` from `start` (midnight UTC), none on a bin's edge."""
    step = seconds / runs
    return [{"type": "end", "verdict": "acked" if i % 4 else "failed", "end": start + step * (i + 0.5),
             "duration": 1.0} for i in range(runs)]


def test_a_short_campaign_is_plotted_per_second_at_its_rate() -> None:
    data = status.timeline(campaign(20, 40))
    assert (data["bucket_seconds"], data["rate_unit"], data["unit_seconds"]) == (1, "second", 1)
    assert len(data["buckets"]) == 20
    assert [b["rate"] for b in data["buckets"]] == [2.0] * 20  # 40 runs in 20 s
    assert sum(b["done"] + b["failed"] for b in data["buckets"]) == 40


@pytest.mark.parametrize(("seconds", "runs", "width", "unit", "rate"), [
    (60, 120, 1, "second", 2.0), (600, 1200, 10, "second", 2.0), (900, 900, 15, "second", 1.0),
    (3600, 3600, 60, "minute", 60.0), (6 * 3600, 3600, 600, "minute", 10.0), (3 * 86400, 4320, 2 * 3600, "hour", 60.0),
])
def test_bins_are_round_and_20_to_60_for_any_campaign(seconds: float, runs: int, width: int, unit: str,
                                                      rate: float) -> None:
    data = status.timeline(campaign(seconds, runs))
    assert (data["bucket_seconds"], data["rate_unit"]) == (width, unit)
    assert 20 <= len(data["buckets"]) <= 60
    assert [b["rate"] for b in data["buckets"]] == pytest.approx([rate] * len(data["buckets"]))


def test_plot_of_a_short_campaign_is_a_png(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    status.plot(campaign(20, 40), tmp_path / "short.png", "20 s")
    assert (tmp_path / "short.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert status.width_text(1) == "1 s" and status.width_text(900) == "15 min" and status.width_text(7200) == "2 h"


def test_plot_draws_a_png(fleet: Path, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    causes(fleet)
    result = minion_status("--dir", str(fleet), "--plot", "campaign.png", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    png = (tmp_path / "campaign.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 20_000
    # 1100 x 700 pixels: the two panels of an 11 x 7 inch figure at 100 dpi.
    assert (int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")) == (1100, 700)
    assert "| 6 done |" in result.stdout and "plot: campaign.png" in result.stdout


def test_plot_without_matplotlib_names_the_extra(fleet: Path, tmp_path: Path) -> None:
    # A matplotlib that cannot be imported, first on the path.
    fake = tmp_path / "site" / "matplotlib"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('No module named matplotlib')\n")
    result = minion_status("--dir", str(fleet), "--plot", "out.png", cwd=tmp_path, PYTHONPATH=str(fake.parent))
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr == "minion-status: --plot needs matplotlib: pip install 'minionize[plot]'\n"
    assert not (tmp_path / "out.png").exists()


# -- in a real terminal ------------------------------------------------------------


def test_console_in_a_terminal(fleet: Path, tmp_path: Path) -> None:
    require(shutil.which("tmux") is not None, "tmux")
    causes(fleet)
    socket = f"minionize-test-{uuid.uuid4().hex[:8]}"
    command = shlex.join([sys.executable, "-m", "minionize.status", "--dir", str(fleet)])

    def tmux(*args: str) -> str:
        return subprocess.run(["tmux", "-L", socket, *args], env=minion_env(), capture_output=True,
                              text=True, timeout=10).stdout

    tmux("new-session", "-d", "-x", "200", "-y", "50", "-c", str(tmp_path), f"{command}; echo EXIT=$?; sleep 60")
    try:
        deadline = time.monotonic() + 30
        while "EXIT=" not in (screen := tmux("capture-pane", "-p", "-J", "-S", "-200")):
            assert time.monotonic() < deadline, screen
            time.sleep(0.1)
    finally:
        tmux("kill-server")
    assert "EXIT=0" in screen
    assert "fleet: 3 minion(s) (1 active) | 6 done | 11 failed | 2 retried | 1 running | 1 released" in screen
    lines = screen.splitlines()
    assert lines[lines.index("failed parameters (11), by cause:") + 1].split() == ["4", "exit", "code", "3"]
    assert any(line.startswith("node-3-300-cccccc") and "stopped: drained" in line for line in lines)
    # The ETA follows the recent rate, which depends on when this test runs (the records are
    # placed around the module's import): any duration, but a duration.
    queue = next((line for line in lines if line.startswith("remaining:")), screen)
    assert re.fullmatch(r"remaining: 10 \(reported by node-1-100-aaaaaa, .*\); ETA: [\d.]+[dhms]\w* .*", queue), queue


def test_a_fifo_or_a_device_named_like_a_report_is_skipped_never_read(fleet: Path, tmp_path: Path) -> None:
    # A FIFO would block the read for ever, /dev/zero would never end it.
    os.mkfifo(fleet / "pipe.jsonl")
    (fleet / "zero.jsonl").symlink_to("/dev/zero")
    done = minion_status("--dir", str(fleet), "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["totals"]["done"] == 6  # the real reports, read whole
    assert "pipe.jsonl: not a regular file: skipped" in done.stderr
    assert "zero.jsonl: not a regular file: skipped" in done.stderr
    records, problems = status.load_records(fleet)  # what mtop reads, frame after frame
    assert len(problems) == 2 and records


@pytest.mark.parametrize("buckets", ["0", "-1", "abc", "10081", "1000000000", "9" * 5000])
def test_buckets_out_of_range_are_refused_before_anything_is_read(fleet: Path, tmp_path: Path, buckets: str) -> None:
    # A billion would have been a billion buckets in memory (20 GB and more), and as many lines.
    done = minion_status("--dir", str(fleet), "--buckets", buckets, cwd=tmp_path)
    assert done.returncode == 2
    assert "--buckets: expected a whole number from 1 to 10080 (a week of minutes)" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_week_of_buckets_is_shown(fleet: Path, tmp_path: Path) -> None:
    done = minion_status("--dir", str(fleet), "--json", "--buckets", "10080", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert len(json.loads(done.stdout)["throughput"]["buckets"]) == 10080
