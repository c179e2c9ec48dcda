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
from ..excerpt import excerpt, safe_text
from ..message import Message, Outcome
from .params import BadParam


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
    """The MINION_* variables that describe one run to the program it starts.

    Raises BadParam for a parameter that no environment can hold: a dict
    value with a NUL or a lone surrogate, or a value JSON cannot write.
    """
    env = {
        "MINION_PARAM": _json(message.param, ensure_ascii=False),
        # A broker's id (an AMQP message_id) may carry what an environment cannot.
        "MINION_MESSAGE_ID": safe_text(str(message.id), 1000).replace("\x00", "\\x00"),
        "MINION_ATTEMPT": str(message.attempt),
        "MINION_SLOT": str(slot),
    }
    if not _encodable(env["MINION_PARAM"]):
        # Lone surrogates: JSON escapes them losslessly.
        env["MINION_PARAM"] = _json(message.param, ensure_ascii=True)
    if isinstance(message.param, dict):
        for key, value in message.param.items():
            name = "".join(c if c.isalnum() else "_" for c in str(key)).upper()
            text = value if isinstance(value, str) else _json(value, ensure_ascii=True)
            if "\x00" in text or not _encodable(text):
                what = "a NUL character" if "\x00" in text else "text that is not Unicode (a lone surrogate)"
                raise BadParam(f"parameter value {excerpt(str(key), 60)} contains {what}: no environment can hold it")
            if name != "FILE":  # MINION_PARAM_FILE names the file of a large parameter, and nothing else
                env[f"MINION_PARAM_{name}"] = text
    return env


def _json(value: Any, ensure_ascii: bool) -> str:
    try:
        return json.dumps(value, default=str, ensure_ascii=ensure_ascii)
    except RecursionError:
        raise BadParam("parameter nested too deeply to be written as JSON") from None
    except (ValueError, TypeError) as exc:  # an integer of 4,300 digits or more, a cycle
        raise BadParam(f"parameter cannot be written as JSON ({safe_text(str(exc), 200)})") from None


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def describe_param(param: Any, limit: int = 200) -> str:
    """A short printable form of a parameter for logs: never raises, bounded in time whatever the parameter."""
    return safe_text(param, limit) if isinstance(param, str) else excerpt(param, limit)
