"""The json reporter writes real files that minion-status reads; the stdout reporter prints lines.

Two minions share one directory, as they would on NFS: each must append to its
own file, flush every record, and survive a directory it cannot write.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import pytest

from minionize import FuncCallback, minionizer, registry, worker
from minionize.config import EnvReader
from minionize.engines.memory import MemoryEngine
from minionize.message import Outcome
from minionize.reporters.base import MinionInfo, Probe, RunRecord
from minionize.reporters.json import JsonReporter
from minionize.reporters.stdout import StdoutReporter

T0 = 1_700_000_000.0


def minion(host: str, job_id: str | None = None) -> MinionInfo:
    return MinionInfo(f"{host}-100-abcdef", host, 100, job_id, "execo", 2, T0)


def finish(record: RunRecord, outcome: Outcome, verdict: str, duration: float) -> RunRecord:
    record.end, record.outcome, record.verdict = record.start + duration, outcome, verdict
    return record


def lines_of(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line]


def test_two_minions_append_to_their_own_file_with_the_documented_records(tmp_path: Path) -> None:
    directory = tmp_path / "nfs" / "minion-report"  # created when missing
    one, two = minion("node-1", "4242"), minion("node-2")
    first, second = JsonReporter(directory), JsonReporter(directory)
    first.open(one)
    second.open(two)
    run = RunRecord("m-1", {"x": 1}, 2, 1, T0 + 1)
    first.started(run)
    failure = Outcome.failure("exit code 3", exit_code=3, stderr_tail="boom\n")
    first.finished(finish(run, failure, "retried", 1.5))
    second.started(RunRecord("m-2", "b", 1, 0, T0 + 2))
    first.queue(7)
    first.close("drained")
    second.close("stopped")

    assert sorted(p.name for p in directory.glob("*.jsonl")) == [f"{one.id}.jsonl", f"{two.id}.jsonl"]
    records = lines_of(directory / f"{one.id}.jsonl")
    assert [r["type"] for r in records] == ["minion", "start", "end", "queue", "stop"]
    assert {r["minion"] for r in records} == {one.id}
    assert records[0] == {
        "type": "minion", "minion": one.id, "host": "node-1", "pid": 100, "job_id": "4242",
        "engine": "execo", "concurrency": 2, "time": T0,
    }
    assert records[1] == {
        "type": "start", "minion": one.id, "id": "m-1", "param": {"x": 1}, "attempt": 2,
        "slot": 1, "time": T0 + 1,
    }
    end = records[2]
    assert end == {
        "type": "end", "minion": one.id, "id": "m-1", "param": {"x": 1}, "attempt": 2, "slot": 1,
        "start": T0 + 1, "end": T0 + 2.5, "duration": 1.5, "status": "failure", "exit_code": 3,
        "signal": None, "timed_out": False, "verdict": "retried", "error": "exit code 3",
        "host": "node-1", "job_id": "4242", "stdout_tail": "", "stderr_tail": "boom\n",
    }
    assert records[3]["remaining"] == 7 and records[4]["reason"] == "drained"
    other = lines_of(directory / f"{two.id}.jsonl")
    assert [(r["type"], r["minion"]) for r in other] == [
        ("minion", two.id), ("start", two.id), ("stop", two.id)
    ]


def test_each_record_is_readable_while_the_minion_runs(tmp_path: Path) -> None:
    reporter = JsonReporter(tmp_path)
    info = minion("node-1")
    reporter.open(info)
    reporter.started(RunRecord("m-1", "p", 1, 0, T0))
    # Not closed: another process (minion-status) must already see both lines.
    with open(tmp_path / f"{info.id}.jsonl") as handle:
        assert [json.loads(line)["type"] for line in handle] == ["minion", "start"]
    reporter.close("drained")


def test_a_second_open_of_the_same_directory_appends(tmp_path: Path) -> None:
    info = minion("node-1")
    for reason in ("first", "second"):
        reporter = JsonReporter(tmp_path)
        reporter.open(info)
        reporter.close(reason)
    records = lines_of(tmp_path / f"{info.id}.jsonl")
    assert [r.get("reason") for r in records if r["type"] == "stop"] == ["first", "second"]


def test_parameters_json_cannot_encode_are_written_as_strings(tmp_path: Path) -> None:
    reporter = JsonReporter(tmp_path)
    info = minion("node-1")
    reporter.open(info)
    when = datetime.datetime(2024, 5, 1, 12, 0)
    reporter.started(RunRecord("m-1", {"when": when, "tags": {1}}, 1, 0, T0))
    reporter.started(RunRecord("m-2", {(1, 2): "tuple key"}, 1, 0, T0))
    reporter.close("drained")
    records = lines_of(tmp_path / f"{info.id}.jsonl")
    assert records[1]["param"] == {"when": str(when), "tags": "{1}"}
    assert records[2]["param"] == repr({(1, 2): "tuple key"})
    assert records[3]["type"] == "stop"


def test_no_environment_variable_is_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PULSAR_TOKEN", "s3cr3t-token-value")
    monkeypatch.setenv("REPORTER_JSON_DIRECTORY", str(tmp_path))
    reporter = JsonReporter.from_env(EnvReader(os.environ))
    info = MinionInfo.here(EnvReader(os.environ), "execo", 1)
    reporter.open(info)
    run = RunRecord("m-1", "p", 1, 0, T0)
    reporter.started(run)
    reporter.finished(finish(run, Outcome.success(), "acked", 1.0))
    reporter.close("drained")
    text = (tmp_path / f"{info.id}.jsonl").read_text()
    assert text.count("\n") == 4
    assert "s3cr3t-token-value" not in text


def test_directory_comes_from_the_documented_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    default = JsonReporter.from_env(EnvReader({}))
    chosen = JsonReporter.from_env(EnvReader({"REPORTER_JSON_DIRECTORY": "elsewhere"}))
    assert default.directory == tmp_path / "minion-report"
    assert chosen.directory == tmp_path / "elsewhere"
    assert registry.reporter_class("json") is JsonReporter


def test_an_unwritable_directory_warns_once_and_never_raises(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Tests run as root, for whom chmod blocks nothing: a path under a regular file does.
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    reporter = JsonReporter(blocker / "reports")
    info = minion("node-1")
    with caplog.at_level(logging.WARNING, logger="minionize.reporters.json"):
        reporter.open(info)
        run = RunRecord("m-1", "p", 1, 0, T0)
        reporter.started(run)
        reporter.finished(finish(run, Outcome.success(), "acked", 1.0))
        reporter.queue(3)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert str(blocker / "reports") in warnings[0].getMessage()

    # The disk comes back: the reporter goes on writing, from the next record.
    blocker.unlink()
    (blocker / "reports").mkdir(parents=True)
    reporter.close("drained")
    assert [r["type"] for r in lines_of(blocker / "reports" / f"{info.id}.jsonl")] == ["stop"]


# -- the stdout reporter ------------------------------------------------------


def test_stdout_reporter_prints_one_line_per_run_on_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    reporter = StdoutReporter()
    reporter.open(minion("host-123"))
    ok = finish(RunRecord("m-1", "param", 1, 0, T0), Outcome.success(), "acked", 0.123)
    failed = finish(
        RunRecord("m-2", "other", 2, 0, T0), Outcome.failure("exit code 3", exit_code=3), "retried", 2
    )
    reporter.started(ok)
    reporter.finished(ok)
    reporter.finished(failed)
    captured = capsys.readouterr()
    assert captured.out == ""  # stdout belongs to the wrapped program
    assert captured.err.splitlines() == [
        "minion host-123-100-abcdef: ok 'param' attempt 1 in 0.12s (acked)",
        "minion host-123-100-abcdef: failed 'other' attempt 2 in 2.00s: exit code 3 (retried)",
    ]
    assert registry.reporter_class("stdout") is StdoutReporter


def test_stdout_reporter_keeps_a_long_parameter_on_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    reporter = StdoutReporter()
    reporter.open(minion("h"))
    param = "line one\nline two " + "x" * 500
    reporter.finished(finish(RunRecord("m", param, 1, 0, T0), Outcome.success(), "acked", 1))
    line = capsys.readouterr().err
    assert line.count("\n") == 1 and len(line) < 250 and "..." in line


# -- heartbeats and the timeout, for mtop -------------------------------------------


def test_a_heartbeat_says_what_the_worker_probed(tmp_path: Path) -> None:
    reporter = JsonReporter(tmp_path)
    info = minion("node-1")
    reporter.open(info)
    before = time.time()
    reporter.heartbeat(Probe(alive=True, ready=False, draining=True, in_flight=2, free_slots=0))
    beat = lines_of(tmp_path / f"{info.id}.jsonl")[1]
    assert before <= beat.pop("time") <= time.time()
    assert beat == {"type": "heartbeat", "minion": info.id, "in_flight": 2, "free_slots": 0, "draining": True}


@pytest.mark.parametrize(("value", "expected"), [("90", 90.0), ("2.5", 2.5), ("0", None), (None, None)])
def test_the_minion_record_has_the_timeout_only_when_one_is_set(
    tmp_path: Path, value: str | None, expected: float | None
) -> None:
    env = {"REPORTER_JSON_DIRECTORY": str(tmp_path)} | ({"MINION_TIMEOUT": value} if value else {})
    reporter = JsonReporter.from_env(EnvReader(env))
    info = minion("node-1")
    reporter.open(info)
    record = lines_of(tmp_path / f"{info.id}.jsonl")[0]
    assert record.get("timeout", "absent") == (expected if expected is not None else "absent")


def test_a_running_minion_writes_heartbeats_and_its_timeout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(worker, "HEARTBEAT", 0.05)
    monkeypatch.chdir(tmp_path)
    for name, value in {"MINION_REPORTER": "json", "MINION_TIMEOUT": "30", "MINION_CONCURRENCY": "2"}.items():
        monkeypatch.setenv(name, value)
    engine = MemoryEngine(["slow"])
    assert minionizer(FuncCallback(lambda param: time.sleep(1.2)), engine=engine).run() == 0
    [report] = (tmp_path / "minion-report").glob("*.jsonl")
    records = lines_of(report)
    assert records[0]["type"] == "minion" and records[0]["timeout"] == 30.0
    beats = [(r["in_flight"], r["free_slots"], r["draining"]) for r in records if r["type"] == "heartbeat"]
    assert (1, 1, False) in beats  # sent while "slow" ran in one of the two slots
    assert len(engine.acked) == 1
