"""NATS JetStream: a stream of parameters, and one durable pull consumer shared by every minion.

What it is
    Parameters are the messages of a JetStream stream (work-queue retention
    when minionize creates it; an existing limits stream does too). Every
    minion pulls from one durable pull consumer, one message per free slot
    (`fetch(1)`): JetStream hands each message to one of them and counts
    its deliveries. `open()` and `minion-push` create the stream (file
    storage), the consumer and the dead-letter stream when missing, so
    either may come first. nats-py is asyncio only: each engine runs it on
    a private event loop thread of its own, behind its synchronous verbs
    (about 0.1 ms per call; bench/RESULTS.md). Tested on nats-server 2.9.

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
    of the next one fail without being tried (kit.ConnectionGuard).

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
import contextlib
import json
import logging
import os
import re
import socket
import ssl
import threading
import time
from collections.abc import Coroutine
from typing import Any, Optional, TypeVar
from urllib.parse import urlsplit

import nats
import nats.errors
import nats.js.errors
from nats.js.api import AckPolicy, ConsumerConfig, RetentionPolicy, StorageType, StreamConfig

from ..config import EnvReader
from ..errors import ConfigError, QueueUnreachable
from ..message import Message
from ..secrets import mask_url, scrub
from .base import DECODERS, DeadLetter, Engine, decode_into, encode, parse_count, raw_text
from .kit import DEAD_REASON, ConnectionGuard, Setting, dead_letter_metadata, read_settings

log = logging.getLogger("minionize")

DEFAULT_URL = "nats://localhost:4222"
SCHEMES = ("nats", "tls", "ws", "wss")
#: Headers of a released copy: the attempts the message had, and the ID of the first copy.
BASE = "minion_attempt_base"
ORIGIN = "minion_id"
_HEADER_MAX = 1024
#: The shortest pull request (the worker asks for 0 s when it only looks).
_FETCH_MIN = 0.05
#: A stream or consumer name: no whitespace, dots, wildcards or path separators.
_NAME = re.compile(r"[^\s.*>/\\]{1,255}")
_T = TypeVar("_T")
#: The client's errors of a server that is away or does not answer: the connection
#: is being reopened (by the client), or a call went unanswered (TimeoutError:
#: _Loop.run's, past NATS_OPERATION_TIMEOUT; asyncio's and nats-py's, of a request).
_UNAVAILABLE: tuple[type[BaseException], ...] = (
    TimeoutError, asyncio.TimeoutError, nats.errors.TimeoutError, nats.errors.ConnectionClosedError,
    nats.errors.ConnectionReconnectingError, nats.errors.NoRespondersError, nats.errors.StaleConnectionError,
    nats.errors.OutboundBufferLimitError, nats.js.errors.ServiceUnavailableError, OSError,
)
#: The TLS alerts of a server that wants another client certificate (OpenSSL's names).
_CLIENT_CERT_REFUSED = frozenset({"SSLV3_ALERT_BAD_CERTIFICATE", "TLSV13_ALERT_CERTIFICATE_REQUIRED",
                                  "SSLV3_ALERT_CERTIFICATE_UNKNOWN", "TLSV1_ALERT_UNKNOWN_CA"})


def _clean(text: str) -> str:
    """`text` fit for a header value: one line, at most _HEADER_MAX bytes."""
    text = " ".join(text.split())
    data = text.encode("utf-8")
    return text if len(data) <= _HEADER_MAX else data[: _HEADER_MAX - 3].decode("utf-8", "ignore") + "..."


def _check_subject(variable: str, subject: str) -> None:
    tokens = subject.split(".")
    if any(not token or any(c.isspace() for c in token) or token in ("*", ">") for token in tokens):
        raise ConfigError(variable, subject, "expected a subject without wildcards, e.g. jobs or jobs.params")


def _check_url(url: str) -> list[str]:
    accepted = "expected nats://[user:password@]host[:port] or tls://..., comma-separated for a cluster"
    servers = [part.strip() for part in url.split(",") if part.strip()]
    for server in servers or [url]:
        try:
            parts = urlsplit(server)
            parts.port  # noqa: B018 - raises ValueError on a bad port
        except ValueError:
            raise ConfigError("NATS_URL", ",".join(mask_url(s) for s in servers), accepted) from None
        if parts.scheme not in SCHEMES or not parts.hostname:
            raise ConfigError("NATS_URL", ",".join(mask_url(s) for s in servers), accepted)
    return servers


def _subject_matches(pattern: str, subject: str) -> bool:
    """Whether the stream subject `pattern` (with * and > wildcards) captures `subject`."""
    wanted, tokens = pattern.split("."), subject.split(".")
    for index, token in enumerate(wanted):
        if token == ">":
            return len(tokens) > index
        if index >= len(tokens) or token not in ("*", tokens[index]):
            return False
    return len(wanted) == len(tokens)


def _why(exc: BaseException) -> str:
    text = str(exc).removeprefix("nats: ").strip()
    return text or type(exc).__name__


class _QuietTlsUpgrade(logging.Filter):
    """Drop asyncio's warning at the end of each connection upgraded to TLS by start_tls (as nats-py does):
    its stream protocol, made before the upgrade, asks to stay half open, which TLS ignores. It means nothing."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.msg != "returning true from eof_received() has no effect when using ssl"


class _Loop:
    """A private asyncio event loop on a thread of its own: the engine's verbs run their coroutines there."""

    def __init__(self) -> None:
        asyncio_log = logging.getLogger("asyncio")
        if not any(isinstance(kept, _QuietTlsUpgrade) for kept in asyncio_log.filters):
            asyncio_log.addFilter(_QuietTlsUpgrade())
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="minionize-nats", daemon=True)
        self.thread.start()

    def run(self, coroutine: Coroutine[Any, Any, _T], timeout: float) -> _T:
        """The coroutine's result; TimeoutError (and the coroutine cancelled) past `timeout`."""
        future = asyncio.run_coroutine_threadsafe(coroutine, self.loop)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise TimeoutError(f"no answer within {timeout:g}s") from None

    def stop(self) -> None:
        """Cancel what still runs, stop the loop, join its thread and close the loop."""

        async def cancel_all() -> None:
            tasks = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.wait(tasks, timeout=1) if tasks else None

        if self.loop.is_running():
            with contextlib.suppress(concurrent.futures.TimeoutError, RuntimeError):
                asyncio.run_coroutine_threadsafe(cancel_all(), self.loop).result(2)
            self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)
        if not self.thread.is_alive():
            self.loop.close()


class NatsEngine(Engine):
    name = "nats"
    connection_errors = _UNAVAILABLE
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
        user: Optional[str] = None,
        password: Optional[str] = None,
        token: Optional[str] = None,
        creds: Optional[str] = None,
        tls_ca_file: Optional[str] = None,
        tls_cert_file: Optional[str] = None,
        tls_key_file: Optional[str] = None,
        max_attempts: int = 3,
        operation_timeout: float = 5.0,
    ) -> None:
        self.stream, self.url = stream, url
        self.servers = [part.strip() for part in url.split(",") if part.strip()] or [url]
        self.where = ",".join(mask_url(server) for server in self.servers)
        self.subject = subject or stream
        self.consumer, self.decoder = consumer, decoder
        self.ack_wait, self.nak_delay = ack_wait, nak_delay
        self.dead_letter_subject = dead_letter_subject or f"{self.subject}.dead"
        self.dead_letter_stream = f"{stream}_dead"  # unless a stream captures the subject already
        self._user, self._password, self._token, self._creds = user, password, token, creds
        self._tls = (tls_ca_file, tls_cert_file, tls_key_file)
        self.max_attempts = max_attempts
        self.operation_timeout = operation_timeout
        self.lease_interval = ack_wait / 3
        self._loop: Optional[_Loop] = None
        self._nc: Any = None  # nats.aio.client.Client
        self._js: Any = None
        self._sub: Any = None
        self._unsettled: list[tuple[str, Message, str]] = []
        #: Acks sent and not yet answered by the server (see ack).
        self._acks: list[tuple[Message, concurrent.futures.Future[None]]] = []
        # The client reconnects by itself (_connect): a lost connection is
        # nothing to drop, only calls to refuse until it is back (_call).
        self._guard = ConnectionGuard(f"NATS at {self.where}", _UNAVAILABLE, operation_timeout, why=self._said)
        self._last_error: Optional[BaseException] = None
        self._auth_error: Optional[BaseException] = None
        self._lost = False
        self._closing = False

    @classmethod
    def from_env(cls, env: EnvReader) -> NatsEngine:
        values = read_settings(env, cls.settings)
        url = values["NATS_URL"]
        _check_url(url)
        for variable in ("NATS_STREAM", "NATS_CONSUMER"):
            if not _NAME.fullmatch(values[variable]):
                raise ConfigError(variable, values[variable], "expected a name without spaces, dots, *, > or slashes")
        subject = values["NATS_SUBJECT"] or values["NATS_STREAM"]
        _check_subject("NATS_SUBJECT", subject)
        dead = values["NATS_DEAD_LETTER_SUBJECT"]
        if dead is not None:
            _check_subject("NATS_DEAD_LETTER_SUBJECT", dead)
            if dead == subject:
                raise ConfigError("NATS_DEAD_LETTER_SUBJECT", dead, "expected a subject other than NATS_SUBJECT")
        user, password, token = values["NATS_USER"], values["NATS_PASSWORD"], values["NATS_TOKEN"]
        if password is not None and user is None:
            raise ConfigError("NATS_USER", None, "needed with NATS_PASSWORD")
        if token is not None and user is not None:
            raise ConfigError("NATS_TOKEN", "***", "expected either NATS_TOKEN or NATS_USER, not both")
        if values["NATS_TLS_KEY_FILE"] is not None and values["NATS_TLS_CERT_FILE"] is None:
            raise ConfigError("NATS_TLS_CERT_FILE", None, "needed with NATS_TLS_KEY_FILE")
        return cls(
            values["NATS_STREAM"], url, subject, values["NATS_CONSUMER"], values["NATS_DECODER"],
            values["NATS_ACK_WAIT"], values["NATS_NAK_DELAY"], dead,
            user=user, password=password, token=token, creds=values["NATS_CREDS"],
            tls_ca_file=values["NATS_TLS_CA_FILE"], tls_cert_file=values["NATS_TLS_CERT_FILE"],
            tls_key_file=values["NATS_TLS_KEY_FILE"],
            max_attempts=env.integer("MINION_MAX_ATTEMPTS", 3, minimum=1),
            operation_timeout=values["NATS_OPERATION_TIMEOUT"],
        )

    def _said(self, exc: BaseException) -> str:
        """What `exc` says, with every server URL's credentials masked."""
        text = _why(exc)
        for server in self.servers:
            text = scrub(text, server)
        return text

    def describe(self) -> str:
        return f"nats stream {self.stream} (consumer {self.consumer}, subject {self.subject}) at {self.where}"

    # -- the loop thread and the connection ----------------------------------

    def _call(self, coroutine: Coroutine[Any, Any, _T], doing: str, wait: float = 0.0) -> _T:
        """Run `coroutine` on the loop, within `wait` + NATS_OPERATION_TIMEOUT, through the guard: a lost
        or silent server is the ConnectionError the worker backs off on (kit.ConnectionGuard)."""
        sent = False
        try:
            if self._loop is None or self._nc is None:
                raise ConnectionError(f"not connected to NATS at {self.where}")
            with self._guard(doing, wait):
                if not self._nc.is_connected:  # the client reconnects by itself: nothing can be answered meanwhile
                    raise nats.errors.ConnectionReconnectingError
                sent = True
                return self._loop.run(coroutine, wait + self.operation_timeout)
        finally:
            if not sent:  # refused before the loop had it: never awaited
                coroutine.close()

    def _ssl_context(self) -> Optional[ssl.SSLContext]:
        ca, cert, key = self._tls
        tls_url = any(server.startswith(("tls://", "wss://")) for server in self.servers)
        if not (ca or cert or tls_url):
            return None
        try:
            context = ssl.create_default_context(cafile=ca)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError("NATS_TLS_CA_FILE", ca, f"not a CA bundle that can be read ({_why(exc)})") from None
        if cert:
            try:
                context.load_cert_chain(cert, key)
            except (OSError, ssl.SSLError) as exc:
                # The key file may be the secret: name it, say nothing of its content.
                raise ConfigError("NATS_TLS_CERT_FILE", cert, f"cannot load it with its key ({type(exc).__name__})") \
                    from None
        return context

    def _options(self) -> dict[str, Any]:
        options: dict[str, Any] = {}
        if self._user is not None:
            options.update(user=self._user, password=self._password or "")
        if self._token is not None:
            options["token"] = self._token
        if self._creds is not None:
            if not os.path.isfile(self._creds):
                raise ConfigError("NATS_CREDS", self._creds, "expected an existing credentials file")
            try:
                import nkeys  # noqa: F401 - nats-py signs with it
            except ImportError:
                raise ConfigError("NATS_CREDS", self._creds,
                                  "needs the Python package nkeys: pip install 'minionize[nats]'") from None
            options["user_credentials"] = self._creds
        context = self._ssl_context()
        if context is not None:
            options["tls"] = context
        return options

    def _refused_variable(self) -> str:
        if self._creds is not None:
            return "NATS_CREDS"
        if self._token is not None:
            return "NATS_TOKEN"
        return "NATS_PASSWORD" if self._user is not None else "NATS_URL"

    async def _on_error(self, exc: Exception) -> None:
        self._last_error = exc
        if isinstance(exc, nats.errors.Error) and "authorization" in str(exc).lower():
            self._auth_error = exc
        log.debug("nats client: %s", self._said(exc))

    async def _on_disconnected(self) -> None:
        if self._js is not None and not self._lost and not self._closing:
            self._lost = True
            log.warning("lost the connection to NATS at %s: reconnecting", self.where)

    async def _on_reconnected(self) -> None:
        if self._lost:
            self._lost = False
            log.warning("reconnected to NATS at %s", self.where)

    async def _connect(self, options: dict[str, Any]) -> Any:
        """Connect, giving up at once on refused credentials (the client would try forever)."""
        connecting = asyncio.ensure_future(nats.connect(
            servers=self.servers, name=f"minionize {socket.gethostname()}:{os.getpid()}",
            connect_timeout=self.operation_timeout, allow_reconnect=True, max_reconnect_attempts=-1,
            reconnect_time_wait=1, ping_interval=20, max_outstanding_pings=3,
            error_cb=self._on_error, disconnected_cb=self._on_disconnected, reconnected_cb=self._on_reconnected,
            **options,
        ))
        while not connecting.done():
            await asyncio.wait([connecting], timeout=0.05)
            if self._auth_error is not None and not connecting.done():
                connecting.cancel()
                raise ConfigError(self._refused_variable(), self._shown_secret(),
                                  f"NATS refused the credentials ({self._said(self._auth_error)})")
        return connecting.result()

    def _refusal(self, exc: BaseException) -> str:
        """Why connecting failed; a failed TLS handshake names the variable that decides it."""
        ca, cert, _ = self._tls
        if isinstance(exc, ssl.SSLCertVerificationError):
            trusted = f"NATS_TLS_CA_FILE ({ca})" if ca else "the system's CAs (NATS_TLS_CA_FILE is not set)"
            return f"the server's certificate is not verified by {trusted}: {exc.verify_message}"
        if isinstance(exc, ssl.SSLError) and exc.reason in _CLIENT_CERT_REFUSED:
            refused = f"refused the client certificate NATS_TLS_CERT_FILE ({cert})" if cert else \
                "wants a client certificate (NATS_TLS_CERT_FILE and NATS_TLS_KEY_FILE are not set)"
            return f"the server {refused}: {exc.reason.lower().replace('_', ' ')}"
        return self._said(exc)

    def _shown_secret(self) -> str:
        return self.where if self._refused_variable() == "NATS_URL" else "***"

    def open(self) -> None:
        """Connect, and create the stream, the consumer and the dead-letter stream when missing."""
        if self._nc is not None:
            return
        options = self._options()
        self._loop = _Loop()
        started = time.monotonic()
        try:
            self._nc = self._loop.run(self._connect(options), self.operation_timeout)
            left = max(0.5, self.operation_timeout - (time.monotonic() - started))
            self._loop.run(self._setup(), left + self.operation_timeout)
        except ConfigError:
            self.close()
            raise
        except TimeoutError:
            late = f"no answer within {self.operation_timeout:g}s"
            why = self._refusal(self._last_error) if self._last_error else late
            self.close()
            raise QueueUnreachable(f"cannot reach NATS at {self.where}: {why}") from None
        except (nats.errors.Error, nats.js.errors.Error, OSError) as exc:
            self.close()
            raise QueueUnreachable(f"cannot reach NATS at {self.where}: {self._refusal(exc)}") from None
        except BaseException:  # a bug, a KeyboardInterrupt: the loop thread must not outlive the engine
            self.close()
            raise

    async def _setup(self) -> None:
        self._js = self._nc.jetstream(timeout=self.operation_timeout)
        try:
            await self._ensure_stream()
            await self._ensure_consumer()
            await self._ensure_dead_letter_stream()
        except nats.js.errors.ServiceUnavailableError:
            raise ConfigError("NATS_URL", self.where, "JetStream is not enabled on this server (nats-server -js)") \
                from None
        except nats.errors.NoRespondersError:
            raise ConfigError("NATS_URL", self.where, "JetStream is not enabled on this server (nats-server -js)") \
                from None
        self._sub = await self._js.pull_subscribe_bind(self.consumer, self.stream)

    async def _ensure_stream(self) -> None:
        try:
            info = await self._js.stream_info(self.stream)
        except nats.js.errors.NotFoundError:
            config = StreamConfig(name=self.stream, subjects=[self.subject], retention=RetentionPolicy.WORK_QUEUE,
                                  storage=StorageType.FILE)
            try:
                info = await self._js.add_stream(config)
                log.info("created stream %s (subject %s) at %s", self.stream, self.subject, self.where)
            except nats.js.errors.BadRequestError as exc:
                raise ConfigError("NATS_SUBJECT", self.subject, f"JetStream refused the stream ({self._said(exc)})") \
                    from None
        subjects = info.config.subjects or []
        if not any(_subject_matches(pattern, self.subject) for pattern in subjects):
            raise ConfigError("NATS_SUBJECT", self.subject,
                              f"the stream {self.stream} does not capture it (its subjects: {', '.join(subjects)})")

    async def _ensure_consumer(self) -> None:
        try:
            info = await self._js.consumer_info(self.stream, self.consumer)
        except nats.js.errors.NotFoundError:
            config = ConsumerConfig(
                durable_name=self.consumer, filter_subject=self.subject, ack_policy=AckPolicy.EXPLICIT,
                ack_wait=self.ack_wait, max_deliver=self.max_attempts + 1,
            )
            try:
                info = await self._js.add_consumer(self.stream, config)
            except nats.js.errors.BadRequestError as exc:
                why = f"JetStream refused the consumer ({self._said(exc)})"
                raise ConfigError("NATS_CONSUMER", self.consumer, why) from None
            log.info("created consumer %s of stream %s", self.consumer, self.stream)
        config = info.config
        if config.deliver_subject:
            raise ConfigError("NATS_CONSUMER", self.consumer, "is a push consumer: minionize needs a pull consumer")
        if config.ack_policy != AckPolicy.EXPLICIT:
            raise ConfigError("NATS_CONSUMER", self.consumer, "does not ack explicitly: minionize needs AckExplicit")
        if config.ack_wait:
            self.ack_wait = float(config.ack_wait)
            self.lease_interval = self.ack_wait / 3
        limit = config.max_deliver or -1
        if 0 < limit < self.max_attempts + 1:
            log.warning(
                "consumer %s of %s delivers a message %d times at most: a parameter whose minions die at "
                "MINION_MAX_ATTEMPTS=%d is then never set aside; raise it (nats consumer edit %s %s "
                "--max-deliver=%d), or create it with the same MINION_MAX_ATTEMPTS",
                self.consumer, self.stream, limit, self.max_attempts, self.stream, self.consumer,
                self.max_attempts + 1,
            )

    async def _ensure_dead_letter_stream(self) -> None:
        try:
            self.dead_letter_stream = await self._js.find_stream_name_by_subject(self.dead_letter_subject)
            return
        except nats.js.errors.NotFoundError:
            pass
        config = StreamConfig(name=self.dead_letter_stream, subjects=[self.dead_letter_subject],
                              storage=StorageType.FILE)
        try:
            await self._js.add_stream(config)
        except nats.js.errors.BadRequestError as exc:
            raise ConfigError("NATS_DEAD_LETTER_SUBJECT", self.dead_letter_subject,
                              f"JetStream refused the stream {self.dead_letter_stream} ({self._said(exc)})") from None

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

    def drained(self) -> bool:
        self._collect_acks(wait=True)
        self._send_unsettled()
        info = self._call(self._js.consumer_info(self.stream, self.consumer), "consumer info")
        return not info.num_pending and not info.num_ack_pending

    def remaining(self) -> Optional[int]:
        self._collect_acks(wait=True)
        self._send_unsettled()
        info = self._call(self._js.consumer_info(self.stream, self.consumer), "consumer info")
        return int(info.num_pending or 0) + int(info.num_ack_pending or 0)

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
            headers = {k: v for k, v in (received.headers or {}).items() if k.lower() != "nats-msg-id"}
            headers.update({BASE: str(max(message.attempt - 1, 0)), ORIGIN: message.id})
            await self._js.publish(self.subject, received.data, headers=headers)
            await self._reply(received, b"+ACK")
        elif kind == "fail":
            await self._dead_letter(message, reason)
            await self._reply(received, b"+TERM")

    async def _reply(self, received: Any, verb: bytes) -> None:
        """Send an ack verb and wait for JetStream to take it (a double ack)."""
        await self._nc.request(received.reply, verb, timeout=self.operation_timeout)

    async def _dead_letter(self, message: Message, reason: str) -> None:
        received = message.handle
        headers = {k: v for k, v in (received.headers or {}).items()
                   if k not in (BASE, ORIGIN) and k.lower() != "nats-msg-id"}
        headers.update(dead_letter_metadata(_clean(reason), message.attempt, self.stream))
        headers.update({"minion_sequence": str(received.metadata.sequence.stream), ORIGIN: message.id})
        try:
            await self._js.publish(self.dead_letter_subject, received.data, headers=headers)
        except nats.errors.NoRespondersError:  # the dead-letter stream was deleted since
            await self._ensure_dead_letter_stream()
            await self._js.publish(self.dead_letter_subject, received.data, headers=headers)

    def ack(self, message: Message) -> None:
        """Sent at once, its answer collected by a later verb: the minion does not wait a round trip
        between two runs. One the server refused or left unanswered is sent again, as any settlement."""
        self._collect_acks()
        if self._unsettled or self._loop is None or self._nc is None or not self._nc.is_connected:
            self._settle("ack", message)  # owed first, after those owed already: kept whatever fails now
            return
        future = asyncio.run_coroutine_threadsafe(self._reply(message.handle, b"+ACK"), self._loop.loop)
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
        if not messages or self._nc is None or not self._nc.is_connected:
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

        async def read() -> list[Any]:
            found: list[Any] = []
            sequence = 1
            while True:
                try:
                    stored = await self._js.get_msg(self.dead_letter_stream, seq=sequence, next=True,
                                                    subject=self.dead_letter_subject)
                except nats.js.errors.NotFoundError:
                    return found
                found.append(stored)
                sequence = stored.seq + 1

        try:
            return self._call(read(), "read the dead letters", wait=self.operation_timeout)
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
        loop, client = self._loop, self._nc
        if loop is None:
            return
        self._closing = True
        try:
            self._collect_acks(wait=True)
            if client is not None and self._unsettled:
                try:
                    self._send_unsettled()
                except ConnectionError as exc:
                    log.warning("NATS at %s: %d settlement(s) not sent (%s): their messages come back after "
                                "the ack wait", self.where, len(self._unsettled), exc)
            if client is not None and not client.is_closed:
                with contextlib.suppress(TimeoutError, nats.errors.Error, OSError):
                    loop.run(client.close(), self.operation_timeout)
        finally:
            self._nc = self._js = self._sub = None
            self._loop = None
            self._closing = False
            loop.stop()
