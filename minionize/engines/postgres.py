"""A PostgreSQL table as the queue: one row per parameter, taken with FOR UPDATE SKIP LOCKED.

What it is
    Each parameter is a row of a table that minionize (a minion's `open()`
    or `minion-push`) creates when it is absent, under an advisory lock so
    that a fleet starting at once creates it once. A minion takes the first
    takeable row (`SELECT ... FOR UPDATE SKIP LOCKED` inside the UPDATE
    that marks it running): minions never wait for each other's rows. The
    table is also the record of the sweep: done rows stay (state `done`),
    failed rows stay with their reason (state `failed`: the table is the
    dead-letter place), so a user can watch and steer the sweep with SQL.
    Idle minions LISTEN on the table's channel (`minionize_<table oid>`):
    triggers NOTIFY it when rows are inserted or put back to pending,
    whoever does it (minion-push, a nack, your own SQL). psycopg 3
    (`pip install 'minionize[postgres]'`), PostgreSQL 11 or later.

    The table (`POSTGRES_TABLE`, e.g. `params` or `sweeps.params`)::

        id              bigserial primary key    -- the order rows are taken in
        param           text not null            -- the parameter (what minion-push wrote)
        state           text not null            -- pending | running | done | failed
        minion_attempts integer not null         -- deliveries so far, counted when taken
        minion_reason   text                     -- why a failed row failed
        locked_until    timestamptz              -- a running row's lease (the server's clock)
        locked_by       text                     -- the minion that holds (or last held) it
        created_at, started_at, finished_at      -- timestamptz

    Three queries to watch and steer a sweep (psql, with the table's name)::

        -- progress
        SELECT state, count(*) FROM params GROUP BY state;
        -- failures, with their reasons
        SELECT id, param, minion_attempts, minion_reason FROM params WHERE state = 'failed';
        -- requeue the failed (what `minion-push --retry-failed` does; the minions wake up)
        UPDATE params SET state = 'pending', minion_attempts = 0, minion_reason = NULL,
            finished_at = NULL WHERE state = 'failed';

    To add parameters by hand: `INSERT INTO params (param) VALUES ('x'), ('y')`.

Environment
    POSTGRES_URL (URL, default none): `postgresql://user:password@host:5432/db`
        or a libpq `key=value` string. Unset: DATABASE_URL, and unset too:
        libpq's own PG* variables (PGHOST, PGPORT, PGDATABASE, PGUSER,
        PGPASSWORD, PGSSLMODE, ...) and defaults. The password is masked in
        logs and messages.
    DATABASE_URL (URL, default none): the usual convention, read when
        POSTGRES_URL is unset.
    POSTGRES_TABLE (name, mandatory): the table of parameters, `name` or
        `schema.name`, taken as written (case counts); created when absent,
        with its schema.
    POSTGRES_DECODER (identity | json, default identity): how `param` becomes
        a parameter: identity passes the text (a whole JSON object or array
        becomes that dict or list, as minion-push writes them); json parses
        it as a JSON document (with json, minion-push writes JSON).
    POSTGRES_LEASE_SECONDS (seconds >= 1, default 60): how long a running
        row stays reserved for a minion that stopped renewing it (renewed
        every third of it while the run lasts).
    POSTGRES_DELETE_DONE (flag, default false): delete a row once done
        instead of keeping it as `done`.
    POSTGRES_OPERATION_TIMEOUT (seconds > 0, default 5): how long connecting
        and each statement may take (libpq's connect_timeout, 2 s at least;
        the server's statement_timeout); then exit code 3 at start-up, a
        retry later while running.

Ack and nack
    Every statement touches a row only while this minion still holds it (state
    `running`, `locked_by` this minion, the attempt it took). Ack marks the
    row `done` (or deletes it, POSTGRES_DELETE_DONE). Nack puts it back to
    `pending` for any minion; the attempt stays counted, since
    `minion_attempts` is incremented by the statement that takes the row. A
    release (a stop, a dry run) puts it back and takes the attempt off
    again. Fail marks it `failed` with `minion_reason`; `minion-status
    --failed` lists those rows and `minion-push --retry-failed` puts them
    back to pending with their attempts reset, in one statement. A setting
    that a lost connection kept from the server is sent once it answers.

A crashed minion
    Its rows stay `running` until `locked_until` (POSTGRES_LEASE_SECONDS,
    renewed every third of it by a live minion); after that any minion's
    take may pick the row again, counting one more attempt: a row that kills
    every minion that runs it is set aside after MINION_MAX_ATTEMPTS. No
    server-side job is needed: the take statement itself looks for expired
    leases. Idle minions look at the table every 2 s besides being
    notified, since an expired lease notifies nobody.

Caveats
    Delivery is at least once: a minion stalled past its lease (a paused VM)
    or cut off from the server that long loses its row to another, and its
    own late ack is then ignored (with a warning). Every wait for the
    server is bounded by POSTGRES_OPERATION_TIMEOUT, on the client's side
    too (a paused server, a cut network): a statement left unanswered drops
    the connection, and the next call connects again. LISTEN needs a
    session: behind PgBouncer in transaction mode, notifications do not
    arrive and idle minions find work by their 2 s look only. DATABASE_URL
    and the PG* variables are conventions the program may share, so they
    are not kept from its environment; give the queue's credentials in
    POSTGRES_URL to keep them from the program. Drained (what ends a minion
    in batch mode, MINION_BATCH) means no row pending or running.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import re
import socket
import time
from typing import Any, Callable, Optional, TypeVar, cast

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from ..config import EnvReader
from ..errors import ConfigError, QueueUnreachable
from ..message import Message
from ..secrets import mask_url, scrub
from .base import DECODERS, DeadLetter, Engine, decode_into, encode
from .kit import ConnectionGuard, Setting, read_settings

log = logging.getLogger(__name__)

#: The columns a minionize table must have.
COLUMNS = ("id", "param", "state", "minion_attempts", "minion_reason", "locked_until", "locked_by",
           "created_at", "started_at", "finished_at")
#: How often an idle minion looks at the table without being notified (an expired lease notifies nobody).
_LOOK_EVERY = 2.0
#: Rows per COPY of minion-push (a COPY must end within the operation timeout).
_COPY_CHUNK = 5000
#: PostgreSQL's identifier limit (NAMEDATALEN - 1), in bytes.
_NAME_MAX = 63
#: A server that cannot serve now but may later: the worker logs it and tries again.
_UNAVAILABLE = (psycopg.OperationalError, psycopg.InterfaceError)

_Method = TypeVar("_Method", bound=Callable[..., Any])

_SCHEMA = """
CREATE TABLE {table} (
    id bigserial PRIMARY KEY,
    param text NOT NULL,
    state text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'running', 'done', 'failed')),
    minion_attempts integer NOT NULL DEFAULT 0,
    minion_reason text,
    locked_until timestamptz,
    locked_by text,
    created_at timestamptz NOT NULL DEFAULT now(),
    started_at timestamptz,
    finished_at timestamptz
);
CREATE INDEX {index} ON {table} (id) WHERE state IN ('pending', 'running');
CREATE OR REPLACE FUNCTION {notify}() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('minionize_' || TG_RELID::text, '');
    RETURN NULL;
END $$;
CREATE TRIGGER minionize_pushed AFTER INSERT ON {table}
    FOR EACH STATEMENT EXECUTE PROCEDURE {notify}();
CREATE TRIGGER minionize_requeued AFTER UPDATE OF state ON {table}
    FOR EACH ROW WHEN (NEW.state = 'pending' AND OLD.state <> 'pending') EXECUTE PROCEDURE {notify}();
"""

# The row this minion takes: the first pending one, or a running one whose lease ran out.
_TAKE = """
WITH picked AS (
    SELECT id, state FROM {table}
    WHERE state = 'pending' OR (state = 'running' AND locked_until < now())
    ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED
)
UPDATE {table} AS q SET state = 'running',
    minion_attempts = LEAST(GREATEST(q.minion_attempts, 0), 2147483646) + 1,  -- a row edited by hand: no overflow
    locked_until = now() + make_interval(secs => %(lease)s), locked_by = %(me)s, started_at = now()
FROM picked WHERE q.id = picked.id
RETURNING q.id, q.param, q.minion_attempts, picked.state
"""

#: What is held: a row this minion took at that attempt and still runs.
_HELD = "state = 'running' AND locked_by = %(me)s AND id = %(id)s AND minion_attempts = %(attempt)s"
_SETTLE = {
    "ack": "UPDATE {table} SET state = 'done', locked_until = NULL, finished_at = now() WHERE " + _HELD,
    "delete": "DELETE FROM {table} WHERE " + _HELD,
    "nack": "UPDATE {table} SET state = 'pending', locked_until = NULL WHERE " + _HELD,
    "release": "UPDATE {table} SET state = 'pending', locked_until = NULL, "
               "minion_attempts = minion_attempts - 1 WHERE " + _HELD,
    "fail": "UPDATE {table} SET state = 'failed', minion_reason = %(reason)s, locked_until = NULL, "
            "finished_at = now() WHERE " + _HELD,
}
_EXTEND = """
UPDATE {table} SET locked_until = now() + make_interval(secs => %(lease)s)
WHERE state = 'running' AND locked_by = %(me)s
    AND (id, minion_attempts) IN (SELECT * FROM unnest(%(ids)s::bigint[], %(attempts)s::integer[]))
RETURNING id
"""
_RETRY = """
UPDATE {table} SET state = 'pending', minion_attempts = 0, minion_reason = NULL, locked_until = NULL,
    finished_at = NULL WHERE state = 'failed'
"""


class _TimedConnection(psycopg.Connection[Any]):
    """A connection whose every wait for the server is bounded: a server that accepts and never
    answers (paused, cut off behind a firewall) makes the statement fail after `timeout`, not hang."""

    timeout: Optional[float] = None

    def wait(self, gen: Any, interval: float = 0.1, timeout: Optional[float] = None) -> Any:
        return super().wait(gen, interval, timeout if timeout is not None else self.timeout)


def parse_table(name: str) -> tuple[str, ...]:
    """`name` or `schema.name` as identifier parts; raises ConfigError."""
    parts = tuple(name.split("."))
    if len(parts) > 2 or not all(parts) or any(len(p.encode()) > _NAME_MAX or "\0" in p for p in parts):
        accepted = f"expected a table name or schema.name, each part 1 to {_NAME_MAX} bytes"
        raise ConfigError("POSTGRES_TABLE", name, accepted)
    return parts


def masked(conninfo: str) -> str:
    """A connection string to show: a URL's password by mask_url, a key=value string's `password=...` by ***."""
    if "://" in conninfo:
        return mask_url(conninfo)
    return re.sub(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", r"\1***", conninfo)


def _scrubbed(text: str, conninfo: str) -> str:
    """A client's message on one line, without the connection string's password."""
    text = " ".join(text.split())
    text = scrub(text, conninfo) if "://" in conninfo else text
    try:
        password = conninfo_to_dict(conninfo).get("password")
    except psycopg.Error:
        password = None
    return text.replace(str(password), "***") if password else text


def _reconnecting(method: _Method) -> _Method:
    """Turn a lost connection into the ConnectionError that the worker logs and retries (kit.ConnectionGuard)."""

    @functools.wraps(method)
    def wrapper(self: PostgresEngine, *args: Any, **kwargs: Any) -> Any:
        with self._guard(method.__name__):
            return method(self, *args, **kwargs)

    return cast(_Method, wrapper)


class PostgresEngine(Engine):
    name = "postgres"
    title = "PostgreSQL (pip install 'minionize[postgres]')"
    settings = (
        Setting("POSTGRES_URL", "url", "postgresql:// URL or key=value string; default DATABASE_URL, then PG*",
                secret=True, example="postgresql://minion@postgres:5432/sweeps"),
        Setting("DATABASE_URL", "url", "read when POSTGRES_URL is unset", chart="",
                chart_why="the chart sets POSTGRES_URL (postgres.url or postgres.urlSecret); DATABASE_URL is "
                          "the fallback for minions started by hand"),
        Setting("POSTGRES_TABLE", "text", "the table of parameters, name or schema.name", required=True),
        Setting("POSTGRES_DECODER", "choice", "json: param is a JSON document", default="identity",
                choices=DECODERS),
        Setting("POSTGRES_LEASE_SECONDS", "seconds", "a dead minion's row is taken again after this", default=60.0,
                minimum=1),
        Setting("POSTGRES_DELETE_DONE", "flag", "1: delete done rows instead of keeping them", default=False),
        Setting("POSTGRES_OPERATION_TIMEOUT", "seconds", "seconds to connect, and for any statement", default=5.0,
                above=0),
    )
    tells_drained = True  # no row pending or running (drained())
    has_deadline = True  # the lease (POSTGRES_LEASE_SECONDS): locked_until
    connection_errors = _UNAVAILABLE

    def __init__(
        self,
        table: str,
        url: str = "",
        decoder: str = "identity",
        lease_seconds: float = 60.0,
        *,
        delete_done: bool = False,
        operation_timeout: float = 5.0,
    ) -> None:
        self.table_name, self.parts = table, parse_table(table)
        self.table = sql.Identifier(*self.parts)
        self.url, self.decoder = url, decoder
        self.where = masked(url) if url else "libpq's PG* defaults"
        self.lease_seconds = lease_seconds
        # Two renewals may be late before another minion may take the row over.
        self.lease_interval = lease_seconds / 3
        self.delete_done = delete_done
        self.operation_timeout = operation_timeout
        self.me = f"{socket.gethostname()}:{os.getpid()}:{os.urandom(3).hex()}"
        self._conn: Optional[_TimedConnection] = None
        self._unsettled: list[tuple[str, dict[str, Any]]] = []
        self._guard = ConnectionGuard(f"postgres at {self.where}", _UNAVAILABLE, operation_timeout, self._drop,
                                      lambda exc: _scrubbed(str(exc), self.url))
        self._look_at = 0.0  # when to look at the table again without a notification

    @classmethod
    def from_env(cls, env: EnvReader) -> PostgresEngine:
        values = read_settings(env, cls.settings)
        url = values["POSTGRES_URL"] or values["DATABASE_URL"] or ""
        variable = "POSTGRES_URL" if values["POSTGRES_URL"] else "DATABASE_URL"
        try:
            conninfo_to_dict(url)
        except psycopg.Error as exc:
            accepted = "expected postgresql://[user[:password]@]host[:port]/dbname or a libpq key=value string"
            raise ConfigError(variable, masked(url), f"{accepted} ({_scrubbed(str(exc), url)})") from None
        return cls(
            values["POSTGRES_TABLE"],
            url,
            values["POSTGRES_DECODER"],
            values["POSTGRES_LEASE_SECONDS"],
            delete_done=values["POSTGRES_DELETE_DONE"],
            operation_timeout=values["POSTGRES_OPERATION_TIMEOUT"],
        )

    def describe(self) -> str:
        return f"postgres table {self.table_name} at {self.where} ({self.decoder})"

    # -- connection ------------------------------------------------------

    def _connect(self) -> _TimedConnection:
        given = conninfo_to_dict(self.url)
        extra: dict[str, Any] = {"connect_timeout": max(2, round(self.operation_timeout))}
        # Keepalives: a server gone without a word (a cut network) is noticed within about a timeout.
        extra.update(keepalives=1, keepalives_idle=max(1, round(self.operation_timeout)), keepalives_interval=1,
                     keepalives_count=3, tcp_user_timeout=int(self.operation_timeout * 1000),
                     application_name=f"minionize {self.me}"[:_NAME_MAX])
        conn = _TimedConnection.connect(self.url, autocommit=True, **{k: v for k, v in extra.items() if k not in given})
        conn.timeout = self.operation_timeout
        try:
            conn.execute(sql.SQL("SET statement_timeout = {}").format(int(self.operation_timeout * 1000)))
            conn.execute(sql.SQL("SET lock_timeout = {}").format(int(self.operation_timeout * 1000)))
            if not self.url:
                info = conn.info
                self.where = f"postgresql://{info.user}@{info.host}:{info.port}/{info.dbname}"
                self._guard.where = f"postgres at {self.where}"
            self._ensure_table(conn)
            oid = conn.execute("SELECT %s::regclass::oid", [self.table.as_string(conn)]).fetchone()
            conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(f"minionize_{oid[0] if oid else 0}")))
        except BaseException:
            conn.close()
            raise
        self._look_at = 0.0  # what was notified while no connection listened: look at once
        return conn

    def _ensure_table(self, conn: psycopg.Connection[Any]) -> None:
        """Create the table when absent (one minion of a fleet does it), or check that it is minionize's."""
        qualified = self.table.as_string(conn)
        with conn.transaction():
            # One key for every table: creating two tables of a schema at once would race on minionize_notify.
            conn.execute("SELECT pg_advisory_xact_lock(hashtext('minionize'))")
            found = conn.execute("SELECT to_regclass(%s)", [qualified]).fetchone()
            if found and found[0] is not None:
                rows = conn.execute(
                    "SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0 "
                    "AND NOT attisdropped", [qualified]).fetchall()
                missing = [c for c in COLUMNS if c not in {r[0] for r in rows}]
                if missing:
                    accepted = f"a table made by minionize: that one has no {', '.join(missing)} column"
                    raise ConfigError("POSTGRES_TABLE", self.table_name, accepted)
                return
            schema = self.parts[:-1]
            if schema:
                conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(*schema)))
            index = sql.Identifier(f"{self.parts[-1][:_NAME_MAX - 9]}_takeable")  # in the table's schema
            notify = sql.Identifier(*schema, "minionize_notify")
            conn.execute(sql.SQL(_SCHEMA).format(table=self.table, index=index, notify=notify))

    @property
    def conn(self) -> _TimedConnection:
        if self._conn is None or self._conn.closed:
            self._conn = self._connect()
        return self._conn

    def _drop(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(psycopg.Error):
                self._conn.close()
            self._conn = None

    def open(self) -> None:
        """Reach the server and create the table, with a one-line error when that fails."""
        try:
            self.conn  # noqa: B018 - connects
        except psycopg.errors.InsufficientPrivilege as exc:
            raise ConfigError("POSTGRES_TABLE", self.table_name, f"not allowed: {exc}") from None
        except psycopg.Error as exc:
            self._drop()
            why = _scrubbed(str(exc), self.url)
            raise QueueUnreachable(f"cannot reach postgres at {self.where}: {why}") from None

    def _run(self, query: str, params: Any = None) -> psycopg.Cursor[Any]:
        return self.conn.execute(sql.SQL(query).format(table=self.table), params)

    def _send_unsettled(self) -> None:
        """Send the settlements that a lost connection kept from the server, oldest first."""
        while self._unsettled:
            operation, params = self._unsettled[0]
            if self._run(_SETTLE[operation], params).rowcount == 0:
                log.warning("postgres: row %s was taken over by another minion (its lease ran out): "
                            "not %sed by this one", params["id"], operation.rstrip("e"))
            self._unsettled.pop(0)

    # -- taking messages ---------------------------------------------------

    @_reconnecting
    def next(self, timeout: float) -> Optional[Message]:
        self._send_unsettled()
        if time.monotonic() >= self._look_at:
            message = self._take()
            if message is not None or timeout <= 0:
                return message
        if timeout > 0 and self._notified(timeout):
            return self._take()
        return None

    def _take(self) -> Optional[Message]:
        row = self._run(_TAKE, {"lease": self.lease_seconds, "me": self.me}).fetchone()
        if row is None:
            self._look_at = time.monotonic() + _LOOK_EVERY
            return None
        self._look_at = 0.0  # more may be there: look again at the next call
        row_id, body, attempt, was = row
        message = Message(id=str(row_id), param=None, attempt=int(attempt), handle=int(attempt))
        message.reclaimed = was == "running"
        return decode_into(message, body, self.decoder)

    def _notified(self, timeout: float) -> bool:
        """Wait for a notification until `timeout`, or the next look; True when one came."""
        wait = min(timeout, max(0.0, self._look_at - time.monotonic()))
        came = False
        for _ in self.conn.notifies(timeout=wait, stop_after=1):
            came = True
        return came

    @_reconnecting
    def drained(self) -> bool:
        self._send_unsettled()
        row = self._run("SELECT NOT EXISTS (SELECT 1 FROM {table} WHERE state IN ('pending', 'running'))")
        return bool(row.fetchone()[0])  # type: ignore[index]

    @_reconnecting
    def remaining(self) -> Optional[int]:
        self._send_unsettled()
        row = self._run("SELECT count(*) FROM {table} WHERE state IN ('pending', 'running')").fetchone()
        return int(row[0]) if row else None

    # -- settling ------------------------------------------------------------

    @_reconnecting
    def _settle(self, operation: str, message: Message, **extra: Any) -> None:
        """Owe a settlement, then send all that is owed: what fails now is sent again later."""
        params = {"me": self.me, "id": int(message.id), "attempt": message.handle, **extra}
        self._unsettled.append((operation, params))
        self._send_unsettled()

    def ack(self, message: Message) -> None:
        self._settle("delete" if self.delete_done else "ack", message)

    def nack(self, message: Message) -> None:
        self._settle("nack", message)

    def release(self, message: Message) -> None:
        self._settle("release", message)

    def fail(self, message: Message, reason: str) -> None:
        self._settle("fail", message, reason=reason.replace("\0", "\\0"))

    @_reconnecting
    def extend(self, messages: list[Message]) -> None:
        self._send_unsettled()
        params = {"lease": self.lease_seconds, "me": self.me, "ids": [int(m.id) for m in messages],
                  "attempts": [m.handle for m in messages]}
        kept = {str(row[0]) for row in self._run(_EXTEND, params).fetchall()}
        lost = sorted({m.id for m in messages} - kept, key=int)
        if lost:
            log.warning("postgres: row(s) %s taken over by another minion (lease of %gs ran out): a run may repeat",
                        ", ".join(lost), self.lease_seconds)

    # -- filling, failed rows and closing --------------------------------------

    def _admin(self, what: str, action: Callable[[], Any]) -> Any:
        """`action` on a fresh connection (minion-push, minion-status): a lost server is exit code 3."""
        self.open()
        try:
            return action()
        except _UNAVAILABLE as exc:
            raise QueueUnreachable(f"lost postgres at {self.where} while {what}: "
                                   f"{_scrubbed(str(exc), self.url)}") from None

    def push(self, params: list[Any]) -> str:
        bodies = [encode(param, self.decoder)[0] for param in params]
        for body in bodies:
            if "\0" in body:
                raise ConfigError("parameter", body, "PostgreSQL text cannot hold a NUL character")

        def copy() -> None:
            # One transaction (all or nothing), one COPY per chunk: each stays well within the operation timeout.
            with self.conn.transaction(), self.conn.cursor() as cursor:
                query = sql.SQL("COPY {} (param) FROM STDIN").format(self.table)
                for start in range(0, len(bodies), _COPY_CHUNK):
                    with cursor.copy(query) as rows:
                        for body in bodies[start:start + _COPY_CHUNK]:
                            rows.write_row((body,))

        self._admin("pushing", copy)
        return f"postgres table {self.table_name} at {self.where}"

    def dead_letters(self) -> list[DeadLetter]:
        query = "SELECT param, coalesce(minion_reason, '') FROM {table} WHERE state = 'failed' ORDER BY finished_at, id"
        rows = self._admin("reading failed rows", lambda: self._run(query).fetchall())
        return [DeadLetter(param, reason) for param, reason in rows]

    def retry_failed(self) -> int:
        return int(self._admin("queueing failed rows again", lambda: self._run(_RETRY).rowcount))

    def close(self) -> None:
        if self._conn is None:
            return
        try:
            if self._guard.silent:  # a server that left the last call unanswered: not waited for again
                raise psycopg.OperationalError(f"no answer within {self.operation_timeout:g}s")
            self._send_unsettled()
        except psycopg.Error as exc:
            if self._unsettled:
                log.warning("postgres at %s: %d settlement(s) not sent (%s): their rows come back after "
                            "POSTGRES_LEASE_SECONDS", self.where, len(self._unsettled), exc)
        finally:
            self._conn.close()
            self._conn = None
