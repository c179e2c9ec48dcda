"""A Redis stream read through a consumer group.

What it is
    Parameters are entries of a Redis stream (the text in a `param` field).
    Minions are consumers of one consumer group: Redis hands each entry to
    one of them and keeps, in the group's pending entries list (PEL), who
    holds what and how often each entry was delivered. `open()` and
    `minion-push` create the group (and the stream), from the first entry.
    Needs Redis 6.2 or later; `remaining()` is exact from 7.0.

Environment
    REDIS_URL (URL, default `redis://localhost:6379/0`): `redis://`,
        `rediss://` (TLS; redis-py query options such as `ssl_ca_certs`) or
        `unix://`. Its password is masked in logs.
    REDIS_PASSWORD (text, default none): used when the URL has none.
    REDIS_OPERATION_TIMEOUT (seconds > 0, default 5): how long connecting
        and each command may wait for the server (a blocking read: that
        long past its block of at most 1 s); then the command fails: exit
        code 3 at start-up, a retry later while running. `socket_timeout`
        and `socket_connect_timeout` in the URL's query override it.
    REDIS_STREAM (key, mandatory): the stream of parameters.
    REDIS_GROUP (name, default `minionize`): the consumer group.
    REDIS_CONSUMER (name, default `<host>:<pid>:<random>`): this minion in
        XINFO CONSUMERS and CLIENT LIST; unique per minion.
    REDIS_DECODER (identity | json, default identity): how the field becomes
        a parameter: identity passes it as text (a whole JSON object or array
        becomes that dict or list, as minion-push writes them); json parses
        it as a JSON document (with json, minion-push writes JSON).
    REDIS_FIELD (name, default `param`): the field holding the parameter.
    REDIS_CLAIM_IDLE (seconds >= 1, default 60): an entry left untouched
        that long by its minion is taken over by another. The same for all
        the minions of a group.
    REDIS_DEAD_LETTER_STREAM (key, default `<stream>:dead`): failed entries.
    REDIS_DELETE_ACKED (flag, default true): XDEL settled entries, so that
        the stream holds only the work left; false when other consumer
        groups read the same stream.

Ack and nack
    Ack is XACK (and XDEL, in one MULTI/EXEC). Nack leaves the entry in the PEL, marked idle
    since long ago (XCLAIM IDLE JUSTID): the next `next()` of any minion
    claims it, which increments its delivery count. That count, kept by
    Redis, is the attempt number; as the entry is never copied, no command
    boundary can lose or double it. A release also lowers the count by one
    (RETRYCOUNT), so the next claim gives the same attempt. Fail copies the
    entry's fields, with `minion_reason`, `minion_attempts`, `minion_source`
    (the stream) and `minion_original_id`, to the
    dead-letter stream, then XACKs (and XDELs) it, in one Lua script; a
    minion pointed at the dead-letter stream replays them. Nack, release,
    fail and renewals touch only an entry this minion still holds. What a
    lost connection kept from the server is sent once it answers again.

A crashed minion
    Its entries stay in the PEL. Each `next()` first claims an entry idle
    for REDIS_CLAIM_IDLE (XPENDING IDLE and XCLAIM in one Lua script: an
    XAUTOCLAIM that tells a dead minion's entry from one given back), then
    reads new ones (XREADGROUP `>`). A live minion renews its entries every
    third of REDIS_CLAIM_IDLE (XCLAIM to itself, JUSTID: the idle time
    restarts and no delivery is counted). Only the server's clock counts.

Caveats
    The queue is as durable as the server (`appendonly yes`; with
    `appendfsync always`, nothing acknowledged is lost); a failover to an
    asynchronous replica may lose the last acks (entries run again) or
    pushes. Drained (what ends a minion in batch mode, MINION_BATCH) means
    nothing pending and the stream's last entry delivered. In a Redis Cluster, give both streams one hash slot
    (`{jobs}`, `{jobs}:dead`). A minion stalled past REDIS_CLAIM_IDLE (a
    paused VM) loses its entries to another: delivery is at least once.
"""

from __future__ import annotations

import functools
import itertools
import json
import logging
import os
import socket
import time
from typing import Any, Callable, Optional, TypeVar, cast
from urllib.parse import urlsplit

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from ..config import EnvReader
from ..errors import ConfigError, QueueUnreachable
from ..message import Message
from ..secrets import mask_url, scrub
from .base import DECODERS, DeadLetter, Engine, decode_into, encode
from .kit import (
    DEAD_ATTEMPTS,
    DEAD_REASON,
    DEAD_SOURCE,
    ConnectionGuard,
    Setting,
    dead_letter_metadata,
    read_settings,
)

log = logging.getLogger(__name__)

_DEAD_LETTER_FIELDS = (DEAD_REASON, DEAD_ATTEMPTS, DEAD_SOURCE, "minion_original_id")
#: Where minionize 1.0 kept the reason of a dead letter.
_OLD_REASON = b"reason"
#: How long ago a given-back entry pretends it was delivered: longer than any
#: sane REDIS_CLAIM_IDLE, so that every minion takes it at once.
_GIVEN_BACK_IDLE_MS = 365 * 24 * 3600 * 1000
#: Seconds between two looks for given-back entries while new ones flow.
_CLAIM_EVERY = 1.0
#: The longest XREADGROUP BLOCK: the socket timeout must outlast it (the worker asks for 0.5 s at most).
_MAX_BLOCK_MS = 1000
#: A server that cannot serve now but will (restarting, failing over, full):
#: the worker logs it and tries again later.
_UNAVAILABLE: tuple[type[Exception], ...] = (redis.ConnectionError, redis.TimeoutError) + tuple(
    getattr(redis.exceptions, name)
    for name in ("ReadOnlyError", "OutOfMemoryError", "TryAgainError", "ClusterDownError", "MasterDownError")
    if hasattr(redis.exceptions, name)
)

# KEYS: stream. ARGV: group, consumer, min idle ms, given-back idle ms.
# Returns {id, fields, delivery count, given back (1|0)} or nil.
_CLAIM = """
for _, entry in ipairs(redis.call('XPENDING', KEYS[1], ARGV[1], 'IDLE', ARGV[3], '-', '+', 10)) do
  local claimed = redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], ARGV[3], entry[1])[1]
  if claimed and claimed[2] then
    return {claimed[1], claimed[2], entry[4] + 1, entry[3] >= tonumber(ARGV[4]) and 1 or 0}
  end
  redis.call('XACK', KEYS[1], ARGV[1], entry[1])  -- deleted from the stream while pending
end
return false
"""

# KEYS: stream. ARGV: group, consumer, mode (extend | nack | release), ids...
# Touches only the entries this consumer still holds; returns their ids.
_REHOLD = f"""
local kept = {{}}
for i = 4, #ARGV do
  local entry = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)[1]
  if entry and entry[2] == ARGV[2] then
    local options = {{'IDLE', {_GIVEN_BACK_IDLE_MS}}}
    if ARGV[3] == 'extend' then options = {{}} end
    if ARGV[3] == 'release' then options = {{'IDLE', {_GIVEN_BACK_IDLE_MS}, 'RETRYCOUNT', entry[4] - 1}} end
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'JUSTID', unpack(options))
    kept[#kept + 1] = ARGV[i]
  end
end
return kept
"""

# KEYS: stream, dead-letter stream. ARGV: group, consumer, id, delete (1|0),
# then the dead letter's fields and values. XADD first: if it fails, nothing changed.
_FAIL = """
local entry = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1)[1]
if not entry or entry[2] ~= ARGV[2] then return 0 end
redis.call('XADD', KEYS[2], '*', unpack(ARGV, 5))
redis.call('XACK', KEYS[1], ARGV[1], ARGV[3])
if ARGV[4] == '1' then redis.call('XDEL', KEYS[1], ARGV[3]) end
return 1
"""

# Forget this consumer if it holds nothing (DELCONSUMER drops what it holds).
_FORGET = """
if #redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2]) > 0 then return 0 end
return redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
"""

_Method = TypeVar("_Method", bound=Callable[..., Any])


def _check_url(url: str) -> None:
    accepted = "expected redis://[[user]:password@]host[:port][/db], rediss://... or unix:///path"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise ConfigError("REDIS_URL", mask_url(url), accepted) from None
    if parts.scheme not in ("redis", "rediss", "unix") or (parts.scheme == "unix" and not parts.path):
        raise ConfigError("REDIS_URL", mask_url(url), accepted)
    try:
        redis.connection.parse_url(url)  # the query options, e.g. ?socket_timeout=abc
    except ValueError as exc:
        raise ConfigError("REDIS_URL", mask_url(url), f"{accepted} ({scrub(str(exc), url)})") from None


def _id_key(entry_id: Any) -> tuple[int, int]:
    ms, _, seq = _text(entry_id).partition("-")
    return int(ms), int(seq or 0)


def _as_queued(fields: dict[bytes, Any]) -> dict[bytes, Any]:
    """A dead letter's fields as its entry was queued: without minionize's metadata."""
    return {key: value for key, value in fields.items() if _text(key) not in _DEAD_LETTER_FIELDS}


def _fields_text(fields: dict[bytes, Any]) -> str:
    """An entry's fields as one line of text (a dead letter that has no parameter field)."""
    return json.dumps({_text(key): _text(value) for key, value in fields.items()}, ensure_ascii=False)


def _text(value: Any) -> str:
    return value.decode("utf-8", "backslashreplace") if isinstance(value, bytes) else str(value)


def _reconnecting(method: _Method) -> _Method:
    """Turn a lost connection into the ConnectionError that the worker logs and retries (kit.ConnectionGuard)."""

    @functools.wraps(method)
    def wrapper(self: RedisEngine, *args: Any) -> Any:
        with self._guard(method.__name__):
            return method(self, *args)

    return cast(_Method, wrapper)


class RedisEngine(Engine):
    name = "redis"
    connection_errors = _UNAVAILABLE
    title = "Redis Streams (pip install 'minionize[redis]')"
    settings = (
        Setting("REDIS_URL", "url", "redis://, rediss:// (TLS) or unix://", default="redis://localhost:6379/0",
                secret=True),
        Setting("REDIS_PASSWORD", "text", "used when the URL has none", secret=True, chart="secret:passwordSecret"),
        Setting("REDIS_STREAM", "text", "the stream of parameters", required=True),
        Setting("REDIS_GROUP", "text", "the consumer group the minions share", default="minionize"),
        Setting("REDIS_CONSUMER", "text", "this minion's name in the group; unique per minion",
                shown="", chart="",
                chart_why="each minion names itself (<host>:<pid>:<random>): one name for a fleet would mix "
                          "its minions' entries"),
        Setting("REDIS_DECODER", "choice", "json: the field is a JSON document", default="identity",
                choices=DECODERS),
        Setting("REDIS_FIELD", "text", "the entry's field that holds the parameter", default="param"),
        Setting("REDIS_CLAIM_IDLE", "seconds", "a dead minion's entry is claimed after this", default=60.0,
                minimum=1),
        Setting("REDIS_DEAD_LETTER_STREAM", "text", "default <stream>:dead"),
        Setting("REDIS_DELETE_ACKED", "flag", "XDEL settled entries; 0 when other groups read the stream",
                default=True),
        Setting("REDIS_OPERATION_TIMEOUT", "seconds", "seconds to connect, and for any command", default=5.0,
                above=0),
    )
    tells_drained = True  # nothing pending and the last entry delivered (drained())
    has_deadline = True  # REDIS_CLAIM_IDLE

    def __init__(
        self,
        stream: str,
        url: str = "redis://localhost:6379/0",
        group: str = "minionize",
        decoder: str = "identity",
        claim_idle: float = 60.0,
        dead_letter: Optional[str] = None,
        *,
        consumer: Optional[str] = None,
        field: str = "param",
        delete_acked: bool = True,
        password: Optional[str] = None,
        operation_timeout: float = 5.0,
    ) -> None:
        self.stream, self.url, self.where = stream, url, mask_url(url)
        self.group, self.decoder, self.field = group, decoder, field
        self.claim_idle_ms = max(1, int(claim_idle * 1000))
        # Two renewals may be late before another minion may take the entry over.
        self.lease_interval = claim_idle / 3
        self.dead_letter = dead_letter or f"{stream}:dead"
        self.consumer = consumer or f"{socket.gethostname()}:{os.getpid()}:{os.urandom(3).hex()}"
        self.delete_acked = delete_acked
        self._password = password
        self.operation_timeout = operation_timeout
        # redis-py reconnects its pooled connection by itself on the next command.
        self._guard = ConnectionGuard(f"redis at {self.where}", _UNAVAILABLE, operation_timeout)
        self._client: Optional[redis.Redis] = None
        self._scripts: dict[str, Any] = {}
        self._unsettled: list[tuple[Callable[..., Any], tuple[Any, ...]]] = []
        # When to look for entries given back or abandoned (see _claim_due).
        self._claim_soon = True
        self._last_claim = 0.0

    @classmethod
    def from_env(cls, env: EnvReader) -> RedisEngine:
        values = read_settings(env, cls.settings)
        url, field = values["REDIS_URL"], values["REDIS_FIELD"]
        _check_url(url)
        if field in _DEAD_LETTER_FIELDS:
            raise ConfigError("REDIS_FIELD", field, f"expected a name other than {', '.join(_DEAD_LETTER_FIELDS)}")
        return cls(
            values["REDIS_STREAM"],
            url,
            values["REDIS_GROUP"],
            values["REDIS_DECODER"],
            values["REDIS_CLAIM_IDLE"],
            values["REDIS_DEAD_LETTER_STREAM"],
            consumer=values["REDIS_CONSUMER"],
            field=field,
            delete_acked=values["REDIS_DELETE_ACKED"],
            password=values["REDIS_PASSWORD"],
            operation_timeout=values["REDIS_OPERATION_TIMEOUT"],
        )

    def describe(self) -> str:
        return f"redis stream {self.stream} (group {self.group}) at {self.where} ({self.decoder})"

    # -- connection ------------------------------------------------------

    @property
    def client(self) -> redis.Redis:
        """The client; redis-py reconnects its pooled connection on the next command."""
        if self._client is None:
            extra = {"password": self._password} if self._password else {}
            self._client = redis.Redis.from_url(
                self.url,
                socket_connect_timeout=self.operation_timeout,
                socket_timeout=self.operation_timeout + _MAX_BLOCK_MS / 1000,
                socket_keepalive=True,
                health_check_interval=30,
                client_name="".join(c if "!" <= c <= "~" else "_" for c in self.consumer),
                # One quick retry covers a connection closed while idle; longer
                # outages reach the worker, which logs them and backs off. Never
                # on a timeout: a server that did not answer would be waited for twice.
                retry=Retry(ExponentialBackoff(cap=0.5, base=0.1), 1, supported_errors=(redis.ConnectionError,)),
                **extra,
            )
            scripts = {"claim": _CLAIM, "rehold": _REHOLD, "fail": _FAIL, "forget": _FORGET}
            self._scripts = {name: self._client.register_script(code) for name, code in scripts.items()}
        return self._client

    def open(self) -> None:
        """Reach the server and create the group, with a one-line error when that fails."""
        try:
            self.client.ping()
            self._check_version()
            self._ensure_group()
        except redis.AuthenticationError as exc:
            variable, shown = ("REDIS_PASSWORD", "***") if self._password else ("REDIS_URL", self.where)
            raise ConfigError(variable, shown, f"the server refused the credentials ({exc})") from None
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            if isinstance(exc, redis.TimeoutError):  # then close() does not wait for it again
                self._guard.silence()
            raise QueueUnreachable(f"cannot reach redis at {self.where}: {exc}") from None
        except redis.ResponseError as exc:
            if "WRONGTYPE" in str(exc):
                raise ConfigError("REDIS_STREAM", self.stream, "that key holds something else than a stream") from None
            raise QueueUnreachable(f"redis at {self.where} refused to set up the group: {exc}") from None

    def _check_version(self) -> None:
        try:
            version = str(self.client.info("server").get("redis_version", ""))
        except redis.ResponseError:
            return  # INFO disabled (some managed services): the first claim will tell
        numbers = tuple(int(x) for x in version.split(".")[:2] if x.isdigit())
        if numbers and numbers < (6, 2):
            raise QueueUnreachable(f"redis at {self.where} is version {version}: 6.2 or later needed")

    def _ensure_group(self) -> None:
        try:
            self.client.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def _send_unsettled(self) -> None:
        """Send the acks, nacks and fails that a lost connection kept from the server, oldest first."""
        while self._unsettled:
            operation, args = self._unsettled[0]
            try:
                operation(*args)
            except _UNAVAILABLE:
                raise
            except redis.ResponseError as exc:  # e.g. the group is gone, and the entry with it
                log.warning("redis: could not settle %s: %s", args[0], exc)
            self._unsettled.pop(0)

    # -- taking messages ---------------------------------------------------

    def next(self, timeout: float) -> Optional[Message]:
        messages = self.next_many(1, timeout)
        return messages[0] if messages else None

    @_reconnecting
    def next_many(self, limit: int, timeout: float) -> list[Message]:
        """An entry given back or claimed, or up to `limit` new ones in one XREADGROUP."""
        self._send_unsettled()
        try:
            if self._claim_due():
                message = self._claim_idle()
                if message is not None:
                    return [message]
            messages = self._read_new(limit, timeout)
            self._claim_soon = not messages
            return messages
        except redis.ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
        log.warning("redis stream %s had no group %s (lost by the server?): created again", self.stream, self.group)
        self._ensure_group()
        return []

    def _claim_due(self) -> bool:
        """Claiming is a round trip of its own: do it when it may find something.

        That is after this minion gave an entry back, after a read found
        nothing new, and at least once a second otherwise, so that an entry
        another minion gave back waits a second at most while new ones flow.
        """
        now = time.monotonic()
        if self._claim_soon or now - self._last_claim >= _CLAIM_EVERY:
            self._claim_soon, self._last_claim = False, now
            return True
        return False

    def _read_new(self, limit: int, timeout: float) -> list[Message]:
        block = min(_MAX_BLOCK_MS, max(1, int(timeout * 1000))) if timeout > 0 else None
        reply = self.client.xreadgroup(self.group, self.consumer, {self.stream: ">"}, count=limit, block=block)
        return [self._message(entry_id, fields, 1)
                for _, entries in cast(list[Any], reply or []) for entry_id, fields in entries]

    def _claim_idle(self) -> Optional[Message]:
        """An entry given back, or held by a minion that stopped renewing it."""
        args = [self.group, self.consumer, self.claim_idle_ms, _GIVEN_BACK_IDLE_MS // 2]
        reply = self._scripts["claim"](keys=[self.stream], args=args)
        if not reply:
            return None
        entry_id, flat, attempt, given_back = reply
        message = self._message(entry_id, dict(zip(flat[::2], flat[1::2], strict=True)), int(attempt))
        message.reclaimed = not given_back
        return message

    def _message(self, entry_id: Any, fields: dict[bytes, bytes], attempt: int) -> Message:
        message = Message(id=_text(entry_id), param=None, attempt=attempt, handle=fields)
        body = fields.get(self.field.encode())
        if body is None:
            message.param = {_text(k): _text(v) for k, v in fields.items()}
            message.reject_reason = f"no {self.field!r} field in the stream entry"
            return message
        return decode_into(message, body, self.decoder)

    def _group_state(self, second: str) -> Optional[tuple[dict[str, Any], Any]]:
        """This group's XINFO, and XLEN or the last entry, read at one instant; None: no group."""
        try:
            with self.client.pipeline(transaction=True) as pipe:
                pipe.xinfo_groups(self.stream)
                if second == "length":
                    pipe.xlen(self.stream)
                else:
                    pipe.xrevrange(self.stream, count=1)
                groups, other = pipe.execute()
        except redis.ResponseError:
            groups, other = [], None  # no stream: a server that lost its data
        group = next((g for g in groups if _text(g["name"]) == self.group), None)
        if group is None:
            self._ensure_group()
            return None
        return group, other

    @_reconnecting
    def drained(self) -> bool:
        self._send_unsettled()
        state = self._group_state("last")
        if state is None:
            return False
        group, last = state
        if int(group["pending"]):
            return False
        return not last or _id_key(last[0][0]) <= _id_key(group["last-delivered-id"])

    @_reconnecting
    def remaining(self) -> Optional[int]:
        self._send_unsettled()
        state = self._group_state("length")
        if state is None:
            return None
        group, length = state
        pending = int(group["pending"])
        if group.get("lag") is not None:  # Redis 7.0+, when no deletion blurs it
            return pending + int(group["lag"])
        # With acked entries deleted, what is left is pending or undelivered.
        return max(int(length), pending) if self.delete_acked else None

    # -- settling ------------------------------------------------------------

    @_reconnecting
    def _settle(self, operation: Callable[..., Any], *args: Any) -> None:
        """Owe a settlement, then send all that is owed: what fails now is sent again later."""
        self._unsettled.append((operation, args))
        self._send_unsettled()

    def ack(self, message: Message) -> None:
        self._settle(self._ack, message.id)

    def _ack(self, entry_id: str) -> None:
        with self.client.pipeline(transaction=True) as pipe:
            pipe.xack(self.stream, self.group, entry_id)
            if self.delete_acked:
                pipe.xdel(self.stream, entry_id)
            pipe.execute()

    def nack(self, message: Message) -> None:
        self._settle(self._rehold, "nack", [message.id])
        self._claim_soon = True

    def release(self, message: Message) -> None:
        self._settle(self._rehold, "release", [message.id])
        self._claim_soon = True

    @_reconnecting
    def extend(self, messages: list[Message]) -> None:
        self._send_unsettled()
        ids = [m.id for m in messages]
        lost = set(ids) - {_text(i) for i in self._rehold("extend", ids)}
        if lost:
            log.warning("redis: %s taken over by another minion (idle over %gs): a run may repeat",
                        ", ".join(sorted(lost)), self.claim_idle_ms / 1000)

    def _rehold(self, mode: str, ids: list[str]) -> list[Any]:
        kept = self._scripts["rehold"](keys=[self.stream], args=[self.group, self.consumer, mode, *ids])
        return cast(list[Any], kept)

    def fail(self, message: Message, reason: str) -> None:
        fields: dict[Any, Any] = dict(message.handle or {})
        # Bytes keys, as read: a replayed dead letter gets its fields replaced, not doubled.
        metadata = {**dead_letter_metadata(reason, message.attempt, self.stream), "minion_original_id": message.id}
        fields.update((key.encode(), value) for key, value in metadata.items())
        self._settle(self._fail, message.id, [item for pair in fields.items() for item in pair])

    def _fail(self, entry_id: str, flat: list[Any]) -> None:
        args = [self.group, self.consumer, entry_id, int(self.delete_acked), *flat]
        if not self._scripts["fail"](keys=[self.stream, self.dead_letter], args=args):
            log.warning("redis: %s was taken over by another minion: not set aside by this one", entry_id)

    # -- filling and closing ---------------------------------------------------

    def push(self, params: list[Any]) -> str:
        self.open()
        try:
            stream = iter(params)  # any iterable (minion-push streams them): 1,000 entries a round trip
            while batch := list(itertools.islice(stream, 1000)):
                with self.client.pipeline(transaction=False) as pipe:
                    for param in batch:
                        pipe.xadd(self.stream, {self.field: encode(param, self.decoder)[0]})
                    pipe.execute()
        except _UNAVAILABLE as exc:
            raise QueueUnreachable(f"lost redis at {self.where} while pushing: {exc}") from None
        return f"redis stream {self.stream} (group {self.group}) at {self.where}"

    def dead_letters(self) -> list[DeadLetter]:
        field = self.field.encode()
        reason = DEAD_REASON.encode()
        return [
            DeadLetter(_text(f[field]) if field in f else _fields_text(_as_queued(f)),
                       _text(f.get(reason, f.get(_OLD_REASON, b""))))
            for _, f in self._dead_entries()
        ]

    def retry_failed(self) -> int:
        entries = self._dead_entries()
        moved = 0
        field = self.field.encode()
        try:
            for entry_id, fields in entries:
                # An entry set aside for lacking the field goes back as it came, to be set
                # aside again until REDIS_FIELD or its producer is fixed: never as an empty parameter.
                queued: dict[Any, Any] = {field: fields[field]} if field in fields else _as_queued(fields)
                if not queued:  # its producer's fields all bore minionize's names: nothing of it is left
                    log.warning("%s: dead letter %s has only minionize's fields %s: left where it is",
                                self.dead_letter, _text(entry_id), _fields_text(fields))
                    continue
                with self.client.pipeline(transaction=True) as pipe:  # moved, never copied twice nor lost
                    pipe.xadd(self.stream, queued)
                    pipe.xdel(self.dead_letter, entry_id)
                    pipe.execute()
                moved += 1
        except _UNAVAILABLE as exc:
            raise QueueUnreachable(f"lost redis at {self.where} while queueing failed entries again: {exc}") from None
        return moved

    def _dead_entries(self) -> list[tuple[Any, dict[bytes, Any]]]:
        self.open()
        try:
            entries: Any = self.client.xrange(self.dead_letter)
        except _UNAVAILABLE as exc:
            raise QueueUnreachable(f"lost redis at {self.where} while reading {self.dead_letter}: {exc}") from None
        return list(entries or [])

    def close(self) -> None:
        if self._client is None:
            return
        try:
            if self._guard.silent:  # see _reconnecting
                raise redis.TimeoutError(f"no answer within {self.operation_timeout:g}s")
            self._send_unsettled()
            self._scripts["forget"](keys=[self.stream], args=[self.group, self.consumer])
        except redis.RedisError as exc:
            if self._unsettled:
                log.warning("redis at %s: %d settlement(s) not sent (%s): their entries come back "
                            "after REDIS_CLAIM_IDLE", self.where, len(self._unsettled), exc)
        finally:
            self._client.close()
            self._client = None
