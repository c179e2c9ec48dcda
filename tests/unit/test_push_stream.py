"""minion-push streams its parameters: checked in a first pass, then read again into the engine, never a list."""

from __future__ import annotations

import io
import platform
import signal
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
from execo_engine.sweep import ParamSweeper

from minionize import push
from minionize.engines.memory import MemoryEngine
from tests.conftest import minion_env


class Streamed(MemoryEngine):
    """An engine that records what `push` was given, and how far the source had gone at its first item."""

    def __init__(self) -> None:
        super().__init__([])
        self.given: list[Any] = []
        self.kinds: list[type] = []

    def push(self, params: Iterable[Any]) -> str:
        self.kinds.append(type(params))
        self.given.extend(params)
        return "streamed"


@pytest.fixture
def streamed(monkeypatch: pytest.MonkeyPatch) -> Streamed:
    engine = Streamed()
    monkeypatch.setenv("MINION_ENGINE", "file")  # any engine that keeps what it queues; replaced below
    monkeypatch.setattr(push, "build_engine", lambda settings: engine)
    return engine


def test_a_sweep_reaches_the_engine_as_a_stream_not_a_list(streamed: Streamed) -> None:
    assert push.main(["--sweep", "a=1,2,3", "--sweep", "b=x,y"]) == 0
    assert streamed.kinds and not issubclass(streamed.kinds[0], (list, tuple, set))
    assert streamed.given == [{"a": a, "b": b} for a in (1, 2, 3) for b in ("x", "y")]


def test_the_sweep_is_generated_one_parameter_at_a_time() -> None:
    stream = push.iter_sweep({"a": list(range(1000)), "b": list(range(1000))})
    assert next(stream) == {"a": 0, "b": 0} and next(stream) == {"a": 0, "b": 1}
    assert push.sweep({"a": [1, 2]}) == [{"a": 1}, {"a": 2}]


def test_a_bad_line_anywhere_in_a_file_queues_nothing(streamed: Streamed, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    lines = tmp_path / "params.jsonl"
    lines.write_text('1\n2\n{"a": \n4\n')
    assert push.main(["--file", str(lines), "--json"]) == 2
    assert streamed.given == [] and streamed.kinds == []  # checked whole before anything was queued
    assert "line 3" in capsys.readouterr().err


@pytest.mark.parametrize("where", ["file", "stdin"])
def test_a_line_that_is_not_utf8_queues_nothing_and_names_it(tmp_path: Path, where: str) -> None:
    (tmp_path / "params.txt").write_bytes(b"ok\nb\xe9ad\n")
    args = ["--file", "params.txt"] if where == "file" else ["--file", "-"]
    done = subprocess.run([sys.executable, "-m", "minionize.push", *args], cwd=tmp_path,
                          input=(tmp_path / "params.txt").read_bytes(), capture_output=True, timeout=60,
                          env=minion_env(EXECO_PERSISTENCE_DIR="sweeps"))
    err = done.stderr.decode()
    assert done.returncode == 2 and "Traceback" not in err, err
    assert "line 2" in err and "not UTF-8 text (byte 0xe9 at character 2)" in err
    assert not (tmp_path / "sweeps").exists()


@pytest.mark.parametrize("args", [
    ["ok", b"caf\xe9"], ["--sweep", b"a=1,caf\xe9"], ["--sweep-json", b'{"a": ["\xe9"]}'],
])
def test_an_argument_that_is_not_utf8_queues_nothing_and_names_it(tmp_path: Path, args: list[Any]) -> None:
    done = subprocess.run([sys.executable, "-m", "minionize.push", *args], cwd=tmp_path, capture_output=True,
                          timeout=60, env=minion_env(MINION_ENGINE="file", FILE_PATH="in.txt"))
    err = done.stderr.decode()
    assert done.returncode == 2 and "Traceback" not in err and "not UTF-8 text (byte 0xe9" in err, err
    assert not (tmp_path / "in.txt").exists()


def test_standard_input_is_read_once_and_queued(streamed: Streamed, monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO("a\n\nb\nc\n"))
    assert push.main(["--file", "-", "first"]) == 0
    assert streamed.given == ["first", "a", "b", "c"]
    assert "queued 4 parameters" in capsys.readouterr().out


def test_a_streamed_sweep_into_execo_is_read_by_plain_execo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("MINION_ENGINE", "execo")
    monkeypatch.setenv("EXECO_PERSISTENCE_DIR", str(tmp_path / "sweep"))
    assert push.main(["--sweep", "lr=0.1,0.01", "--sweep", "seed=1,2,3", "7"]) == 0
    assert "queued 7 new parameters" in capsys.readouterr().out
    assert push.main(["--sweep", "seed=1,2,3,4", "--sweep", "lr=0.1"]) == 0
    assert "queued 1 new parameters" in capsys.readouterr().out  # the other 3 were in it already
    sweeps = ParamSweeper(str(tmp_path / "sweep")).get_sweeps()
    assert len(sweeps) == 8 and 7 in sweeps and {"lr": 0.1, "seed": 4} in list(sweeps)


class Interrupted(Streamed):
    """An engine whose push meets a Ctrl-C after reading three parameters."""

    def push(self, params: Iterable[Any]) -> str:
        for count, param in enumerate(params, 1):
            self.given.append(param)
            if count == 3:
                raise KeyboardInterrupt
        return "never"


def test_a_ctrl_c_during_the_push_says_how_far_it_read(monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("MINION_ENGINE", "file")
    monkeypatch.setattr(push, "build_engine", lambda settings: Interrupted())
    assert push.main(["--sweep", "a=1,2,3,4,5"]) == 130
    assert capsys.readouterr().err == (
        "minion-push: interrupted after reading 3 of the 5 parameters: some of them may be queued already\n")


def test_a_ctrl_c_while_reading_standard_input_queues_nothing_and_prints_no_traceback(tmp_path: Path) -> None:
    pusher = subprocess.Popen(
        [sys.executable, "-m", "minionize.push", "--file", "-"], cwd=tmp_path, stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=minion_env(MINION_ENGINE="execo", EXECO_PERSISTENCE_DIR=str(tmp_path / "sweep")),
    )
    assert pusher.stdin is not None
    pusher.stdin.write("1\n2\n")
    pusher.stdin.flush()
    deadline = time.monotonic() + 30
    while not _reading_stdin(pusher.pid):  # started, and waiting for more lines
        assert time.monotonic() < deadline and pusher.poll() is None
        time.sleep(0.05)
    pusher.send_signal(signal.SIGINT)
    out, err = pusher.communicate(timeout=30)
    assert (pusher.returncode, out, err) == (130, "", "minion-push: interrupted, before anything was queued\n")
    assert not (tmp_path / "sweep").exists()


#: The number of read(2) on this machine's Linux.
_READ = {"x86_64": "0", "aarch64": "63"}[platform.machine()]


def _reading_stdin(pid: int) -> bool:
    """Whether the process is blocked in read(0, ...)."""
    try:
        return Path(f"/proc/{pid}/syscall").read_text().split()[:2] == [_READ, "0x0"]
    except OSError:
        return False


def test_failed_parameters_stay_one_line_each_whatever_they_hold(tmp_path: Path) -> None:
    env = minion_env(EXECO_PERSISTENCE_DIR="sweeps", MINION_MAX_ATTEMPTS="1")
    pushed = subprocess.run([sys.executable, "-m", "minionize.push", '"a\\tb\\nc\\u0000d"', "plain"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=60, env=env)
    assert pushed.returncode == 0, pushed.stderr
    subprocess.run([sys.executable, "-m", "minionize", "false"], cwd=tmp_path, capture_output=True, timeout=60,
                   env=env)
    listed = subprocess.run([sys.executable, "-m", "minionize.status", "--failed"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=60, env=env)
    lines = sorted(line.split("\t")[0] for line in listed.stdout.splitlines())
    assert lines == ["a\\tb\\nc\\0d", "plain"], listed.stdout
