"""What the nats engine promises beyond the contract suites, on a real nats-server.

Its private event loop thread and connection end with close(), whatever
happened before; a settlement made while the server is away is kept and
sent once it is back; a silent or gone server fails the calls through
kit.ConnectionGuard; refused credentials are a configuration error; a
consumer made elsewhere with a lower delivery limit gets a warning.
(Every other credential: test_engine_nats_credentials.py.)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import cast

import pytest

from minionize.config import EnvReader
from minionize.engines.nats import NatsEngine
from minionize.errors import ConfigError, QueueUnreachable

from .backends import started
from .backends.base import take as backends_take
from .backends.nats import NATS_SERVER, NatsBackend, NatsServer

pytestmark = pytest.mark.integration
SECRET = "Zq-nats-Sesame-42"


@pytest.fixture(scope="module")
def backend(request: pytest.FixtureRequest) -> NatsBackend:
    """The session's nats backend, shared with the contract suites (backends.started)."""
    return cast(NatsBackend, started("nats", request.config))


def engine(env: dict[str, str], **more: str) -> NatsEngine:
    return NatsEngine.from_env(EnvReader({**env, **more}))


def sockets() -> int:
    """How many sockets this process holds."""
    fds = Path("/proc/self/fd")
    count = 0
    for fd in fds.iterdir():
        with contextlib.suppress(OSError):  # closed since it was listed
            count += os.readlink(fd).startswith("socket:")
    return count


def loop_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "minionize-nats"]


def take(minion: NatsEngine) -> object:
    return backends_take(minion, 20)


def test_close_leaves_no_thread_nor_socket(backend: NatsBackend, tmp_path: Path) -> None:
    env = backend.env(tmp_path)
    before = sockets()
    pusher = engine(env)
    pusher.push(["a", "b"])
    pusher.close()
    minion = engine(env)
    minion.open()
    assert len(loop_threads()) == 1
    minion.ack(take(minion))  # type: ignore[arg-type]
    minion.close()
    minion.close()  # twice: nothing left to do
    assert loop_threads() == []
    assert sockets() == before


def test_a_failed_open_leaves_no_thread_nor_socket(tmp_path: Path) -> None:
    before = sockets()
    with pytest.raises(QueueUnreachable):
        engine({"NATS_STREAM": "s", "NATS_URL": "nats://127.0.0.1:1", "NATS_OPERATION_TIMEOUT": "1"}).open()
    assert loop_threads() == []
    assert sockets() == before


def test_a_settlement_made_while_the_server_is_away_is_sent_once_it_is_back(tmp_path: Path) -> None:
    """The server restarts (file storage) with a message in hand: its ack reaches it, it never runs again."""
    server = NatsServer()
    server.start()
    try:
        env = {"NATS_URL": server.url, "NATS_STREAM": "held", "NATS_OPERATION_TIMEOUT": "1", "NATS_ACK_WAIT": "30"}
        pusher = engine(env)
        pusher.push(["in hand", "next"])
        pusher.close()
        minion = engine(env)
        minion.open()
        message = take(minion)
        server.shutdown()
        with contextlib.suppress(ConnectionError):  # or sent, and its answer never comes
            minion.ack(message)  # type: ignore[arg-type]
        server.start()
        deadline = time.monotonic() + 30
        taken = None
        while taken is None:  # the worker's loop: calls fail (and back off) until the client is back
            assert time.monotonic() < deadline, "the engine did not come back"
            try:
                taken = minion.next(0.2)
            except ConnectionError:
                time.sleep(0.2)
        assert taken.param == "next", "the message in hand came back: its ack was lost"
        minion.ack(taken)
        assert minion.drained()
        minion.close()
        assert loop_threads() == []
    finally:
        server.remove()


def until(check: Callable[[], bool], what: str, within: float = 30) -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def fails_saying(call: Callable[[], object], says: str) -> bool:
    """Whether `call` fails with a ConnectionError that says `says`."""
    try:
        call()
    except ConnectionError as exc:
        return says in str(exc)
    return False


def answered(call: Callable[[], object]) -> object:
    """What `call` returns, or None when it fails with a ConnectionError."""
    try:
        return call()
    except ConnectionError:
        return None


def pause(process: subprocess.Popen[bytes]) -> None:
    """SIGSTOP, then wait until every thread of the process is stopped: until then it may still answer."""
    process.send_signal(signal.SIGSTOP)
    tasks = Path(f"/proc/{process.pid}/task")

    def stopped() -> bool:
        states = []
        for task in tasks.iterdir():
            with contextlib.suppress(OSError):  # a thread that ended since it was listed
                states.append((task / "stat").read_text().rsplit(")", 1)[1].split()[0])
        return bool(states) and all(state in ("T", "t") for state in states)

    until(stopped, "the server did not stop")


def test_a_silent_or_gone_server_fails_the_calls_through_the_guard(tmp_path: Path) -> None:
    """kit.ConnectionGuard: a call left unanswered makes the calls of one NATS_OPERATION_TIMEOUT fail
    without being tried; while the client reconnects, each call fails without waiting for an answer."""
    server = NatsServer()
    server.start()
    assert server.process is not None
    minion = engine({"NATS_URL": server.url, "NATS_STREAM": "guarded", "NATS_OPERATION_TIMEOUT": "3"})
    try:
        minion.push(["x"])
        pause(server.process)  # connected, and nothing answers
        try:
            with pytest.raises(ConnectionError, match=r"^NATS at nats://127\.0\.0\.1:\d+: consumer info failed"):
                minion.remaining()
            with pytest.raises(ConnectionError, match="consumer info not tried: no answer within 3s"):
                minion.remaining()
        finally:
            server.process.send_signal(signal.SIGCONT)
        # The silence ends after one timeout; the unanswered call dropped the connection, and the client
        # opens another once the server answers again.
        until(lambda: not fails_saying(minion.remaining, ""), "the engine did not answer again")
        assert minion.remaining() == 1
        server.shutdown()
        until(lambda: fails_saying(lambda: minion.next(0.1), "fetch failed: connection reconnecting"),
              "no call refused while the client reconnects")
    finally:
        minion.close()
        server.remove()
    assert loop_threads() == []


def test_every_ack_made_while_the_client_reconnects_is_kept_and_sent_once_it_is_back(tmp_path: Path) -> None:
    """An ack is owed before anything is tried: the second one is not lost because the first could not be sent."""
    server = NatsServer()
    server.start()
    env = {"NATS_URL": server.url, "NATS_STREAM": "owed", "NATS_OPERATION_TIMEOUT": "1", "NATS_ACK_WAIT": "30"}
    minion = engine(env)
    try:
        minion.push(["a", "b"])
        held = [take(minion), take(minion)]
        server.shutdown()
        until(lambda: fails_saying(lambda: minion.next(0.1), "connection reconnecting"), "the client did not notice")
        for message in held:
            with pytest.raises(ConnectionError):
                minion.ack(message)  # type: ignore[arg-type]
        server.start()
        # Back before the ack wait: drained only if both acks reached the server.
        until(lambda: answered(minion.drained) is True, "the acks owed did not reach the server", within=20)
    finally:
        minion.close()
        server.remove()


def test_refused_credentials_are_a_config_error_that_hides_them(tmp_path: Path) -> None:
    server = NatsServer("--user", "minion", "--pass", SECRET)
    server.start()
    try:
        env = {"NATS_URL": server.url, "NATS_STREAM": "auth", "NATS_USER": "minion", "NATS_OPERATION_TIMEOUT": "3"}
        with pytest.raises(ConfigError) as caught:
            engine(env, NATS_PASSWORD="wrong-" + SECRET).open()
        assert caught.value.variable == "NATS_PASSWORD" and "refused" in str(caught.value)
        assert SECRET not in str(caught.value)
        assert loop_threads() == []
        with pytest.raises(ConfigError) as caught:
            engine({**env, "NATS_URL": f"nats://minion:wrong{SECRET}@127.0.0.1:{server.port}"}).open()
        assert SECRET not in str(caught.value)
        good = engine(env, NATS_PASSWORD=SECRET)
        good.push(["x"])
        assert good.remaining() == 1
        good.close()
    finally:
        server.remove()


def test_a_token_is_given_and_a_refused_one_named(tmp_path: Path) -> None:
    server = NatsServer("--auth", SECRET)
    server.start()
    try:
        env = {"NATS_URL": server.url, "NATS_STREAM": "token", "NATS_OPERATION_TIMEOUT": "3"}
        with pytest.raises(ConfigError) as caught:
            engine(env, NATS_TOKEN="wrong").open()
        assert caught.value.variable == "NATS_TOKEN" and SECRET not in str(caught.value)
        good = engine(env, NATS_TOKEN=SECRET)
        good.push(["x"])
        assert good.remaining() == 1 and SECRET not in good.describe()
        good.close()
    finally:
        server.remove()


async def _consumer(url: str, stream: str, max_deliver: int) -> None:
    import nats
    from nats.js.api import AckPolicy, ConsumerConfig

    client = await nats.connect(url)
    try:
        js = client.jetstream()
        await js.add_stream(name=stream, subjects=[stream])
        await js.add_consumer(stream, ConsumerConfig(durable_name="minionize", ack_policy=AckPolicy.EXPLICIT,
                                                     max_deliver=max_deliver, ack_wait=7))
    finally:
        await client.close()


def test_the_consumer_follows_minion_max_attempts_and_a_lower_limit_is_warned_of(
    backend: NatsBackend, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    env = backend.env(tmp_path)
    made = engine(env, MINION_MAX_ATTEMPTS="4", NATS_ACK_WAIT="12")
    made.open()
    info = made._call(made._js.consumer_info(made.stream, made.consumer), "consumer info")
    assert (info.config.max_deliver, info.config.ack_wait) == (5, 12)  # the last delivery sets a dead run's aside
    made.close()

    stream = backend.unique("elsewhere")
    asyncio.run(_consumer(backend.url, stream, max_deliver=2))
    caplog.set_level(logging.WARNING, "minionize")
    minion = engine({**env, "NATS_STREAM": stream}, MINION_MAX_ATTEMPTS="3")
    minion.open()
    assert minion.ack_wait == 7 and minion.lease_interval == pytest.approx(7 / 3)  # the consumer's own
    minion.close()
    assert "delivers a message 2 times at most" in caplog.text and "--max-deliver=4" in caplog.text


def test_a_server_without_jetstream_is_a_config_error(tmp_path: Path) -> None:
    from .backends.base import free_port

    port = free_port()
    process = subprocess.Popen([NATS_SERVER, "-a", "127.0.0.1", "-p", str(port)], stdin=subprocess.DEVNULL,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        env = {"NATS_URL": f"nats://127.0.0.1:{port}", "NATS_STREAM": "s", "NATS_OPERATION_TIMEOUT": "2"}
        deadline = time.monotonic() + 20
        while True:
            try:
                engine(env).open()
            except QueueUnreachable:  # not listening yet
                assert time.monotonic() < deadline
                time.sleep(0.1)
                continue
            except ConfigError as exc:
                assert "JetStream is not enabled" in str(exc)
                break
            raise AssertionError("opened on a server without JetStream")
        assert loop_threads() == []
    finally:
        process.terminate()
        process.wait(timeout=30)


async def _publish_with_headers(url: str, subject: str, body: bytes, headers: dict[str, str]) -> None:
    import nats

    client = await nats.connect(url)
    try:
        await client.jetstream().publish(subject, body, headers=headers)
    finally:
        await client.close()


def test_a_message_with_jetstream_publish_headers_is_dead_lettered_and_released(
    backend: NatsBackend, tmp_path: Path
) -> None:
    # A producer's Nats-Expected-Stream (or Nats-Msg-Id) copied onto the dead letter made JetStream
    # refuse (or drop) the copy: the message was neither dead-lettered nor delivered again.
    from tests.conftest import run_minion

    env = {**backend.env(tmp_path), "MINION_MAX_ATTEMPTS": "1", "NATS_ACK_WAIT": "5"}
    made = engine(env)
    made.open()  # the stream and its consumer
    made.close()
    headers = {"Nats-Expected-Stream": env["NATS_STREAM"], "Nats-Msg-Id": "once", "kept": "yes"}
    asyncio.run(_publish_with_headers(backend.url, env["NATS_STREAM"], b'"guarded"', headers))
    result = run_minion("false", cwd=tmp_path, timeout=60, **env)
    assert "(1 failed)" in result.stderr, result.stderr
    [(body, dead_headers)] = backend.dead_letter_messages(env)
    assert body == b'"guarded"' and dead_headers.get("kept") == "yes"
    assert not any(name.lower().startswith("nats-") for name in dead_headers)


async def _publish_near_the_limit(url: str, subject: str, headroom: int) -> int:
    import nats

    client = await nats.connect(url)
    try:
        size = client.max_payload - headroom
        await client.jetstream().publish(subject, b"q" * size)
        await client.jetstream().publish(subject, b'"last"')
        return size
    finally:
        await client.close()


def test_a_failed_message_near_the_max_payload_is_dead_lettered_and_the_minion_goes_on(
    backend: NatsBackend, tmp_path: Path
) -> None:
    # Its dead-letter copy with minionize's headers went over the server's max payload: the server
    # dropped the connection, the client sent the copy again at each reconnection, the minion took
    # nothing more, for ever.
    from tests.conftest import run_minion

    env = {**backend.env(tmp_path), "NATS_DECODER": "identity", "MINION_MAX_ATTEMPTS": "1", "MINION_ARGS": "x"}
    made = engine(env)
    made.open()  # the stream and its consumer
    made.close()
    size = asyncio.run(_publish_near_the_limit(backend.url, env["NATS_STREAM"], 100))
    result = run_minion("false", cwd=tmp_path, timeout=60, **env)
    assert result.returncode == 123 and "(2 failed)" in result.stderr, result.stderr
    assert "dead-lettered without them" in result.stderr
    bodies = sorted(len(body) for body, _ in backend.dead_letter_messages(env))
    assert bodies == [len(b'"last"'), size]
