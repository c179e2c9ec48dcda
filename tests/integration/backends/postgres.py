"""The postgres engine: a fresh table per test in database `test` of the PostgreSQL on 127.0.0.1:5432.

scripts/services.sh starts that server (trust authentication on loopback).
It is shared with every other test run of the machine, so what kills or
restarts a server (the fault suite) uses a `PostgresServer` of its own:
initdb and pg_ctl as the user postgres, in a temporary directory, on a
free port.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Optional

from tests.conftest import require

from ..api_backends import ApiBackend
from .base import Backend, free_port

URL = "postgresql://postgres@127.0.0.1:5432/test"
#: Debian's server binaries (not on PATH), the newest version first.
BINARIES = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda d: int(Path(d).parent.name), reverse=True)


def connect(url: str = URL) -> Any:
    import psycopg  # the engine's own client, an optional extra

    return psycopg.connect(url, autocommit=True, connect_timeout=5)


class PostgresBackend(Backend):
    name = "postgres"
    url = URL
    has_deadline = True  # POSTGRES_LEASE_SECONDS
    #: A text column: the server refuses bytes that are not UTF-8 when they are written.
    raw_bytes = False
    server_name = "postgres"
    bad_urls = (
        ("POSTGRES_URL", "postgresql://u:{secret}@127.0.0.1:{port}/test?timeout_please=5"),
        ("POSTGRES_URL", "host=127.0.0.1 port={port} password={secret} dbname"),
    )

    def __init__(self) -> None:
        self.tables: list[str] = []

    @classmethod
    def pointed_at(cls, address: str, secret: str) -> tuple[dict[str, str], str]:
        env = {"MINION_ENGINE": "postgres", "POSTGRES_TABLE": "q", "POSTGRES_URL": f"postgresql://u:{secret}@{address}/test"}
        return env, f"postgresql://u:***@{address}/test"

    def start(self) -> None:
        try:
            connect(self.url).close()
        except Exception as exc:  # noqa: BLE001 - any failure to reach it means no server for the suite
            require(False, f"no PostgreSQL at {URL} (scripts/services.sh starts it): {exc}")

    def stop(self) -> None:
        if not self.tables:
            return
        from psycopg import sql

        with connect(self.url) as conn:
            for table in self.tables:
                conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(table)))
        self.tables.clear()

    def env(self, workdir: Path) -> dict[str, str]:
        table = self.unique("q").replace("-", "_")
        self.tables.append(table)
        return {
            "MINION_ENGINE": "postgres",
            "POSTGRES_URL": self.url,
            "POSTGRES_TABLE": table,
            "POSTGRES_DECODER": "json",
        }

    def rows(self, env: dict[str, str], where: str = "TRUE") -> list[tuple[Any, ...]]:
        """(param, state, minion_attempts, minion_reason) of the table's rows, in id order."""
        from psycopg import sql

        query = sql.SQL("SELECT param, state, minion_attempts, minion_reason FROM {} WHERE " + where + " ORDER BY id")
        with connect(self.url) as conn:
            return conn.execute(query.format(sql.Identifier(env["POSTGRES_TABLE"]))).fetchall()

    def raw_dead_letters(self, env: dict[str, str]) -> list[tuple[bytes, str]]:
        """The failed rows: the table is the dead-letter place."""
        return [(param.encode(), reason) for param, _, _, reason in self.rows(env, "state = 'failed'")]

    def publish_raw(self, env: dict[str, str], bodies: list[bytes]) -> None:
        """Insert rows as a user's SQL would (the table exists); `bodies` are UTF-8 (raw_bytes is False)."""
        from psycopg import sql

        with connect(self.url) as conn:
            query = sql.SQL("INSERT INTO {} (param) VALUES (%s)").format(sql.Identifier(env["POSTGRES_TABLE"]))
            conn.cursor().executemany(query, [(body.decode(),) for body in bodies])

    def lease_env(self) -> dict[str, str]:
        return {"POSTGRES_LEASE_SECONDS": "2"}

    def long_run(self) -> tuple[float, dict[str, str]]:
        return 5.0, {"POSTGRES_LEASE_SECONDS": "2"}


class PostgresServer:
    """A PostgreSQL instance of the tests' own: its data in a temporary directory, on a free port."""

    def __init__(self) -> None:
        self.port = free_port()
        self.directory = Path(tempfile.mkdtemp(prefix="minionize-postgres-"))
        self.data = self.directory / "data"
        self.bin = Path(BINARIES[0]) if BINARIES else Path("/usr/lib/postgresql/15/bin")
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/test"

    def _as_postgres(self, *argv: str, timeout: float = 60) -> None:
        # The server refuses to run as root: initdb and pg_ctl run as the user postgres.
        done = subprocess.run(["runuser", "-u", "postgres", "--", *argv], capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed: {done.stdout[-1000:]}{done.stderr[-2000:]}")

    def create(self) -> None:
        """initdb (trust authentication, fsync on), start, and create the database `test`."""
        shutil.chown(self.directory, "postgres", "postgres")
        self._as_postgres(str(self.bin / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres",
                          "--no-sync", "-E", "UTF8")
        self.start()
        self._as_postgres(str(self.bin / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "test")

    def start(self) -> None:
        options = f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1"
        self._as_postgres(str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.directory / "log"),
                          "-o", options, "-w", "-t", "60", "start", timeout=90)

    def stop(self, mode: str = "fast") -> None:
        """pg_ctl stop: `immediate` is a crash (no checkpoint: the restart replays the WAL)."""
        self._as_postgres(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop", timeout=90)

    def pids(self) -> list[int]:
        """The postmaster and its children (every backend), for signals."""
        try:
            postmaster = int((self.data / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return []
        found = [postmaster]
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    stat = Path(f"/proc/{entry}/stat").read_text().rpartition(")")[2].split()
                except OSError:
                    continue
                if int(stat[1]) == postmaster:
                    found.append(int(entry))
        return found

    def signal(self, signum: int) -> None:
        for pid in self.pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    def remove(self) -> None:
        self.signal(signal.SIGCONT)
        try:
            self.stop("immediate")
        except (RuntimeError, subprocess.TimeoutExpired):
            self.signal(signal.SIGKILL)
        shutil.rmtree(self.directory, ignore_errors=True)


class PrivatePostgresBackend(PostgresBackend):
    """The postgres backend on a server of its own, that a test may restart (the fault suite's)."""

    restartable = True

    def __init__(self) -> None:
        super().__init__()
        self.server: Optional[PostgresServer] = None

    def start(self) -> None:
        require(bool(BINARIES) and shutil.which("runuser") is not None,
                "no PostgreSQL server binaries in /usr/lib/postgresql (scripts/services.sh installs them)")
        self.server = PostgresServer()
        self.server.create()
        self.url = self.server.url

    def stop(self) -> None:
        if self.server is not None:
            self.server.remove()
            self.server = None

    def restart(self) -> None:
        """A crash and a restart: nothing committed may be lost (the WAL is replayed)."""
        assert self.server is not None
        self.server.stop("immediate")
        self.server.start()


#: PrivatePostgresBackend is not among them: the fault suite starts it itself, for what restarts a server.
BACKENDS = (PostgresBackend,)


class PostgresApi(ApiBackend):
    engine = "postgres"
    process = "postgres"
    hold_seconds = 1.6  # past POSTGRES_LEASE_SECONDS=1 (another minion's take finds expired leases)

    def env(self, workdir: Path) -> dict[str, str]:
        return {**super().env(workdir), "POSTGRES_LEASE_SECONDS": "1"}

    def address_env(self, host: str, port: int) -> dict[str, str]:
        return {"POSTGRES_URL": f"postgresql://postgres@{host}:{port}/test"}


API_BACKENDS = (PostgresApi,)
