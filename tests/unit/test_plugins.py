"""Engines from outside the project: a lab ships its own queue without forking.

A tiny engine package is built and installed (pip, into a directory of its
own), then a real minion runs on it, chosen by its entry-point name or by
`module:Class`; its declared secret is kept from the program.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.conftest import minion_env, minionize_cmd

PYPROJECT = """\
[build-system]
requires = ["setuptools>=64"]
build-backend = "setuptools.build_meta"

[project]
name = "minionize-lab-queue"
version = "0.1.0"

[project.entry-points."minionize.engines"]
lab = "labqueue:LabEngine"

[tool.setuptools]
py-modules = ["labqueue"]
"""

ENGINE = '''\
"""A lab's queue: LAB_PARAMS, comma-separated, in memory.

Environment
    LAB_PARAMS (text, mandatory): the parameters.
    LAB_TOKEN (text, secret): never reaches the program.
"""
from minionize.engines.base import Engine
from minionize.engines.kit import Setting, read_settings
from minionize.message import Message


class LabEngine(Engine):
    name = "lab"
    title = "Lab queue"
    input_ends = tells_drained = True
    settings = (
        Setting("LAB_PARAMS", "text", "the parameters, comma-separated", required=True),
        Setting("LAB_TOKEN", "text", "a credential", secret=True),
    )

    def __init__(self, params):
        self.todo = list(params)
        self.held = 0

    @classmethod
    def from_env(cls, env):
        return cls(read_settings(env, cls.settings)["LAB_PARAMS"].split(","))

    def next(self, timeout):
        if not self.todo:
            return None
        self.held += 1
        param = self.todo.pop(0)
        return Message(id=param, param=param)

    def drained(self):
        return not self.todo and not self.held

    def ack(self, message):
        self.held -= 1

    def nack(self, message):
        self.held -= 1
        self.todo.append(message.param)

    def fail(self, message, reason):
        self.held -= 1


class NotAnEngine:
    pass
'''


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The lab's package, installed with pip into a directory of its own."""
    root = tmp_path_factory.mktemp("lab")
    package, target = root / "package", root / "site"
    package.mkdir()
    (package / "pyproject.toml").write_text(PYPROJECT)
    (package / "labqueue.py").write_text(ENGINE)
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-deps",
         "--no-build-isolation", "--no-index", "--target", str(target), str(package)],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert list(target.glob("minionize_lab_queue-*.dist-info/entry_points.txt"))
    return target


def run_minion(site: Path, cwd: Path, engine: str) -> subprocess.CompletedProcess[str]:
    program = ["sh", "-c", 'echo "ran $0 token=${LAB_TOKEN:-hidden}"']
    env = minion_env(MINION_ENGINE=engine, LAB_PARAMS="a,b,c", LAB_TOKEN="s3cret", PYTHONPATH=str(site))
    return subprocess.run(minionize_cmd(*program), cwd=cwd, env=env, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("engine", ["lab", "labqueue:LabEngine"])
def test_a_minion_runs_on_an_installed_engine(site: Path, tmp_path: Path, engine: str) -> None:
    done = run_minion(site, tmp_path, engine)
    assert done.returncode == 0, done.stderr
    assert sorted(done.stdout.split("\n")[:-1]) == [f"ran {p} token=hidden" for p in "abc"]
    assert "s3cret" not in done.stdout + done.stderr


@pytest.mark.parametrize(
    "engine, says",
    [
        ("labqueue:Nope", "labqueue has no class Nope"),
        ("labqueue:NotAnEngine", "expected a subclass of minionize.engines.base.Engine"),
        ("nosuch.module:Engine", "cannot import nosuch.module"),
        ("labb", "did you mean 'lab'?"),
    ],
)
def test_a_wrong_engine_is_one_line_and_exit_2(site: Path, tmp_path: Path, engine: str, says: str) -> None:
    done = run_minion(site, tmp_path, engine)
    assert done.returncode == 2, done.stderr
    assert says in done.stderr
    assert "Traceback" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if "MINION_ENGINE" in line]
    assert len(lines) == 1, textwrap.indent(done.stderr, "  ")
