"""Fixtures of the integration tests: real servers and daemons, never mocks.

`docker_engine` (session) makes a Docker engine and the busybox test image
available with scripts/dockerd.sh; `docker_client` points DOCKER_HOST at it
for one test; `built_images` (session) builds the project's images on it
once, for test_image.py and the docs (tests/integration/test_docs.py). Where
the engine cannot be had, `require` skips locally and fails under CI=true.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import pytest

from tests.conftest import ROOT, require

DOCKERD_SCRIPT = ROOT / "scripts" / "dockerd.sh"
#: Installing docker.io on a fresh machine takes most of this.
DOCKERD_TIMEOUT = 240
#: The images of docker/Dockerfile and examples/docker, built FROM the stand-in for
#: python:*-slim (`dockerd.sh python-base`: that image cannot be pulled here).
PYTHON_IMAGE = "minionize-test/python:bookworm"
MINIONIZE_IMAGE = "minionize-test/base:latest"
EXAMPLE_IMAGE = "minionize-test/collatz:latest"
#: The build arguments of docker/Dockerfile's OCI labels, as the release workflow passes them.
OCI_BUILD_ARGS = {"VERSION": "1.0.0-test", "REVISION": "0123456789abcdef0123456789abcdef01234567",
                  "CREATED": "2026-01-02T03:04:05Z", "SOURCE": "https://github.com/example/minionize"}
#: debootstrap on a machine that has never made the Python base image.
PYTHON_BASE_TIMEOUT = 900
BUILD_TIMEOUT = 900


@dataclass(frozen=True)
class BuiltImages:
    """The images of docker/Dockerfile (base) and examples/docker (example), on `engine`."""

    engine: DockerEngine
    base: str
    example: str


@dataclass
class DockerEngine:
    """The engine of scripts/dockerd.sh: its DOCKER_HOST and a client of it."""

    host: str
    client: Any


def _start_docker_engine() -> tuple[str, str]:
    """Run scripts/dockerd.sh: (socket path, "") or ("", why it failed)."""
    try:
        done = subprocess.run(
            ["sh", str(DOCKERD_SCRIPT), "busybox"],
            capture_output=True,
            text=True,
            timeout=DOCKERD_TIMEOUT,
        )
    except subprocess.TimeoutExpired:
        return "", f"{DOCKERD_SCRIPT.name} did not finish within {DOCKERD_TIMEOUT}s"
    if done.returncode != 0:
        last = done.stderr.strip().splitlines()[-5:]
        return "", f"{DOCKERD_SCRIPT.name} failed (exit {done.returncode}): " + " | ".join(last)
    return done.stdout.strip().splitlines()[-1], ""


@pytest.fixture(scope="session")
def docker_engine() -> Iterator[DockerEngine]:
    """A Docker engine with minionize-test/busybox:latest, started if needed."""
    try:
        import docker
    except ImportError:
        require(False, "the docker SDK is missing: pip install 'minionize[docker]'")
    socket, problem = _start_docker_engine()
    require(bool(socket), problem)
    host = f"unix://{socket}"
    client = docker.DockerClient(base_url=host)
    yield DockerEngine(host, client)
    client.close()


@pytest.fixture
def docker_client(docker_engine: DockerEngine, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A client of the test engine, with DOCKER_HOST pointing at it for the code under test."""
    # Set for each test: the autouse clean_env removes DOCKER_* before every test.
    monkeypatch.setenv("DOCKER_HOST", docker_engine.host)
    return docker_engine.client


def _docker_env(engine: DockerEngine) -> dict[str, str]:
    """The environment of the docker command: the test engine and the classic builder.

    The classic builder takes a FROM image that is local as it is and never
    asks a registry about it (and the CLI here has no buildx for BuildKit).
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
    return {**env, "DOCKER_HOST": engine.host, "DOCKER_BUILDKIT": "0"}


def _make_python_base(engine: DockerEngine) -> None:
    try:
        done = subprocess.run(
            ["sh", str(DOCKERD_SCRIPT), "python-base"],
            capture_output=True, text=True, timeout=PYTHON_BASE_TIMEOUT, env=_docker_env(engine),
        )
    except subprocess.TimeoutExpired:
        require(False, f"{DOCKERD_SCRIPT.name} python-base did not finish within {PYTHON_BASE_TIMEOUT}s")
    last = " | ".join(done.stderr.strip().splitlines()[-5:])
    require(done.returncode == 0, f"{DOCKERD_SCRIPT.name} python-base failed (exit {done.returncode}): {last}")


def _build(
    engine: DockerEngine, dockerfile: Path, context: Path, tag: str, labels: Optional[dict[str, str]] = None,
    **args: str,
) -> None:
    """`docker build` with the CLI, as a user would; FROM images (`args`) must already be local.

    `labels`: more build arguments, which name no image (those of the OCI labels).
    """
    for parent in args.values():
        engine.client.images.get(parent)
    # --force-rm: a failed build leaves no container behind either.
    command = ["docker", "build", "--network=host", "--force-rm", "-f", str(dockerfile), "-t", tag]
    for name, value in {**args, **(labels or {})}.items():
        command += ["--build-arg", f"{name}={value}"]
    done = subprocess.run(
        [*command, str(context)], capture_output=True, text=True, timeout=BUILD_TIMEOUT, env=_docker_env(engine)
    )
    assert done.returncode == 0, f"{' '.join(command)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"


@pytest.fixture(scope="session")
def built_images(docker_engine: DockerEngine, request: pytest.FixtureRequest) -> BuiltImages:
    """The base image and the example image, built (or found in the layer cache) once per session.

    Under pytest-xdist each worker asks for them: a lock makes the others wait
    for the first build, then find every layer in the cache.
    """
    require(shutil.which("docker") is not None, "the docker command is missing (scripts/dockerd.sh installs it)")
    with open(Path(tempfile.gettempdir()) / "minionize-test-images.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _build_images(docker_engine, request)


def _build_images(docker_engine: DockerEngine, request: pytest.FixtureRequest) -> BuiltImages:
    times = []
    started = time.monotonic()
    _make_python_base(docker_engine)
    times.append(f"python-base {time.monotonic() - started:.1f}s")
    started = time.monotonic()
    _build(docker_engine, ROOT / "docker" / "Dockerfile", ROOT, MINIONIZE_IMAGE, labels=OCI_BUILD_ARGS,
           BASE_IMAGE=PYTHON_IMAGE)
    times.append(f"base {time.monotonic() - started:.1f}s")
    started = time.monotonic()
    example = ROOT / "examples" / "docker"
    _build(docker_engine, example / "Dockerfile", example, EXAMPLE_IMAGE, MINIONIZE_BASE=MINIONIZE_IMAGE)
    times.append(f"example {time.monotonic() - started:.1f}s")
    # Shown even with output captured: the build times are worth watching.
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is not None and capture is not None:
        with capture.global_and_fixture_disabled():
            reporter.write_line(f"\nimages made in {', '.join(times)}")
    return BuiltImages(docker_engine, MINIONIZE_IMAGE, EXAMPLE_IMAGE)
