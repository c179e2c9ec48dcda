"""How the nats engine reaches its server: the URL, the credentials and TLS, and one client from connect to close.

The variables themselves are declared and documented in nats.py. Here
they become nats-py's connect options; a refusal becomes one line that
names the variable to look at and never shows a secret (refused
credentials a ConfigError at once, since the client would try them
forever; a failed TLS handshake a QueueUnreachable naming NATS_TLS_CA_FILE
or NATS_TLS_CERT_FILE). The client then reconnects by itself, once a
second, forever: a loss is logged once, and so is the return.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import socket
import ssl
import time
from collections.abc import Callable, Coroutine
from typing import Any, Optional
from urllib.parse import urlsplit

import nats
import nats.errors
import nats.js.errors

from ..errors import ConfigError, QueueUnreachable
from ..secrets import mask_url, scrub
from .aioloop import LoopThread

log = logging.getLogger("minionize")

SCHEMES = ("nats", "tls", "ws", "wss")
#: The client's errors of a server that is away or does not answer (the nats engine's
#: connection_errors): the client is reopening the connection, or a call went
#: unanswered (TimeoutError: LoopThread.run's past NATS_OPERATION_TIMEOUT; asyncio's
#: and nats-py's, of a request).
UNAVAILABLE: tuple[type[BaseException], ...] = (
    TimeoutError, asyncio.TimeoutError, nats.errors.TimeoutError, nats.errors.ConnectionClosedError,
    nats.errors.ConnectionReconnectingError, nats.errors.NoRespondersError, nats.errors.StaleConnectionError,
    nats.errors.OutboundBufferLimitError, nats.js.errors.ServiceUnavailableError, OSError,
)
#: The TLS alerts of a server that wants another client certificate (OpenSSL's names).
_CLIENT_CERT_REFUSED = frozenset({"SSLV3_ALERT_BAD_CERTIFICATE", "TLSV13_ALERT_CERTIFICATE_REQUIRED",
                                  "SSLV3_ALERT_CERTIFICATE_UNKNOWN", "TLSV1_ALERT_UNKNOWN_CA"})


def servers_of(url: str) -> list[str]:
    """The server URLs of NATS_URL; ConfigError (credentials masked) unless each is one nats-py takes."""
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


def why(exc: BaseException) -> str:
    """What a nats-py error says, without its "nats: " prefix."""
    text = str(exc).removeprefix("nats: ").strip()
    return text or type(exc).__name__


@dataclasses.dataclass(frozen=True)
class Credentials:
    """Who the engine is to the server, and which server it trusts (the secrets are kept out of repr)."""

    user: Optional[str] = dataclasses.field(default=None, repr=False)
    password: Optional[str] = dataclasses.field(default=None, repr=False)
    token: Optional[str] = dataclasses.field(default=None, repr=False)
    creds: Optional[str] = None
    ca_file: Optional[str] = None
    cert_file: Optional[str] = None
    key_file: Optional[str] = None

    @classmethod
    def from_settings(cls, values: dict[str, Any]) -> Credentials:
        """From the typed NATS_* settings; ConfigError for a combination that cannot work."""
        user, password, token = values["NATS_USER"], values["NATS_PASSWORD"], values["NATS_TOKEN"]
        if password is not None and user is None:
            raise ConfigError("NATS_USER", None, "needed with NATS_PASSWORD")
        if token is not None and user is not None:
            raise ConfigError("NATS_TOKEN", "***", "expected either NATS_TOKEN or NATS_USER, not both")
        if values["NATS_TLS_KEY_FILE"] is not None and values["NATS_TLS_CERT_FILE"] is None:
            raise ConfigError("NATS_TLS_CERT_FILE", None, "needed with NATS_TLS_KEY_FILE")
        return cls(user, password, token, values["NATS_CREDS"], values["NATS_TLS_CA_FILE"],
                   values["NATS_TLS_CERT_FILE"], values["NATS_TLS_KEY_FILE"])

    def options(self, servers: list[str]) -> dict[str, Any]:
        """nats-py's connect options; ConfigError for a file that cannot be used."""
        options: dict[str, Any] = {}
        if self.user is not None:
            options.update(user=self.user, password=self.password or "")
        if self.token is not None:
            options["token"] = self.token
        if self.creds is not None:
            if not os.path.isfile(self.creds):
                raise ConfigError("NATS_CREDS", self.creds, "expected an existing credentials file")
            try:
                import nkeys  # noqa: F401 - nats-py signs with it
            except ImportError:
                raise ConfigError("NATS_CREDS", self.creds,
                                  "needs the Python package nkeys: pip install 'minionize[nats]'") from None
            options["user_credentials"] = self.creds
        context = self._ssl_context(servers)
        if context is not None:
            options["tls"] = context
        return options

    def _ssl_context(self, servers: list[str]) -> Optional[ssl.SSLContext]:
        tls_url = any(server.startswith(("tls://", "wss://")) for server in servers)
        if not (self.ca_file or self.cert_file or tls_url):
            return None
        try:
            context = ssl.create_default_context(cafile=self.ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError("NATS_TLS_CA_FILE", self.ca_file, f"not a CA bundle that can be read ({why(exc)})") \
                from None
        if self.cert_file:
            try:
                context.load_cert_chain(self.cert_file, self.key_file)
            except (OSError, ssl.SSLError) as exc:
                # The key file may be the secret: name it, say nothing of its content.
                raise ConfigError("NATS_TLS_CERT_FILE", self.cert_file,
                                  f"cannot load it with its key ({type(exc).__name__})") from None
        return context

    @property
    def refused_variable(self) -> str:
        """The variable to look at when the server refuses the credentials."""
        if self.creds is not None:
            return "NATS_CREDS"
        if self.token is not None:
            return "NATS_TOKEN"
        return "NATS_PASSWORD" if self.user is not None else "NATS_URL"

    def tls_refusal(self, exc: BaseException, tls: bool) -> Optional[str]:
        """What a failed TLS handshake means, naming the variable that decides it (None: not one).

        `tls`: whether the connection was made with TLS."""
        if isinstance(exc, ssl.SSLCertVerificationError):
            trusted = f"NATS_TLS_CA_FILE ({self.ca_file})" if self.ca_file else \
                "the system's CAs (NATS_TLS_CA_FILE is not set)"
            return f"the server's certificate is not verified by {trusted}: {exc.verify_message}"
        if isinstance(exc, ssl.SSLError) and exc.reason in _CLIENT_CERT_REFUSED:
            refused = f"refused the client certificate NATS_TLS_CERT_FILE ({self.cert_file})" if self.cert_file \
                else "wants a client certificate (NATS_TLS_CERT_FILE and NATS_TLS_KEY_FILE are not set)"
            return f"the server {refused}: {exc.reason.lower().replace('_', ' ')}"
        if tls and isinstance(exc, (BrokenPipeError, ConnectionResetError, ssl.SSLEOFError)):
            # TLS 1.3: the server checks the client's certificate after the handshake and may
            # close the connection before its alert is read; the client sees a closed pipe.
            refused = f"it refused the client certificate NATS_TLS_CERT_FILE ({self.cert_file})" if self.cert_file \
                else "it wants a client certificate (NATS_TLS_CERT_FILE and NATS_TLS_KEY_FILE are not set)"
            return f"the server closed the TLS connection as it opened: presumably {refused} ({why(exc)})"
        return None


class Connection:
    """One nats-py client on a private loop thread (aioloop.LoopThread), from `open` to `close`."""

    def __init__(self, servers: list[str], credentials: Credentials, timeout: float) -> None:
        self.servers, self.credentials, self.timeout = servers, credentials, timeout
        self.where = ",".join(mask_url(server) for server in servers)
        self.loop: Optional[LoopThread] = None
        self.client: Any = None  # nats.aio.client.Client
        self._last_error: Optional[BaseException] = None
        self._auth_error: Optional[BaseException] = None
        self._opened = self._lost = self._closing = False
        self._tls = False  # whether the connection is made with TLS

    def said(self, exc: BaseException) -> str:
        """What `exc` says, with every server URL's credentials masked."""
        text = why(exc)
        for server in self.servers:
            text = scrub(text, server)
        return text

    @property
    def connected(self) -> bool:
        return self.client is not None and self.client.is_connected

    def check(self) -> None:
        """Raise the client's own error while it reconnects: nothing can be answered meanwhile."""
        if not self.connected:
            raise nats.errors.ConnectionReconnectingError

    def reconnect(self) -> None:
        """Drop a connection that left a call unanswered and open another, without waiting.

        The client's own check, 3 unanswered pings 20 s apart, would keep a
        half-open connection a minute, and TCP resumes it only at its next
        retransmission: after a 30 s cut, the first ack came 23 s after the
        link's return. A new connection is there within a second of it (the
        client tries once a second; its subscriptions are made again). The
        loss and the return are logged by the client's callbacks, once.
        """
        if self.loop is not None and self.client is not None:
            self.loop.submit(self.client.force_reconnect())

    def open(self, setup: Callable[[Any], Coroutine[Any, Any, None]]) -> None:
        """Connect, then run `setup(client)` on the loop, within NATS_OPERATION_TIMEOUT each; a failure
        is a ConfigError or a QueueUnreachable, and leaves no thread nor socket behind."""
        options = self.credentials.options(self.servers)
        self._tls = "tls" in options
        self.loop = LoopThread("minionize-nats")
        started = time.monotonic()
        try:
            self.client = self.loop.run(self._connect(options), self.timeout)
            left = max(0.5, self.timeout - (time.monotonic() - started))
            self.loop.run(setup(self.client), left + self.timeout)
        except ConfigError:
            self.close()
            raise
        except TimeoutError:
            late = f"no answer within {self.timeout:g}s"
            self.close()
            raise QueueUnreachable(f"cannot reach NATS at {self.where}: {self._refusal(self._last_error, late)}") \
                from None
        except (nats.errors.Error, nats.js.errors.Error, OSError) as exc:
            self.close()
            raise QueueUnreachable(f"cannot reach NATS at {self.where}: {self._refusal(exc)}") from None
        except BaseException:  # a bug, a KeyboardInterrupt: the loop thread must not outlive the engine
            self.close()
            raise
        self._opened = True

    def _refusal(self, exc: Optional[BaseException], otherwise: str = "") -> str:
        if exc is None:
            return otherwise
        return self.credentials.tls_refusal(exc, self._tls) or self.said(exc)

    async def _connect(self, options: dict[str, Any]) -> Any:
        """Connect, giving up at once on refused credentials (the client would try forever)."""
        connecting = asyncio.ensure_future(nats.connect(
            servers=self.servers, name=f"minionize {socket.gethostname()}:{os.getpid()}",
            connect_timeout=self.timeout, allow_reconnect=True, max_reconnect_attempts=-1,
            reconnect_time_wait=1, ping_interval=20, max_outstanding_pings=3,
            error_cb=self._on_error, disconnected_cb=self._on_disconnected, reconnected_cb=self._on_reconnected,
            **options,
        ))
        while not connecting.done():
            await asyncio.wait([connecting], timeout=0.05)
            if self._auth_error is not None and not connecting.done():
                connecting.cancel()
                variable = self.credentials.refused_variable
                raise ConfigError(variable, self.where if variable == "NATS_URL" else "***",
                                  f"NATS refused the credentials ({self.said(self._auth_error)})")
        return connecting.result()

    async def _on_error(self, exc: Exception) -> None:
        self._last_error = exc
        if isinstance(exc, nats.errors.Error) and "authorization" in str(exc).lower():
            self._auth_error = exc
        log.debug("nats client: %s", self.said(exc))

    async def _on_disconnected(self) -> None:
        if self._opened and not self._lost and not self._closing:
            self._lost = True
            log.warning("lost the connection to NATS at %s: reconnecting", self.where)

    async def _on_reconnected(self) -> None:
        if self._lost:
            self._lost = False
            log.warning("reconnected to NATS at %s", self.where)

    def close(self) -> None:
        """Close the client (within NATS_OPERATION_TIMEOUT) and stop the loop thread; again: nothing."""
        loop, client = self.loop, self.client
        if loop is None:
            return
        self._closing = True
        try:
            if client is not None and not client.is_closed:
                with contextlib.suppress(TimeoutError, nats.errors.Error, OSError):
                    loop.run(client.close(), self.timeout)
        finally:
            self.loop = self.client = None
            self._opened = self._closing = False
            loop.stop()
