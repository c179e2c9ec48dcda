"""The file engine: lines of a file or of stdin, decoded, retried in place."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from minionize.config import EnvReader
from minionize.engines.file import FileEngine
from minionize.errors import ConfigError
from tests.conftest import minion_env, minionize_cmd, run_minion
from tests.unit.test_execo_engine import without_override


def drain(e: FileEngine) -> list:
    out = []
    while (m := e.next(0.01)) is not None:
        out.append(m)
        e.ack(m)
    return out


def test_lines_identity(tmp_path: Path) -> None:
    f = tmp_path / "in.txt"
    f.write_bytes(b"a b\n\n  \nc\r\nlast-without-newline")
    e = FileEngine(str(f))
    e.open()
    assert [m.param for m in drain(e)] == ["a b", "c", "last-without-newline"]
    assert e.drained()


def test_json_lines_and_bad_json_is_rejected(tmp_path: Path) -> None:
    f = tmp_path / "in.jsonl"
    f.write_text('{"lr": 0.1}\nnot json\n[1, 2]\n')
    e = FileEngine(str(f), "json")
    e.open()
    messages = drain(e)
    assert [m.param for m in messages] == [{"lr": 0.1}, "not json", [1, 2]]
    assert [m.reject_reason is not None for m in messages] == [False, True, False]
    assert "not valid JSON" in (messages[1].reject_reason or "")


def test_non_utf8_is_rejected_not_crashing(tmp_path: Path) -> None:
    f = tmp_path / "in.txt"
    f.write_bytes(b"\xff\xfe\nok\n")
    e = FileEngine(str(f))
    e.open()
    messages = drain(e)
    assert "not UTF-8" in (messages[0].reject_reason or "")
    assert messages[1].param == "ok"


def test_nack_retries_with_the_next_attempt_and_fail_writes_dead_letter(tmp_path: Path) -> None:
    f = tmp_path / "in.txt"
    f.write_text("x\n")
    dead = tmp_path / "dead.txt"
    e = FileEngine(str(f), dead_letter=str(dead))
    e.open()
    m = e.next(0.01)
    assert m is not None
    e.nack(m)
    assert not e.drained()
    again = e.next(0.01)
    assert again is not None and again.attempt == 2
    e.fail(again, "exit code 1")
    assert e.drained()
    assert dead.read_text() == "x\n"


def test_stdin_pipe_is_polled(tmp_path: Path) -> None:
    read_end, write_end = os.pipe()
    saved = os.dup(0)
    os.dup2(read_end, 0)
    try:
        e = FileEngine(None)
        e.open()
        assert e.next(0.05) is None  # nothing yet, and no blocking
        os.write(write_end, b"1\n2\n")
        os.close(write_end)
        assert [m.param for m in drain(e)] == ["1", "2"]
        assert e.drained()
    finally:
        os.dup2(saved, 0)
        os.close(read_end)


def test_missing_file_is_a_configuration_error(tmp_path: Path) -> None:
    engine = FileEngine.from_env(EnvReader({"FILE_PATH": str(tmp_path / "nope")}))
    with pytest.raises(ConfigError, match="FILE_PATH"):
        engine.open()


def test_a_file_it_may_not_read_is_a_configuration_error(tmp_path: Path) -> None:
    f = tmp_path / "in.txt"
    f.write_text("x\n")
    f.chmod(0)
    done = without_override("true", cwd=tmp_path, MINION_ENGINE="file", FILE_PATH=str(f))
    assert done.returncode == 2, done.stderr
    assert "FILE_PATH=" in done.stderr and "Permission denied" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_directory_is_not_a_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="expected an existing file"):
        FileEngine(str(tmp_path)).open()


@pytest.mark.parametrize("where", ["missing/dead.txt", "adir", "in.txt", "./sub/../in.txt", "link"])
def test_a_dead_letter_that_would_lose_or_loop_the_failures_is_refused_at_start(tmp_path: Path, where: str) -> None:
    # Failed lines nobody could append (the file engine has no broker to redeliver them), or
    # appended to the file being read, to be read again for ever: exit 2, nothing run.
    (tmp_path / "in.txt").write_text("a\nb\n")
    (tmp_path / "adir").mkdir()
    (tmp_path / "sub").mkdir()
    (tmp_path / "link").symlink_to("in.txt")
    done = run_minion("touch", "ran", cwd=tmp_path, MINION_ENGINE="file", FILE_PATH="in.txt",
                      FILE_DEAD_LETTER=where, MINION_MAX_ATTEMPTS="1")
    assert done.returncode == 2, done.stderr
    assert f"FILE_DEAD_LETTER={where!r}" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "ran").exists()
    assert (tmp_path / "in.txt").read_text() == "a\nb\n"


def test_a_failed_line_that_cannot_be_appended_is_logged_whole(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    f = tmp_path / "in.txt"
    f.write_text("the line\n")
    dead = tmp_path / "dead.txt"
    engine = FileEngine(str(f), dead_letter=str(dead))
    engine.open()
    message = engine.next(0.01)
    assert message is not None
    dead.unlink()
    dead.mkdir()  # appending fails from now on, as on a full disk
    engine.fail(message, "exit code 1")
    assert engine.next(0.01) is None and engine.drained()
    assert "cannot append to FILE_DEAD_LETTER" in caplog.text and "the failed line: the line" in caplog.text


def test_a_dead_letter_beside_stdin_is_checked_too(tmp_path: Path) -> None:
    done = subprocess.run(minionize_cmd("true"), input="a\n", cwd=tmp_path, capture_output=True, text=True,
                          timeout=60, env=minion_env(MINION_ENGINE="file", FILE_DEAD_LETTER="no/such/dir/x"))
    assert done.returncode == 2 and "FILE_DEAD_LETTER='no/such/dir/x'" in done.stderr, done.stderr
