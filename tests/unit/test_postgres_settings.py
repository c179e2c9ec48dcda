"""The postgres engine's settings: what from_env accepts, and the one-line errors it gives (no server needed)."""

from __future__ import annotations

import pytest

from minionize.config import EnvReader
from minionize.engines.postgres import PostgresEngine, masked
from minionize.errors import ConfigError

SECRET = "Zq-pg-secret"


def engine(**env: str) -> PostgresEngine:
    return PostgresEngine.from_env(EnvReader({"POSTGRES_TABLE": "params", **env}))


def test_defaults() -> None:
    built = engine()
    assert (built.url, built.decoder, built.lease_seconds, built.delete_done, built.operation_timeout) == (
        "", "identity", 60.0, False, 5.0)
    assert built.lease_interval == 20.0
    assert "libpq" in built.describe()


def test_postgres_url_wins_over_database_url() -> None:
    built = engine(POSTGRES_URL="postgresql://a@h1/db", DATABASE_URL="postgresql://b@h2/db")
    assert built.url == "postgresql://a@h1/db"
    assert engine(DATABASE_URL="postgresql://b@h2/db").url == "postgresql://b@h2/db"


@pytest.mark.parametrize("url", [f"postgresql://u:{SECRET}@db:5432/test", f"host=db password={SECRET} dbname=test",
                                 f"host=db password='{SECRET} x' dbname=test"])
def test_describe_masks_the_password(url: str) -> None:
    shown = engine(POSTGRES_URL=url).describe()
    assert SECRET not in shown and "***" in shown and "db" in shown


@pytest.mark.parametrize("table, parts", [("params", ("params",)), ("sweeps.params", ("sweeps", "params")),
                                          ("Odd Name", ("Odd Name",))])
def test_a_table_name_may_have_a_schema(table: str, parts: tuple[str, ...]) -> None:
    assert engine(POSTGRES_TABLE=table).parts == parts


@pytest.mark.parametrize(
    ("env", "variable", "accepted"),
    [
        ({"POSTGRES_TABLE": ""}, "POSTGRES_TABLE", "mandatory"),
        ({"POSTGRES_TABLE": "a.b.c"}, "POSTGRES_TABLE", "table name or schema.name"),
        ({"POSTGRES_TABLE": "a..b"}, "POSTGRES_TABLE", "table name or schema.name"),
        ({"POSTGRES_TABLE": "x" * 64}, "POSTGRES_TABLE", "1 to 63 bytes"),
        ({"POSTGRES_DECODER": "yaml"}, "POSTGRES_DECODER", "expected one of"),
        ({"POSTGRES_LEASE_SECONDS": "0.5"}, "POSTGRES_LEASE_SECONDS", ">= 1"),
        ({"POSTGRES_OPERATION_TIMEOUT": "0"}, "POSTGRES_OPERATION_TIMEOUT", "> 0"),
        ({"POSTGRES_DELETE_DONE": "maybe"}, "POSTGRES_DELETE_DONE", "expected one of"),
        ({"POSTGRES_URL": f"host=db password={SECRET} port"}, "POSTGRES_URL", "postgresql://"),
        ({"DATABASE_URL": f"host='db password={SECRET}"}, "DATABASE_URL", "key=value string"),
    ],
)
def test_bad_values_name_the_variable_and_hide_the_password(env: dict[str, str], variable: str, accepted: str) -> None:
    with pytest.raises(ConfigError) as caught:
        engine(**env)
    message = str(caught.value)
    assert message.startswith(f"{variable}=") and accepted in message, message
    assert SECRET not in message


def test_masked_leaves_a_string_without_password_alone() -> None:
    assert masked("host=db dbname=test") == "host=db dbname=test"
    assert masked("postgresql://db/test") == "postgresql://db/test"
