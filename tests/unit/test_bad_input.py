"""Bad parameters get a clear, reported outcome; the minion keeps working; no shell ever runs."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from minionize import ProcessCallback, exitcodes, minionizer
from minionize.engines.memory import MemoryEngine
from tests.conftest import ROOT, run_minion

ARGV = (sys.executable, str(ROOT / "tests" / "programs" / "argv.py"))


def memory(*params: object, **env: str) -> tuple[int, list[dict], str]:
    result = run_minion(*ARGV, cwd=ROOT, MINION_ENGINE="memory", MEMORY_PARAMS=json.dumps(params), **env)
    return result.returncode, [json.loads(line) for line in result.stdout.splitlines()], result.stderr


def test_invalid_json_is_set_aside_with_the_reason(tmp_path: Path) -> None:
    (tmp_path / "in.jsonl").write_text('{"broken": \n"fine"\n')
    result = run_minion(*ARGV, cwd=tmp_path, MINION_ENGINE="file", FILE_PATH="in.jsonl", FILE_DECODER="json")
    assert result.returncode == exitcodes.SET_ASIDE  # set aside, nothing else wrong
    assert [json.loads(line)["argv"] for line in result.stdout.splitlines()] == [["fine"]]
    assert "failed, attempt 1: not valid JSON" in result.stderr


def test_bytes_that_are_not_utf8_are_set_aside(tmp_path: Path) -> None:
    (tmp_path / "in.txt").write_bytes(b"caf\xe9\nfine\n")
    result = run_minion(*ARGV, cwd=tmp_path, MINION_ENGINE="file", FILE_PATH="in.txt")
    assert result.returncode == exitcodes.SET_ASIDE  # set aside, nothing else wrong
    assert [json.loads(line)["argv"] for line in result.stdout.splitlines()] == [["fine"]]
    assert "not UTF-8 text" in result.stderr


def test_a_one_megabyte_argument_is_set_aside_not_retried(tmp_path: Path) -> None:
    big = "x" * (1 << 20)
    (tmp_path / "in.txt").write_text(big + "\nfine\n")
    result = run_minion(*ARGV, cwd=tmp_path, MINION_ENGINE="file", FILE_PATH="in.txt", MINION_MAX_ATTEMPTS="3")
    assert result.returncode == exitcodes.SET_ASIDE  # set aside, nothing else wrong
    assert [json.loads(line)["argv"] for line in result.stdout.splitlines()] == [["fine"]]
    assert result.stderr.count("does not fit in a command line") == 1  # rejected once, not retried


def test_a_one_megabyte_parameter_reaches_the_program_through_a_file() -> None:
    big = {"blob": "y" * (1 << 20)}
    engine = MemoryEngine([big, {"blob": "small"}])
    program = [sys.executable, str(ROOT / "tests" / "programs" / "param_file.py")]

    class ByFile(ProcessCallback):
        def to_cmd(self, param):  # type: ignore[no-untyped-def]
            return program

    assert minionizer(ByFile(), engine=engine).run() == 0
    assert len(engine.acked) == 2 and engine.failed == []


def test_metacharacters_and_newlines_run_literally() -> None:
    code, runs, _ = memory("a;b\nc $(id) `id` > f | g &")
    assert code == 0
    assert runs[0]["argv"] == ["a;b", "c", "$(id)", "`id`", ">", "f", "|", "g", "&"]


def test_an_empty_parameter_runs_the_program_alone() -> None:
    code, runs, _ = memory("", "x")
    assert code == 0
    assert [r["argv"] for r in runs] == [[], ["x"]]
    assert runs[0]["env"]["MINION_PARAM"] == '""'


def test_a_dict_where_a_string_is_expected() -> None:
    code, runs, err = memory({"name": "n"}, "plain", MINION_ARGS="--name {name}")
    assert code == exitcodes.SET_ASIDE
    assert [r["argv"] for r in runs] == [["--name", "n"]]
    assert "MINION_ARGS uses {name}, missing from the parameter" in err
    code, runs, _ = memory({"a": [1, 2]})
    assert json.loads(runs[0]["argv"][0]) == {"a": [1, 2]}


def test_poison_lines_are_set_aside_once_and_the_minion_goes_on(tmp_path: Path) -> None:
    poison = {
        "[" * 100_000: "JSON nested too deeply",
        "1" * 5_001: "not usable JSON",
        '{"k": "a\\u0000b"}': "NUL character",
        '{"k": "\\ud800"}': "lone surrogate",
        '"\\udcff"': "lone surrogate",
    }
    (tmp_path / "in.jsonl").write_text("\n".join([*poison, '"fine"']) + "\n")
    result = run_minion(
        *ARGV, cwd=tmp_path, MINION_ENGINE="file", FILE_PATH="in.jsonl", FILE_DECODER="json",
        FILE_DEAD_LETTER="dead.jsonl", MINION_MAX_ATTEMPTS="3",
    )
    assert result.returncode == exitcodes.SET_ASIDE  # set aside, nothing else wrong, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert [json.loads(line)["argv"] for line in result.stdout.splitlines()] == [["fine"]]
    failed = [line for line in result.stderr.splitlines() if ": failed, attempt 1: " in line]
    assert [sum(why in line for line in failed) for why in ("nested", "usable", "NUL", "surrogate")] == [1, 1, 1, 2]
    assert ": retried, " not in result.stderr
    assert (tmp_path / "dead.jsonl").read_text().splitlines() == list(poison)


def test_a_one_megabyte_word_is_refused_without_splitting_it_for_seconds(tmp_path: Path) -> None:
    (tmp_path / "in.txt").write_text("'" + "x" * (1 << 20) + "'\nfine\n")
    started = time.monotonic()
    result = run_minion(*ARGV, cwd=tmp_path, MINION_ENGINE="file", FILE_PATH="in.txt")
    assert result.returncode == exitcodes.SET_ASIDE  # set aside, nothing else wrong
    assert result.stderr.count("does not fit in a command line") == 1
    assert time.monotonic() - started < 10  # shlex alone took 30 s of CPU
