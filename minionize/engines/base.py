"""The contract every queue engine keeps with the worker loop.

All methods are called from the worker's main thread only, so an engine may
use a client library that is not thread-safe.
"""

from __future__ import annotations

import abc
import dataclasses
import json
import re
from typing import Any, ClassVar, Optional

from ..config import EnvReader
from ..excerpt import excerpt, safe_text
from ..message import Message
from .kit import Setting

DECODERS = ("identity", "json")
#: The largest attempt count taken from a broker (more is nonsense: set aside at once anyway).
COUNT_MAX = 1_000_000


class UndecodableParam(Exception):
    """A message body that the configured decoder cannot turn into a parameter."""


@dataclasses.dataclass(frozen=True)
class DeadLetter:
    """A parameter set aside for good: its body as text, and why (empty when the engine keeps no reason)."""

    param: str
    reason: str


class Pushed(str):
    """What `push` returns when some parameters were already queued: where
    they went (the text), and how many of them were new."""

    new: int


class Engine(abc.ABC):
    """A source of messages that can be acked, nacked or set aside."""

    #: The MINION_ENGINE value.
    name: ClassVar[str]
    #: How the README titles its variables ("Redis Streams (pip install 'minionize[redis]')").
    title: ClassVar[str] = ""
    #: Every variable the engine reads, declared once (see minionize.engines.kit).
    settings: ClassVar[tuple[Setting, ...]] = ()
    #: The client's exceptions that mean "the connection is lost": kit.ConnectionGuard
    #: turns them into the ConnectionError the worker retries after a backoff.
    connection_errors: ClassVar[tuple[type[BaseException], ...]] = ()
    #: How often (seconds) the worker calls `extend` for messages in flight;
    #: None when the engine needs no lease renewal.
    lease_interval: Optional[float] = None
    #: The minion's slots (MINION_CONCURRENCY), set by the worker before `open`: an engine whose
    #: broker pushes messages may let it push one per slot (see the amqp engine).
    slots: int = 1
    #: True when the engine may be called from any thread (the worker's lock
    #: lets one in at a time) and `next(0)` never blocks: the slot thread that
    #: finished a run then settles it and takes the next message itself, two
    #: thread switches fewer per run. False: only the worker's loop calls it.
    any_thread: bool = False
    #: True when the input ends by itself (a sweep, a file, a list): the
    #: minion ends once `drained()`, always. False for a broker, where more
    #: may come at any time: its minion waits for work until it is stopped,
    #: unless MINION_BATCH asks it to end once the queue is drained.
    input_ends: ClassVar[bool] = False
    #: True when `drained()` can answer True. False where the broker cannot
    #: tell (Pub/Sub, Pulsar): MINION_BATCH then ends the minion after an
    #: idle time instead (MINION_IDLE_TIMEOUT, default BATCH_IDLE_TIMEOUT).
    tells_drained: ClassVar[bool] = False
    # What the engine promises, declared here once: the README's engine table,
    # the contract suites and the fault suite read it.
    #: A crashed minion's message comes back to another minion (a lease, the broker's redelivery).
    redelivers: ClassVar[bool] = True
    #: A message given back by a stop costs no attempt (`release` is not `nack`).
    free_release: ClassVar[bool] = True
    #: The dead-letter place keeps why each parameter was set aside.
    keeps_reason: ClassVar[bool] = True
    #: The broker takes back a message held past a deadline unless it is renewed (`extend`).
    has_deadline: ClassVar[bool] = False
    #: Seconds for which the client may hold an ack before sending it: a killed
    #: minion loses those acks, and their parameters run again.
    ack_delay: ClassVar[float] = 0.0
    #: Calls that the client may answer without its broker (it queues what they
    #: send): their success does not show that a lost broker is back.
    offline_calls: ClassVar[frozenset[str]] = frozenset()

    @classmethod
    @abc.abstractmethod
    def from_env(cls, env: EnvReader) -> Engine:
        """Build the engine from its variables; validate them, do no I/O."""

    def open(self) -> None:  # noqa: B027 - optional hook
        """Connect; raise QueueUnreachable when the queue cannot be reached."""

    @abc.abstractmethod
    def next(self, timeout: float) -> Optional[Message]:
        """The next message, or None when none came within `timeout` seconds."""

    def next_many(self, limit: int, timeout: float) -> list[Message]:
        """Up to `limit` messages, one for each free slot, waiting `timeout` seconds for the first.

        An engine that can take several in one round trip (one lock) says so
        by overriding this; it never returns more than `limit`, so that no
        message waits in a minion for a slot.
        """
        message = self.next(timeout)
        return [] if message is None else [message]

    def drained(self) -> bool:
        """True when nothing is queued nor in flight anywhere (see `input_ends`, `tells_drained`)."""
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
        """Queue `params` for `minion-push`; returns where they went, for its message
        (a Pushed when some of them were there already).

        Called on a fresh engine instead of `open` (and followed by `close`):
        it connects by itself, and creates what a minion will consume from
        (a subscription, a consumer group) so that nothing pushed is lost.
        """
        raise NotImplementedError(f"the {self.name} engine cannot be filled by minion-push")

    def dead_letters(self) -> list[DeadLetter]:
        """The parameters set aside, oldest first (`minion-status --failed`); connects by itself, as `push`."""
        raise NotImplementedError(f"the {self.name} engine cannot list its failed parameters")

    def retry_failed(self) -> int:
        """Queue the set-aside parameters again and take them out of the dead-letter place
        (`minion-push --retry-failed`); how many. A crash midway may queue one twice, never lose it."""
        raise NotImplementedError(f"the {self.name} engine cannot queue its failed parameters again")

    def remaining(self) -> Optional[int]:
        """How many parameters are still to do, when the engine can know it."""
        return None

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections and files."""

    def describe(self) -> str:
        """Where the parameters come from, for logs (credentials masked)."""
        return self.name


def encode(param: Any, decoder: str = "identity") -> tuple[str, str]:
    """The body that `decode` with `decoder` turns back into `param`, and its content type.

    The one wire format of `minion-push`: a string is its own text for an
    identity minion; anything else (and every parameter for a json minion)
    is JSON, which both decoders read back as what was pushed. Raises
    ValueError for what JSON cannot hold (NaN, infinities).
    """
    if isinstance(param, str) and decoder != "json":
        return param, "text/plain"
    try:
        return json.dumps(param, ensure_ascii=False, allow_nan=False), "application/json"
    except ValueError:
        raise ValueError("NaN and infinities are not JSON: give them as strings") from None


def decode(body: Any, decoder: str) -> Any:
    """Turn a message body into a parameter with the `identity` or `json` decoder.

    identity keeps text as text, except a body that is a whole JSON object
    or array (what `encode` makes of a dict or a list): that dict or list.
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
    if not isinstance(body, str):
        return body
    if decoder == "json":
        return _json_body(body)
    return _structured(body)


def _json_body(body: str) -> Any:
    try:
        return json.loads(body)
    except json.JSONDecodeError as exc:
        reason = f"not valid JSON ({exc.msg} at column {exc.colno})"
        raise UndecodableParam(f"{reason}: {_disagreement(body)}") from None
    except RecursionError:
        raise UndecodableParam("JSON nested too deeply") from None
    except ValueError as exc:  # what the JSON parser accepts but Python refuses (the integer limit)
        raise UndecodableParam(f"not usable JSON ({safe_text(str(exc).split(';')[0], 200)})") from None


#: What Python's repr of a dict, a list or a constant starts with, and JSON never does.
_PYTHON_REPR = re.compile(r"\s*(?:[\[{(]\s*'|True\b|False\b|None\b)")


def _disagreement(body: str) -> str:
    """Why a body is not JSON, said as a mismatch between the producer and this minion's decoder."""
    what = "Python's repr (what earlier minion-push versions wrote)" if _PYTHON_REPR.match(body) else "plain text"
    return f"the minion's decoder is json but the body looks like {what}: push JSON, or set the decoder to identity"


def _structured(text: str) -> Any:
    """The identity decoder: the text, or the dict or list when the text is a JSON object or array."""
    stripped = text.strip()
    if not (stripped[:1] == "{" and stripped[-1:] == "}" or stripped[:1] == "[" and stripped[-1:] == "]"):
        return text
    try:
        value = json.loads(stripped)
    except (ValueError, RecursionError):  # text that only looks like JSON stays text
        return text
    return value if isinstance(value, (dict, list)) else text


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
