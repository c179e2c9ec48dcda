"""The docs runner itself (tests/docs/): parsing, output matching, and what a failing block reports.

The blocks here are tiny Markdown documents run for real (bash, no server):
a runner that passed everything would fail these tests.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.docs.blocks import Block, DocError, output_diff, output_matches, parse_console, parse_markdown
from tests.docs.runner import Outcome, Session, run, summary

DOC = Path("doc.md")


def blocks(text: str) -> list[Block]:
    return parse_markdown(text, DOC)


@pytest.fixture
def session(tmp_path: Path) -> Session:
    return Session(root=ROOT, scratch=tmp_path, venv_bin=Path(sys.executable).parent, shim_env={})


def run_one(text: str, session: Session) -> Outcome:
    (block,) = blocks(text)
    return run(block, session)


# --- parsing ----------------------------------------------------------------


def test_directives_belong_to_the_next_block_and_lines_count_from_one() -> None:
    found = blocks(
        "# Title\n\n<!-- doc-test: skip: needs a real OAR cluster (oarsub) -->\n```bash\noarsub x\n```\n\n"
        "```console\n$ echo hi\nhi\n```\n"
    )
    assert [(b.line, b.lang, b.skip) for b in found] == [(4, "bash", "needs a real OAR cluster (oarsub)"),
                                                         (8, "console", "")]
    assert not found[0].runnable and found[1].runnable


def test_a_directive_spans_lines_and_other_comments_do_not_cut_it() -> None:
    text = "<!-- doc-test: setup:\n    export A=1\n    export B=2\n-->\n<!-- other -->\n```bash\ntrue\n```\n"
    (block,) = blocks(text)
    assert block.directives["setup"].split() == ["export", "A=1", "export", "B=2"]


def test_prose_between_a_directive_and_a_block_drops_the_directive() -> None:
    (block,) = blocks("<!-- doc-test: skip: a reason long enough -->\nSome prose.\n\n```bash\ntrue\n```\n")
    assert block.directives == {}


def test_an_indented_block_in_a_list_is_found_and_dedented() -> None:
    (block,) = blocks("1. Step:\n\n   <!-- doc-test: checkout -->\n   ```bash\n   ls\n   ```\n")
    assert (block.text, "checkout" in block.directives) == ("ls\n", True)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("<!-- doc-test: skipp: typo -->\n```bash\ntrue\n```\n", "unknown doc-test directive 'skipp'"),
        ("<!-- doc-test: timeout: 1 -->\n<!-- doc-test: timeout: 2 -->\n```bash\ntrue\n```\n", "given twice"),
        ("```bash\ntrue\n", "never closed"),
        ("<!-- doc-test: ready: up -->\n```bash\ntrue\n```\n", "'ready' is for a service"),
    ],
)
def test_mistakes_in_the_doc_are_errors(text: str, message: str) -> None:
    with pytest.raises(DocError, match=message):
        blocks(text)


def test_console_commands_continue_after_a_backslash_and_own_the_lines_after_them() -> None:
    commands = parse_console("$ echo a \\\n    b\na b\n$ true\n$ seq 2\n1\n2\n", 10)
    assert [(c.line, c.text, c.expected) for c in commands] == [
        (10, "echo a \\\n    b", "a b\n"), (13, "true", ""), (14, "seq 2", "1\n2\n"),
    ]


def test_a_console_block_starts_with_a_command() -> None:
    with pytest.raises(DocError, match="starts with a `\\$ ` command"):
        parse_console("output first\n$ echo\n", 3)


# --- output matching --------------------------------------------------------


@pytest.mark.parametrize(
    ("expected", "got", "matches"),
    [
        ("hello 0\nhello 1\n", "hello 0\nhello 1\n", True),
        ("hello 0\nhello 1\n", "hello 0\nhello 1", True),  # no newline at the end
        ("hello 0\n...\nhello 9\n", "hello 0\nhello 1\nhello 2\nhello 9\n", True),
        ("hello 0\n...\nhello 9\n", "hello 0\nhello 9\n", True),  # `...` may be no line at all
        ("...\n", "", True),
        ("uid=1 ... /scratch\n", "uid=1 drwx 2 root /scratch\n", True),
        ("hello 0\n...\nhello 9\n", "hello 0\nhello 8\n", False),
        ("hello 0\n", "hello 0\nhello 1\n", False),  # more than the doc shows
        ("", "something\n", False),
        ("a.b\n", "axb\n", False),  # the doc's text is literal, not a pattern
    ],
)
def test_output_matching(expected: str, got: str, matches: bool) -> None:
    assert output_matches(expected, got) is matches


def test_the_diff_shows_both_sides() -> None:
    diff = output_diff("hello 0\nhello 9\n", "hello 0\nhello 8\n")
    assert "-hello 9" in diff and "+hello 8" in diff and "the doc shows" in diff


# --- running ----------------------------------------------------------------


def test_a_console_block_whose_output_differs_fails_with_its_place_command_and_diff(session: Session) -> None:
    outcome = run_one("Intro.\n\n```console\n$ echo one\none\n$ printf 'a\\nb\\n'\na\nc\n```\n", session)
    assert outcome.failure.startswith("doc.md:6: the output differs\n$ printf 'a\\nb\\n'\n"), outcome.failure
    assert "-c" in outcome.failure and "+b" in outcome.failure


def test_a_console_block_that_matches_passes(session: Session) -> None:
    outcome = run_one("```console\n$ seq 3\n1\n...\n$ echo done\ndone\n```\n", session)
    assert outcome.failure == "" and outcome.returncode == 0


def test_a_failing_command_names_itself_and_its_exit_code(session: Session) -> None:
    outcome = run_one("```console\n$ echo fine\nfine\n$ ls /nonexistent-doc-test\n```\n", session)
    assert outcome.failure.startswith("doc.md:4: the block exited 2\n$ ls /nonexistent-doc-test"), outcome.failure
    assert "No such file" in outcome.failure


def test_a_bash_block_runs_under_errexit_and_pipefail(session: Session) -> None:
    outcome = run_one("```bash\nfalse | true\necho never\n```\n", session)
    assert outcome.returncode == 1 and "never" not in outcome.stdout
    assert outcome.failure.startswith("doc.md:1: the block exited 1\nfalse | true")


def test_setup_and_check_run_around_the_block_in_a_fresh_directory_and_home(
    session: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MINION_ENGINE", "leaked")
    monkeypatch.setenv("DOCKER_HOST", "unix:///leaked")
    outcome = run_one(
        "<!-- doc-test: setup: echo secret > given.txt -->\n"
        '<!-- doc-test: check: test "$(cat out.txt)" = "secret" -->\n'
        "```python\nimport os, pathlib\n"
        "assert 'MINION_ENGINE' not in os.environ and 'DOCKER_HOST' not in os.environ\n"
        "assert os.environ['HOME'] != os.path.expanduser('~root') and not os.listdir(os.environ['HOME'])\n"
        "pathlib.Path('out.txt').write_text(pathlib.Path('given.txt').read_text().strip())\n```\n",
        session,
    )
    assert outcome.failure == ""


def test_a_check_that_fails_fails_the_block(session: Session) -> None:
    outcome = run_one("<!-- doc-test: check: test -e missing.txt -->\n```bash\ntrue\n```\n", session)
    assert "exited 1" in outcome.failure


def test_continues_shares_the_directory_of_the_previous_block(session: Session) -> None:
    first, second = blocks("```bash\necho 1 > kept\n```\n\n<!-- doc-test: continues -->\n```bash\ntest -e kept\n```\n")
    assert run(first, session).failure == ""
    assert run(second, session).failure == ""
    (fresh,) = blocks("```bash\ntest -e kept\n```\n")
    assert "exited 1" in run(fresh, session).failure


def test_ctrl_c_interrupts_a_service_as_a_terminal_would(session: Session) -> None:
    # The "service" stops cleanly on SIGINT, as minionize's warm stop does: exit 0.
    program = "import time\ntry: time.sleep(30)\nexcept KeyboardInterrupt: pass"
    service = f"<!-- doc-test: ctrl-c: 0.5 -->\n```bash\npython -c '{program}'\n```\n"
    assert run_one(service, session).failure == ""
    # A program that dies of the SIGINT fails the block.
    assert "the block exited" in run_one("<!-- doc-test: ctrl-c: 0.5 -->\n```bash\nsleep 30\n```\n", session).failure
    # A "service" that ends before its Ctrl-C is not one.
    assert "ended before its Ctrl-C" in run_one("<!-- doc-test: ctrl-c: 5 -->\n```bash\ntrue\n```\n", session).failure


# A service that starts slowly (a loaded machine, a container): it prints what the doc shows after
# a while, then serves until its Ctrl-C (it exits 0 on SIGINT, as a minion's warm stop does).
_SLOW_SERVICE = ("import signal, sys, time\nsignal.signal(signal.SIGINT, lambda *_: sys.exit(0))\n"
                 "time.sleep(1.5)\nprint('up', flush=True)\nprint('serving', file=sys.stderr, flush=True)\n"
                 "time.sleep(60)")


def test_ctrl_c_waits_for_the_output_the_doc_shows_not_a_fixed_time(session: Session, tmp_path: Path) -> None:
    (tmp_path / "service.py").write_text(_SLOW_SERVICE)
    started = time.monotonic()
    outcome = run_one(f"<!-- doc-test: ctrl-c: 30 -->\n```console\n$ python {tmp_path}/service.py\nup\n```\n",
                      session)
    assert outcome.failure == "" and time.monotonic() - started < 20  # not the whole 30 s
    # The output never comes: the Ctrl-C at the deadline, and the diff says what was missing.
    outcome = run_one("<!-- doc-test: ctrl-c: 0.5 -->\n```console\n$ python -c 'import time; time.sleep(60)'\n"
                      "never printed\n```\n", session)
    assert "never printed" in outcome.failure


def test_ctrl_c_waits_for_the_ready_text_of_a_bash_block(session: Session, tmp_path: Path) -> None:
    (tmp_path / "service.py").write_text(_SLOW_SERVICE)
    started = time.monotonic()
    ready = ("<!-- doc-test: ctrl-c: 30 -->\n<!-- doc-test: ready: serving -->\n"
             f"```bash\npython {tmp_path}/service.py\n```\n")
    outcome = run_one(ready, session)
    assert outcome.failure == "" and "serving" in outcome.stderr and time.monotonic() - started < 20
    # Without `ready`, a bash block gets its Ctrl-C after the whole time: here before the service is up.
    outcome = run_one(f"<!-- doc-test: ctrl-c: 0.3 -->\n```bash\npython {tmp_path}/service.py\n```\n", session)
    assert "serving" not in outcome.stderr


def test_a_block_past_its_timeout_is_killed(session: Session) -> None:
    outcome = run_one("<!-- doc-test: timeout: 0.5 -->\n```bash\nsleep 30\n```\n", session)
    assert outcome.returncode is None and "was killed" in outcome.failure


def test_the_summary_counts_what_ran_through_which_shim_and_what_is_marked() -> None:
    assert summary(Counter(marked=3)) == ""
    line = summary(Counter({"ran": 5, "shim:helm": 2, "substituted": 1, "data": 1, "marked": 3}))
    assert line == ("docs: 5 blocks ran (2 through the helm shim, 1 with /shared/venv substituted), "
                    "1 data blocks read by the next block, 3 marked not runnable")


def test_the_pip_shim_checks_the_extra_and_installs_nothing(session: Session) -> None:
    session.shim_env["DOCS_ROOT"] = str(ROOT)
    good = run_one("```bash\npip install 'minionize[redis]'\n```\n", session)
    assert good.failure == "" and good.shims == ["pip"]
    assert "unknown extras ['nosuch']" in run_one("```bash\npip install 'minionize[nosuch]'\n```\n", session).failure
    assert "only `pip install" in run_one("```bash\npip install requests\n```\n", session).failure


def test_a_block_that_builds_an_image_may_take_a_cold_cache_long() -> None:
    quick, build, dockerfile, told = blocks(
        "```bash\ntrue\n```\n```bash\ndocker build .\n```\n```dockerfile\nFROM x\n```\n"
        "<!-- doc-test: timeout: 5 -->\n```bash\ndocker build .\n```\n"
    )
    assert (quick.timeout, build.timeout, dockerfile.timeout, told.timeout) == (60, 900, 900, 5)
