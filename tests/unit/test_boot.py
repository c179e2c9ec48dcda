"""A stop signal while a command imports minionize (seconds on NFS) is handled, never a traceback.

The installed commands are run (their entry points are minionize/boot.py),
with a `sitecustomize` that makes the import of one module slow and says
when it begins, so that the signal lands inside the import every time.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import minionize
from tests.conftest import minion_env

#: In every process started with PYTHONPATH=that directory: the import of SLOW_IMPORT takes 3 s.
_SLOW_IMPORT = """
import os, sys, time

class _Slow:
    def find_spec(self, name, path=None, target=None):
        if name == os.environ["SLOW_IMPORT"]:
            open(os.environ["SLOW_MARK"], "w").close()
            time.sleep(3)
        return None

sys.meta_path.insert(0, _Slow())
"""

BIN = Path(sys.executable).parent


def _importing(tmp_path: Path, command: str, module: str, *args: str) -> subprocess.Popen[str]:
    """The installed `command`, once it is inside the (slow) import of `module`."""
    (tmp_path / "sitecustomize.py").write_text(_SLOW_IMPORT)
    mark = tmp_path / "importing"
    process = subprocess.Popen(
        [str(BIN / command), *args], cwd=tmp_path, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
        env=minion_env(PYTHONPATH=str(tmp_path), SLOW_IMPORT=module, SLOW_MARK=str(mark),
                       MINION_ENGINE="file", FILE_PATH="in.txt"),
    )
    deadline = time.monotonic() + 30
    while not mark.exists():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the import never began"
        time.sleep(0.02)
    return process


def test_a_stop_while_minionize_imports_is_a_warm_stop_before_anything_is_taken(tmp_path: Path) -> None:
    (tmp_path / "in.txt").write_text("p\n")
    minion = _importing(tmp_path, "minionize", "minionize.cli", "echo", "ran")
    minion.send_signal(signal.SIGINT)
    out, err = minion.communicate(timeout=30)
    assert minion.returncode == 0, err
    assert "Traceback" not in err and "stopped by SIGINT (nothing done)" in err
    assert out == "" and (tmp_path / "in.txt").read_text() == "p\n"


def test_a_second_stop_while_minionize_imports_is_a_cold_stop(tmp_path: Path) -> None:
    (tmp_path / "in.txt").write_text("p\n")
    minion = _importing(tmp_path, "minionize", "minionize.cli", "echo", "ran")
    minion.send_signal(signal.SIGTERM)
    time.sleep(0.2)
    minion.send_signal(signal.SIGINT)
    out, err = minion.communicate(timeout=30)
    assert minion.returncode == 130, err
    assert err.strip() == "minionize: cold stop while starting (SIGTERM, then SIGINT): nothing was taken"
    assert out == ""


@pytest.mark.parametrize(("command", "module", "args", "said"), [
    ("minion-push", "minionize.push", ["p"], "minion-push: interrupted, before anything was queued"),
    ("minion-status", "minionize.status", [], "minion-status: interrupted"),
])
def test_a_ctrl_c_while_a_tool_imports_is_one_line(
    tmp_path: Path, command: str, module: str, args: list[str], said: str
) -> None:
    process = _importing(tmp_path, command, module, *args)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=30)
    assert (process.returncode, err.strip(), out) == (130, said, "")


def test_a_ctrl_c_while_mtop_imports_quits_as_once_it_runs(tmp_path: Path) -> None:
    process = _importing(tmp_path, "mtop", "minionize.mtop")
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=30)
    assert (process.returncode, err, out) == (0, "", "")


def test_the_entry_points_import_nothing_of_minionize_before_their_handlers() -> None:
    code = ("import sys, minionize.boot\n"
            "print(sorted(m for m in sys.modules if m.startswith('minionize')))")
    done = subprocess.run([sys.executable, "-c", code], env=minion_env(), capture_output=True, text=True,
                          timeout=60)
    assert done.stdout.strip() == "['minionize', 'minionize.boot', 'minionize.earlystop']", done.stderr


def test_the_entry_points_exit_codes_are_the_projects() -> None:
    from minionize import boot, exitcodes

    assert (boot._COLD_STOP, boot._INTERRUPTED) == (exitcodes.COLD_STOP, exitcodes.INTERRUPTED)


def test_the_api_names_are_all_there_lazily() -> None:
    assert sorted([*minionize.__all__, "DockerCallback"]) == sorted(minionize._API)
    for name in minionize.__all__:
        assert getattr(minionize, name) is not None
    assert minionize.minionize is minionize.minion
    assert set(minionize.__all__) <= set(dir(minionize))
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        minionize.nothing  # noqa: B018


def test_a_submodule_is_there_after_import_minionize_alone() -> None:
    code = "import minionize\nprint(minionize.engines.base.Engine.__name__, minionize.callbacks.base.Callback.__name__)"
    done = subprocess.run([sys.executable, "-c", code], env=minion_env(), capture_output=True, text=True,
                          timeout=60)
    assert done.stdout.split() == ["Engine", "Callback"], done.stderr


def test_a_special_name_is_never_taken_for_a_submodule() -> None:
    # minionize/__main__.py runs the command line: asking whether it is there must not.
    assert getattr(minionize, "__main__", None) is None
    assert not hasattr(minionize, "_nothing")


def test_help_and_star_import_work_without_the_docker_extra() -> None:
    code = ("import sys, pydoc\n"
            "sys.modules['docker'] = None  # the default install has no docker SDK\n"
            "import minionize\n"
            "pydoc.render_doc(minionize)\n"
            "from minionize import *\n"
            "print(minionizer.__name__, 'DockerCallback' in dir(minionize))")
    done = subprocess.run([sys.executable, "-c", code], env=minion_env(), capture_output=True, text=True,
                          timeout=60)
    assert done.stdout.split() == ["minionizer", "False"], done.stderr


@pytest.mark.parametrize("closed", [">&-", "2>&-", ">&- 2>&-", "<&- >&-"])
def test_a_minion_started_with_its_stdio_closed_runs_its_parameters(tmp_path: Path, closed: str) -> None:
    # Python makes sys.stdout None then; the runs' output had nowhere to go, and every run failed.
    (tmp_path / "in.txt").write_text("1\n2\n")
    env = minion_env(MINION_ENGINE="file", FILE_PATH="in.txt", MINION_REPORTER="json",
                     REPORTER_JSON_DIRECTORY="report")
    done = subprocess.run(["sh", "-c", f'exec "$0" echo hi {closed}', str(BIN / "minionize")], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    status = subprocess.run([str(BIN / "minion-status"), "--dir", "report"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=60, env=minion_env())
    assert "2 done" in status.stdout, status.stdout + status.stderr


def test_a_run_forwards_nothing_where_the_host_program_has_no_stdout(monkeypatch: pytest.MonkeyPatch) -> None:
    from minionize import ProcessCallback, RunContext
    from minionize.message import Message

    monkeypatch.setattr(sys, "stdout", None)
    monkeypatch.setattr(sys, "stderr", None)
    outcome = ProcessCallback(["sh", "-c", "echo out; echo err >&2"]).run(Message("m", None), RunContext())
    assert outcome.ok, outcome
    assert (outcome.stdout_tail, outcome.stderr_tail) == ("out\n", "err\n")
