"""DockerCallback against a real Docker engine and the local busybox image.

Every container a test starts carries a label unique to the test, so that
each test can show its containers were removed, and clean up if they were not.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Optional

import pytest
from docker.errors import NotFound

from minionize.callbacks.base import RunContext
from minionize.callbacks.docker import STOP_TIMEOUT, DockerCallback
from minionize.message import Message, Outcome, Param, Status
from tests.conftest import minion_env

pytestmark = [pytest.mark.integration, pytest.mark.docker, pytest.mark.timeout(300)]

IMAGE = "minionize-test/busybox:latest"
#: A program that says when it is ready, and exits 0 on SIGTERM.
TRAPS_TERM = ["sh", "-c", 'trap "echo got TERM; exit 0" TERM; echo ready; while :; do sleep 0.1; done']


@pytest.fixture
def labels(docker_client: Any) -> Iterator[dict[str, str]]:
    """Labels for the containers of one test; what is left of them is removed afterwards."""
    labels = {"minionize-test": uuid.uuid4().hex}
    yield labels
    for container in _containers(docker_client, labels):
        container.remove(force=True)


def _containers(client: Any, labels: dict[str, str]) -> list[Any]:
    """The containers of the test. The engine lists a container that is still being created, and
    answers 404 to an inspect of it (moby/moby#44512): the list has none of those."""
    filters = {"label": [f"{key}={value}" for key, value in labels.items()]}
    return list(client.containers.list(all=True, filters=filters, ignore_removed=True))


def test_the_listing_of_a_tests_containers_bears_their_churn(docker_client: Any, labels: dict[str, str]) -> None:
    """The helper the tests wait and check with, while containers come and go (it used to raise NotFound)."""
    stop = threading.Event()

    def churn() -> None:
        while not stop.is_set():
            docker_client.containers.create(IMAGE, ["true"], labels=labels, network_mode="host").remove(force=True)

    churner = threading.Thread(target=churn)
    churner.start()
    try:
        for _ in range(200):
            _containers(docker_client, labels)
    finally:
        stop.set()
        churner.join(30)


def _run(callback: DockerCallback, param: Param, context: Optional[RunContext] = None) -> Outcome:
    return callback.run(Message("m-1", param), context or RunContext())


def test_a_parameter_reaches_the_container_as_literal_argv(
    docker_client: Any, labels: dict[str, str], tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    out = {str(tmp_path): {"bind": "/out", "mode": "rw"}}
    echo = DockerCallback(IMAGE, command=["echo"], volumes=out, labels=labels)
    outcome = _run(echo, "'$(touch /out/pwned); echo x'")
    assert outcome.status is Status.SUCCESS, outcome
    assert outcome.stdout_tail == "$(touch /out/pwned); echo x\n"
    assert "$(touch /out/pwned); echo x" in capfd.readouterr().out
    # The control: the container can write there, so no file means nothing ran.
    assert _run(DockerCallback(IMAGE, command=["touch"], volumes=out, labels=labels), "/out/ok").ok
    assert (tmp_path / "ok").exists()
    assert not (tmp_path / "pwned").exists()
    assert _containers(docker_client, labels) == []


def test_the_minion_variables_reach_the_container(docker_client: Any, labels: dict[str, str]) -> None:
    script = 'echo "$MINION_PARAM_LR|$MINION_MESSAGE_ID|$MINION_ATTEMPT|$MINION_SLOT|$EXTRA|$1"'
    callback = DockerCallback(
        IMAGE, command=["sh", "-c", script, "sh"], environment={"EXTRA": "kept"}, labels=labels
    )
    outcome = callback.run(Message("m-7", {"lr": 0.5}, attempt=2), RunContext(slot=1))
    assert outcome.ok, outcome
    assert outcome.stdout_tail == '0.5|m-7|2|1|kept|{"lr": 0.5}\n'


def test_a_non_zero_exit_is_a_failure_with_its_code_and_output(
    docker_client: Any, labels: dict[str, str], capfd: pytest.CaptureFixture[str]
) -> None:
    script = "echo to-stdout; echo to-stderr >&2; exit 3"
    outcome = _run(DockerCallback(IMAGE, command=["sh", "-c", script], labels=labels), None)
    assert outcome.status is Status.FAILURE
    assert outcome.exit_code == 3
    assert outcome.error == "exit code 3"
    assert (outcome.stdout_tail, outcome.stderr_tail) == ("to-stdout\n", "to-stderr\n")
    forwarded = capfd.readouterr()
    assert "to-stdout" in forwarded.out and "to-stderr" in forwarded.err
    assert _containers(docker_client, labels) == []


def test_a_missing_program_is_a_failure_and_leaves_no_container(
    docker_client: Any, labels: dict[str, str]
) -> None:
    outcome = _run(DockerCallback(IMAGE, command=["no-such-program"], labels=labels), None)
    assert outcome.status is Status.FAILURE
    assert outcome.exit_code == 127
    assert "no-such-program" in (outcome.error or "")
    assert _containers(docker_client, labels) == []


def test_the_timeout_kills_and_removes_the_container(docker_client: Any, labels: dict[str, str]) -> None:
    started = time.monotonic()
    callback = DockerCallback(IMAGE, command=["sleep", "60"], labels=labels)
    outcome = _run(callback, None, RunContext(timeout=1))
    elapsed = time.monotonic() - started
    assert outcome.status is Status.FAILURE
    assert outcome.timed_out
    assert outcome.error == "timed out after 1s"
    assert 1 <= elapsed < 15
    assert _containers(docker_client, labels) == []


@pytest.mark.parametrize(("hard", "told", "exit_code"), [(False, True, 0), (True, False, 137)])
def test_a_stop_of_the_minion_interrupts_the_container(
    docker_client: Any, labels: dict[str, str], hard: bool, told: bool, exit_code: int
) -> None:
    """A warm stop lets the program handle SIGTERM; a cold stop kills it."""
    context = RunContext(hard_cancel=hard)
    outcomes: list[Outcome] = []
    callback = DockerCallback(IMAGE, command=TRAPS_TERM, labels=labels)
    runner = threading.Thread(target=lambda: outcomes.append(_run(callback, None, context)))
    runner.start()
    _wait_for_output(docker_client, labels, "ready")
    cancelled = time.monotonic()
    context.cancel.set()
    runner.join(30)
    assert outcomes, "the run did not end after the cancel"
    outcome = outcomes[0]
    assert outcome.status is Status.INTERRUPTED
    assert ("got TERM" in outcome.stdout_tail) is told
    assert outcome.exit_code == exit_code
    assert time.monotonic() - cancelled < STOP_TIMEOUT + 5
    assert _containers(docker_client, labels) == []


def _wait_for_output(client: Any, labels: dict[str, str], text: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for container in _containers(client, labels):
            with contextlib.suppress(NotFound):  # removed since it was listed
                if text in container.logs().decode():
                    return
        time.sleep(0.05)
    raise AssertionError(f"no container of {labels} printed {text!r}")


def test_to_kwargs_can_be_overridden_as_in_the_original_api(
    docker_client: Any, labels: dict[str, str]
) -> None:
    class Sweep(DockerCallback):
        def to_kwargs(self, param: Param) -> dict[str, Any]:
            return dict(
                command="sh -c 'echo lr=$LR from $MINION_PARAM_LR in $PWD'",
                environment={"LR": str(param["lr"])},
                working_dir="/tmp",
                labels=labels,
                # What a user of containers.run may pass: the callback still
                # watches the run and removes the container itself.
                detach=False,
                remove=True,
            )

    outcome = _run(Sweep(IMAGE), {"lr": 0.25})
    assert outcome.ok, outcome
    assert outcome.stdout_tail == "lr=0.25 from 0.25 in /tmp\n"
    assert _containers(docker_client, labels) == []


def test_a_missing_image_fails_naming_it(docker_client: Any) -> None:
    # Nothing listens on localhost:1: the pull fails at once, without leaving the machine.
    image = "localhost:1/minionize-test/missing:latest"
    outcome = _run(DockerCallback(image, command=["true"]), None)
    assert outcome.status is Status.FAILURE
    assert image in (outcome.error or "")
    assert "\n" not in (outcome.error or "")


def test_an_unreachable_engine_is_a_one_line_failure(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-engine.sock")
    outcome = _run(DockerCallback(IMAGE, command=["true"]), None)
    assert outcome.status is Status.FAILURE
    assert (outcome.error or "").startswith("cannot reach the Docker engine: ")
    assert "\n" not in (outcome.error or "")


def test_dry_mode_prints_the_run_and_starts_nothing(
    docker_client: Any, labels: dict[str, str], capfd: pytest.CaptureFixture[str]
) -> None:
    callback = DockerCallback(IMAGE, command=["echo"], labels=labels)
    outcome = _run(callback, "hello 'big world'", RunContext(dry=True))
    assert outcome.ok
    assert f"DRY: docker run {IMAGE} echo hello 'big world'" in capfd.readouterr().out
    assert _containers(docker_client, labels) == []


def test_a_parameter_that_cannot_become_arguments_is_rejected(
    docker_client: Any, labels: dict[str, str]
) -> None:
    outcome = _run(DockerCallback(IMAGE, command=["echo"], labels=labels), "unbalanced 'quote")
    assert outcome.status is Status.REJECTED
    assert _containers(docker_client, labels) == []


def test_the_containers_of_a_minion_that_is_sigkilled_are_removed(
    docker_engine: Any, docker_client: Any, labels: dict[str, str], tmp_path: Path
) -> None:
    (tmp_path / "in.txt").write_text("600\n601\n")  # seconds to sleep
    script = (
        "from minionize import minionizer\n"
        "from minionize.callbacks.docker import DockerCallback\n"
        f"minionizer(DockerCallback({IMAGE!r}, command=['sleep'], labels={labels!r})).run()\n"
    )
    minion = subprocess.Popen(
        [sys.executable, "-c", script], cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        env=minion_env(MINION_ENGINE="file", FILE_PATH="in.txt", MINION_CONCURRENCY="2",
                       DOCKER_HOST=docker_engine.host),
    )
    def listed(**filters: str) -> list[dict[str, Any]]:
        # The low-level list: no inspect of each container, which races with its removal.
        label = [f"{key}={value}" for key, value in labels.items()]
        return list(docker_client.api.containers(all=True, filters={"label": label, **filters}))

    deadline = time.monotonic() + 60
    while len(listed(status="running")) < 2:
        if time.monotonic() > deadline or minion.poll() is not None:
            minion.kill()
            raise AssertionError(f"the two containers never ran: {minion.communicate(timeout=30)[1]}")
        time.sleep(0.1)
    os.kill(minion.pid, signal.SIGKILL)
    _, err = minion.communicate(timeout=30)
    deadline = time.monotonic() + 15
    while listed():
        assert time.monotonic() < deadline, f"containers left behind: {err}"
        time.sleep(0.2)
    assert "removed 2 container(s)" in err
