"""Bad parameters get a clear, reported outcome; the minion keeps working; no shell ever runs."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

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


# A sweep made by a program that pickled objects of its own class: a minion without that class (its
# module is not installed here) can run none of them, and says so, once, without a traceback.
_FOREIGN = """
class Point:
    def __init__(self, x):
        self.x = x
    def __eq__(self, other):
        return isinstance(other, Point) and other.x == self.x
    def __hash__(self):
        return hash(self.x)
    def __str__(self):
        return f"Point({self.x})"
"""
_MAKE = ("import sys; sys.path.insert(0, 'mods'); from execo_engine.sweep import ParamSweeper; "
         "from pointmod import Point; ")


def _foreign_sweep(tmp_path: Path) -> None:
    (tmp_path / "mods").mkdir()
    (tmp_path / "mods" / "pointmod.py").write_text(_FOREIGN)
    make = _MAKE + "ParamSweeper('sweeps', sweeps=[1, 2, Point(3)], save_sweeps=True)"
    subprocess.run([sys.executable, "-c", make], cwd=tmp_path, check=True, timeout=60)


@pytest.mark.parametrize("index", ["sweeps file", "index cached by a minion that had the class"])
def test_a_sweep_of_objects_whose_class_is_missing_is_a_clear_configuration_error(tmp_path: Path,
                                                                                 index: str) -> None:
    _foreign_sweep(tmp_path)
    printing = (sys.executable, "-c", "import sys; print(sys.argv[1])")
    if index.startswith("index"):  # that minion ran them all; the sweep is then made to start again
        with_class = run_minion("true", cwd=tmp_path, PYTHONPATH=str(tmp_path / "mods"))
        assert with_class.returncode == 0, with_class.stderr
        (tmp_path / "sweeps" / "done").write_bytes(b"")
    without = run_minion(*printing, cwd=tmp_path)
    assert without.returncode == exitcodes.CONFIG
    assert "Traceback" not in without.stderr
    assert without.stderr.strip().splitlines()[-1] == (
        "minionize: EXECO_PERSISTENCE_DIR: the sweep holds a parameter this minion cannot unpickle "
        "(ModuleNotFoundError: No module named 'pointmod'): make parameters of plain values (numbers, strings, "
        "tuples, lists, dicts, sets), or install the module of their class where the minions run (PYTHONPATH)")
    # Nothing lost nor run twice: a minion that has the class runs what the first one did not.
    with_class = run_minion(*printing, cwd=tmp_path, PYTHONPATH=str(tmp_path / "mods"))
    assert with_class.returncode == 0, with_class.stderr
    assert sorted(without.stdout.split() + with_class.stdout.split()) == ['"Point(3)"', "1", "2"]
