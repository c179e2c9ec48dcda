"""What `pip install` of this project gets: the sdist and wheel CI builds.

The project is built as a release would be (`python -m build`: the sdist,
then the wheel from the sdist), checked with `twine check`, and the wheel's
contents are checked. Installing a wheel into a fresh virtualenv, and with
pipx, is what the README's Install blocks do, and tests/integration/test_docs.py
runs them (with `scripts/quickstart`), checking that the commands of each
install come from it and not from the checkout: not done twice here.

The version is written in a few places that cannot read each other (the
image's dependency stage builds pyproject.toml over an empty package): the
last test checks that they agree, and that the version is above the
original minionize's last release on PyPI (0.3.4).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

from minionize.registry import ENGINES
from tests.conftest import ROOT, minion_env

pytestmark = pytest.mark.integration

#: What the sdist is built from: the package and what pyproject.toml names.
SOURCES = ("pyproject.toml", "README.md", "minionize")
COMMANDS = ("minionize", "minion-status", "minion-push", "mtop")
PYPI_RELEASE = (0, 3, 4)


def version() -> str:
    found = re.search(r'^version = "([^"]+)"$', (ROOT / "pyproject.toml").read_text(), re.M)
    assert found, "no version in pyproject.toml"
    return found[1]


def run(*argv: str | Path, cwd: Path, timeout: float = 300) -> str:
    done = subprocess.run(
        [str(a) for a in argv], cwd=cwd, env=minion_env(), capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, f"{argv}: exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def dists(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The sdist and the wheel, built from a copy of the sources (the checkout gets no build/ or egg-info)."""
    src = tmp_path_factory.mktemp("src")
    for name in SOURCES:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy(path, src / name)
    out = tmp_path_factory.mktemp("dist")
    run(sys.executable, "-m", "build", "--outdir", out, src, cwd=src)
    found = {path.suffix: path for path in out.iterdir()}
    assert set(found) == {".gz", ".whl"}, sorted(out.iterdir())
    return {"sdist": found[".gz"], "wheel": found[".whl"]}


def test_twine_accepts_both(dists: dict[str, Path], tmp_path: Path) -> None:
    out = run(sys.executable, "-m", "twine", "check", "--strict", dists["sdist"], dists["wheel"], cwd=tmp_path)
    assert out.count("PASSED") == 2, out


def test_the_wheel_holds_this_project(dists: dict[str, Path]) -> None:
    assert dists["wheel"].name == f"minionize-{version()}-py3-none-any.whl"
    with zipfile.ZipFile(dists["wheel"]) as wheel:
        names = wheel.namelist()
        meta = wheel.read(f"minionize-{version()}.dist-info/METADATA").decode()
        scripts = wheel.read(f"minionize-{version()}.dist-info/entry_points.txt").decode()
    # Every engine of the registry, and the extra named after each that needs a client.
    for engine, target in ENGINES.items():
        assert target.partition(":")[0].replace(".", "/") + ".py" in names, engine
        assert engine in ("execo", "file", "memory") or f"Provides-Extra: {engine}" in meta, engine
    assert not [name for name in names if name.startswith("tests/")]
    for extra in ("metrics", "all"):
        assert f"Provides-Extra: {extra}" in meta
    assert "Requires-Dist: execo>=2.6" in meta
    for command in COMMANDS:
        assert re.search(rf"^{command} = ", scripts, re.M), command


def test_every_version_string_agrees() -> None:
    current = version()
    assert tuple(map(int, current.split(".")[:3])) > PYPI_RELEASE
    package = re.search(r'^__version__ = "([^"]+)"$', (ROOT / "minionize" / "__init__.py").read_text(), re.M)
    assert package and package[1] == current
    chart = yaml.safe_load((ROOT / "helm" / "minionize" / "Chart.yaml").read_text())
    assert chart["appVersion"] == current
    for doc in ("README.md", "docker/Dockerfile"):
        tags = set(re.findall(r"minionize/base:(\d+(?:\.\d+)*)", (ROOT / doc).read_text()))
        assert tags == {current}, doc
