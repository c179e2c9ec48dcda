"""The contract between the worker loop and what runs a parameter.

A callback turns one message into an Outcome. It never talks to the engine:
the worker alone decides whether the message is acked, nacked or set aside.
"""

from __future__ import annotations

import abc
import json
import threading
from dataclasses import dataclass, field
from typing import Any, Optional

from ..config import Settings
from ..message import Message, Outcome


@dataclass
class RunContext:
    """What a callback may know about the run it does."""

    #: Which of the MINION_CONCURRENCY slots runs it (0-based).
    slot: int = 0
    #: MINION_TIMEOUT, when set.
    timeout: Optional[float] = None
    #: Set by the worker when the run must stop (grace period over, cold stop).
    cancel: threading.Event = field(default_factory=threading.Event)
    #: True for a cold stop: no time for a polite SIGTERM.
    hard_cancel: bool = False
    #: Print what would run instead of running it (MINION_DRY).
    dry: bool = False


class Callback(abc.ABC):
    """Runs one parameter and says how it went."""

    #: False for callbacks that cannot be interrupted (Python functions).
    cancellable = True

    def setup(self, settings: Settings) -> None:  # noqa: B027 - optional hook
        """Called once before the first run with the minion's settings."""

    @abc.abstractmethod
    def run(self, message: Message, context: RunContext) -> Outcome:
        """Run the parameter of `message`; exceptions count as failures."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Called once when the minion is done: nothing of the runs may outlive it."""


def param_env(message: Message, slot: int) -> dict[str, str]:
    """The MINION_* variables that describe one run to the program it starts."""
    env = {
        "MINION_PARAM": json.dumps(message.param, default=str, ensure_ascii=False),
        "MINION_MESSAGE_ID": str(message.id),
        "MINION_ATTEMPT": str(message.attempt),
        "MINION_SLOT": str(slot),
    }
    if isinstance(message.param, dict):
        for key, value in message.param.items():
            name = "".join(c if c.isalnum() else "_" for c in str(key)).upper()
            text = value if isinstance(value, str) else json.dumps(value, default=str)
            env[f"MINION_PARAM_{name}"] = text
    return env


def describe_param(param: Any, limit: int = 200) -> str:
    """A short printable form of a parameter for logs."""
    text = param if isinstance(param, str) else json.dumps(param, default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."
