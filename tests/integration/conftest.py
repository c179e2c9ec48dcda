"""Fixtures of the integration tests: real servers and daemons, never mocks.

`docker_engine` (session) makes a Docker engine and the busybox test image
available with scripts/dockerd.sh; `docker_client` points DOCKER_HOST at it
for one test. Where the engine cannot be had, `require` skips locally and
fails under CI=true.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.conftest import ROOT, require

DOCKERD_SCRIPT = ROOT / "scripts" / "dockerd.sh"
#: Installing docker.io on a fresh machine takes most of this.
DOCKERD_TIMEOUT = 240


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
