"""A queue that cannot be reached ends a minion with exit code 3 and one line, in bounded time.

The hardest case is a port that accepts connections and never answers (a
paused broker, a wrong port behind a load balancer, a firewall that
completes handshakes): every engine must give up after its operation
timeout, not hang or print a traceback. The listener here is the test's
own, on 127.0.0.1. Credentials in the URL never show, in the minion nor in
minion-push, whatever the engine says when it fails.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import minion_env, run_minion

pytestmark = pytest.mark.integration
#: Each engine's operation timeout is 5 s by default; here it is set to this.
TIMEOUT = 2
#: What start-up may take beyond it (imports, one reconnect, the client's own timer granularity).
SLACK = 4.0
PASSWORD = "Zq-unreachable-secret"


class SilentListener:
    """Accepts every connection on 127.0.0.1 and never sends a byte."""

    def __init__(self) -> None:
        self.socket = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.socket.getsockname()[1]
        self.accepted: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.socket.accept()
            except OSError:
                return
            self.accepted.append(conn)

    def close(self) -> None:
        self.socket.close()
        for conn in self.accepted:
            conn.close()


@pytest.fixture
def silent() -> Iterator[SilentListener]:
    listener = SilentListener()
    yield listener
    listener.close()


def engine_env(engine: str, port: int, secret: str = PASSWORD) -> tuple[dict[str, str], str]:
    """The variables pointing `engine` at 127.0.0.1:`port` with a password, and the address the error names."""
    address = f"127.0.0.1:{port}"
    env = {
        "redis": {"MINION_ENGINE": "redis", "REDIS_STREAM": "s", "REDIS_URL": f"redis://u:{secret}@{address}/0",
                  "REDIS_OPERATION_TIMEOUT": str(TIMEOUT)},
        "amqp": {"MINION_ENGINE": "amqp", "AMQP_QUEUE": "q", "AMQP_URL": f"amqp://u:{secret}@{address}/%2F",
                 "AMQP_OPERATION_TIMEOUT": str(TIMEOUT)},
        "pulsar": {"MINION_ENGINE": "pulsar", "PULSAR_TOPIC": "t", "PULSAR_CONNECTION": f"pulsar://{address}",
                   "PULSAR_TOKEN": secret, "PULSAR_OPERATION_TIMEOUT": str(TIMEOUT)},
        "nats": {"MINION_ENGINE": "nats", "NATS_STREAM": "s", "NATS_URL": f"nats://u:{secret}@{address}",
                 "NATS_OPERATION_TIMEOUT": str(TIMEOUT)},
        "google": {"MINION_ENGINE": "google", "GOOGLE_PROJECT_ID": "p", "GOOGLE_TOPIC_ID": "topic",
                   "GOOGLE_SUBSCRIPTION": "sub", "PUBSUB_EMULATOR_HOST": address,
                   "GOOGLE_OPERATION_TIMEOUT": str(TIMEOUT)},
        "postgres": {"MINION_ENGINE": "postgres", "POSTGRES_TABLE": "q",
                     "POSTGRES_URL": f"postgresql://u:{secret}@{address}/test",
                     "POSTGRES_OPERATION_TIMEOUT": str(TIMEOUT)},
    }[engine]
    shown = {"redis": f"redis://u:***@{address}/0", "amqp": f"amqp://u:***@{address}/%2F",
             "nats": f"nats://u:***@{address}",
             "postgres": f"postgresql://u:***@{address}/test"}.get(engine, address)
    return env, shown


def push_cmd() -> list[str]:
    return [sys.executable, "-m", "minionize.push", "x"]


ENGINES = ["redis", "amqp", "pulsar", "google", "nats", "postgres"]
NAMES = {"redis": "redis", "amqp": "RabbitMQ", "pulsar": "Pulsar", "google": "Pub/Sub",
         "nats": "NATS", "postgres": "postgres"}


@pytest.mark.parametrize("engine", ENGINES)
def test_a_port_that_never_answers_exits_3_with_one_line(
    engine: str, silent: SilentListener, tmp_path: Path
) -> None:
    env, shown = engine_env(engine, silent.port)
    started = time.monotonic()
    minion = run_minion("true", cwd=tmp_path, timeout=60, **env)
    took = time.monotonic() - started
    lines = minion.stderr.strip().splitlines()
    assert minion.returncode == 3, minion.stderr
    assert len(lines) == 1, minion.stderr
    assert lines[0].startswith("minionize: ") and NAMES[engine] in lines[0] and shown in lines[0], lines[0]
    assert PASSWORD not in minion.stderr
    assert took < TIMEOUT + SLACK, f"{engine} gave up after {took:.1f}s"


@pytest.mark.parametrize("engine", ENGINES)
def test_minion_push_to_a_port_that_never_answers_exits_3(
    engine: str, silent: SilentListener, tmp_path: Path
) -> None:
    env, shown = engine_env(engine, silent.port)
    started = time.monotonic()
    push = subprocess.run(push_cmd(), env=minion_env(**env), cwd=tmp_path, capture_output=True, text=True, timeout=60)
    took = time.monotonic() - started
    assert push.returncode == 3, push.stderr
    assert push.stderr.startswith("minion-push: ") and shown in push.stderr, push.stderr
    assert PASSWORD not in push.stderr + push.stdout
    assert took < TIMEOUT + SLACK, f"{engine} gave up after {took:.1f}s"


@pytest.mark.parametrize(
    ("engine", "variable", "url"),
    [
        # The Pulsar client refuses user:password@ in its URL, and said why with the password in it.
        ("pulsar", "PULSAR_CONNECTION", "pulsar://u:{secret}@127.0.0.1:{port}"),
        ("redis", "REDIS_URL", "redis://u:{secret}@127.0.0.1:{port}/0?socket_timeout=soon"),
        ("redis", "REDIS_URL", "redis://127.0.0.1:{port}/0?password={secret}&db=x"),
        ("amqp", "AMQP_URL", "amqp://u:{secret}@127.0.0.1:{port}/%2F?heartbeat=often"),
        ("amqp", "AMQP_URL", "amqp://u:{secret}@127.0.0.1:99999/%2F"),
        ("postgres", "POSTGRES_URL", "postgresql://u:{secret}@127.0.0.1:{port}/test?timeout_please=5"),
        ("postgres", "POSTGRES_URL", "host=127.0.0.1 port={port} password={secret} dbname"),
        ("google", "PUBSUB_EMULATOR_HOST", "u:{secret}@127.0.0.1:{port}"),
        ("nats", "NATS_URL", "nats://u:{secret}@127.0.0.1:{port}0000"),
    ],
)
def test_a_bad_url_with_a_password_is_a_config_error_that_hides_it(
    engine: str, variable: str, url: str, silent: SilentListener, tmp_path: Path
) -> None:
    env, _ = engine_env(engine, silent.port)
    env[variable] = url.format(secret=PASSWORD, port=silent.port)
    minion = run_minion("true", cwd=tmp_path, timeout=60, **env)
    push = subprocess.run(push_cmd(), env=minion_env(**env), cwd=tmp_path, capture_output=True, text=True, timeout=60)
    for name, done in (("minionize", minion), ("minion-push", push)):
        assert done.returncode == 2, done.stderr
        assert done.stderr.startswith(f"{name}: {variable}="), done.stderr
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr
        assert PASSWORD not in done.stderr + done.stdout, done.stderr
