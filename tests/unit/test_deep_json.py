"""JSON nested too deeply for Python's parser, wherever JSON comes from outside: a clear error, a parameter
kept as text, or a line skipped as unreadable; never a traceback (json.loads raises RecursionError there)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from minionize import jsontext
from minionize.engines import sweepindex, sweepleases
from tests.conftest import minion_env

DEEP = "[" * 100_000 + "]" * 100_000


def test_jsontext_makes_a_document_nested_too_deeply_bad_json() -> None:
    with pytest.raises(ValueError, match="nested too deeply"):
        jsontext.loads(DEEP)
    with pytest.raises(RecursionError):
        json.loads(DEEP)  # what it guards against: if this ever passes, the guard is moot
    assert jsontext.loads("[[1]]") == [[1]]


def _push(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = minion_env(MINION_ENGINE="execo", EXECO_PERSISTENCE_DIR=str(tmp_path / "sweep"))
    return subprocess.run([sys.executable, "-m", "minionize.push", *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60)


def test_minion_push_refuses_a_deep_json_line_or_sweep_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "deep.jsonl").write_text("1\n" + DEEP + "\n")
    done = _push(tmp_path, "--json", "--file", "deep.jsonl")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.startswith("minion-push: --file deep.jsonl, line 2='[[[[") and done.stderr.endswith(
        "...': not JSON (nested too deeply)\n")
    assert len(done.stderr) < 400  # the line is cut, not printed whole
    (tmp_path / "sweep.json").write_text('{"a": ' + DEEP[:20_000] + DEEP[-20_000:] + "}")
    done = _push(tmp_path, "--sweep-json", (tmp_path / "sweep.json").read_text())
    assert done.returncode == 2 and "Traceback" not in done.stderr and "expected {" in done.stderr
    assert not (tmp_path / "sweep").exists()  # nothing was queued


def test_a_deep_argument_is_pushed_as_text_as_any_argument_that_is_not_json(tmp_path: Path) -> None:
    deep = "[" * 5_000 + "]" * 5_000  # an argument, within the size an argv can hold
    done = _push(tmp_path, deep)
    assert done.returncode == 0, done.stderr
    assert list(sweepindex.SweepIndex.of([deep])) == [deep]
    assert "queued 1 new parameters" in done.stdout


def test_minion_status_skips_a_deep_report_line_as_unreadable(tmp_path: Path) -> None:
    report = tmp_path / "minion-report"
    report.mkdir()
    good = {"event": "finished", "id": "a", "param": "a", "verdict": "acked", "start": 1.0, "end": 2.0}
    (report / "m1.jsonl").write_text(DEEP + "\n" + json.dumps(good) + "\n")
    done = subprocess.run([sys.executable, "-m", "minionize.status", "--dir", str(report), "--json"],
                          env=minion_env(), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "m1.jsonl: 1 unreadable line(s) skipped" in done.stderr and "Traceback" not in done.stderr


def test_the_sweeps_own_json_files_read_deep_as_torn(tmp_path: Path) -> None:
    lease = tmp_path / "minion.lease"
    lease.write_text(DEEP)
    assert sweepleases.read(str(lease)) is None  # a torn lease: no lease
    params = tmp_path / "params"
    params.write_bytes(DEEP[:4000].encode() + b"\n")
    assert sweepindex.read(str(params), (0, 0)) is None  # a torn index: the sweeps file is read instead
