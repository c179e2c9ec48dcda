"""minion-push streams its parameters: checked in a first pass, then read again into the engine, never a list."""

from __future__ import annotations

import io
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
from execo_engine.sweep import ParamSweeper

from minionize import push
from minionize.engines.memory import MemoryEngine


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
