"""Settling never takes the minion down: a reason a broker cannot encode, an engine that fails on one message."""

from __future__ import annotations

from typing import Any

from minionize import FuncCallback, Outcome, ProcessCallback, exitcodes
from minionize.callbacks.base import Callback, RunContext
from minionize.config import Settings
from minionize.engines.memory import MemoryEngine
from minionize.message import Message, Param, Status
from minionize.worker import Worker


class StrictBroker(MemoryEngine):
    """Encodes the dead-letter reason as UTF-8, as Redis, RabbitMQ, Pulsar and Pub/Sub do."""

    def fail(self, message: Message, reason: str) -> None:
        reason.encode("utf-8")
        super().fail(message, reason)


class Says(Callback):
    def __init__(self, error: str) -> None:
        self.error = error

    def run(self, message: Message, context: RunContext) -> Outcome:
        return Outcome.failure(self.error)


def test_a_reason_with_a_lone_surrogate_still_reaches_the_dead_letter() -> None:
    engine = StrictBroker(["x"])
    code = Worker(engine, Says("bad \udc80 bytes"), Settings(engine="memory", max_attempts=1)).run()
    assert code == exitcodes.SET_ASIDE
    [(message, reason)] = engine.failed
    assert reason.startswith("bad \\udc80 bytes")


class AckRefused(MemoryEngine):
    def ack(self, message: Message) -> None:
        if message.param == "refused":
            raise ValueError("the client refuses this one")
        super().ack(message)


def test_an_engine_that_fails_to_settle_one_message_does_not_stop_the_minion() -> None:
    engine = AckRefused(["refused", "a", "b"])
    settings = Settings(engine="memory", idle_timeout=0.5)  # the refused one stays in flight: never drained
    code = Worker(engine, FuncCallback(lambda param: None), settings).run()
    assert code == 0
    assert sorted(m.param for m in engine.acked) == ["a", "b"]


class ShellWithNul(ProcessCallback):
    def to_cmd(self, param: Param) -> Any:
        return f"echo {param}"


def test_a_command_with_a_nul_is_set_aside_at_once() -> None:
    outcome = ShellWithNul().run(Message("m", "a\x00b"), RunContext())
    assert outcome.status is Status.REJECTED and "null" in (outcome.error or "")
