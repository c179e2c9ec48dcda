"""The worker says what happened: a failed ack, a cold stop, a function's traceback."""

from __future__ import annotations

import logging
import threading
import time

import pytest

from minionize import FuncCallback
from minionize.config import Settings
from minionize.engines.memory import MemoryEngine
from minionize.message import Message
from minionize.worker import Worker


class AckRefused(MemoryEngine):
    def ack(self, message: Message) -> None:
        if message.param == "refused":
            raise ConnectionError("the broker hung up")
        super().ack(message)


def test_a_failed_ack_is_reported_as_unsettled_not_acked(caplog: pytest.LogCaptureFixture) -> None:
    engine = AckRefused(["refused", "a"])
    worker = Worker(engine, FuncCallback(lambda param: None), Settings(engine="memory", idle_timeout=0.5))
    with caplog.at_level(logging.INFO, logger="minionize"):
        assert worker.run() == 0
    assert worker.counts["acked"] == 1 and worker.counts["unsettled"] == 1
    assert "refused: not acked, the engine's ack failed: left to the broker's redelivery" in caplog.text
    assert "1 acked" in caplog.text and "1 unsettled" in caplog.text


def test_a_cold_stop_does_not_blame_the_grace_period(caplog: pytest.LogCaptureFixture) -> None:
    started = threading.Event()

    def slow(param: object) -> None:
        started.set()
        time.sleep(3)  # a Python function cannot be killed: the cold stop gives its parameter back

    worker = Worker(MemoryEngine(["x"]), FuncCallback(slow), Settings(engine="memory", grace_period=25))

    def stop_twice() -> None:
        started.wait(10)
        worker.request_stop()
        time.sleep(0.3)
        worker.request_stop()

    threading.Thread(target=stop_twice, daemon=True).start()
    with caplog.at_level(logging.INFO, logger="minionize"):
        assert worker.run() == 130
    assert "killed by the second signal (cold stop)" in caplog.text
    assert "did not stop within the grace period" not in caplog.text


def test_a_failing_function_logs_its_traceback(caplog: pytest.LogCaptureFixture) -> None:
    def deep_inside(param: object) -> None:
        raise ValueError(f"bad {param}")

    worker = Worker(MemoryEngine(["p"]), FuncCallback(deep_inside), Settings(engine="memory", max_attempts=1))
    with caplog.at_level(logging.WARNING, logger="minionize"):
        worker.run()
    [record] = [r for r in caplog.records if r.exc_info]
    assert "deep_inside raised on p" in record.getMessage()
    assert "in deep_inside" in caplog.text and "ValueError: bad p" in caplog.text
