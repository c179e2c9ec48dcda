"""Google Cloud Pub/Sub: minion-push publishes to a topic, minions share a subscription.

What it is
    Minions pull from the subscription GOOGLE_SUBSCRIPTION of the topic
    GOOGLE_TOPIC_ID one message per synchronous pull (max_messages=1), so a
    minion never holds more messages than it runs. The topic, the
    subscription and the dead-letter topic are created when missing, by a
    minion as well as by minion-push, so that nothing pushed before the
    first minion starts is lost. A dead-letter topic created here gets the
    subscription `<dead-letter topic>-sub`, which keeps the letters.

Environment
    GOOGLE_PROJECT_ID (string, mandatory): the project.
    GOOGLE_TOPIC_ID (string, mandatory): the topic minion-push publishes to.
    GOOGLE_SUBSCRIPTION (string, mandatory): the subscription minions share.
    GOOGLE_APPLICATION_CREDENTIALS (path, mandatory unless
        PUBSUB_EMULATOR_HOST is set): a JSON key file google-auth can load.
    GOOGLE_DECODER (identity | json, default identity): the message data as
        text (a whole JSON object or array becomes that dict or list, as
        minion-push writes them), or parsed as a JSON document.
    GOOGLE_ACK_DEADLINE (seconds, 10 to 600, default 60): the ack deadline of
        a subscription created here (an existing one keeps its own).
    GOOGLE_DEAD_LETTER_TOPIC (topic ID or projects/P/topics/T, default the
        one of an existing subscription's dead-letter policy, else
        `<GOOGLE_TOPIC_ID>-dead-letter`): where failed parameters go.
    PUBSUB_EMULATOR_HOST (host:port, default none): use the Pub/Sub emulator
        there, over plain gRPC, without credentials.
    GOOGLE_OPERATION_TIMEOUT (seconds > 0, default 5): how long each call to
        Pub/Sub may take, retries of transient errors included; then it
        fails: exit code 3 at start-up, a retry later while running.
    MINION_MAX_ATTEMPTS is also the max_delivery_attempts of the dead-letter
        policy of a subscription created here, within the 5 to 100 that
        Pub/Sub accepts. An existing subscription keeps its own (minion-push
        creates it with its MINION_MAX_ATTEMPTS): a minion warns when that
        limit is lower than its own.

Ack and nack
    Ack acknowledges. Nack sets the ack deadline to 0: the message is
    available again at once, to any minion, and Pub/Sub counts one more
    delivery (message.attempt is its delivery_attempt). Release republishes
    the message with the attribute `minion_attempt_base` and acks the
    original, so that a stopped minion never costs an attempt. Fail
    publishes the message to the dead-letter topic with its attributes plus
    `minion_reason`, `minion_attempts`, `minion_source` (the subscription)
    and `minion_message_id`, then acks the original.

    Pub/Sub gives delivery_attempt only to a subscription with a dead-letter
    policy, so one created here has a policy pointing to the dead-letter
    topic: also the broker's backstop for a parameter that kills its minion
    at every attempt (such letters carry CloudPubSubDeadLetterSource*
    attributes but no `minion_reason`). On an existing subscription without
    a policy minionize counts attempts itself: a nack republishes the
    message with `minion_attempt_base` = its attempt and acks the original.
    The trade-off: the retry goes to the back of the queue and to every
    subscription of the topic, and a crashed minion's message comes back
    with the same attempt number.

A crashed minion
    While a parameter runs, its ack deadline is extended every third of the
    deadline (modify_ack_deadline), so a run longer than the deadline is
    never delivered twice. A crashed minion stops extending: within one ack
    deadline Pub/Sub delivers the message again, to any minion, with its
    attempt increased. A lost connection fails the call with ConnectionError
    (the worker backs off); the next call reconnects and checks the
    subscription again, creating it if the broker lost it. A message whose
    ack could not be sent comes back after its deadline.

Caveats
    Pub/Sub has no cheap queue size and never knows that a topic is drained:
    in batch mode (MINION_BATCH) a minion ends after MINION_IDLE_TIMEOUT
    without a parameter (default 120 s). A pull returns at once
    (return_immediately, which Google discourages) because a pull cancelled
    by a client-side timeout may have taken a message that then stays hidden
    for an ack deadline. On Google, broker forwarding to the dead-letter topic
    needs the Pub/Sub service agent to be publisher on that topic and
    subscriber on the subscription. A republished message gets a new message
    ID (`minion_id` keeps the first) and loses its ordering key.
"""

from __future__ import annotations

import logging
import os
import re
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any, Optional

import google.auth
import google.auth.exceptions
import grpc
from google.api_core import exceptions, retry
from google.pubsub_v1 import PublisherClient, PubsubMessage, ReceivedMessage, SubscriberClient
from google.pubsub_v1.services.publisher.transports.grpc import PublisherGrpcTransport
from google.pubsub_v1.services.subscriber.transports.grpc import SubscriberGrpcTransport

from ..config import EnvReader
from ..errors import ConfigError, QueueUnreachable
from ..message import Message
from .base import DECODERS, DeadLetter, Engine, decode_into, encode, parse_count, raw_text
from .kit import DEAD_REASON, MANDATORY, ConnectionGuard, Setting, dead_letter_metadata, read_settings

log = logging.getLogger("minionize")

_TRANSIENT = (exceptions.ServiceUnavailable, exceptions.Aborted, exceptions.InternalServerError, exceptions.Unknown)
_SCOPES = ["https://www.googleapis.com/auth/pubsub"]
_ID = re.compile(r"[A-Za-z][A-Za-z0-9._~+%-]{2,254}")
_PROJECT = re.compile(r"[A-Za-z0-9][A-Za-z0-9.:_-]*")
_TOPIC_PATH = re.compile(r"projects/[^/]+/topics/[^/]+")
_ATTRIBUTE_MAX = 1024  # bytes, Pub/Sub's limit for an attribute value
# Pub/Sub's limits per Publish request are 1000 messages and 10 MB.
_BATCH_COUNT = 1000
_BATCH_BYTES = 9_000_000
# Attributes of a republished message: the attempts it had before (Pub/Sub
# counts deliveries of the new copy from 1), and the ID of the first copy.
_BASE = "minion_attempt_base"
_ORIGIN = "minion_id"


def _resource_id(values: dict[str, Any], name: str) -> str:
    value: str = values[name]
    if not _ID.fullmatch(value) or value.startswith("goog"):
        raise ConfigError(name, value, "expected 3 to 255 of A-Z a-z 0-9 -_.~+%, from a letter, not goog")
    return value


def _clip(text: str) -> str:
    """`text` cut to fit in an attribute value."""
    data = text.encode("utf-8")
    return text if len(data) <= _ATTRIBUTE_MAX else data[: _ATTRIBUTE_MAX - 3].decode("utf-8", "ignore") + "..."


def _batches(items: list[bytes]) -> Iterator[list[bytes]]:
    """Split messages to fit Pub/Sub's limits per Publish request."""
    batch: list[bytes] = []
    size = 0
    for data in items:
        if batch and (len(batch) == _BATCH_COUNT or size + len(data) > _BATCH_BYTES):
            yield batch
            batch, size = [], 0
        batch.append(data)
        size += len(data)
    if batch:
        yield batch


def _attempt_base(attributes: Any) -> int:
    # isdigit() alone lets "²" and 5,000 digits through to int(), which refuses them.
    return parse_count(attributes.get(_BASE))


def _pulled(subscriber: SubscriberClient, subscription: str, timeout: float) -> Iterator[list[ReceivedMessage]]:
    """Batches of what `subscription` holds, until it answers empty three times in a row
    (return_immediately may answer empty once while some are there)."""
    empty = 0
    while empty < 3:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "The return_immediately flag", DeprecationWarning)
            request = {"subscription": subscription, "max_messages": 100, "return_immediately": True}
            received = list(subscriber.pull(request=request, retry=None, timeout=timeout).received_messages)
        if received:
            empty = 0
            yield received
        else:
            empty += 1
            time.sleep(0.2)


def _afresh(attributes: Any) -> dict[str, str]:
    """A dead letter's attributes without minionize's own: the copy starts its attempts again."""
    return {key: value for key, value in attributes.items() if not key.startswith("minion_")}


def _encode(param: Any, decoder: str) -> bytes:
    return encode(param, decoder)[0].encode("utf-8")


class GoogleEngine(Engine):
    name = "google"
    connection_errors = (exceptions.GoogleAPIError,)
    title = "Google Pub/Sub (pip install 'minionize[google]')"
    settings = (
        Setting("GOOGLE_PROJECT_ID", "text", "the ID of the Google Cloud project", required=True),
        Setting("GOOGLE_TOPIC_ID", "text", "the ID of the topic parameters are published to", required=True),
        Setting("GOOGLE_SUBSCRIPTION", "text", "the ID of the subscription the minions share", required=True),
        Setting("GOOGLE_APPLICATION_CREDENTIALS", "path", "a JSON key file, unless PUBSUB_EMULATOR_HOST is set",
                secret=True, shown=MANDATORY, chart="file:credentials"),
        Setting("GOOGLE_DECODER", "choice", "json: the data is a JSON document", default="identity",
                choices=DECODERS),
        Setting("GOOGLE_ACK_DEADLINE", "seconds", "for a subscription created by minionize", default=60.0,
                minimum=10, maximum=600),
        Setting("GOOGLE_DEAD_LETTER_TOPIC", "text", "default <topic>-dead-letter"),
        Setting("PUBSUB_EMULATOR_HOST", "text", "host:port of the Pub/Sub emulator, instead of Google",
                chart="emulatorHost", example="pubsub-emulator:8085"),
        Setting("GOOGLE_OPERATION_TIMEOUT", "seconds", "seconds any call may take, retries included", default=5.0,
                above=0),
    )
    tells_drained = False  # Pub/Sub has no cheap queue size
    has_deadline = True  # the subscription's ack deadline

    def __init__(
        self,
        project: str,
        topic: str,
        subscription: str,
        credentials: Optional[str] = None,
        emulator: Optional[str] = None,
        decoder: str = "identity",
        ack_deadline: int = 60,
        dead_letter_topic: Optional[str] = None,
        max_attempts: int = 3,
        operation_timeout: float = 5.0,
    ) -> None:
        self.project, self.topic, self.subscription = project, topic, subscription
        self.operation_timeout = operation_timeout
        # Every call: transient errors retried, all of it within the operation timeout.
        transient = retry.Retry(
            retry.if_exception_type(*_TRANSIENT), initial=0.2, maximum=2.0, timeout=operation_timeout
        )
        self._call: dict[str, Any] = {"retry": transient, "timeout": operation_timeout}
        # An error while running is a lost connection: drop the clients, the next call makes new ones.
        self._running = ConnectionGuard("Pub/Sub", self.connection_errors, operation_timeout, self._disconnect)
        self.credentials = credentials
        self.emulator = emulator
        self.decoder = decoder
        self.ack_deadline = ack_deadline
        self.max_attempts = max_attempts
        self.lease_interval = ack_deadline / 3
        self._topic_path = PublisherClient.topic_path(project, topic)
        self._sub_path = SubscriberClient.subscription_path(project, subscription)
        self._dead_letter_explicit = dead_letter_topic is not None
        dead_letter = dead_letter_topic or f"{topic}-dead-letter"
        if not _TOPIC_PATH.fullmatch(dead_letter):
            dead_letter = PublisherClient.topic_path(project, dead_letter)
        self._dead_letter = dead_letter
        self._subscriber: Optional[SubscriberClient] = None
        self._publisher: Optional[PublisherClient] = None
        self._ready = False

    @classmethod
    def from_env(cls, env: EnvReader) -> GoogleEngine:
        values = read_settings(env, cls.settings)
        project = values["GOOGLE_PROJECT_ID"]
        if not _PROJECT.fullmatch(project):
            raise ConfigError("GOOGLE_PROJECT_ID", project, "expected a project ID such as my-project-123")
        topic, subscription = _resource_id(values, "GOOGLE_TOPIC_ID"), _resource_id(values, "GOOGLE_SUBSCRIPTION")
        emulator = values["PUBSUB_EMULATOR_HOST"]
        if emulator is not None and not re.fullmatch(r"\[?[^/\s@]+\]?:\d+", emulator):
            shown = "***@" + emulator.rpartition("@")[2] if "@" in emulator else emulator  # user:password@?
            raise ConfigError("PUBSUB_EMULATOR_HOST", shown, "expected host:port, e.g. 127.0.0.1:8085")
        credentials = values["GOOGLE_APPLICATION_CREDENTIALS"]
        if credentials is None and emulator is None:
            env.required("GOOGLE_APPLICATION_CREDENTIALS", "the path of a JSON key file (or set PUBSUB_EMULATOR_HOST)")
        dead_letter = values["GOOGLE_DEAD_LETTER_TOPIC"]
        if dead_letter is not None and not (_ID.fullmatch(dead_letter) or _TOPIC_PATH.fullmatch(dead_letter)):
            raise ConfigError("GOOGLE_DEAD_LETTER_TOPIC", dead_letter, "expected a topic ID or projects/P/topics/T")
        return cls(
            project,
            topic,
            subscription,
            credentials=credentials,
            emulator=emulator,
            decoder=values["GOOGLE_DECODER"],
            ack_deadline=int(values["GOOGLE_ACK_DEADLINE"]),
            dead_letter_topic=dead_letter,
            max_attempts=env.integer("MINION_MAX_ATTEMPTS", 3, minimum=1),
            operation_timeout=values["GOOGLE_OPERATION_TIMEOUT"],
        )

    def describe(self) -> str:
        where = f", emulator {self.emulator}" if self.emulator else ""
        return f"google pubsub {self._sub_path} (topic {self.topic}, {self.decoder}{where})"

    # -- connecting ----------------------------------------------------------

    def _clients(self) -> tuple[SubscriberClient, PublisherClient]:
        """The clients, connected (again), with the subscription in place."""
        if self._subscriber is None or self._publisher is None:
            self._subscriber, self._publisher = self._connect()
        if not self._ready:
            self._ensure(self._subscriber, self._publisher)
            self._ready = True
        return self._subscriber, self._publisher

    def _connect(self) -> tuple[SubscriberClient, PublisherClient]:
        credentials = self._load_credentials() if self.credentials else None
        if not self.emulator:
            return SubscriberClient(credentials=credentials), PublisherClient(credentials=credentials)
        # What the library does when PUBSUB_EMULATOR_HOST is in os.environ, from our settings.
        return (
            SubscriberClient(transport=SubscriberGrpcTransport(channel=grpc.insecure_channel(self.emulator))),
            PublisherClient(transport=PublisherGrpcTransport(channel=grpc.insecure_channel(self.emulator))),
        )

    def _load_credentials(self) -> Any:
        path = str(self.credentials)
        if not os.path.isfile(path):
            raise ConfigError("GOOGLE_APPLICATION_CREDENTIALS", path, "expected an existing JSON key file")
        try:
            credentials, _ = google.auth.load_credentials_from_file(path, scopes=_SCOPES)
        except (google.auth.exceptions.GoogleAuthError, OSError, ValueError):
            # The file may hold a private key: say nothing of its content.
            raise ConfigError("GOOGLE_APPLICATION_CREDENTIALS", path, "not a key file google-auth can load") from None
        return credentials

    def _disconnect(self) -> None:
        for client in (self._subscriber, self._publisher):
            if client is not None:
                client.transport.close()
        self._subscriber = self._publisher = None
        self._ready = False  # a broker that comes back may have lost the subscription

    @contextmanager
    def _starting(self) -> Iterator[None]:
        """At start-up (open, push): an error is a bad setting or an unreachable queue."""
        try:
            yield
        except (exceptions.PermissionDenied, exceptions.Unauthenticated) as exc:
            self._disconnect()
            raise ConfigError(
                "GOOGLE_APPLICATION_CREDENTIALS", self.credentials, f"refused by Pub/Sub: {exc.message}"
            ) from None
        except exceptions.GoogleAPIError as exc:
            self._disconnect()
            where = f"the emulator at {self.emulator}" if self.emulator else "Google"
            raise QueueUnreachable(f"cannot reach Pub/Sub ({where}) for {self._sub_path}: {exc}") from None

    def open(self) -> None:
        with self._starting():
            self._clients()

    # -- creating what is missing ----------------------------------------------

    def _ensure(self, subscriber: SubscriberClient, publisher: PublisherClient) -> None:
        """Create the topic, the dead-letter topic and the subscription when missing."""
        try:
            found = subscriber.get_subscription(subscription=self._sub_path, **self._call)
        except exceptions.NotFound:
            found = self._create_subscription(subscriber, publisher)
        except exceptions.PermissionDenied:
            log.warning("not allowed to read subscription %s: assuming it exists as it should", self._sub_path)
            return
        if found.topic != self._topic_path:
            raise ConfigError(
                "GOOGLE_SUBSCRIPTION",
                self.subscription,
                f"is a subscription of {found.topic}, not of GOOGLE_TOPIC_ID={self.topic}",
            )
        # Renew at a third of the deadline: two renewals may fail before it passes.
        self.lease_interval = found.ack_deadline_seconds / 3
        self.ack_deadline = found.ack_deadline_seconds
        policy = found.dead_letter_policy.dead_letter_topic
        if policy and not self._dead_letter_explicit:
            self._dead_letter = policy
        if not policy:
            log.warning("%s has no dead-letter policy: minionize counts attempts (see its docs)", self._sub_path)
        elif found.dead_letter_policy.max_delivery_attempts < self._max_deliveries:
            # Whoever created the subscription (minion-push, another minion) chose
            # this limit; Pub/Sub sets a parameter aside there, whatever we say.
            log.warning(
                "%s sets a message aside after %d deliveries, fewer than MINION_MAX_ATTEMPTS=%d asks: "
                "raise its max_delivery_attempts (gcloud pubsub subscriptions update %s --max-delivery-attempts=%d), "
                "or create it with the same MINION_MAX_ATTEMPTS",
                self._sub_path, found.dead_letter_policy.max_delivery_attempts, self.max_attempts,
                self.subscription, self._max_deliveries,
            )

    @property
    def _max_deliveries(self) -> int:
        """The dead-letter policy's max_delivery_attempts for MINION_MAX_ATTEMPTS (Pub/Sub accepts 5 to 100)."""
        return min(100, max(5, self.max_attempts))

    def _create_subscription(self, subscriber: SubscriberClient, publisher: PublisherClient) -> Any:
        self._create_topic(publisher, self._topic_path)
        self._create_dead_letter(subscriber, publisher)
        request = {
            "name": self._sub_path,
            "topic": self._topic_path,
            "ack_deadline_seconds": self.ack_deadline,
            "dead_letter_policy": {
                "dead_letter_topic": self._dead_letter,
                "max_delivery_attempts": self._max_deliveries,
            },
        }
        try:
            created = subscriber.create_subscription(request=request, **self._call)
        except exceptions.AlreadyExists:  # another minion was quicker
            return subscriber.get_subscription(subscription=self._sub_path, **self._call)
        log.info("created subscription %s of %s", self._sub_path, self._topic_path)
        return created

    def _create_topic(self, publisher: PublisherClient, path: str) -> None:
        with suppress(exceptions.AlreadyExists):
            publisher.create_topic(name=path, **self._call)
            log.info("created topic %s", path)

    def _create_dead_letter(self, subscriber: SubscriberClient, publisher: PublisherClient) -> None:
        """The dead-letter topic, and a subscription that keeps its letters."""
        self._create_topic(publisher, self._dead_letter)
        project, topic = self._dead_letter.split("/")[1::2]
        keeper = SubscriberClient.subscription_path(project, f"{topic}-sub")
        with suppress(exceptions.AlreadyExists):
            subscriber.create_subscription(name=keeper, topic=self._dead_letter, **self._call)

    # -- the engine contract -----------------------------------------------------

    def next(self, timeout: float) -> Optional[Message]:
        with self._running("pull"):
            subscriber, _ = self._clients()
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", "The return_immediately flag", DeprecationWarning)
                response = subscriber.pull(
                    request={"subscription": self._sub_path, "max_messages": 1, "return_immediately": True},
                    retry=None,
                    timeout=self.operation_timeout,
                )
        if not response.received_messages:
            time.sleep(timeout)
            return None
        return self._message(response.received_messages[0])

    def _message(self, received: ReceivedMessage) -> Message:
        attributes = received.message.attributes
        attempt = _attempt_base(attributes) + max(received.delivery_attempt, 1)
        message = Message(attributes.get(_ORIGIN) or received.message.message_id, None, attempt, received)
        return decode_into(message, received.message.data, self.decoder)

    def ack(self, message: Message) -> None:
        with self._running("ack"):
            subscriber, _ = self._clients()
            subscriber.acknowledge(
                subscription=self._sub_path, ack_ids=[message.handle.ack_id], **self._call
            )

    def _set_deadline(self, messages: list[Message], seconds: int, doing: str) -> None:
        with self._running(doing):
            subscriber, _ = self._clients()
            subscriber.modify_ack_deadline(
                subscription=self._sub_path,
                ack_ids=[message.handle.ack_id for message in messages],
                ack_deadline_seconds=seconds,
                **self._call,
            )

    def nack(self, message: Message) -> None:
        if message.handle.delivery_attempt:
            self._set_deadline([message], 0, "nack")  # Pub/Sub counts the next delivery
        else:
            self._republish(message, message.attempt)

    def release(self, message: Message) -> None:
        self._republish(message, message.attempt - 1)

    def extend(self, messages: list[Message]) -> None:
        if messages:
            self._set_deadline(messages, self.ack_deadline, "extend")

    def _republish(self, message: Message, base: int) -> None:
        original = message.handle.message
        attributes = {**original.attributes, _BASE: str(base), _ORIGIN: message.id}
        with self._running("retry"):
            _, publisher = self._clients()
            copy = PubsubMessage(data=original.data, attributes=attributes)
            publisher.publish(topic=self._topic_path, messages=[copy], **self._call)
        self.ack(message)

    def fail(self, message: Message, reason: str) -> None:
        original = message.handle.message
        attributes = {key: value for key, value in original.attributes.items() if key != _BASE}
        attributes.update(dead_letter_metadata(_clip(reason), message.attempt, self._sub_path))
        attributes["minion_message_id"] = message.id
        letter = PubsubMessage(data=original.data, attributes=attributes)
        with self._running("dead letter"):
            subscriber, publisher = self._clients()
            try:
                publisher.publish(topic=self._dead_letter, messages=[letter], **self._call)
            except exceptions.NotFound:  # deleted since, or named by a policy made elsewhere
                self._create_dead_letter(subscriber, publisher)
                publisher.publish(topic=self._dead_letter, messages=[letter], **self._call)
        self.ack(message)

    def push(self, params: list[Any]) -> str:
        with self._starting():
            _, publisher = self._clients()
            for batch in _batches([_encode(param, self.decoder) for param in params]):
                messages = [PubsubMessage(data=data) for data in batch]
                publisher.publish(topic=self._topic_path, messages=messages, **self._call)
        return f"Pub/Sub topic {self._topic_path} (subscription {self.subscription})"

    def dead_letters(self) -> list[DeadLetter]:
        return self._dead_letter_round(move=False)

    def retry_failed(self) -> int:
        return len(self._dead_letter_round(move=True))

    def _dead_letter_round(self, move: bool) -> list[DeadLetter]:
        """Pull every letter of the dead-letter topic's keeper subscription; with `move`, publish
        each to the topic then acknowledge it, else give them all back once all are seen."""
        self.open()
        project, topic = self._dead_letter.split("/")[1::2]
        keeper = SubscriberClient.subscription_path(project, f"{topic}-sub")  # made by _create_dead_letter
        letters: list[DeadLetter] = []
        held: list[str] = []
        with self._starting():
            subscriber, publisher = self._clients()
            for batch in _pulled(subscriber, keeper, self.operation_timeout):
                letters += [DeadLetter(raw_text(r.message.data), r.message.attributes.get(DEAD_REASON, ""))
                            for r in batch]
                ack_ids = [r.ack_id for r in batch]
                if not move:
                    held += ack_ids
                    continue
                copies = [PubsubMessage(data=r.message.data, attributes=_afresh(r.message.attributes)) for r in batch]
                publisher.publish(topic=self._topic_path, messages=copies, **self._call)
                subscriber.acknowledge(subscription=keeper, ack_ids=ack_ids, **self._call)
            if held:
                subscriber.modify_ack_deadline(subscription=keeper, ack_ids=held, ack_deadline_seconds=0, **self._call)
        return letters

    def close(self) -> None:
        self._disconnect()
