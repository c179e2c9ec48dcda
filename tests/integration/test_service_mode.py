"""Service and batch mode on every broker, on its real server (README, "When a minion ends").

A minion on a broker is a service: started on an empty queue with no idle
setting, it is still there to run a parameter pushed 5 s later (issue #11), and waits
on until it is stopped. The same minion in batch mode (MINION_BATCH=1)
exits 0 once the queue is drained: Redis and RabbitMQ tell when; Pub/Sub
and Pulsar cannot, so there batch mode ends a minion after
MINION_IDLE_TIMEOUT without a parameter (3 s here; its 120 s default is
checked in tests/unit/test_worker.py).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import ROOT, minion_env, minionize_cmd

from .backends import BACKENDS, Backend, load, started
from .backends.pulsar import PulsarBackend
from .test_contract import push

pytestmark = pytest.mark.integration
RECORD = (sys.executable, str(ROOT / "tests" / "programs" / "record.py"))
BROKERS = [name for name in BACKENDS if not load(name).input_ends]
#: How long after the minion is ready the parameter is pushed (the 5 s that
#: issue #11 names), and how long it must stay after its work: a minion that
#: ended on a drained queue would be gone well before (Redis tells at once,
#: RabbitMQ after a second look 1 s later).
LATE = 5.0
AFTER = 2.0


@pytest.fixture(scope="module", params=BROKERS)
def broker(request: pytest.FixtureRequest) -> Backend:
    return started(request.param, request.config)


class Minion:
    """A minionize process wrapping record.py, its stderr collected by a thread."""

    def __init__(self, env: dict[str, str], workdir: Path) -> None:
        self.lines: list[str] = []
        self.process = subprocess.Popen(
            minionize_cmd(*RECORD, str(workdir), "0", "0"), cwd=workdir, env=env,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.append(line)

    @property
    def log(self) -> str:
        return "".join(self.lines)

    def wait_for(self, predicate: Callable[[], bool], what: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            code = self.process.poll()
            # Looked at again: the minion may have got there just before it exited.
            assert code is None or predicate(), f"{what}: the minion exited ({code})\n{self.log}"
            assert time.monotonic() < deadline, f"{what}: not in {timeout:g}s\n{self.log}"
            time.sleep(0.05)

    def wait(self, timeout: float) -> int:
        code = self.process.wait(timeout=timeout)
        self._reader.join(timeout=10)
        return code

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def push_while_consumed(broker: Backend, env: dict[str, str], param: str) -> None:
    """minion-push, except on Pulsar, where a producer alone publishes.

    pulsar-lite 0.2.0 cannot give one subscription to two client processes
    (backends/pulsar.py) and minion-push subscribes before it publishes; the
    minion's own subscription keeps what the producer sends.
    """
    if not isinstance(broker, PulsarBackend):
        push(env, param)
        return
    import pulsar

    client = pulsar.Client(broker.url, logger=pulsar.FileLogger(pulsar.LoggerLevel.Warn, os.devnull))
    try:
        producer = client.create_producer(env["PULSAR_TOPIC"])
        producer.send(json.dumps(param).encode())  # what minion-push sends for PULSAR_DECODER=json
        producer.close()
    finally:
        client.close()


def ended(directory: Path) -> list[str]:
    return sorted(p.name.split(".")[0] for p in directory.glob("*.end"))


def test_a_minion_started_on_an_empty_queue_runs_a_parameter_pushed_later(broker: Backend, tmp_path: Path) -> None:
    env = broker.env(tmp_path)
    settings = minion_env(**env)
    del settings["MINION_BATCH"]  # minionize's own default, with no idle setting either
    assert not {"MINION_BATCH", "MINION_IDLE_TIMEOUT"} & set(settings)
    minion = Minion(settings, tmp_path)
    try:
        minion.wait_for(lambda: "taking parameters from" in minion.log, "the minion did not start")
        time.sleep(LATE)
        assert minion.process.poll() is None, f"the minion left the empty queue:\n{minion.log}"
        push_while_consumed(broker, env, "late")
        minion.wait_for(lambda: ended(tmp_path) == ["late"], "the late parameter did not run")
        # Done with it, the minion waits for more until it is stopped.
        time.sleep(AFTER)
        assert minion.process.poll() is None, f"the minion exited after its work:\n{minion.log}"
        minion.process.send_signal(signal.SIGTERM)
        assert minion.wait(timeout=60) == 0, minion.log
    finally:
        minion.kill()
    assert ended(tmp_path) == ["late"]
    assert "1 acked" in minion.log, minion.log


def test_the_same_minion_in_batch_mode_exits_0_once_the_queue_is_drained(broker: Backend, tmp_path: Path) -> None:
    env = broker.env(tmp_path)
    push(env, "a", "b")
    # Pub/Sub and Pulsar cannot tell that the queue is drained: an idle time ends the batch.
    idle = {} if broker.drains else {"MINION_IDLE_TIMEOUT": "3"}
    minion = Minion(minion_env(**env, **idle, MINION_BATCH="1"), tmp_path)
    try:
        minion.wait_for(lambda: ended(tmp_path) == ["a", "b"], "the batch did not run")
        last = time.monotonic()
        assert minion.wait(timeout=60) == 0, minion.log
        took = time.monotonic() - last
    finally:
        minion.kill()
    reason = "drained" if broker.drains else "idle for 3s"
    assert f"{reason} (2 acked)" in minion.log, minion.log
    # Once drained, not after a timeout of some kind (RabbitMQ looks twice, a second apart).
    assert took < (10 if broker.drains else 15), f"{took:.1f}s after the last run\n{minion.log}"
