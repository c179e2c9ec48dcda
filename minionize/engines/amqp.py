"""RabbitMQ (AMQP 0-9-1, with pika): a durable queue shared by any number of minions.

What it is
    A quorum queue by default (RabbitMQ >= 3.8; tested on 3.10). A minion
    takes one message per free slot (`basic.get`, manual acks): it never
    holds a message it is not running. A minion of several slots
    (MINION_CONCURRENCY > 1) consumes with a prefetch of its slots: no more
    messages unacknowledged than slots, so one waiting in it has a free slot,
    and no round trip per message. With AMQP_PREFETCH it consumes
    instead (`basic.consume`): faster on short runs, at the price of
    messages waiting in the minion (see Caveats). `minion-push` publishes persistent
    messages with publisher confirms, a window of them at a time (see
    `amqppush`). Both declare the queues, so either
    may come first; a queue that exists with other arguments is a
    configuration error (exit 2).

Environment
    AMQP_URL (URL, default amqp://guest:guest@localhost:5672/%2F): the
        broker; amqps:// for TLS, pika's options in the query string. The
        password is masked in logs and messages.
    AMQP_QUEUE (name, mandatory): the queue of parameters.
    AMQP_DECODER (identity | json, default identity): the body as text (a
        whole JSON object or array becomes that dict or list, as minion-push
        writes them), or parsed as JSON (and `minion-push` then publishes JSON).
    AMQP_DEAD_LETTER_QUEUE (name, default `<queue>.dead`): failed parameters.
    AMQP_QUEUE_TYPE (quorum | classic, default quorum): classic for RabbitMQ
        < 3.8, or for an existing classic queue declared without arguments.
    AMQP_HEARTBEAT (whole seconds, default 60; 0 disables): the heartbeat
        timeout (it overrides `?heartbeat=` in the URL).
    AMQP_PREFETCH (whole number, default 0): 0 takes a message only for a
        free slot (one round trip each with one slot, a prefetch of
        MINION_CONCURRENCY with several); N > 0 lets RabbitMQ push up to N
        unacknowledged messages, the running ones included (so N >
        MINION_CONCURRENCY, e.g. twice it, to save the round trip).
    AMQP_OPERATION_TIMEOUT (seconds > 0, default 5): how long connecting
        (TCP and the AMQP handshake) and each call may wait for RabbitMQ;
        then the connection is dropped: exit code 3 at start-up, a retry
        later while running. It overrides `?socket_timeout=` and
        `?stack_timeout=` in the URL.

Ack and nack
    Ack is basic.ack. Nack is basic.reject with requeue: the message is
    ready again at once, for any minion, and the quorum queue counts the
    delivery: attempt = x-delivery-count + 1 (a reject, because from
    RabbitMQ 4.3 on a basic.nack no longer counts). A classic queue counts
    nothing: there a nack publishes a copy carrying `x-minion-prior-attempts`
    and acks the original. A release (a stop, a dry run) does so on both,
    so that it costs no attempt. Fail publishes a copy to the dead-letter
    queue with the headers `minion_reason`, `minion_attempts` and
    `minion_source` (the queue), and acks the original. Copies wait for the broker's
    confirm: a refused one leaves the original in the queue. A quorum queue
    also dead-letters there what the broker drops by itself (from RabbitMQ
    4.0 on, after 20 deliveries), with an `x-death` header.

A crashed minion
    Its connection closes (or misses its heartbeats) and RabbitMQ puts its
    unacked messages back at once, counted as an attempt (a classic queue
    only marks them redelivered: one attempt more). A lost connection is
    reopened by the next call; a message taken on it cannot be settled any
    more (a warning says so) and runs again: at least once.
    drained: RabbitMQ tells how many messages are ready, not how many other
    minions hold. So a minion that holds messages keeps a consumer on the
    empty queue `<queue>.in-flight`, registered before it takes one, and
    drained() is True once the queue has no ready message and
    `<queue>.in-flight` no consumer, seen twice a second apart with nothing
    else seen in between (a dead minion's consumer may go a moment before
    its messages are back). No minion in batch mode (MINION_BATCH) exits
    while another holds a message.

Caveats
    RabbitMQ closes a channel that keeps a message unacked for longer than
    `consumer_timeout` (30 minutes by default): the message runs again
    elsewhere while the first run goes on. Raise it in rabbitmq.conf
    (`consumer_timeout = 86400000`, in ms) or, from 3.11.15 on, per queue (the
    `consumer-timeout` policy key). pika answers heartbeats only when
    called: the worker calls `extend` every few seconds during runs, but
    not during a warm stop, so keep MINION_GRACE_PERIOD below
    AMQP_HEARTBEAT. From RabbitMQ 4.0 on, keep MINION_MAX_ATTEMPTS below a
    quorum queue's delivery limit (20 unless a policy raises it). An idle
    minion polls, at most once a second. With AMQP_PREFETCH, up to N -
    MINION_CONCURRENCY messages wait in a minion while its slots are busy
    (behind a long run, while other minions may be idle); those it has not
    started when it stops are given back as a release (no attempt counted),
    and those of a crashed minion come back with one. A copy goes to the back of the
    queue; if the connection is lost between its publish and the ack of
    the original, the parameter is there twice.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import time
import uuid
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any, Callable, Optional
from urllib.parse import urlsplit

import pika
import pika.exceptions
from pika.adapters.utils.connection_workflow import AMQPConnectorException

from ..config import EnvReader
from ..errors import ConfigError, QueueUnreachable
from ..message import Message
from ..secrets import mask_url, scrub
from .amqppush import ConfirmWindow, PushFailed
from .base import DECODERS, DeadLetter, Engine, decode_into, encode, parse_count, raw_text
from .kit import DEAD_REASON, ConnectionGuard, Setting, dead_letter_metadata, read_settings

log = logging.getLogger("minionize")

DEFAULT_URL = "amqp://guest:guest@localhost:5672/%2F"
QUEUE_TYPES = ("quorum", "classic")
PRIOR = "x-minion-prior-attempts"
#: Headers that the broker sets on delivery: never copied into a new message.
#: Headers a copy must not carry: the broker's counts, and the producer's sender-selected routing
#: (CC, BCC: RabbitMQ would route the copy to those queues too, the work queue itself included).
_BROKER_HEADERS = ("x-delivery-count", "x-acquired-count", "CC", "BCC")
_POLL_MIN, _POLL_MAX = 0.05, 1.0
_DRAIN_SETTLE = 1.0
#: AMQPConnectorException: a handshake that timed out (a port that accepts and never answers).
_NETWORK_ERRORS = (pika.exceptions.AMQPError, OSError, AMQPConnectorException)


def _reason(properties: Any) -> str:
    """Why a message is in the dead-letter queue: minionize's header, or the broker's x-death."""
    headers = properties.headers or {}
    reason = headers.get(DEAD_REASON, headers.get("x-minion-reason"))  # minionize 1.0's name
    deaths = headers.get("x-death")
    if reason is None and isinstance(deaths, list) and deaths and isinstance(deaths[0], dict):
        why = deaths[0].get("reason", "")
        reason = f"dropped by RabbitMQ ({raw_text(why) if isinstance(why, (bytes, str)) else ''})"
    return raw_text(reason) if isinstance(reason, (bytes, str)) else ""


def _why(exc: BaseException) -> str:
    if isinstance(exc, AMQPConnectorException):  # "Timeout during AMQP handshake", then a repr of the address
        return str(exc).partition("'")[0].strip() or type(exc).__name__
    return str(exc) or repr(exc)


def _declare_error(queue: str, arguments: dict[str, Any], exc: Any, queue_type: str) -> str:
    """What to say when RabbitMQ refused to declare `queue`."""
    text = str(exc.reply_text).partition(" - ")[2] or str(exc.reply_text)
    if exc.reply_code != 406:
        return f"RabbitMQ refused to declare the queue {queue} ({text})"
    hint = ", or set AMQP_QUEUE_TYPE=classic for a classic queue without arguments" if queue_type == "quorum" else ""
    return f"the queue {queue} exists with other arguments ({text}); minionize declares {arguments}: delete it{hint}"


@dataclass(frozen=True)
class _Delivery:
    """What settling a message needs: its channel's generation, its tag, its content."""

    generation: int
    tag: int
    properties: pika.BasicProperties
    body: bytes


class AmqpEngine(Engine):
    name = "amqp"
    connection_errors = _NETWORK_ERRORS
    title = "RabbitMQ (pip install 'minionize[amqp]')"
    settings = (
        Setting("AMQP_URL", "url", "amqp:// or amqps:// (TLS); its password is masked", default=DEFAULT_URL,
                secret=True),
        Setting("AMQP_QUEUE", "text", "the queue of parameters", required=True),
        Setting("AMQP_DECODER", "choice", "json: the body is a JSON document", default="identity", choices=DECODERS),
        Setting("AMQP_QUEUE_TYPE", "choice", "classic: for RabbitMQ before 3.8", default="quorum",
                choices=QUEUE_TYPES),
        Setting("AMQP_DEAD_LETTER_QUEUE", "text", "default <queue>.dead"),
        Setting("AMQP_HEARTBEAT", "integer", "whole seconds; 0 disables the heartbeat", default=60, minimum=0),
        Setting("AMQP_PREFETCH", "integer", "N > 0: consume, RabbitMQ pushes up to N unacked messages", default=0,
                minimum=0),
        Setting("AMQP_OPERATION_TIMEOUT", "seconds", "seconds to connect (TCP and handshake), and for any call",
                default=5.0, above=0),
    )
    tells_drained = True  # nothing ready, no minion holding a message (drained())

    def __init__(
        self,
        queue: str,
        url: str = DEFAULT_URL,
        decoder: str = "identity",
        dead_letter_queue: Optional[str] = None,
        queue_type: str = "quorum",
        heartbeat: int = 60,
        prefetch: int = 0,
        operation_timeout: float = 5.0,
    ) -> None:
        self.queue, self.url, self.masked_url, self.decoder = queue, url, mask_url(url), decoder
        self.dead_letter_queue = dead_letter_queue or f"{queue}.dead"
        self.busy_queue = f"{queue}.in-flight"
        self.queue_type = queue_type
        self.prefetch = prefetch
        self.parameters = pika.URLParameters(url)
        self.parameters.heartbeat = heartbeat
        self.operation_timeout = operation_timeout
        self.parameters.socket_timeout = self.parameters.stack_timeout = operation_timeout
        # pika answers heartbeats only while its I/O loop runs: the worker calls
        # `extend` this often during runs, well within the heartbeat timeout.
        self.lease_interval = min(5.0, heartbeat / 4) if heartbeat else None
        pika_log = logging.getLogger("pika")
        if pika_log.level == logging.NOTSET and not log.isEnabledFor(logging.DEBUG):
            # pika logs each lost connection as errors with tracebacks; the
            # engine says it in one line, with the password masked.
            pika_log.setLevel(logging.CRITICAL)
        self._connection: Optional[pika.BlockingConnection] = None
        self._channel: Any = None  # pika's BlockingChannel
        self._generation = 0  # of the connection, to recognize messages of a lost one
        self._held: set[int] = set()
        self._busy_tag: Optional[str] = None
        self._consumer_tag: Optional[str] = None  # with AMQP_PREFETCH
        self._pushed: deque[tuple[Any, pika.BasicProperties, bytes]] = deque()
        self._poll_delay, self._next_get = _POLL_MIN, 0.0
        self._empty_since: Optional[float] = None
        # A lost connection: drop it and what it held; the next call connects again.
        self._lost = ConnectionGuard(
            f"RabbitMQ at {self.masked_url}", _NETWORK_ERRORS, operation_timeout, self._drop, _why
        )

    @classmethod
    def from_env(cls, env: EnvReader) -> AmqpEngine:
        values = read_settings(env, cls.settings)
        url, queue, dead = values["AMQP_URL"], values["AMQP_QUEUE"], values["AMQP_DEAD_LETTER_QUEUE"]
        if dead == queue:
            raise ConfigError("AMQP_DEAD_LETTER_QUEUE", dead, "expected a queue other than AMQP_QUEUE")
        if urlsplit(url).scheme not in ("amqp", "amqps"):
            raise ConfigError("AMQP_URL", mask_url(url), "expected an amqp:// or amqps:// URL")
        try:
            return cls(
                queue, url, values["AMQP_DECODER"], dead, values["AMQP_QUEUE_TYPE"], values["AMQP_HEARTBEAT"],
                values["AMQP_PREFETCH"], values["AMQP_OPERATION_TIMEOUT"],
            )
        except (ValueError, TypeError) as exc:  # pika checks ssl_options with the ssl module
            raise ConfigError("AMQP_URL", mask_url(url), f"not a valid AMQP URL ({scrub(str(exc), url)})") from None

    def describe(self) -> str:
        return f"amqp queue {self.queue} at {self.masked_url}"

    # -- the connection ------------------------------------------------------

    def _connect(self) -> None:
        """Connect, declare the queues, enable publisher confirms."""
        try:
            connection = pika.BlockingConnection(self.parameters)
        except pika.exceptions.ProbableAuthenticationError:
            raise ConfigError("AMQP_URL", self.masked_url, "RabbitMQ refused this user name and password") from None
        except pika.exceptions.ProbableAccessDeniedError as exc:
            raise ConfigError("AMQP_URL", self.masked_url, f"RabbitMQ refused access ({exc})") from None
        try:
            with self._bounded(connection):
                channel = connection.channel()
                channel.confirm_delivery()
                self._declare(channel)
                if self._pushes:
                    channel.basic_qos(prefetch_count=self.prefetch or self.slots)
        except BaseException:
            with suppress(*_NETWORK_ERRORS), self._bounded(connection):
                connection.close()
            raise
        self._connection, self._channel = connection, channel
        self._generation += 1

    def _declare(self, channel: Any) -> None:
        """Declare the queues; one declared with other arguments is a ConfigError."""
        kind = {"x-queue-type": self.queue_type}
        main = dict(kind)
        if self.queue_type == "quorum":
            # What a quorum queue drops by itself (RabbitMQ 4's delivery limit) is kept.
            main.update({"x-dead-letter-exchange": "", "x-dead-letter-routing-key": self.dead_letter_queue})
        queues = [
            ("AMQP_QUEUE", self.queue, main),
            ("AMQP_DEAD_LETTER_QUEUE", self.dead_letter_queue, kind),
            ("AMQP_QUEUE", self.busy_queue, {"x-queue-type": "classic"}),
        ]
        for variable, name, arguments in queues:
            try:
                channel.queue_declare(name, durable=True, arguments=arguments)
            except pika.exceptions.ChannelClosedByBroker as exc:
                if exc.reply_code not in (403, 405, 406):
                    raise
                value = self.queue if variable == "AMQP_QUEUE" else name
                raise ConfigError(variable, value, _declare_error(name, arguments, exc, self.queue_type)) from None

    def _ensure(self) -> None:
        """Reconnect when the connection was lost; raise ConnectionError while it cannot."""
        if self._channel is not None and self._channel.is_open:
            return
        self._drop()
        # A broker that left the last call unanswered gets one attempt per
        # AMQP_OPERATION_TIMEOUT, not one per call: a stop must not wait for each.
        with self._guard(doing="connect"):
            self._connect()
        if self._generation > 1:
            log.warning("reconnected to RabbitMQ at %s", self.masked_url)

    @contextmanager
    def _bounded(self, connection: Optional[pika.BlockingConnection], wait: float = 0.0) -> Iterator[None]:
        """Abort `connection` when what runs inside waits on it past `wait` + AMQP_OPERATION_TIMEOUT.

        pika's blocking calls have no timeout of their own: on a broker that
        stops answering (paused, behind a partition) they would wait for the
        heartbeat timeout, a minute or more, and so would a stop.
        """
        if connection is None or not connection.is_open:
            yield
            return
        impl, limit = connection._impl, wait + self.operation_timeout  # noqa: SLF001

        def abort() -> None:  # as pika's own heartbeat checker ends a silent connection
            self._lost.silence()
            impl._terminate_stream(pika.exceptions.StreamLostError(f"no answer within {limit:g}s"))  # noqa: SLF001

        timer = impl.ioloop.call_later(limit, abort)
        try:
            yield
        finally:
            impl.ioloop.remove_timeout(timer)

    @contextmanager
    def _guard(self, wait: float = 0.0, doing: str = "call") -> Iterator[None]:
        """Turn pika's errors into a ConnectionError (kit.ConnectionGuard): the worker backs off,
        the next call reconnects. Bounded: pika's blocking calls have no timeout of their own.

        `wait`: how long the calls inside may rightly wait (a sleep), on top of AMQP_OPERATION_TIMEOUT.
        """
        with self._lost(doing, wait), self._bounded(self._connection, wait):
            yield

    def _drop(self) -> None:
        connection, self._connection, self._channel = self._connection, None, None
        self._busy_tag = self._consumer_tag = None
        self._held.clear()
        self._pushed.clear()  # RabbitMQ gives them back with the connection
        if connection is not None and connection.is_open:
            with suppress(*_NETWORK_ERRORS), self._bounded(connection):
                connection.close()

    def _set_busy(self, busy: bool) -> None:
        """Be (or stop being) a consumer of `<queue>.in-flight`: see drained()."""
        if busy and self._busy_tag is None:
            # Nothing is published there: the callback never runs.
            self._busy_tag = self._channel.basic_consume(self.busy_queue, lambda *_: None, auto_ack=True)
        elif not busy and self._busy_tag is not None:
            self._channel.basic_cancel(self._busy_tag)
            self._busy_tag = None

    # -- taking --------------------------------------------------------------

    def open(self) -> None:
        try:
            self._connect()
        except _NETWORK_ERRORS as exc:
            raise QueueUnreachable(f"cannot reach RabbitMQ at {self.masked_url}: {_why(exc)}") from None

    def next(self, timeout: float) -> Optional[Message]:
        deadline = time.monotonic() + timeout
        self._ensure()
        if self._pushes:
            return self._next_pushed(deadline)
        while True:
            if time.monotonic() >= self._next_get:
                message = self._get()
                if message is not None:
                    return message
            now = time.monotonic()
            if now >= deadline:
                return None
            with self._guard(wait=deadline - now):
                assert self._connection is not None
                self._connection.sleep(min(deadline, self._next_get) - now)  # services heartbeats

    @property
    def _pushes(self) -> bool:
        """Consume rather than get: with AMQP_PREFETCH, or one message pushed per slot of a minion of
        several (no more unacked than slots: what waits in the minion has a free slot)."""
        return bool(self.prefetch) or self.slots > 1

    def next_many(self, limit: int, timeout: float) -> list[Message]:
        """The next message, and what else RabbitMQ pushed already, up to `limit`."""
        first = self.next(timeout)
        if first is None:
            return []
        messages = [first]
        while self._pushed and len(messages) < limit:
            messages.append(self._hold(*self._pushed.popleft()))
        return messages

    def _get(self) -> Optional[Message]:
        with self._guard():
            # Registered before the get: a minion checking drained() in between
            # sees either the message in the queue or this consumer.
            self._set_busy(True)
            method, properties, body = self._channel.basic_get(self.queue, auto_ack=False)
            if method is None and not self._held:
                self._set_busy(False)
        if method is None:
            self._poll_delay = min(self._poll_delay * 2, _POLL_MAX)
            self._next_get = time.monotonic() + self._poll_delay
            return None
        self._poll_delay, self._next_get, self._empty_since = _POLL_MIN, 0.0, None
        return self._hold(method, properties, body)

    def _next_pushed(self, deadline: float) -> Optional[Message]:
        """With AMQP_PREFETCH: the oldest message RabbitMQ pushed, waiting for one until `deadline`."""
        with self._guard(wait=max(0.0, deadline - time.monotonic())):
            assert self._connection is not None
            if self._consumer_tag is None:
                self._set_busy(True)  # before anything is pushed, as before a get (see drained)
                self._consumer_tag = self._channel.basic_consume(self.queue, self._on_push)
            self._connection.process_data_events(0)
            while not self._pushed and time.monotonic() < deadline:
                self._connection.process_data_events(time_limit=deadline - time.monotonic())
            if self._pushed:
                self._set_busy(True)  # drained() may have dropped it meanwhile
        if not self._pushed:
            return None
        self._empty_since = None
        return self._hold(*self._pushed.popleft())

    def _on_push(self, channel: Any, method: Any, properties: pika.BasicProperties, body: bytes) -> None:
        self._pushed.append((method, properties, body))

    def _give_back_pushed(self) -> None:
        """Stop consuming, and give back what was pushed but never taken, without counting an attempt."""
        if self._consumer_tag is not None:
            self._channel.basic_cancel(self._consumer_tag)
            self._consumer_tag = None
            assert self._connection is not None
            self._connection.process_data_events(0)
        while self._pushed:
            self.release(self._hold(*self._pushed.popleft()))

    def _hold(self, method: Any, properties: pika.BasicProperties, body: bytes) -> Message:
        """A delivery as a Message, held (unacked) until it is settled."""
        self._held.add(method.delivery_tag)
        return self._message(method, properties, body)

    def _message(self, method: Any, properties: pika.BasicProperties, body: bytes) -> Message:
        # Headers are the producer's: parse_count takes whatever they hold without raising.
        headers = properties.headers if isinstance(properties.headers, dict) else {}
        returns = parse_count(headers.get("x-delivery-count"), default=int(bool(method.redelivered)))
        attempt = parse_count(headers.get(PRIOR)) + 1 + returns
        delivery = _Delivery(self._generation, method.delivery_tag, properties, body)
        key = properties.message_id or f"{self.queue}:{hashlib.sha1(body).hexdigest()[:12]}"
        return decode_into(Message(str(key), None, attempt, delivery), body, self.decoder)

    def drained(self) -> bool:
        if self._held or self._pushed:
            self._empty_since = None
            return False
        self._ensure()
        with self._guard():
            self._set_busy(False)
            ready = self._channel.queue_declare(self.queue, passive=True).method.message_count
            busy = self._channel.queue_declare(self.busy_queue, passive=True).method.consumer_count
        now = time.monotonic()
        if ready or busy:
            self._empty_since = None
            return False
        if self._empty_since is None:
            self._empty_since = now
        return now - self._empty_since >= _DRAIN_SETTLE

    def remaining(self) -> Optional[int]:
        self._ensure()
        with self._guard():
            count: int = self._channel.queue_declare(self.queue, passive=True).method.message_count
        return count

    def extend(self, messages: list[Message]) -> None:
        if self._connection is None:
            return  # lost: the next call reconnects
        with self._guard():
            self._connection.process_data_events(0)

    # -- settling ------------------------------------------------------------

    def ack(self, message: Message) -> None:
        self._settle(message, "ack", lambda delivery: self._channel.basic_ack(delivery.tag))

    def nack(self, message: Message) -> None:
        if self.queue_type == "classic":
            self._forward(message, self.queue, {PRIOR: message.attempt})
        else:
            self._settle(message, "nack", lambda delivery: self._channel.basic_reject(delivery.tag, requeue=True))

    def release(self, message: Message) -> None:
        self._forward(message, self.queue, {PRIOR: message.attempt - 1})

    def fail(self, message: Message, reason: str) -> None:
        self._forward(message, self.dead_letter_queue, dead_letter_metadata(reason, message.attempt, self.queue))

    def _settle(self, message: Message, action: str, settle: Callable[[_Delivery], None]) -> None:
        """Settle `message` if it came on the current channel; a lost one gives it back by itself."""
        delivery: _Delivery = message.handle
        if self._channel is None or not self._channel.is_open or delivery.generation != self._generation:
            log.warning("%s: cannot %s it: its connection was lost, RabbitMQ gives it back", message.id, action)
            return
        with self._guard():
            settle(delivery)
        self._held.discard(delivery.tag)

    def _forward(self, message: Message, queue: str, extra: dict[str, Any]) -> None:
        """Publish a copy with the `extra` headers to `queue`, then ack the original.

        If the broker refuses the copy, the original is rejected back instead.
        """

        def copy_then_ack(delivery: _Delivery) -> None:
            properties = copy.copy(delivery.properties)
            headers = {k: v for k, v in (properties.headers or {}).items() if k not in _BROKER_HEADERS}
            if queue == self.dead_letter_queue:
                headers.pop(PRIOR, None)  # fed back, a dead letter starts afresh
                properties.expiration = None
            properties.headers, properties.delivery_mode, properties.user_id = {**headers, **extra}, 2, None
            if self._publish(queue, delivery.body, properties):
                self._channel.basic_ack(delivery.tag)
            else:
                log.error("%s: RabbitMQ refused its copy for %s: given back to %s", message.id, queue, self.queue)
                self._channel.basic_reject(delivery.tag, requeue=True)

        self._settle(message, f"move it to {queue}", copy_then_ack)

    def _publish(self, queue: str, body: bytes, properties: pika.BasicProperties) -> bool:
        """Publish and wait for the broker's confirm; False when it refused the message."""
        try:
            self._channel.basic_publish("", queue, body, properties, mandatory=True)
        except pika.exceptions.UnroutableError:
            self._declare(self._channel)  # someone deleted the queue: once more
            try:
                self._channel.basic_publish("", queue, body, properties, mandatory=True)
            except (pika.exceptions.UnroutableError, pika.exceptions.NackError):
                return False
        except pika.exceptions.NackError:
            return False
        return True

    # -- filling -------------------------------------------------------------

    def push(self, params: list[Any]) -> str:
        """Publish with a window of confirms (amqppush): success only once RabbitMQ confirmed every one."""
        self.open()
        assert self._connection is not None
        connection, window = self._connection, None
        try:
            window = ConfirmWindow(connection, self.queue, self.operation_timeout, lambda: self._bounded(connection))
            for param in params:  # any iterable: minion-push streams them
                text, content_type = encode(param, self.decoder)
                window.publish(text.encode("utf-8"), content_type)
            window.finish()
        except (PushFailed, *_NETWORK_ERRORS) as exc:
            why = exc.why if isinstance(exc, PushFailed) else f"lost the connection ({_why(exc)})"
            report = window.report(why) if window is not None else why
            raise QueueUnreachable(f"RabbitMQ at {self.masked_url} did not take every parameter: {report}") from None
        return self.describe()

    # -- the dead-letter queue -------------------------------------------------

    def dead_letters(self) -> list[DeadLetter]:
        # Left unacked: closing the channel puts them back in the dead-letter queue.
        return [DeadLetter(raw_text(body), _reason(properties)) for _, properties, body in self._dead_messages()]

    def retry_failed(self) -> int:
        count = 0
        for method, properties, body in self._dead_messages():
            again = pika.BasicProperties(delivery_mode=2, content_type=properties.content_type,
                                         message_id=uuid.uuid4().hex)
            try:
                with self._bounded(self._connection):
                    if not self._publish(self.queue, body, again):
                        raise pika.exceptions.NackError([])
                    self._channel.basic_ack(method.delivery_tag)  # after the confirm: never lost
            except _NETWORK_ERRORS as exc:
                raise QueueUnreachable(f"RabbitMQ at {self.masked_url} did not take a failed parameter back "
                                       f"({count} queued again before it): {_why(exc)}") from None
            count += 1
        return count

    def _dead_messages(self) -> Iterator[tuple[Any, Any, bytes]]:
        """Every message of the dead-letter queue, got (unacked) one at a time."""
        self.open()
        while True:
            try:
                with self._bounded(self._connection):
                    method, properties, body = self._channel.basic_get(self.dead_letter_queue, auto_ack=False)
            except _NETWORK_ERRORS as exc:
                where = f"{self.dead_letter_queue} at {self.masked_url}"
                raise QueueUnreachable(f"cannot read {where}: {_why(exc)}") from None
            if method is None:
                return
            yield method, properties, body

    def close(self) -> None:
        with suppress(*_NETWORK_ERRORS), self._bounded(self._connection):
            if self._channel is not None and self._channel.is_open:
                self._give_back_pushed()
                self._set_busy(False)
        self._drop()
