"""NATS JetStream: a stream of parameters, and one durable pull consumer shared by every minion.

What it is
    Parameters are the messages of a JetStream stream (work-queue retention
    when minionize creates it; an existing limits stream does too). Every
    minion pulls from one durable pull consumer, one message per free slot
    (`fetch(1)`): JetStream hands each message to one of them and counts
    its deliveries. `open()` and `minion-push` create the stream (file
    storage), the consumer and the dead-letter stream when missing, so
    either may come first. nats-py is asyncio only: each engine runs it on
    a private event loop thread of its own (aioloop.py), behind its
    synchronous verbs (about 0.1 ms per call; bench/RESULTS.md). Connecting
    is in natsconnect.py, the stream and consumer in jetstream.py. Tested
    on nats-server 2.9.

Environment
    NATS_URL (URL, default nats://localhost:4222): the server, `nats://` or
        `tls://`; several, comma-separated, for a cluster. A user and
        password or a token in it are masked in logs.
    NATS_STREAM (name, mandatory): the stream of parameters.
    NATS_SUBJECT (subject, default the stream's name): what minion-push
        publishes to and the consumer reads (its filter subject).
    NATS_CONSUMER (name, default `minionize`): the durable consumer the
        minions share.
    NATS_DECODER (identity | json, default identity): the data as text (a
        whole JSON object or array becomes that dict or list, as minion-push
        writes them), or parsed as a JSON document.
    NATS_ACK_WAIT (seconds >= 1, default 60): the ack wait of a consumer
        created here (an existing one keeps its own): a message left that
        long without news goes to another minion.
    NATS_NAK_DELAY (seconds, default 0): how long a nacked message waits
        before it is delivered again.
    NATS_DEAD_LETTER_SUBJECT (subject, default `<subject>.dead`): where
        failed parameters go; kept by the stream that captures it, else by
        the stream `<stream>_dead` created here.
    NATS_USER, NATS_PASSWORD (text, default none): user and password.
    NATS_TOKEN (text, default none): a token, instead of a user.
    NATS_CREDS (path, default none): a credentials file (JWT and NKey seed,
        as `nsc generate creds` writes it; signed with the package nkeys,
        which the nats extra installs).
    NATS_TLS_CA_FILE (path, default none): the CA bundle that signs the
        server's certificate (default: the system's).
    NATS_TLS_CERT_FILE, NATS_TLS_KEY_FILE (paths, default none): a client
        certificate and its key, for servers that verify clients.
    NATS_OPERATION_TIMEOUT (seconds > 0, default 5): how long connecting
        and each call may wait for the server; then it fails: exit code 3
        at start-up, a retry later while running.
    MINION_MAX_ATTEMPTS also sets the max_deliver of a consumer created
        here, one more than it (the last delivery is the one that sets
        aside a parameter whose minions died). An existing consumer keeps
        its own: a minion warns when that is lower.

Ack and nack
    Every settlement waits for the server's answer (a double ack); an ack
    is sent at once and its answer collected by later calls (drained() and
    close() wait for it), so that no round trip separates two runs, and one
    refused or unanswered is sent again. Ack is `+ACK`, nack a `-NAK` (with
    NATS_NAK_DELAY): JetStream delivers the message again, to any minion,
    and counts it: the attempt is its num_delivered.
    A nak cannot un-count a delivery, so a release (a stop, a dry run)
    publishes a copy carrying the header `minion_attempt_base` (the
    attempts it had) and acks the original: it costs no attempt, but goes
    to the back of the stream. Fail publishes the message to
    NATS_DEAD_LETTER_SUBJECT with the headers `minion_reason`,
    `minion_attempts`, `minion_source` (the stream) and `minion_sequence`,
    waits for JetStream to store it, then terminates the original (`+TERM`).
    `minion-status --failed` reads the dead letters; `minion-push
    --retry-failed` publishes each again, then deletes it.

A crashed minion
    While a parameter runs, its minion tells JetStream it is in progress
    (`+WPI`) every third of the ack wait, so a long run is never delivered
    twice. A crashed minion stops doing so: after the ack wait, JetStream
    delivers the message again, to any minion, one attempt more. A lost
    connection is reopened in the background by the client (once a second);
    meanwhile the verbs fail at once with ConnectionError (the worker backs
    off) and the acks, nacks and fails owed are kept and sent once it is
    back, oldest first: with file storage, a server restart loses neither
    the messages nor the consumer's state. A call left unanswered for
    NATS_OPERATION_TIMEOUT (a paused server, a partition) makes the calls
    of the next one fail without being tried (kit.ConnectionGuard), and
    drops the connection, which may be half-open: the client opens another
    (once a second), so the minion is back within a second or two of the
    link's return rather than at TCP's next retransmission.

Caveats
    Drained (what ends a minion in batch mode, MINION_BATCH) means the
    consumer has nothing pending and nothing unacknowledged. A message that
    reached the consumer's max_deliver is never delivered again nor set
    aside (JetStream only publishes an advisory): keep max_deliver above
    MINION_MAX_ATTEMPTS. In a work-queue stream, no two consumers may read
    the same subject. A copy (release) gets a new sequence (`minion_id`
    keeps the first); if the minion dies between its publish and the ack of
    the original, the parameter is there twice.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
from collections.abc import Coroutine
from typing import Any, Optional, TypeVar

import nats.errors
import nats.js.errors

from ..config import EnvReader
from ..errors import ConfigError, QueueUnreachable
from ..message import Message
from . import jetstream
from .base import DECODERS, DeadLetter, Engine, decode_into, encode, parse_count, raw_text
from .kit import DEAD_REASON, ConnectionGuard, Setting, dead_letter_metadata, read_settings
from .natsconnect import UNAVAILABLE, Connection, Credentials, servers_of

log = logging.getLogger("minionize")

DEFAULT_URL = "nats://localhost:4222"
#: Headers of a released copy: the attempts the message had, and the ID of the first copy.
BASE = "minion_attempt_base"
ORIGIN = "minion_id"
_HEADER_MAX = 1024
#: The shortest pull request (the worker asks for 0 s when it only looks).
_FETCH_MIN = 0.05
_T = TypeVar("_T")


def _copied_headers(headers: Any) -> dict[str, Any]:
    """A message's headers for a copy of it (a release, a dead letter): without those JetStream acts on
    at a publish (`Nats-Msg-Id`, `Nats-Expected-Stream`, `Nats-Expected-Last-*`, `Nats-TTL`...), which
    would drop the copy as a duplicate or refuse it: the message would then be neither here nor there."""
    return {k: v for k, v in (headers or {}).items() if not k.lower().startswith("nats-")}


def _header_bytes(headers: dict[str, Any]) -> int:
    """What `headers` add to a message, as the client writes them (the server counts them in its max payload)."""
    return len(b"NATS/1.0\r\n\r\n") + sum(len(f"{k.strip()}: {str(v).strip()}\r\n".encode())
                                             for k, v in headers.items())


def _fitting(data: bytes, limit: int, *choices: dict[str, Any]) -> Optional[dict[str, Any]]:
    """The first of the `choices` of headers with which `data` is within the server's `limit`, or None
    (no headers at all): a copy over it makes the server drop the connection, and the client sends it
    again at each reconnection, for ever."""
    for headers in choices:
        if len(data) + _header_bytes(headers) <= limit:
            return headers
    return None


def _clean(text: str) -> str:
    """`text` fit for a header value: one line, at most _HEADER_MAX bytes."""
    text = " ".join(text.split())
    data = text.encode("utf-8")
    return text if len(data) <= _HEADER_MAX else data[: _HEADER_MAX - 3].decode("utf-8", "ignore") + "..."


class NatsEngine(Engine):
    name = "nats"
    connection_errors = UNAVAILABLE
    title = "NATS JetStream (pip install 'minionize[nats]')"
    settings = (
        Setting("NATS_URL", "url", "nats:// or tls://, comma-separated for a cluster; masked", default=DEFAULT_URL,
                secret=True),
        Setting("NATS_STREAM", "text", "the stream of parameters", required=True),
        Setting("NATS_SUBJECT", "text", "default <stream>: minion-push publishes there, the consumer reads it",
                shown=""),
        Setting("NATS_CONSUMER", "text", "the durable pull consumer the minions share", default="minionize"),
        Setting("NATS_DECODER", "choice", "json: the data is a JSON document", default="identity", choices=DECODERS),
        Setting("NATS_ACK_WAIT", "seconds", "a dead minion's message is delivered again after this", default=60.0,
                minimum=1),
        Setting("NATS_NAK_DELAY", "seconds", "how long a nacked message waits before redelivery", default=0.0),
        Setting("NATS_DEAD_LETTER_SUBJECT", "text", "default <subject>.dead"),
        Setting("NATS_USER", "text", "with NATS_PASSWORD", secret=True, chart="secret:userSecret"),
        Setting("NATS_PASSWORD", "text", "with NATS_USER", secret=True, chart="secret:passwordSecret"),
        Setting("NATS_TOKEN", "text", "a token, instead of a user", secret=True, chart="secret:tokenSecret"),
        Setting("NATS_CREDS", "path", "a credentials file (JWT and NKey seed)", secret=True,
                chart="file:credsSecret"),
        Setting("NATS_TLS_CA_FILE", "path", "the CA bundle of the server's certificate", chart="file:tls.ca"),
        Setting("NATS_TLS_CERT_FILE", "path", "a client certificate (with NATS_TLS_KEY_FILE)",
                chart="file:tls.clientCert"),
        Setting("NATS_TLS_KEY_FILE", "path", "the client certificate's key", secret=True, chart="file:tls.clientCert"),
        Setting("NATS_OPERATION_TIMEOUT", "seconds", "seconds to connect, and for any call", default=5.0, above=0),
    )
    tells_drained = True  # nothing pending nor unacknowledged for the consumer (drained())
    has_deadline = True  # NATS_ACK_WAIT, renewed while a run lasts (+WPI)

    def __init__(
        self,
        stream: str,
        url: str = DEFAULT_URL,
        subject: Optional[str] = None,
        consumer: str = "minionize",
        decoder: str = "identity",
        ack_wait: float = 60.0,
        nak_delay: float = 0.0,
        dead_letter_subject: Optional[str] = None,
        *,
        credentials: Optional[Credentials] = None,
        max_attempts: int = 3,
        operation_timeout: float = 5.0,
    ) -> None:
        self.stream, self.url = stream, url
        self.servers = [part.strip() for part in url.split(",") if part.strip()] or [url]
        self.subject = subject or stream
        self.consumer, self.decoder = consumer, decoder
        self.ack_wait, self.nak_delay = ack_wait, nak_delay
        self.dead_letter_subject = dead_letter_subject or f"{self.subject}.dead"
        self.dead_letter_stream = f"{stream}_dead"  # unless a stream captures the subject already
        self.max_attempts = max_attempts
        self.operation_timeout = operation_timeout
        self.lease_interval = ack_wait / 3
        self._connection = Connection(self.servers, credentials or Credentials(), operation_timeout)
        self.where = self._connection.where
        self._js: Any = None
        self._sub: Any = None
        self._unsettled: list[tuple[str, Message, str]] = []
        #: Acks sent and not yet answered by the server (see ack).
        self._acks: list[tuple[Message, concurrent.futures.Future[None]]] = []
        # The client reconnects by itself (natsconnect): a lost connection is
        # nothing to drop, only calls to refuse until it is back (_call); a
        # silent one, which the client would keep, is dropped (Connection.reconnect).
        self._guard = ConnectionGuard(f"NATS at {self.where}", UNAVAILABLE, operation_timeout, why=self._said,
                                      on_silent=self._connection.reconnect)

    @classmethod
    def from_env(cls, env: EnvReader) -> NatsEngine:
        values = read_settings(env, cls.settings)
        url = values["NATS_URL"]
        servers_of(url)
        jetstream.check_name("NATS_STREAM", values["NATS_STREAM"])
        jetstream.check_name("NATS_CONSUMER", values["NATS_CONSUMER"])
        subject = values["NATS_SUBJECT"] or values["NATS_STREAM"]
        jetstream.check_subject("NATS_SUBJECT", subject)
        dead = values["NATS_DEAD_LETTER_SUBJECT"]
        if dead is not None:
            jetstream.check_subject("NATS_DEAD_LETTER_SUBJECT", dead)
            if dead == subject:
                raise ConfigError("NATS_DEAD_LETTER_SUBJECT", dead, "expected a subject other than NATS_SUBJECT")
        return cls(
            values["NATS_STREAM"], url, subject, values["NATS_CONSUMER"], values["NATS_DECODER"],
            values["NATS_ACK_WAIT"], values["NATS_NAK_DELAY"], dead,
            credentials=Credentials.from_settings(values),
            max_attempts=env.integer("MINION_MAX_ATTEMPTS", 3, minimum=1),
            operation_timeout=values["NATS_OPERATION_TIMEOUT"],
        )

    def _said(self, exc: BaseException) -> str:
        """What `exc` says, with every server URL's credentials masked."""
        return self._connection.said(exc)

    def describe(self) -> str:
        return f"nats stream {self.stream} (consumer {self.consumer}, subject {self.subject}) at {self.where}"

    # -- the connection ------------------------------------------------------------

    def _call(self, coroutine: Coroutine[Any, Any, _T], doing: str, wait: float = 0.0) -> _T:
        """Run `coroutine` on the loop, within `wait` + NATS_OPERATION_TIMEOUT, through the guard: a lost
        or silent server is the ConnectionError the worker backs off on (kit.ConnectionGuard)."""
        loop = self._connection.loop
        if loop is None or self._connection.client is None:
            coroutine.close()
            raise ConnectionError(f"not connected to NATS at {self.where}")
        return loop.guarded(coroutine, self._guard, doing, wait + self.operation_timeout, wait,
                            ready=self._connection.check)

    def open(self) -> None:
        """Connect, and create the stream, the consumer and the dead-letter stream when missing."""
        if self._connection.client is None:
            self._connection.open(self._setup)

    async def _setup(self, client: Any) -> None:
        self._js = client.jetstream(timeout=self.operation_timeout)
        try:
            await jetstream.ensure_stream(self._js, self.stream, self.subject, self._said)
            ack_wait = await jetstream.ensure_consumer(self._js, self.stream, self.consumer, self.subject,
                                                       self.ack_wait, self.max_attempts, self._said)
            self.dead_letter_stream = await jetstream.ensure_dead_letter_stream(
                self._js, self.dead_letter_subject, self.dead_letter_stream, self._said)
        except (nats.js.errors.ServiceUnavailableError, nats.errors.NoRespondersError):
            raise ConfigError("NATS_URL", self.where, "JetStream is not enabled on this server (nats-server -js)") \
                from None
        if ack_wait:  # the consumer's own
            self.ack_wait, self.lease_interval = ack_wait, ack_wait / 3
        self._sub = await self._js.pull_subscribe_bind(self.consumer, self.stream)

    # -- taking ----------------------------------------------------------------

    def next(self, timeout: float) -> Optional[Message]:
        self._send_unsettled()
        wait = max(timeout, _FETCH_MIN)
        received = self._call(self._fetch(wait), "fetch", wait)
        return None if received is None else self._message(received)

    async def _fetch(self, wait: float) -> Any:
        try:
            [received] = await self._sub.fetch(1, timeout=wait)
        except (nats.errors.TimeoutError, asyncio.TimeoutError):
            return None
        return received

    def _message(self, received: Any) -> Message:
        headers = received.headers or {}
        metadata = received.metadata
        attempt = parse_count(headers.get(BASE)) + max(int(metadata.num_delivered or 1), 1)
        origin = headers.get(ORIGIN)
        key = raw_text(origin)[:200] if origin else f"{self.stream}:{metadata.sequence.stream}"
        return decode_into(Message(key, None, attempt, received), received.data, self.decoder)

    def _counts(self) -> tuple[int, int]:
        """The consumer's pending and unacknowledged messages, once what is owed is sent."""
        self._collect_acks(wait=True)
        self._send_unsettled()
        info = self._call(self._js.consumer_info(self.stream, self.consumer), "consumer info")
        return int(info.num_pending or 0), int(info.num_ack_pending or 0)

    def drained(self) -> bool:
        return self._counts() == (0, 0)

    def remaining(self) -> Optional[int]:
        return sum(self._counts())

    # -- settling ----------------------------------------------------------------

    def _settle(self, kind: str, message: Message, reason: str = "") -> None:
        """Owe a settlement, then send all that is owed: what fails now is sent again later."""
        self._unsettled.append((kind, message, reason))
        self._send_unsettled()

    def _send_unsettled(self) -> None:
        self._collect_acks()
        while self._unsettled:
            kind, message, reason = self._unsettled[0]
            try:
                self._call(self._settlement(kind, message, reason), kind)
            except (nats.errors.Error, nats.js.errors.Error) as exc:  # refused for good (the stream is gone)
                log.warning("%s: NATS refused its %s (%s): JetStream delivers it again", message.id, kind,
                            self._said(exc))
            self._unsettled.pop(0)

    async def _settlement(self, kind: str, message: Message, reason: str) -> None:
        received = message.handle
        if kind == "ack":
            await self._reply(received, b"+ACK")
        elif kind == "nack":
            delay = b" " + json.dumps({"delay": int(self.nak_delay * 1e9)}).encode() if self.nak_delay else b""
            await self._reply(received, b"-NAK" + delay)
        elif kind == "release":
            ours = {BASE: str(max(message.attempt - 1, 0)), ORIGIN: message.id}
            headers = _fitting(received.data or b"", self._max_payload(), {**_copied_headers(received.headers), **ours},
                               ours)
            await self._js.publish(self.subject, received.data, headers=headers)
            await self._reply(received, b"+ACK")
        elif kind == "fail":
            await self._dead_letter(message, reason)
            await self._reply(received, b"+TERM")

    def _max_payload(self) -> int:
        client = self._connection.client
        return int(client.max_payload) if client is not None else 1024 * 1024

    async def _reply(self, received: Any, verb: bytes) -> None:
        """Send an ack verb and wait for JetStream to take it (a double ack)."""
        await self._connection.client.request(received.reply, verb, timeout=self.operation_timeout)

    async def _dead_letter(self, message: Message, reason: str) -> None:
        received = message.handle
        reason = _clean(reason)
        copied = {k: v for k, v in _copied_headers(received.headers).items() if k not in (BASE, ORIGIN)}
        ours = {**dead_letter_metadata(reason, message.attempt, self.stream),
                "minion_sequence": str(received.metadata.sequence.stream), ORIGIN: message.id}
        headers = _fitting(received.data or b"", self._max_payload(), {**copied, **ours}, ours)
        if headers is None:
            log.warning("%s: its body leaves no room under the server's max payload for the dead letter's "
                        "headers: dead-lettered without them (reason: %s)", message.id, reason)
        try:
            await self._js.publish(self.dead_letter_subject, received.data, headers=headers)
        except nats.errors.NoRespondersError:  # the dead-letter stream was deleted since
            self.dead_letter_stream = await jetstream.ensure_dead_letter_stream(
                self._js, self.dead_letter_subject, self.dead_letter_stream, self._said)
            await self._js.publish(self.dead_letter_subject, received.data, headers=headers)

    def ack(self, message: Message) -> None:
        """Sent at once, its answer collected by a later verb: the minion does not wait a round trip
        between two runs. One the server refused or left unanswered is sent again, as any settlement."""
        self._collect_acks()
        loop = self._connection.loop
        if self._unsettled or loop is None or not self._connection.connected:
            self._settle("ack", message)  # owed first, after those owed already: kept whatever fails now
            return
        future = loop.submit(self._reply(message.handle, b"+ACK"))
        self._acks.append((message, future))

    def _collect_acks(self, wait: bool = False) -> None:
        """Forget the acks the server took; owe again those it refused (or, with `wait`, left unanswered)."""
        if wait and self._acks:
            concurrent.futures.wait([future for _, future in self._acks], timeout=self.operation_timeout)
        pending = []
        for message, future in self._acks:
            if not future.done() and not wait:
                pending.append((message, future))
            elif not future.done() or future.cancelled() or future.exception() is not None:
                future.cancel()
                self._unsettled.append(("ack", message, ""))
        self._acks = pending

    def nack(self, message: Message) -> None:
        self._settle("nack", message)

    def release(self, message: Message) -> None:
        self._settle("release", message)

    def fail(self, message: Message, reason: str) -> None:
        self._settle("fail", message, reason)

    def extend(self, messages: list[Message]) -> None:
        if not messages or not self._connection.connected:
            return  # lost: JetStream redelivers after the ack wait if it stays lost

        async def in_progress() -> None:
            await asyncio.gather(*(self._reply(m.handle, b"+WPI") for m in messages))

        self._call(in_progress(), "in progress")

    # -- filling and the dead letters -----------------------------------------

    def push(self, params: list[Any]) -> str:
        self.open()
        bodies = [encode(param, self.decoder)[0].encode("utf-8") for param in params]

        async def publish(batch: list[bytes]) -> None:
            await asyncio.gather(*(self._js.publish(self.subject, body) for body in batch))

        done = 0
        try:
            for start in range(0, len(bodies), 256):
                batch = bodies[start : start + 256]
                self._call(publish(batch), "publish", wait=self.operation_timeout)
                done += len(batch)
        except (ConnectionError, nats.errors.Error, nats.js.errors.Error) as exc:
            raise QueueUnreachable(f"NATS at {self.where} did not take parameter {done + 1} "
                                   f"({done} queued before it): {self._said(exc)}") from None
        return self.describe()

    def _dead_messages(self) -> list[Any]:
        """Every message of the dead-letter subject, oldest first."""
        self.open()
        read = jetstream.stored(self._js, self.dead_letter_stream, self.dead_letter_subject)
        try:
            return self._call(read, "read the dead letters", wait=self.operation_timeout)
        except (ConnectionError, nats.errors.Error, nats.js.errors.Error) as exc:
            where = f"{self.dead_letter_subject} at {self.where}"
            raise QueueUnreachable(f"cannot read {where}: {self._said(exc)}") from None

    def dead_letters(self) -> list[DeadLetter]:
        return [DeadLetter(raw_text(stored.data or b""), raw_text((stored.headers or {}).get(DEAD_REASON, "")))
                for stored in self._dead_messages()]

    def retry_failed(self) -> int:
        count = 0
        for stored in self._dead_messages():

            async def move(stored: Any = stored) -> None:  # published first: never lost, at worst twice
                await self._js.publish(self.subject, stored.data or b"")
                await self._js.delete_msg(self.dead_letter_stream, stored.seq)

            try:
                self._call(move(), "requeue a dead letter")
            except (ConnectionError, nats.errors.Error, nats.js.errors.Error) as exc:
                raise QueueUnreachable(f"NATS at {self.where} did not take a failed parameter back "
                                       f"({count} queued again before it): {self._said(exc)}") from None
            count += 1
        return count

    def close(self) -> None:
        """Send what is owed (within NATS_OPERATION_TIMEOUT), then close the client and its loop thread."""
        if self._connection.loop is None:
            return
        try:
            self._collect_acks(wait=True)
            if self._connection.client is not None and self._unsettled:
                try:
                    self._send_unsettled()
                except ConnectionError as exc:
                    log.warning("NATS at %s: %d settlement(s) not sent (%s): their messages come back after "
                                "the ack wait", self.where, len(self._unsettled), exc)
        finally:
            self._js = self._sub = None
            self._connection.close()
