"""Taking a message for each free slot in one engine call (Engine.next_many), never more."""

from __future__ import annotations

import threading
from typing import Any, Optional

from minionize import FuncCallback
from minionize.config import Settings
from minionize.engines.memory import MemoryEngine
from minionize.message import Message
from minionize.worker import Worker


class Batching(MemoryEngine):
    """A memory engine that takes up to `limit` messages in one call, and records the calls."""

    def __init__(self, params: Any) -> None:
        super().__init__(params)
        self.calls: list[tuple[int, int]] = []  # (limit, how many given)

    def next_many(self, limit: int, timeout: float) -> list[Message]:
        messages = []
        while len(messages) < limit and (message := self.next(0)) is not None:
            messages.append(message)
        self.calls.append((limit, len(messages)))
        return messages


def test_a_worker_takes_one_message_per_free_slot_in_one_call_and_runs_each_once() -> None:
    engine = Batching(range(20))
    running: set[Any] = set()
    most = 0
    lock = threading.Lock()
    gate = threading.Event()

    def task(param: Any) -> None:
        nonlocal most
        with lock:
            running.add(param)
            most = max(most, len(running))
        gate.wait(5)  # the first runs wait for each other: the first call had four free slots
        with lock:
            running.discard(param)

    threading.Timer(0.2, gate.set).start()
    code = Worker(engine, FuncCallback(task), Settings(engine="memory", concurrency=4)).run()
    assert code == 0
    assert sorted(m.param for m in engine.acked) == list(range(20))
    assert engine.calls[0] == (4, 4)  # all four slots filled by one call
    assert all(given <= limit <= 4 for limit, given in engine.calls)
    assert most <= 4


def test_an_engine_without_batches_is_asked_one_message_at_a_time() -> None:
    asked: list[Optional[float]] = []

    class Single(MemoryEngine):
        def next(self, timeout: float) -> Optional[Message]:
            asked.append(timeout)
            return super().next(timeout)

    engine = Single(range(6))
    Worker(engine, FuncCallback(lambda p: None), Settings(engine="memory", concurrency=3)).run()
    assert sorted(m.param for m in engine.acked) == list(range(6))
    assert asked  # the base next_many goes through next
