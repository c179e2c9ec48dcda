"""What the wrapped program's environment holds: the minion's own, less minionize's credentials."""

from __future__ import annotations

from pathlib import Path

from minionize.callbacks.process import child_environment, is_credential
from tests.conftest import run_minion

SECRETS = {
    "REDIS_URL": "redis://user:s3cret-redis@127.0.0.1:6379/0",
    "AMQP_URL": "amqp://guest:s3cret-amqp@127.0.0.1:5672/",
    "PULSAR_TOKEN": "s3cret-pulsar",
    "GOOGLE_APPLICATION_CREDENTIALS": "/keys/s3cret.json",
    "DB_PASSWORD": "not-ours",  # the program's own: not a minionize variable
}


def test_credentials_are_recognised_by_name() -> None:
    assert all(is_credential(name) for name in [
        "REDIS_URL", "REDIS_PASSWORD", "AMQP_URL", "PULSAR_CONNECTION", "PULSAR_TOKEN", "PULSAR_TOKEN_FILE",
        "PULSAR_TLS_KEY_FILE", "GOOGLE_APPLICATION_CREDENTIALS", "POSTGRES_URL", "NATS_URL", "NATS_USER",
        "NATS_CREDS", "MINION_METRICS_TOKEN",
    ])
    assert not any(is_credential(name) for name in [
        "REDIS_STREAM", "NATS_TLS_CA_FILE", "MINION_TIMEOUT", "MINION_STATUS_URL", "HOME", "DB_PASSWORD",
        "DATABASE_URL",
    ])
    kept = child_environment({"REDIS_URL": "x", "HOME": "/h"}, passed=["REDIS_URL"])
    assert kept == {"REDIS_URL": "x", "HOME": "/h"}


def run_env(tmp_path: Path, **extra: str) -> str:
    (tmp_path / "in.txt").write_text("x\n")
    result = run_minion("sh", "-c", "env; : ", cwd=tmp_path, MINION_ENGINE="file", FILE_PATH="in.txt",
                        MY_SETTING="kept", **SECRETS, **extra)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_the_program_does_not_see_the_minions_credentials(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("REDIS_PASSWORD=s3cret-dotenv\nFROM_DOTENV=kept\n")
    seen = run_env(tmp_path)
    assert "s3cret" not in seen
    assert "MY_SETTING=kept" in seen and "FROM_DOTENV=kept" in seen and "DB_PASSWORD=not-ours" in seen
    assert "MINION_RUN_ID=" in seen and "MINION_PARAM=" in seen


def test_minion_pass_env_hands_chosen_credentials_over(tmp_path: Path) -> None:
    seen = run_env(tmp_path, MINION_PASS_ENV="REDIS_URL, PULSAR_TOKEN")
    assert f"REDIS_URL={SECRETS['REDIS_URL']}" in seen and "PULSAR_TOKEN=s3cret-pulsar" in seen
    assert "s3cret-amqp" not in seen
