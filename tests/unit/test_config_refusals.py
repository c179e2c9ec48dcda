"""Configuration that would take the queue and then lose it, or end in a traceback, is refused at
start: exit 2, one line naming what is wrong, nothing taken (found by probing as a user)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import run_minion

#: name -> (files to write, environment, what the line must say)
CASES: dict[str, tuple[dict[str, str], dict[str, str], str]] = {
    "a .env line python-dotenv cannot parse": (
        {".env": 'MINION_DRY="1\n'}, {}, ".env, line 1='MINION_DRY=\"1': not NAME=value"),
    "a .env name with a space": ({".env": "A=1\nMINION DRY=1\n"}, {}, ".env, line 2="),
    "a .env line with no name": ({".env": "export =1\n"}, {}, ".env, line 1="),
    "an empty name in .minionize.yml env": (
        {".minionize.yml": "env:\n  '': 1\n"}, {}, "no environment variable has an empty name"),
    "a mapping as .minionize.yml args": (
        {".minionize.yml": "args: {lr: 1}\n"}, {}, "args={'lr': '1'}: expected a string"),
    "a nested list as .minionize.yml args": (
        {".minionize.yml": "args: [--lr, [1]]\n"}, {}, "args=['--lr', ['1']]: expected a string"),
    "a NUL in a .minionize.yml command": (
        {".minionize.yml": 'command: ["touch", "a\\0b"]\n'}, {}, "NUL character"),
    "GNU parallel's {} in MINION_ARGS": ({}, {"MINION_ARGS": "--lr {}"}, "{} is a positional field"),
    "a numbered field in MINION_ARGS": ({}, {"MINION_ARGS": "{0}"}, "{0} is a positional field"),
    "a conversion that does not exist in MINION_ARGS": (
        {}, {"MINION_ARGS": "--lr {lr!x}"}, "conversion !x in {lr}"),
    "a strike pause longer than the longest": ({}, {"MINION_STRIKE_PAUSE": "3600"}, "at most 900 seconds"),
    "an engine class left abstract": (
        {"mylab.py": "from minionize.engines.base import Engine\nclass Lab(Engine):\n    pass\n"},
        {"MINION_ENGINE": "mylab:Lab", "PYTHONPATH": "."}, "an engine that defines ack, fail, from_env"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_refused_at_start_with_one_line_and_nothing_taken(tmp_path: Path, case: str) -> None:
    files, env, said = CASES[case]
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    (tmp_path / "in.txt").write_text("p\n")
    done = run_minion("touch", "ran", cwd=tmp_path, **{"MINION_ENGINE": "file", "FILE_PATH": "in.txt", **env})
    assert done.returncode == 2, done.stderr
    assert said in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert not (tmp_path / "ran").exists()


@pytest.mark.parametrize("value", ["²", "৩", "9" * 4400, "-1", "1.5"])
def test_retries_is_a_whole_number_in_ascii_digits(tmp_path: Path, value: str) -> None:
    done = run_minion("--retries", value, "touch", "ran", cwd=tmp_path, MINION_ENGINE="memory",
                      MEMORY_PARAMS="[1]")
    assert done.returncode == 2 and "--retries" in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert not (tmp_path / "ran").exists()


def test_a_list_as_minionize_yml_args_is_the_template_of_its_words(tmp_path: Path) -> None:
    (tmp_path / ".minionize.yml").write_text('args: [--lr, "{lr}", "a b"]\n')
    done = run_minion("echo", cwd=tmp_path, MINION_ENGINE="memory", MEMORY_PARAMS='[{"lr": 0.1}]')
    assert done.returncode == 0, done.stderr
    assert done.stdout == "--lr 0.1 a b\n"


def test_minionize_yml_values_are_read_as_written_as_in_an_environment(tmp_path: Path) -> None:
    # YAML 1.1 made `off` false, the README's deadline a datetime, and 18:00 the number 1080.
    (tmp_path / ".minionize.yml").write_text(
        "command: [sh, -c, 'echo \"$SEEN\" \"$@\"', sh]\n"
        "args: no {param}\n"
        "env:\n"
        "  MINION_TIMEOUT: off\n"
        "  MINION_DEADLINE: 2099-11-21T18:00:00+01:00\n"
        "  MINION_TAG: yes\n"
        "  SEEN: 18:00\n"
    )
    done = run_minion(cwd=tmp_path, MINION_ENGINE="memory", MEMORY_PARAMS='["p"]')
    assert done.returncode == 0, done.stderr
    assert done.stdout == "p\t18:00 no p\n"
