"""The postgres engine: a fresh table per test in database `test` of the PostgreSQL on 127.0.0.1:5432.

scripts/services.sh starts that server (trust authentication on loopback).
The restart of a server is the fault suite's (tests/faults), on a private
instance: this one is shared with every other test run of the machine.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.conftest import require

from .base import Backend

URL = "postgresql://postgres@127.0.0.1:5432/test"


def connect(url: str = URL) -> Any:
    import psycopg  # the engine's own client, an optional extra

    return psycopg.connect(url, autocommit=True, connect_timeout=5)


class PostgresBackend(Backend):
    name = "postgres"
    has_deadline = True  # POSTGRES_LEASE_SECONDS
    #: A text column: the server refuses bytes that are not UTF-8 when they are written.
    raw_bytes = False

    def __init__(self) -> None:
        self.tables: list[str] = []

    def start(self) -> None:
        try:
            connect().close()
        except Exception as exc:  # noqa: BLE001 - any failure to reach it means no server for the suite
            require(False, f"no PostgreSQL at {URL} (scripts/services.sh starts it): {exc}")

    def stop(self) -> None:
        if not self.tables:
            return
        from psycopg import sql

        with connect() as conn:
            for table in self.tables:
                conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(table)))
        self.tables.clear()

    def env(self, workdir: Path) -> dict[str, str]:
        table = self.unique("q").replace("-", "_")
        self.tables.append(table)
        return {
            "MINION_ENGINE": "postgres",
            "POSTGRES_URL": URL,
            "POSTGRES_TABLE": table,
            "POSTGRES_DECODER": "json",
        }

    def rows(self, env: dict[str, str], where: str = "TRUE") -> list[tuple[Any, ...]]:
        """(param, state, minion_attempts, minion_reason) of the table's rows, in id order."""
        from psycopg import sql

        query = sql.SQL("SELECT param, state, minion_attempts, minion_reason FROM {} WHERE " + where + " ORDER BY id")
        with connect() as conn:
            return conn.execute(query.format(sql.Identifier(env["POSTGRES_TABLE"]))).fetchall()

    def dead_letters(self, env: dict[str, str]) -> list[tuple[Any, str]]:
        return [(json.loads(param), reason) for param, _, _, reason in self.rows(env, "state = 'failed'")]

    def publish_raw(self, env: dict[str, str], bodies: list[str]) -> None:
        """Insert rows as a user's SQL would (the table exists)."""
        from psycopg import sql

        with connect() as conn:
            query = sql.SQL("INSERT INTO {} (param) VALUES (%s)").format(sql.Identifier(env["POSTGRES_TABLE"]))
            conn.cursor().executemany(query, [(body,) for body in bodies])

    def lease_env(self) -> dict[str, str]:
        return {"POSTGRES_LEASE_SECONDS": "2"}

    def long_run(self) -> tuple[float, dict[str, str]]:
        return 5.0, {"POSTGRES_LEASE_SECONDS": "2"}
