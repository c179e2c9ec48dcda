"""How a run's process starts: its own session, /dev/null for stdin, no stray descriptors, default SIGPIPE.

Each property holds for both launchers: posix_spawn, and Popen for a run
with a working directory of its own.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Optional

import pytest

from minionize.callbacks.base import RunContext
from minionize.callbacks.process import ProcessCallback
from minionize.message import Message, Outcome, Status

LAUNCHERS = ["posix_spawn", "popen"]


def run(command: list[str], param: str, launcher: str, tmp_path: Path, timeout: Optional[float] = None) -> Outcome:
    cwd = str(tmp_path) if launcher == "popen" else None
    callback = ProcessCallback(command, cwd=cwd)
    return callback.run(Message("1", param), RunContext(slot=0, timeout=timeout))


@pytest.mark.parametrize("launcher", LAUNCHERS)
def test_the_run_leads_a_session_of_its_own(launcher: str, tmp_path: Path) -> None:
    code = "import os; print(os.getsid(0) == os.getpid(), os.getpgid(0) == os.getpid())"
    outcome = run([sys.executable, "-c", code], "", launcher, tmp_path)
    assert outcome.ok, outcome.error
    assert outcome.stdout_tail == "True True\n"


@pytest.mark.parametrize("launcher", LAUNCHERS)
def test_only_the_three_standard_descriptors_are_inherited(launcher: str, tmp_path: Path) -> None:
    stray = os.open(os.devnull, os.O_RDONLY)
    os.set_inheritable(stray, True)  # as a C library or os.dup2 may leave one
    try:
        code = "import os; print(sorted(int(fd) for fd in os.listdir('/proc/self/fd'))[:3], os.isatty(0))"
        outcome = run([sys.executable, "-c", code], "", launcher, tmp_path)
    finally:
        os.close(stray)
    assert outcome.ok, outcome.error
    assert outcome.stdout_tail == "[0, 1, 2] False\n"
    listing = run(["ls", "/proc/self/fd"], "", launcher, tmp_path)
    # ls itself opens the directory it lists (one more descriptor), nothing else.
    assert len(listing.stdout_tail.split()) == 4, listing.stdout_tail


@pytest.mark.parametrize("launcher", LAUNCHERS)
def test_stdin_is_empty(launcher: str, tmp_path: Path) -> None:
    outcome = run(["cat"], "", launcher, tmp_path, timeout=10)
    assert outcome.ok and outcome.stdout_tail == ""


@pytest.mark.parametrize("launcher", LAUNCHERS)
def test_sigpipe_is_back_to_its_default(launcher: str, tmp_path: Path) -> None:
    # Python ignores SIGPIPE; inherited, `yes` would report a broken pipe instead of dying quietly.
    outcome = run(["sh", "-c", "yes | head -n 1"], "", launcher, tmp_path, timeout=10)
    assert outcome.ok, outcome.error
    assert outcome.stdout_tail == "y\n"
    assert outcome.stderr_tail == ""


def test_a_working_directory_is_honoured(tmp_path: Path) -> None:
    outcome = run(["pwd"], "", "popen", tmp_path)
    assert outcome.stdout_tail.strip() == str(tmp_path)


def test_a_missing_program_fails_with_127_and_is_looked_up_again(tmp_path: Path) -> None:
    callback = ProcessCallback(["minionize-test-tool"], env={"PATH": str(tmp_path)})
    missing = callback.run(Message("1", ""), RunContext(slot=0))
    assert missing.status is Status.FAILURE and missing.exit_code == 127
    assert "cannot start 'minionize-test-tool'" in (missing.error or "")
    tool = tmp_path / "minionize-test-tool"
    tool.write_text("#!/bin/sh\necho found\n")
    tool.chmod(0o755)
    found = callback.run(Message("2", ""), RunContext(slot=0))
    assert found.ok and found.stdout_tail == "found\n"
    tool.unlink()  # the cached path goes away: a failure, then a fresh look-up
    gone = callback.run(Message("3", ""), RunContext(slot=0))
    assert gone.exit_code == 127
