"""A broker password never shows: not in logs, reports, minion-status or mtop's data."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from minionize import exitcodes
from tests.conftest import minion_env, run_minion

from .backends.amqp import AmqpBackend, rabbitmqctl

pytestmark = pytest.mark.integration
PASSWORD = "Zq-secret-" + uuid.uuid4().hex[:8]


@pytest.fixture()
def amqp_user() -> Iterator[str]:
    AmqpBackend().start()
    name = f"minion-{uuid.uuid4().hex[:8]}"
    rabbitmqctl("add_user", name, PASSWORD)
    rabbitmqctl("set_permissions", "-p", "/", name, ".*", ".*", ".*")
    yield name
    rabbitmqctl("delete_user", name)


def test_the_password_stays_out_of_every_output(amqp_user: str, tmp_path: Path) -> None:
    queue = f"secrets-{uuid.uuid4().hex[:8]}"
    report = tmp_path / "report"
    env = {
        "MINION_ENGINE": "amqp", "AMQP_QUEUE": queue,
        "AMQP_URL": f"amqp://{amqp_user}:{PASSWORD}@127.0.0.1:5672/%2F",
        "MINION_REPORTER": "json,stdout", "REPORTER_JSON_DIRECTORY": str(report),
        "MINION_LOG_LEVEL": "DEBUG", "MINION_MAX_ATTEMPTS": "1",
    }
    push = subprocess.run([sys.executable, "-m", "minionize.push", "ok", "fails"], env=minion_env(**env),
                          capture_output=True, text=True, timeout=60)
    assert push.returncode == 0, push.stderr
    minion = run_minion("test", "fails", "!=", cwd=tmp_path, **env)
    assert minion.returncode == exitcodes.SET_ASIDE, minion.stderr
    assert "1 acked" in minion.stderr and "1 failed" in minion.stderr  # it did connect and work
    status = [
        subprocess.run([sys.executable, "-m", "minionize.status", *args], cwd=tmp_path, timeout=60,
                       env=minion_env(REPORTER_JSON_DIRECTORY=str(report)), capture_output=True, text=True)
        for args in ([], ["--json"])
    ]
    outputs = {
        "push": push.stdout + push.stderr,
        "minion": minion.stdout + minion.stderr,
        "reports": "".join(p.read_text() for p in report.glob("*.jsonl")),
        "minion-status": status[0].stdout + status[0].stderr,
        "minion-status --json": status[1].stdout,
    }
    assert amqp_user in outputs["reports"]  # the URL is there, masked
    for name, text in outputs.items():
        assert PASSWORD not in text, f"the password shows in {name}"
