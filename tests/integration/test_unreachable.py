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
from typing import Optional

import pytest

from minionize.registry import engine_class
from tests.conftest import minion_env, run_minion

from .backends import engine_backends, load

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


def operation_timeout(engine: str) -> Optional[str]:
    """The engine's setting of its operation timeout (`REDIS_OPERATION_TIMEOUT`), if it declares one."""
    return next((s.name for s in engine_class(engine).settings if s.name.endswith("_OPERATION_TIMEOUT")), None)


def engine_env(engine: str, port: int, secret: str = PASSWORD) -> tuple[dict[str, str], str]:
    """The variables pointing `engine` at 127.0.0.1:`port` with a password, and the address the error names."""
    env, shown = load(engine).pointed_at(f"127.0.0.1:{port}", secret)
    timeout = operation_timeout(engine)
    assert timeout is not None, f"{engine} reaches a server but declares no *_OPERATION_TIMEOUT"
    return {**env, timeout: str(TIMEOUT)}, shown


def push_cmd() -> list[str]:
    return [sys.executable, "-m", "minionize.push", "x"]


#: The engines with a server to reach: their backend says how to point them at an address (Backend.pointed_at).
ENGINES = [name for name in engine_backends() if load(name).server_name]


def test_every_engine_with_a_server_is_tested_here() -> None:
    """An engine that declares connection errors or an operation timeout reaches a server over the network:
    its backend must say how to point it at an address, how its errors name the server, and which bad URLs
    it refuses, or this suite would leave it out."""
    for engine in engine_backends():
        declared = engine_class(engine)
        if declared.connection_errors or operation_timeout(engine):
            backend = load(engine)
            assert backend.server_name, f"backends/{engine}.py: {backend.__name__} sets no server_name"
            assert backend.bad_urls, f"backends/{engine}.py: {backend.__name__} gives no bad_urls"
            env, shown = backend.pointed_at("127.0.0.1:1", PASSWORD)  # NotImplementedError: it has none
            assert env["MINION_ENGINE"] == engine and "127.0.0.1:1" in shown and PASSWORD not in shown


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
    named = load(engine).server_name
    assert lines[0].startswith("minionize: ") and named in lines[0] and shown in lines[0], lines[0]
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
    [(engine, variable, url) for engine in ENGINES for variable, url in load(engine).bad_urls],
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
