"""The Python API as the README documents it, run as a user runs it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from execo_engine.sweep import ParamSweeper, sweep

from minionize import FuncCallback, ProcessCallback, minion, minionizer
from minionize.engines.memory import MemoryEngine
from tests.conftest import ROOT, minion_env

PARAMS = sweep({"arg1": [0, 1], "arg2": ["x", "t"]})


def run_example(name: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    ParamSweeper(str(cwd / "sweeps"), sweeps=PARAMS, save_sweeps=True)
    return subprocess.run(
        [sys.executable, str(ROOT / "examples" / name)],
        cwd=cwd, env=minion_env(MINION_ENGINE="execo"), capture_output=True, text=True, timeout=60,
    )


def test_readme_process_callback_example(tmp_path: Path) -> None:
    result = run_example("process.py", tmp_path)
    assert result.returncode == 0, result.stderr
    assert sorted(result.stdout.splitlines()) == sorted(
        f"a.out --arg1 {a} {b}" for a in (0, 1) for b in ("x", "t")
    )


def test_readme_function_callback_example(tmp_path: Path) -> None:
    result = run_example("function.py", tmp_path)
    assert result.returncode == 0, result.stderr
    assert sorted(result.stdout.splitlines()) == sorted(
        f"myfunc({a!r}, {b!r})" for a in (0, 1) for b in ("x", "t")
    )
    assert len(ParamSweeper(str(tmp_path / "sweeps")).get_done()) == 4


def test_decorator_example(tmp_path: Path) -> None:
    result = run_example("decorator.py", tmp_path)
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.splitlines()) == 4


def test_string_to_cmd_runs_through_the_shell_because_the_user_asked(tmp_path: Path) -> None:
    out = tmp_path / "out.txt"

    class Shelly(ProcessCallback):
        def to_cmd(self, param):  # type: ignore[no-untyped-def]
            return f"echo {param['a']} $((1 + 2)) > {out}"

    engine = MemoryEngine([{"a": "hi"}])
    assert minionizer(Shelly(), engine=engine).run() == 0
    assert out.read_text() == "hi 3\n"
    assert len(engine.acked) == 1


def test_decorated_function_stays_callable() -> None:
    @minion
    def double(param: int) -> int:
        return param * 2

    assert double(21) == 42 and double.__name__ == "double"
    engine = MemoryEngine([1, 0])
    assert double.run(engine=engine) == 0
    # any returned value is a success: only raising or returning False fails
    assert sorted(m.param for m in engine.acked) == [0, 1]


def test_bad_configuration_from_the_api_exits_2(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", "from minionize import minionizer, FuncCallback; minionizer(FuncCallback(print)).run()"],
        cwd=tmp_path, env=minion_env(MINION_ENGINE="pulsr"), capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.strip().startswith("minionize: MINION_ENGINE='pulsr': ")
    assert "Traceback" not in result.stderr


def test_func_callback_in_process() -> None:
    seen = []
    engine = MemoryEngine(["a"])
    minionizer(FuncCallback(seen.append), engine=engine).run()
    assert seen == ["a"]


def test_a_misspelled_variable_gets_a_warning_from_the_api_too(tmp_path: Path) -> None:
    script = "import minionize\n@minionize.minion\ndef f(p):\n    pass\nf.run()\n"
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=60,
        env=minion_env(MINION_ENGINE="memory", MEMORY_PARAMS="[1]", MINION_CONCURENCY="2"),
    )
    assert result.returncode == 0, result.stderr
    assert "MINION_CONCURENCY is not a minionize variable (ignored): did you mean MINION_CONCURRENCY?" in result.stderr
