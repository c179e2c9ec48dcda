"""The contract every queue engine keeps with the worker loop.

All methods are called from the worker's main thread only, so an engine may
use a client library that is not thread-safe.
"""

from __future__ import annotations

import abc
import json
from typing import Any, ClassVar, Optional

from ..config import EnvReader
from ..excerpt import excerpt, safe_text
from ..message import Message

DECODERS = ("identity", "json")
#: The largest attempt count taken from a broker (more is nonsense: set aside at once anyway).
COUNT_MAX = 1_000_000


class UndecodableParam(Exception):
    """A message body that the configured decoder cannot turn into a parameter."""


class Engine(abc.ABC):
    """A source of messages that can be acked, nacked or set aside."""

    #: The MINION_ENGINE value.
    name: ClassVar[str]
    #: How often (seconds) the worker calls `extend` for messages in flight;
    #: None when the engine needs no lease renewal.
    lease_interval: Optional[float] = None
    #: True when the engine may be called from any thread (the worker's lock
    #: lets one in at a time) and `next(0)` never blocks: the slot thread that
    #: finished a run then settles it and takes the next message itself, two
    #: thread switches fewer per run. False: only the worker's loop calls it.
    any_thread: bool = False

    @classmethod
    @abc.abstractmethod
    def from_env(cls, env: EnvReader) -> Engine:
        """Build the engine from its variables; validate them, do no I/O."""

    def open(self) -> None:  # noqa: B027 - optional hook
        """Connect; raise QueueUnreachable when the queue cannot be reached."""

    @abc.abstractmethod
    def next(self, timeout: float) -> Optional[Message]:
        """The next message, or None when none came within `timeout` seconds."""

    def drained(self) -> bool:
        """True when no message will ever come again (nothing queued nor in flight)."""
        return False

    @abc.abstractmethod
    def ack(self, message: Message) -> None:
        """The run succeeded: remove the message for good."""

    @abc.abstractmethod
    def nack(self, message: Message) -> None:
        """Give the message back so that it is delivered again (to any minion)."""

    def release(self, message: Message) -> None:
        """Give the message back without counting an attempt (a stop, a dry run).

        Engines whose broker counts every delivery cannot tell the difference
        and nack.
        """
        self.nack(message)

    @abc.abstractmethod
    def fail(self, message: Message, reason: str) -> None:
        """Set the message aside as failed (dead letter), never to be retried."""

    def extend(self, messages: list[Message]) -> None:  # noqa: B027 - optional hook
        """Keep the lease of messages still running fresh (see `lease_interval`)."""

    def push(self, params: list[Any]) -> str:
        """Queue `params` for `minion-push`; returns where they went, for its message.

        Called on a fresh engine instead of `open` (and followed by `close`):
        it connects by itself, and creates what a minion will consume from
        (a subscription, a consumer group) so that nothing pushed is lost.
        """
        raise NotImplementedError(f"the {self.name} engine cannot be filled by minion-push")

    def remaining(self) -> Optional[int]:
        """How many parameters are still to do, when the engine can know it."""
        return None

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections and files."""

    def describe(self) -> str:
        """Where the parameters come from, for logs (credentials masked)."""
        return self.name


def decode(body: Any, decoder: str) -> Any:
    """Turn a message body into a parameter with the `identity` or `json` decoder.

    Raises UndecodableParam, with a one-line reason, for any body it cannot
    decode: not UTF-8, not JSON, but also JSON that json.loads parses only
    to fail (nested 100,000 deep: RecursionError; an integer of 4,300
    digits or more: ValueError).
    """
    if isinstance(body, (bytes, bytearray, memoryview)):
        try:
            body = bytes(body).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise UndecodableParam(f"not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    if decoder == "json" and isinstance(body, str):
        try:
            return json.loads(body)
        except json.JSONDecodeError as exc:
            raise UndecodableParam(f"not valid JSON ({exc.msg} at column {exc.colno})") from None
        except RecursionError:
            raise UndecodableParam("JSON nested too deeply") from None
        except ValueError as exc:  # what the JSON parser accepts but Python refuses (the integer limit)
            raise UndecodableParam(f"not usable JSON ({safe_text(str(exc).split(';')[0], 200)})") from None
    return body


def decode_into(message: Message, body: Any, decoder: str) -> Message:
    """Set `message.param` from `body`; an undecodable body keeps its text and
    a reject reason, so that the worker sets it aside with why (never runs it).

    Whatever a body holds, this never raises: one message's content must
    never take a minion down, nor the fleet that would read it after it.
    """
    try:
        message.param = decode(body, decoder)
    except UndecodableParam as exc:
        message.param, message.reject_reason = raw_text(body), str(exc)
    except Exception as exc:  # MemoryError, a decoder's bug: still this message's, not the minion's
        reason = f"cannot decode the message ({type(exc).__name__}: {exc})"
        message.param, message.reject_reason = raw_text(body), safe_text(reason, 300)
    return message


def raw_text(body: Any) -> str:
    """A body as text for logs and reports, whatever its bytes (never raises)."""
    if isinstance(body, (bytes, bytearray, memoryview)):
        return bytes(body).decode("utf-8", "backslashreplace")
    if isinstance(body, str):
        return safe_text(body, len(body))
    return excerpt(body, 1000)


def parse_count(value: Any, default: int = 0) -> int:
    """A count read from a broker's header or attribute (a number, its text or bytes), or `default`.

    A producer may put anything in a header: a float, "inf", 5,000 digits, a
    negative number, a list. None of it may raise, nor yield a count that
    broker clients refuse to write back (AMQP headers hold 64-bit integers).
    """
    if isinstance(value, (bytes, bytearray)):
        value = bytes(value).decode("ascii", "replace") if len(value) <= 20 else ""
    if isinstance(value, str):
        value = value.strip()
        if not (value.isascii() and value.isdigit() and len(value) <= 18):
            return default
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= COUNT_MAX:
        return default
    return value
