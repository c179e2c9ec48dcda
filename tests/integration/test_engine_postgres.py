"""What only the postgres engine promises, on the PostgreSQL of 127.0.0.1:5432: a schema-qualified
table, idle minions woken by NOTIFY, the README's queries, and a large minion-push within the timeout."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import cast

import pytest

from minionize.engines.postgres import PostgresEngine
from minionize.errors import ConfigError

from .backends import started
from .backends.postgres import PostgresBackend, connect

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def server(request: pytest.FixtureRequest) -> PostgresBackend:
    """The session's postgres backend, shared with the contract suites (backends.started)."""
    return cast(PostgresBackend, started("postgres", request.config))


@pytest.fixture
def schema(server: PostgresBackend) -> Iterator[str]:
    """A schema of this test's own (minionize creates it with the table), dropped after."""
    name = f"sweeps_{uuid.uuid4().hex[:8]}"
    yield name
    with connect(server.url) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


def engine(server: PostgresBackend, table: str, **options: float) -> PostgresEngine:
    return PostgresEngine(table, server.url, "json", **options)  # type: ignore[arg-type]


def test_a_schema_qualified_table_is_created_with_its_schema(server: PostgresBackend, schema: str) -> None:
    pusher = engine(server, f"{schema}.params")
    pusher.push(["a", "b"])
    pusher.close()
    with connect(server.url) as conn:
        rows = conn.execute(f'SELECT param, state FROM "{schema}".params ORDER BY id').fetchall()
    assert rows == [('"a"', "pending"), ('"b"', "pending")]


def test_an_idle_minion_is_woken_by_a_row_inserted_with_sql(server: PostgresBackend, schema: str) -> None:
    """An empty take puts off the next look by 2 s: a row inserted meanwhile comes by NOTIFY, within 1.5 s."""
    minion = engine(server, f"{schema}.params")
    minion.open()
    try:
        assert minion.next(0.1) is None
        with connect(server.url) as conn:
            conn.execute(f"""INSERT INTO "{schema}".params (param) VALUES ('{{"lr": 0.1}}')""")
        message = minion.next(1.5)
        assert message is not None and message.param == {"lr": 0.1}
        minion.ack(message)
    finally:
        minion.close()


def test_the_readme_queries_watch_and_steer_a_sweep(server: PostgresBackend, schema: str) -> None:
    table = f'"{schema}".params'
    minion = engine(server, f"{schema}.params")
    minion.push(["ok", "doomed"])
    for _ in range(2):
        message = minion.next(1)
        assert message is not None
        if message.param == "doomed":
            minion.fail(message, "exit code 1")
        else:
            minion.ack(message)
    with connect(server.url) as conn:
        progress = dict(conn.execute(f"SELECT state, count(*) FROM {table} GROUP BY state").fetchall())
        failures = conn.execute(f"SELECT param, minion_attempts, minion_reason FROM {table} "
                                "WHERE state = 'failed'").fetchall()
        conn.execute(f"UPDATE {table} SET state = 'pending', minion_attempts = 0, minion_reason = NULL, "
                     "finished_at = NULL WHERE state = 'failed'")
    assert progress == {"done": 1, "failed": 1}
    assert failures == [('"doomed"', 1, "exit code 1")]
    again = minion.next(1.5)  # the requeue notifies
    assert again is not None and (again.param, again.attempt) == ("doomed", 1)
    minion.ack(again)
    assert minion.drained() and minion.remaining() == 0
    minion.close()


def test_attempts_edited_by_hand_out_of_range_neither_crash_nor_block_the_queue(
    server: PostgresBackend, schema: str
) -> None:
    # minion_attempts + 1 overflowed the integer at 2147483647: every minion crashed on that first row.
    table = f'"{schema}".params'
    minion = engine(server, f"{schema}.params")
    minion.push(["seed"])
    with connect(server.url) as conn:
        conn.execute(f"DELETE FROM {table}")
        conn.execute(f"""INSERT INTO {table} (param, minion_attempts) VALUES ('"most"', 2147483647),
                         ('"negative"', -5), ('"next"', 0)""")
    taken = []
    for _ in range(3):
        message = minion.next(1)
        assert message is not None
        taken.append((message.param, message.attempt))
        minion.ack(message)
    assert taken == [("most", 2147483647), ("negative", 1), ("next", 1)]
    minion.close()


def test_a_large_push_is_copied_in_chunks_within_a_short_operation_timeout(
    server: PostgresBackend, schema: str
) -> None:
    pusher = engine(server, f"{schema}.params", operation_timeout=1.0)
    pusher.push(list(range(30_000)))
    assert pusher.remaining() == 30_000
    pusher.close()


def test_a_table_that_is_not_minionizes_is_refused(server: PostgresBackend, schema: str) -> None:
    with connect(server.url) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
        conn.execute(f'CREATE TABLE "{schema}".params (id serial, payload text)')
    with pytest.raises(ConfigError) as caught:
        engine(server, f"{schema}.params").open()
    assert str(caught.value).startswith("POSTGRES_TABLE=") and "no param, state" in str(caught.value)
