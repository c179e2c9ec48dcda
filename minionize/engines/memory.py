"""In-memory queue, for tests, examples and embedding minionize in a Python program.

What it is
    A FIFO in the minion's own memory: nothing is shared between processes.

Environment
    MEMORY_PARAMS (JSON list, default empty): the parameters to queue at start.

Ack and nack
    Ack forgets the message; nack puts it back at the end of the queue with
    its attempt number increased; fail keeps it in `failed` with the reason.

A crashed minion
    Its messages are gone with it: this engine is not for real work.

Caveats
    `put` and `push` may be called from any thread while the minion runs.
"""

from __future__ import annotations

import json
import threading
from collections import deque
from collections.abc import Iterable
from typing import Any, Optional

from ..config import EnvReader
from ..errors import ConfigError
from ..message import Message
from .base import Engine
from .kit import Setting, read_settings


class MemoryEngine(Engine):
    name = "memory"
    title = "Memory (tests, examples)"
    settings = (
        Setting("MEMORY_PARAMS", "text", "a JSON list of parameters, e.g. '[1, 2, 3]'", default="[]", chart="",
                chart_why="the queue lives in the minion's process: not for a fleet"),
    )
    any_thread = True
    input_ends = tells_drained = True  # the list is done
    redelivers = False  # the queue lives and dies with the minion's process

    def __init__(self, params: Iterable[Any] = ()) -> None:
        self._queue: deque[Message] = deque()
        self._cond = threading.Condition()
        self._count = 0
        self._in_flight: dict[str, Message] = {}
        self.acked: list[Message] = []
        self.nacked: list[Message] = []
        self.failed: list[tuple[Message, str]] = []
        for param in params:
            self.put(param)

    @classmethod
    def from_env(cls, env: EnvReader) -> MemoryEngine:
        raw = read_settings(env, cls.settings)["MEMORY_PARAMS"]
        try:
            params = json.loads(raw)
        except (ValueError, RecursionError):  # not JSON, nested too deeply, a 4,300-digit integer
            params = None
        if not isinstance(params, list):
            raise ConfigError("MEMORY_PARAMS", raw, "expected a JSON list of parameters")
        return cls(params)

    def push(self, params: list[Any]) -> str:
        for param in params:
            self.put(param)
        return "memory"

    def put(self, param: Any) -> None:
        """Queue one parameter (from any thread)."""
        with self._cond:
            self._count += 1
            self._queue.append(Message(id=str(self._count), param=param))
            self._cond.notify()

    def next(self, timeout: float) -> Optional[Message]:
        with self._cond:
            if not self._queue:
                self._cond.wait(timeout)
            if not self._queue:
                return None
            message = self._queue.popleft()
            self._in_flight[message.id] = message
            return message

    def drained(self) -> bool:
        with self._cond:
            return not self._queue and not self._in_flight

    def ack(self, message: Message) -> None:
        with self._cond:
            self._in_flight.pop(message.id, None)
            self.acked.append(message)

    def nack(self, message: Message) -> None:
        self.nacked.append(message)
        self._requeue(message, message.attempt + 1)

    def release(self, message: Message) -> None:
        self._requeue(message, message.attempt)

    def _requeue(self, message: Message, attempt: int) -> None:
        with self._cond:
            self._in_flight.pop(message.id, None)
            self._queue.append(Message(id=message.id, param=message.param, attempt=attempt))
            self._cond.notify()

    def fail(self, message: Message, reason: str) -> None:
        with self._cond:
            self._in_flight.pop(message.id, None)
            self.failed.append((message, reason))

    def remaining(self) -> Optional[int]:
        with self._cond:
            return len(self._queue) + len(self._in_flight)
