"""MINION_RESULTS (--results) keeps each run's output in files; MINION_TAG (--tag) marks its lines."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from minionize.callbacks.output import NAME_MAX, result_name
from tests.conftest import ROOT, run_minion

PROGRAMS = ROOT / "tests" / "programs"
PARAMS = st.one_of(
    st.text(), st.integers(), st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
)


@given(PARAMS)
def test_a_result_name_is_one_safe_bounded_file_name(param: object) -> None:
    name = result_name(param)
    assert 0 < len(name) <= NAME_MAX
    assert "/" not in name and "\x00" not in name and not name.startswith(".")
    name.encode("ascii")  # whatever the file system's encoding


@given(PARAMS, PARAMS)
def test_different_parameters_get_different_names(one: object, other: object) -> None:
    if json.dumps(one) != json.dumps(other) and not (isinstance(one, str) or isinstance(other, str)):
        assert result_name(one) != result_name(other)
    if isinstance(one, str) and isinstance(other, str) and one != other:
        assert result_name(one) != result_name(other)


def test_dangerous_parameters_stay_inside_the_results_directory() -> None:
    names = {p: result_name(p) for p in ["", ".", "..", "../etc/passwd", "a/b", "x" * 1000, "x" * 999]}
    assert names["a/b"] == "a%2Fb" and names["."] == "%2E" and names[".."] == "%2E."
    assert len(set(names.values())) == len(names)
    assert all(len(n) <= NAME_MAX for n in names.values())


def test_results_keep_output_exit_code_and_parameter_per_run(tmp_path: Path) -> None:
    (tmp_path / "in.txt").write_text("0\n3\n../up\n")
    script = "echo out $0; echo err $0 >&2; case $0 in 3) exit 3;; esac"
    result = run_minion(
        "--results", "res", "--retries", "0", "-j", "2", "sh", "-c", script,
        cwd=tmp_path, MINION_ENGINE="file", FILE_PATH="in.txt",
    )
    assert result.returncode == 123, result.stderr
    res = tmp_path / "res"
    assert sorted(os.listdir(res)) == ["%2E.%2Fup", "0", "3"]
    assert (res / "3" / "stdout").read_text() == "out 3\n"
    assert (res / "3" / "stderr").read_text() == "err 3\n"
    assert (res / "3" / "exit_code").read_text() == "3\n"
    assert (res / "0" / "exit_code").read_text() == "0\n"
    assert json.loads((res / "%2E.%2Fup" / "param").read_text()) == "../up"
    assert not (tmp_path / "up").exists()
    assert sorted(result.stdout.splitlines()) == ["out ../up", "out 0", "out 3"]  # untagged


def test_tag_starts_each_line_with_its_parameter(tmp_path: Path) -> None:
    (tmp_path / "in.txt").write_text("a\nb c\n")
    script = "echo one $0; echo two $0; echo three >&2"
    result = run_minion(
        "--tag", "-j2", "sh", "-c", script, cwd=tmp_path, MINION_ENGINE="file", FILE_PATH="in.txt",
    )
    assert result.returncode == 0, result.stderr
    assert sorted(result.stdout.splitlines()) == ["a\tone a", "a\ttwo a", "b c\tone b", "b c\ttwo b"]
    assert "a\tthree" in result.stderr.splitlines() and "b c\tthree" in result.stderr.splitlines()


def test_a_results_directory_that_cannot_be_made_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    result = run_minion(
        sys.executable, str(PROGRAMS / "argv.py"), cwd=tmp_path,
        MINION_ENGINE="memory", MEMORY_PARAMS="[1]", MINION_RESULTS="file/res",
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("minionize: MINION_RESULTS='file/res': a directory")
