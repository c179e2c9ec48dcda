"""docker/constraints.txt, the pins the image installs its dependencies at.

The file is pip's constraints, written by `uv pip compile --universal` for
every Python from 3.10 (see its header). Here: each line pins one version,
and for each Python the image may run, the pins satisfy every requirement of
pyproject.toml that the image installs (its dependencies and those of the
extras of MINIONIZE_EXTRAS's default). tests/integration/test_image.py checks
the built image against the same file.
"""

from __future__ import annotations

import re
import sys
from functools import cache

import pytest
from packaging.requirements import Requirement

from tests.conftest import ROOT

CONSTRAINTS = ROOT / "docker" / "constraints.txt"
DOCKERFILE = ROOT / "docker" / "Dockerfile"
#: Pythons the image may be built on (requires-python is >=3.10).
PYTHONS = ("3.10.12", "3.11.2", "3.11.7", "3.12.8", "3.13.1")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def environment(python: str, machine: str = "x86_64") -> dict[str, str]:
    return {"python_version": ".".join(python.split(".")[:2]), "python_full_version": python,
            "implementation_name": "cpython", "platform_python_implementation": "CPython",
            "sys_platform": "linux", "platform_system": "Linux", "os_name": "posix", "platform_machine": machine}


@cache
def lines() -> tuple[Requirement, ...]:
    out = []
    for line in CONSTRAINTS.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            out.append(Requirement(line))
    return tuple(out)


def pins_for(python: str, machine: str = "x86_64") -> dict[str, str]:
    """name -> the version pinned for that Python."""
    pins: dict[str, str] = {}
    for req in lines():
        if req.marker is None or req.marker.evaluate(environment(python, machine)):
            assert canonical(req.name) not in pins, f"{req.name} pinned twice for Python {python}"
            (spec,) = req.specifier
            pins[canonical(req.name)] = spec.version
    return pins


def image_extras() -> set[str]:
    match = re.search(r"^ARG MINIONIZE_EXTRAS=(\S*)$", DOCKERFILE.read_text(), re.M)
    assert match, "docker/Dockerfile declares no MINIONIZE_EXTRAS default"
    return set(filter(None, match.group(1).split(",")))


def requirements(extras: set[str]) -> list[Requirement]:
    """pyproject's dependencies and those of `extras`, self-references expanded."""
    import tomllib  # Python 3.11+, as in tests/unit/test_config.py

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    out = [Requirement(r) for r in project["dependencies"]]
    todo, seen = list(extras), set()
    while todo:
        extra = todo.pop()
        if extra in seen:
            continue
        seen.add(extra)
        for text in project["optional-dependencies"][extra]:
            req = Requirement(text)
            if canonical(req.name) == canonical(project["name"]):
                todo.extend(req.extras)
            else:
                out.append(req)
    return out


def test_every_line_pins_one_version() -> None:
    assert lines()
    for req in lines():
        (spec,) = req.specifier
        assert spec.operator == "==" and not req.extras and req.url is None, str(req)


def test_the_dockerfile_installs_with_the_constraints() -> None:
    text = DOCKERFILE.read_text()
    assert "COPY pyproject.toml docker/constraints.txt ./" in text
    assert "--constraint constraints.txt" in text
    assert "!docker/constraints.txt" in (ROOT / ".dockerignore").read_text().splitlines()


@pytest.mark.parametrize("machine", ["x86_64", "aarch64"])
@pytest.mark.parametrize("python", PYTHONS)
def test_the_pins_satisfy_pyproject(python: str, machine: str) -> None:
    assert image_extras() == {"all"}
    pins = pins_for(python, machine)
    env = environment(python, machine)
    checked = 0
    for req in requirements(image_extras()):
        if req.marker is not None and not req.marker.evaluate(env):
            continue
        name = canonical(req.name)
        assert name in pins, f"{req} is not pinned for Python {python}"
        assert req.specifier.contains(pins[name], prereleases=True), f"{name}=={pins[name]} does not satisfy {req}"
        checked += 1
    assert checked >= 10


def test_a_pin_outside_pyproject_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """The check itself: a pin that pyproject refuses fails it."""
    wrong = tuple(Requirement("redis==3.0.0") if canonical(r.name) == "redis" else r for r in lines())
    monkeypatch.setattr(sys.modules[__name__], "lines", lambda: wrong)
    with pytest.raises(AssertionError, match="does not satisfy"):
        test_the_pins_satisfy_pyproject("3.12.8", "x86_64")
