"""An Apache Pulsar topic, consumed through a Shared subscription.

What it is
    Every minion subscribes to PULSAR_TOPIC under the same Shared
    subscription, so the broker splits the messages between them: no master.
    The subscription starts at the earliest message, and `minion-push`
    creates it before it publishes, so nothing pushed before the first
    minion starts is lost.

Environment
    PULSAR_CONNECTION (URL, default `pulsar://localhost:6650`): the service
        URL; `pulsar+ssl://` for TLS.
    PULSAR_TOPIC (topic name, mandatory): where the parameters are.
    PULSAR_SUBSCRIPTION (name, default `minionize`): shared by all minions.
    PULSAR_DECODER (identity | json, default identity): identity passes the
        message body as text (a whole JSON object or array becomes that dict
        or list, as minion-push writes them); json parses it as a JSON
        document.
    PULSAR_DEAD_LETTER_TOPIC (topic name, default
        `<PULSAR_TOPIC>-<PULSAR_SUBSCRIPTION>-DLQ`, Pulsar's own naming).
    PULSAR_NACK_DELAY (seconds, default 1): how long a failed message waits
        before it is delivered again.
    PULSAR_RECEIVER_QUEUE_SIZE (whole number >= 1, default 1): messages a
        minion may hold besides those it runs (see Caveats).
    PULSAR_OPERATION_TIMEOUT (seconds, default 5): how long connecting,
        subscribing and publishing may take before the minion gives up
        (exit code 3 at start-up). A minion that received nothing for a
        second asks the broker for the topic's metadata: a dead link shows
        within a second and a timeout (the client's own keep-alive takes 30
        to 60 s). A call left unanswered that long shuts the client down
        (its connection may be half-open) and the next call makes another,
        which connects and subscribes again once the broker answers.
    PULSAR_TOKEN (JWT, default none) or PULSAR_TOKEN_FILE (path, re-read at
        each connection, default none): token authentication. Never logged.
    PULSAR_TLS_TRUST_CERTS_FILE (path, default: the certifi bundle): the CA
        certificates that sign the broker's certificate.
    PULSAR_TLS_ALLOW_INSECURE (flag, default false): accept any broker
        certificate.
    PULSAR_TLS_VALIDATE_HOSTNAME (flag, default false, as in the Pulsar
        client): check the broker's host name against its certificate.
    PULSAR_TLS_CERT_FILE and PULSAR_TLS_KEY_FILE (paths, default none): a
        client certificate for mutual TLS; both or neither.

Ack and nack
    Ack acknowledges the message. Nack negatively acknowledges it: the
    broker delivers it again (to any minion) after PULSAR_NACK_DELAY, with
    its redelivery count increased; the attempt number is that count + 1.
    A release (a stopped minion) is a nack: Pulsar counts every redelivery.
    Fail publishes the message to the dead-letter topic, with its
    properties plus `minion_reason` (why it failed), `minion_attempts`,
    `minion_source` (the topic), `REAL_TOPIC` and `ORIGIN_MESSAGE_ID` (the
    names of Pulsar's own dead-letter policy), then acknowledges the original.
    The dead-letter topic has a subscription named PULSAR_SUBSCRIPTION,
    created before the first publication, so Pulsar keeps its messages
    (and a minion pointed at that topic can replay them).

A crashed minion
    When its connection closes, the broker delivers its unacknowledged
    messages to the other consumers of the subscription, redelivery count
    increased. There is no ack deadline (Pulsar's ack timeout stays off),
    so a run may last as long as it needs.

Caveats
    The client sends acks in groups every 100 ms and the Python API cannot
    turn that off: a minion killed within 100 ms of an ack has that
    parameter run again elsewhere (nothing is lost; docs/reliability.md).
    The minion is never drained: Pulsar cannot tell that a topic will stay
    empty, so in batch mode (MINION_BATCH) a minion ends after
    MINION_IDLE_TIMEOUT without a parameter (default 120 s). A receiver
    queue of 0 would forbid the receive timeout that the worker needs, so
    each minion holds up to PULSAR_RECEIVER_QUEUE_SIZE messages on top of
    those it runs; a message held by a minion that crashes comes back with
    one attempt counted.
    Redelivery counts live in the broker's memory: a broker restart resets
    them. The client reconnects by itself; its C++ core logs through a pipe
    to `minionize.pulsar` (a Python logger can abort the process at exit),
    at DEBUG whatever the level of its line: it says every failed attempt,
    about two lines every 11 s of a long outage, which the minion says once.
    A minion that shut down a silent client gives up the messages it held:
    the broker delivers them again once it ends that connection (its
    keep-alive, 30 to 60 s), each with one attempt more.
"""

from __future__ import annotations

import logging
import math
import os
import re
import threading
import time
from collections import deque
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import pulsar

from ..config import EnvReader
from ..errors import ConfigError, QueueUnreachable
from ..message import Message
from ..secrets import mask_url, scrub
from .base import DECODERS, DeadLetter, Engine, decode_into, encode, raw_text
from .kit import DEAD_REASON, ConnectionGuard, Setting, dead_letter_metadata, read_settings

log = logging.getLogger("minionize.pulsar")

_SCHEMES = ("pulsar://", "pulsar+ssl://", "http://", "https://")
_LOG_LINE = re.compile(r"^\S+ \S+ (?P<level>[A-Z]+)\s+\[\d+\] (?P<text>.*)$")
_LOG_PIPE: Optional[str] = None
_LOG_PIPE_LOCK = threading.Lock()


#: Every variable of the engine (see minionize.engines.kit).
SETTINGS = (
    Setting("PULSAR_CONNECTION", "url", "pulsar:// or pulsar+ssl:// (TLS)", default="pulsar://localhost:6650",
            secret=True),
    Setting("PULSAR_TOPIC", "text", "the topic that holds the parameters", required=True),
    Setting("PULSAR_SUBSCRIPTION", "text", "the Shared subscription the minions share", default="minionize"),
    Setting("PULSAR_DECODER", "choice", "json: the payload is a JSON document", default="identity",
            choices=DECODERS),
    Setting("PULSAR_DEAD_LETTER_TOPIC", "text", "default <topic>-<subscription>-DLQ"),
    Setting("PULSAR_NACK_DELAY", "seconds", "how long a given-back message waits before redelivery", default=1.0),
    Setting("PULSAR_RECEIVER_QUEUE_SIZE", "integer", "messages the client fetches ahead", default=1, minimum=1),
    Setting("PULSAR_OPERATION_TIMEOUT", "seconds", "seconds to connect, and for any operation (1 at least)",
            default=5.0),
    Setting("PULSAR_TOKEN", "text", "a JWT, or PULSAR_TOKEN_FILE: a file re-read at each connection", secret=True,
            chart="secret:token"),
    Setting("PULSAR_TOKEN_FILE", "path", "a file holding the JWT, instead of PULSAR_TOKEN", secret=True, chart="",
            chart_why="the chart passes the token from a Secret as PULSAR_TOKEN (pulsar.token)"),
    Setting("PULSAR_TLS_TRUST_CERTS_FILE", "path", "the CA bundle; default: certifi's",
            chart="file:tls.trustCerts"),
    Setting("PULSAR_TLS_ALLOW_INSECURE", "flag", "1: accept any broker certificate", default=False,
            chart="tls.allowInsecure"),
    Setting("PULSAR_TLS_VALIDATE_HOSTNAME", "flag", "1: check the certificate's host name", default=False,
            chart="tls.validateHostname"),
    Setting("PULSAR_TLS_CERT_FILE", "path", "a client certificate (with PULSAR_TLS_KEY_FILE)",
            chart="file:tls.clientCert"),
    Setting("PULSAR_TLS_KEY_FILE", "path", "the client certificate's key", secret=True, chart="file:tls.clientCert"),
)


@dataclass(frozen=True)
class PulsarSettings:
    """What PULSAR_* says, validated."""

    connection: str
    topic: str
    subscription: str = "minionize"
    decoder: str = "identity"
    dead_letter_topic: str = ""
    nack_delay: float = 1.0
    receiver_queue_size: int = 1
    operation_timeout: float = 5.0
    token: Optional[str] = field(default=None, repr=False)
    token_file: Optional[str] = None
    tls_trust_certs_file: Optional[str] = None
    tls_allow_insecure: bool = False
    tls_validate_hostname: bool = False
    tls_cert_file: Optional[str] = None
    tls_key_file: Optional[str] = None

    @classmethod
    def from_env(cls, env: EnvReader) -> PulsarSettings:
        values = read_settings(env, SETTINGS)
        connection, topic = values["PULSAR_CONNECTION"], values["PULSAR_TOPIC"]
        if not connection.startswith(_SCHEMES):
            raise ConfigError("PULSAR_CONNECTION", mask_url(connection), "expected a pulsar:// or pulsar+ssl:// URL")
        if values["PULSAR_TOKEN"] and values["PULSAR_TOKEN_FILE"]:
            raise ConfigError("PULSAR_TOKEN", "***", "set PULSAR_TOKEN or PULSAR_TOKEN_FILE, not both")
        if bool(values["PULSAR_TLS_CERT_FILE"]) != bool(values["PULSAR_TLS_KEY_FILE"]):
            raise ConfigError(
                "PULSAR_TLS_CERT_FILE", values["PULSAR_TLS_CERT_FILE"], "set it with PULSAR_TLS_KEY_FILE, or neither"
            )
        subscription = values["PULSAR_SUBSCRIPTION"]
        return cls(
            connection=connection,
            topic=topic,
            subscription=subscription,
            decoder=values["PULSAR_DECODER"],
            dead_letter_topic=values["PULSAR_DEAD_LETTER_TOPIC"] or f"{topic}-{subscription}-DLQ",
            nack_delay=values["PULSAR_NACK_DELAY"],
            receiver_queue_size=values["PULSAR_RECEIVER_QUEUE_SIZE"],
            operation_timeout=max(1.0, values["PULSAR_OPERATION_TIMEOUT"]),
            token=values["PULSAR_TOKEN"],
            token_file=values["PULSAR_TOKEN_FILE"],
            tls_trust_certs_file=values["PULSAR_TLS_TRUST_CERTS_FILE"],
            tls_allow_insecure=values["PULSAR_TLS_ALLOW_INSECURE"],
            tls_validate_hostname=values["PULSAR_TLS_VALIDATE_HOSTNAME"],
            tls_cert_file=values["PULSAR_TLS_CERT_FILE"],
            tls_key_file=values["PULSAR_TLS_KEY_FILE"],
        )

    def check_files(self) -> None:
        """The files named by the settings exist (done by `open`: no I/O in from_env)."""
        files = {
            "PULSAR_TOKEN_FILE": self.token_file,
            "PULSAR_TLS_TRUST_CERTS_FILE": self.tls_trust_certs_file,
            "PULSAR_TLS_CERT_FILE": self.tls_cert_file,
            "PULSAR_TLS_KEY_FILE": self.tls_key_file,
        }
        for variable, path in files.items():
            if path is not None and not os.path.isfile(path):
                raise ConfigError(variable, path, "expected an existing file")

    def client(self) -> pulsar.Client:
        """A client whose operations give up after `operation_timeout` (it retries forever otherwise)."""
        auth: Optional[pulsar.Authentication] = None
        if self.token:
            auth = pulsar.AuthenticationToken(self.token)
        elif self.token_file:
            # Read at each connection (tokens rotate), without the newline
            # that the client's own `file://` form would send along.
            path = os.path.abspath(self.token_file)
            auth = pulsar.AuthenticationToken(lambda: Path(path).read_text(encoding="utf-8").strip())
        level = pulsar.LoggerLevel.Info if log.isEnabledFor(logging.DEBUG) else pulsar.LoggerLevel.Warn
        client_certificate: dict[str, str] = {}
        if self.tls_cert_file and self.tls_key_file:  # only when set: older clients lack these arguments
            client_certificate = {"tls_certificate_file_path": self.tls_cert_file}
            client_certificate["tls_private_key_file_path"] = self.tls_key_file
        try:
            return pulsar.Client(
                self.connection,
                authentication=auth,
                operation_timeout_seconds=math.ceil(self.operation_timeout),
                connection_timeout_ms=int(self.operation_timeout * 1000),
                tls_trust_certs_file_path=self.tls_trust_certs_file,
                tls_allow_insecure_connection=self.tls_allow_insecure,
                tls_validate_hostname=self.tls_validate_hostname,
                logger=pulsar.FileLogger(level, _log_pipe()),
                **client_certificate,
            )
        except ValueError as exc:
            # "invalid hostname: user:password@host": the client echoes what it could not parse.
            why = scrub(str(exc), self.connection)
            raise ConfigError("PULSAR_CONNECTION", mask_url(self.connection), why) from None

    def subscribe(self, client: pulsar.Client, topic: str) -> pulsar.Consumer:
        return client.subscribe(
            topic,
            self.subscription,
            consumer_type=pulsar.ConsumerType.Shared,
            initial_position=pulsar.InitialPosition.Earliest,
            receiver_queue_size=self.receiver_queue_size,
            negative_ack_redelivery_delay_ms=int(self.nack_delay * 1000),
        )

    def create_subscription(self, client: pulsar.Client, topic: str) -> None:
        """Make the subscription exist, so that the topic keeps what is published to it."""
        # A receiver queue of 0 takes no message: closing it redelivers
        # nothing, so no message of the backlog has an attempt counted.
        client.subscribe(
            topic,
            self.subscription,
            consumer_type=pulsar.ConsumerType.Shared,
            initial_position=pulsar.InitialPosition.Earliest,
            receiver_queue_size=0,
        ).close()

    def producer(self, client: pulsar.Client, topic: str) -> pulsar.Producer:
        return client.create_producer(
            topic, send_timeout_millis=int(self.operation_timeout * 1000), block_if_queue_full=True
        )


def _log_pipe() -> str:
    """A path for the C++ client's FileLogger; a thread logs what comes out of it."""
    global _LOG_PIPE
    with _LOG_PIPE_LOCK:
        if _LOG_PIPE is None:
            read_end, write_end = os.pipe()
            threading.Thread(target=_forward_logs, args=(read_end,), name="pulsar-log", daemon=True).start()
            _LOG_PIPE = f"/dev/fd/{write_end}"
        return _LOG_PIPE


def _forward_logs(read_end: int) -> None:
    """Every line of the client at DEBUG, with its own level: what it warns of is a failed attempt (one per
    retry, and it retries forever), which the engine's error says once, in the minion's words."""
    with open(read_end, encoding="utf-8", errors="replace") as lines:
        for line in lines:
            match = _LOG_LINE.match(line.rstrip())
            level, text = (match["level"], match["text"]) if match else ("WARN", line.rstrip())
            log.debug("pulsar client: %s %s", level, text)


def _unreachable(settings: PulsarSettings, exc: object) -> QueueUnreachable:
    where, why = mask_url(settings.connection), scrub(str(exc), settings.connection)
    hint = "" if log.isEnabledFor(logging.DEBUG) else " (MINION_LOG_LEVEL=DEBUG shows the client's log)"
    return QueueUnreachable(f"cannot use Pulsar topic {settings.topic} at {where}: {why}{hint}")


#: Seconds without a message after which a minion checks that its broker answers: as often
#: as an idle Redis or PostgreSQL minion asks its server for work.
CHECK_AFTER = 1.0
#: The last acks kept, to be sent again by a new client: a dropped one may have kept some, queued (its 100 ms
#: grouping, the connection that went silent). Acknowledging a message twice is harmless, and which ones the
#: old client delivered cannot be known: the last ones are sent again, more than a fleet's slots finish in
#: the seconds a dead link takes to be noticed.
ACKS_KEPT = 256


class PulsarEngine(Engine):
    name = "pulsar"
    connection_errors = (pulsar.PulsarException,)
    title = "Pulsar (pip install 'minionize[pulsar]')"
    settings = SETTINGS
    tells_drained = False  # Pulsar cannot tell that a topic will stay empty
    free_release = False  # the broker counts every redelivery
    ack_delay = 0.1  # the client groups acks for 100 ms, and cannot be told not to
    offline_calls = frozenset({"ack", "nack", "release"})  # queued by the client, sent once it is connected

    def __init__(self, settings: PulsarSettings) -> None:
        self.config = settings
        self._client: Optional[pulsar.Client] = None
        self._consumer: Optional[pulsar.Consumer] = None
        self._dead_letters: Optional[pulsar.Producer] = None
        self._connected = True
        #: When the broker last answered (a message, or a check of the connection).
        self._heard = time.monotonic()
        self._guard = ConnectionGuard(f"Pulsar at {mask_url(settings.connection)}", self.connection_errors,
                                      settings.operation_timeout, on_silent=self._drop_client)
        #: Held while the client or the consumer is made or dropped (slot threads settle as the loop takes).
        self._lock = threading.RLock()
        #: The messages of the last acks (ACKS_KEPT), acknowledged again by a new client.
        self._acked: deque[Any] = deque(maxlen=ACKS_KEPT)

    @classmethod
    def from_env(cls, env: EnvReader) -> PulsarEngine:
        return cls(PulsarSettings.from_env(env))

    def describe(self) -> str:
        s = self.config
        auth = ", token" if s.token or s.token_file else ""
        return f"pulsar {mask_url(s.connection)} topic {s.topic} subscription {s.subscription} ({s.decoder}{auth})"

    def _connect(self) -> pulsar.Client:
        self.config.check_files()
        self._client = self.config.client()
        return self._client

    def open(self) -> None:
        client = self._connect()
        try:
            self._consumer = self.config.subscribe(client, self.config.topic)
        except pulsar.PulsarException as exc:
            self.close()  # the worker closes only what opened
            if isinstance(exc, pulsar.InvalidTopicName):
                raise ConfigError("PULSAR_TOPIC", self.config.topic, "not a valid Pulsar topic name") from None
            raise _unreachable(self.config, exc) from None

    def _subscribed(self) -> pulsar.Consumer:
        """The consumer, subscribed again if it was closed under us, on a new client if the last was dropped."""
        with self._lock:
            if self._consumer is None:
                with self._guard(f"subscribing to {self.config.topic}"):
                    if self._client is None:
                        self._client = self.config.client()
                    self._consumer = self.config.subscribe(self._client, self.config.topic)
                log.warning("subscribed again to %s at %s", self.config.topic, mask_url(self.config.connection))
                self._ack_again(self._consumer)
            return self._consumer

    def _ack_again(self, consumer: pulsar.Consumer) -> None:
        """Acknowledge again what a dropped client may have kept: else the broker runs those parameters again."""
        while self._acked:
            with suppress(pulsar.PulsarException):
                consumer.acknowledge(self._acked.popleft())

    def _drop_client(self) -> None:
        """The broker left a call unanswered: shut the client down, the next call makes another.

        The client would keep its connection, which may be half-open: TCP resumes
        it at its next retransmission, up to 26 s after the link's return (after
        a 30 s cut), and then the consumer could stay silent longer still. A new
        client connects as soon as the broker answers. What the old consumer held
        the broker delivers again once it ends that connection.
        """
        with self._lock:
            client, self._client, self._consumer, self._dead_letters = self._client, None, None, None
        if client is not None:
            with suppress(pulsar.PulsarException):
                client.shutdown()

    def next(self, timeout: float) -> Optional[Message]:
        consumer = self._subscribed()
        with self._guard("receive"):
            try:
                received = consumer.receive(timeout_millis=max(1, int(timeout * 1000)))
            except pulsar.Timeout:
                self._watch_connection(consumer)
                self._check_connection()
                return None
            except pulsar.AlreadyClosed:
                with self._lock:
                    if self._consumer is consumer:
                        self._consumer = None  # subscribed again at the next call
                raise
        self._heard = time.monotonic()
        message = Message(
            id=str(received.message_id()), param=None, attempt=received.redelivery_count() + 1, handle=received
        )
        return decode_into(message, received.data(), self.config.decoder)

    def _check_connection(self) -> None:
        """With nothing received for CHECK_AFTER seconds, ask the broker something (a topic lookup).

        A receive only waits on the client's own queue, and the client notices
        a dead link by its keep-alive, after 30 to 60 s: until then a minion
        cut off from its broker would look merely idle (and end as idle, in
        batch mode). An unanswered lookup fails within the operation timeout,
        and the worker backs off.
        """
        client = self._client
        if time.monotonic() - self._heard < CHECK_AFTER or client is None:
            return
        with self._guard("checking the connection"):
            client.get_topic_partitions(self.config.topic)
        self._heard = time.monotonic()

    def _watch_connection(self, consumer: pulsar.Consumer) -> None:
        """Log when the client loses the broker, and when it is back (it reconnects by itself)."""
        connected = consumer.is_connected()
        if connected == self._connected:
            return
        self._connected = connected
        if connected:
            log.warning("reconnected to Pulsar at %s", mask_url(self.config.connection))
        else:
            log.warning("lost the connection to Pulsar at %s; reconnecting", mask_url(self.config.connection))

    def _settling(self, doing: str) -> pulsar.Consumer:
        """The consumer to settle with; none while the client is dropped (subscribing is the loop's: a slot
        must not wait on a dead link). The broker delivers the message again once the old connection ends."""
        consumer = self._consumer
        if consumer is None:
            raise ConnectionError(f"Pulsar at {mask_url(self.config.connection)}: {doing} not tried: "
                                  "connecting again")
        return consumer

    def ack(self, message: Message) -> None:
        # Unacknowledged, the message comes back once the connection does.
        with self._guard("acknowledge"):
            self._settling("acknowledge").acknowledge(message.handle)
        self._acked.append(message.handle)

    def nack(self, message: Message) -> None:
        with self._guard("negative acknowledge"):
            self._settling("negative acknowledge").negative_acknowledge(message.handle)

    def fail(self, message: Message, reason: str) -> None:
        received = message.handle
        original, key = _original_properties(received)
        properties = {
            **original,
            **dead_letter_metadata(reason, message.attempt, self.config.topic),
            "REAL_TOPIC": received.topic_name(),
            "ORIGIN_MESSAGE_ID": str(received.message_id()),
        }
        try:
            with self._guard(f"publishing to {self.config.dead_letter_topic}"):
                self._dead_letter_producer().send(received.data(), properties=properties, partition_key=key)
        except ConnectionError:
            # Never leave it unacknowledged in a live consumer: it would stay there.
            with suppress(ConnectionError):
                self.nack(message)
            raise
        self.ack(message)

    def _dead_letter_producer(self) -> pulsar.Producer:
        if self._dead_letters is None:
            client = self._client
            if client is None:
                raise ConnectionError(f"Pulsar at {mask_url(self.config.connection)}: connecting again")
            topic = self.config.dead_letter_topic
            # Pulsar drops what a topic without subscription receives.
            self.config.create_subscription(client, topic)
            self._dead_letters = self.config.producer(client, topic)
        return self._dead_letters

    def push(self, params: list[Any]) -> str:
        client = self._connect()
        s = self.config
        failures: list[str] = []

        def sent(result: Any, _message_id: Any) -> None:
            if result != pulsar.Result.Ok:
                failures.append(str(result))

        try:
            # The subscription first: it keeps what is published from now on.
            s.create_subscription(client, s.topic)
            producer = s.producer(client, s.topic)
            for param in params:
                if failures:
                    break  # the broker is gone: do not wait a send timeout per message
                producer.send_async(encode(param, s.decoder)[0].encode("utf-8"), sent)
            producer.flush()
            producer.close()
        except pulsar.InvalidTopicName:
            raise ConfigError("PULSAR_TOPIC", s.topic, "not a valid Pulsar topic name") from None
        except pulsar.PulsarException as exc:
            raise _unreachable(s, exc) from None
        if failures:
            raise _unreachable(s, f"{len(failures)} of {len(params)} parameters not published ({failures[0]})")
        return f"pulsar topic {s.topic} (subscription {s.subscription})"

    def dead_letters(self) -> list[DeadLetter]:
        # Left unacknowledged: the broker gives them to the subscription again once this consumer closes.
        return self._dead_letter_round(move_to=None)

    def retry_failed(self) -> int:
        return len(self._dead_letter_round(move_to=self.config.topic))

    def _dead_letter_round(self, move_to: Optional[str]) -> list[DeadLetter]:
        """Receive the whole dead-letter topic; with `move_to`, publish each message there, then acknowledge it."""
        s = self.config
        letters: list[DeadLetter] = []
        try:
            client = self._connect()
            consumer = s.subscribe(client, s.dead_letter_topic)
            producer = s.producer(client, move_to) if move_to else None
            try:
                while True:
                    try:
                        received = consumer.receive(timeout_millis=2000)
                    except pulsar.Timeout:
                        return letters
                    reason = received.properties().get(DEAD_REASON, "")
                    letters.append(DeadLetter(raw_text(received.data()), reason))
                    if producer is not None:
                        producer.send(received.data())  # waits for the broker: acknowledged only once it is back
                        consumer.acknowledge(received)
            finally:
                consumer.close()
                if producer is not None:
                    producer.close()
        except pulsar.PulsarException as exc:
            raise _unreachable(s, exc) from None

    def close(self) -> None:
        if self._guard.silent and self._client is not None:
            # The broker left a call unanswered: a polite close would wait a whole operation
            # timeout for each consumer and producer (a stop's time). The client is shut down
            # at once instead; the broker redelivers what was not acknowledged.
            self._client.shutdown()
            self._consumer = self._dead_letters = self._client = None
            return
        for resource in (self._consumer, self._dead_letters, self._client):
            if resource is not None:
                try:
                    resource.close()
                except pulsar.PulsarException as exc:
                    log.debug("closing: %s", exc)
        self._consumer = self._dead_letters = self._client = None


def _original_properties(received: Any) -> tuple[dict[str, str], Optional[str]]:
    """The properties and key a producer put on a message; none when the client cannot decode them
    (not UTF-8): the dead letter goes out all the same, rather than stay unacknowledged here."""
    try:
        properties = dict(received.properties())
    except (UnicodeDecodeError, ValueError):
        properties = {}
    try:
        key = received.partition_key() or None
    except (UnicodeDecodeError, ValueError):
        key = None
    return properties, key
