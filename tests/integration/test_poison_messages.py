"""Poison messages on real brokers: set aside once with their reason, and the minion goes on.

For every engine that decodes raw bytes (each broker, and the file engine),
raw bodies that no producer of minionize would write are put between good
parameters: JSON nested 100,000 deep, a 5,001-digit integer, a NUL or a
lone surrogate in a dict value, bytes that are not UTF-8, a 1 MiB single
word. One real minion with the json decoder must exit 0 (never 1 with a
traceback, which on Redis and RabbitMQ made the fleet crash-loop on the
message forever), set each poison aside exactly once with its reason in the
dead-letter place, and run every good parameter.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from minionize import exitcodes
from tests.conftest import ROOT, run_minion

from .backends import BACKENDS, Backend, load
from .test_contract import push, runs

pytestmark = pytest.mark.integration
RECORD = (sys.executable, str(ROOT / "tests" / "programs" / "record.py"))

#: Raw body -> what the reason it is set aside with must say.
POISON: dict[bytes, str] = {
    b"[" * 100_000: "JSON nested too deeply",
    b"1" * 5_001: "not usable JSON",
    b'{"k": "a\\u0000b"}': "NUL character",
    b'{"k": "\\ud800"}': "lone surrogate",
    b"caf\xe9": "not UTF-8 text",
    b'"' + b"x" * (1 << 20) + b'"': "does not fit in a command line",
}
GOOD_BEFORE, GOOD_AFTER = ["g0"], ["g1", "g2", "g3"]


@pytest.fixture(scope="module", params=[name for name in BACKENDS if name != "execo"])
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    """Every engine that reads raw bytes (execo's sweeps hold Python objects, not bodies)."""
    instance = load(request.param)()
    instance.start()
    yield instance
    instance.stop()


def publish_raw(backend: Backend, env: dict[str, str], bodies: list[bytes]) -> None:
    """Put `bodies` on the queue as they are, as a producer other than minion-push could."""
    if backend.name == "redis":
        with backend.client() as client:  # type: ignore[attr-defined]
            for body in bodies:
                client.xadd(env["REDIS_STREAM"], {"param": body})
    elif backend.name.startswith("amqp"):
        _amqp_send(env["AMQP_QUEUE"], bodies)
    elif backend.name == "google":
        from .backends.google import clients

        _, publisher = clients()
        topic = f"projects/{env['GOOGLE_PROJECT_ID']}/topics/{env['GOOGLE_TOPIC_ID']}"
        for body in bodies:
            publisher.publish(topic=topic, messages=[{"data": body}], timeout=30)
    elif backend.name == "nats":
        backend.publish_raw(env, bodies)  # type: ignore[attr-defined]
    elif backend.name == "pulsar":
        _pulsar_send(backend, env["PULSAR_TOPIC"], bodies)
    elif backend.name == "postgres":
        backend.publish_raw(env, [body.decode() for body in bodies])  # type: ignore[attr-defined]
    elif backend.name == "file":
        with open(env["FILE_PATH"], "ab") as out:
            out.write(b"".join(body + b"\n" for body in bodies))
    else:
        raise AssertionError(f"no raw producer for {backend.name}")


def _amqp_send(queue: str, bodies: list[bytes]) -> None:
    import pika

    from .backends.amqp import channel

    ch = channel()
    for body in bodies:
        ch.basic_publish("", queue, body, pika.BasicProperties(delivery_mode=2))
    ch.connection.close()


def _pulsar_send(backend: Any, topic: str, bodies: list[bytes]) -> None:
    import pulsar

    client = pulsar.Client(backend.url, operation_timeout_seconds=10)
    try:
        producer = client.create_producer(topic)
        for body in bodies:
            producer.send(body)
        producer.close()
    finally:
        client.close()


def raw_dead_letters(backend: Backend, env: dict[str, str]) -> list[tuple[bytes, str]]:
    """(body as it was queued, reason) of each dead letter; the file engine keeps no reason."""
    if backend.name == "redis":
        with backend.client() as client:  # type: ignore[attr-defined]
            entries = client.xrange(f"{env['REDIS_STREAM']}:dead")
        return [(fields[b"param"], fields[b"minion_reason"].decode()) for _, fields in entries]
    if backend.name.startswith("amqp"):
        from .backends.amqp import read_queue

        letters = []
        for _, properties, body in read_queue(f"{env['AMQP_QUEUE']}.dead"):
            reason = (properties.headers or {}).get("minion_reason", b"")
            letters.append((body, reason.decode() if isinstance(reason, bytes) else str(reason)))
        return letters
    if backend.name == "google":
        from .backends.google import pull_all

        subscription = f"projects/{env['GOOGLE_PROJECT_ID']}/subscriptions/{env['GOOGLE_TOPIC_ID']}-dead-letter-sub"
        return [(letter.data, letter.attributes.get("minion_reason", "")) for letter in pull_all(subscription)]
    if backend.name == "nats":
        letters = backend.raw_dead_letters(env)  # type: ignore[attr-defined]
        return [(body, headers.get("minion_reason", "")) for body, headers in letters]
    if backend.name == "pulsar":
        read = backend.read(f"{env['PULSAR_TOPIC']}-minionize-DLQ")  # type: ignore[attr-defined]
        return [(body, properties.get("minion_reason", "")) for body, properties in read]
    if backend.name == "postgres":
        failed = backend.rows(env, "state = 'failed'")  # type: ignore[attr-defined]
        return [(param.encode(), reason) for param, _, _, reason in failed]
    path = Path(env["FILE_DEAD_LETTER"])
    return [(line, "") for line in path.read_bytes().split(b"\n")[:-1]] if path.exists() else []


def _is_text(body: bytes) -> bool:
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def test_poison_messages_are_set_aside_once_and_the_minion_goes_on(backend: Backend, tmp_path: Path) -> None:
    env = backend.env(tmp_path)
    # What the queue can hold: a PostgreSQL text column refuses bytes that are not UTF-8 when written.
    poison = {body: why for body, why in POISON.items() if backend.raw_bytes or _is_text(body)}
    push(env, *GOOD_BEFORE)  # creates the queue (a subscription, a group) as a fleet would have it
    publish_raw(backend, env, list(poison))
    push(env, *GOOD_AFTER)
    extra = {} if backend.drains else {"MINION_IDLE_TIMEOUT": "4"}
    result = run_minion(*RECORD, str(tmp_path), "0", "0", cwd=tmp_path, timeout=120, **env, **extra)

    assert result.returncode == exitcodes.SET_ASIDE, result.stderr[-3000:]  # drained, poison set aside
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert runs(tmp_path, "end") == {param: 1 for param in GOOD_BEFORE + GOOD_AFTER}
    # Set aside once each, at the first delivery: one log line per poison, never retried.
    failed = [line for line in result.stderr.splitlines() if ": failed, attempt 1: " in line]
    assert len(failed) == len(poison), "\n".join(failed)
    assert ": retried, " not in result.stderr
    for expected in poison.values():
        assert sum(expected in line for line in failed) == 1, (expected, failed)
    letters = raw_dead_letters(backend, env)
    assert sorted(body for body, _ in letters) == sorted(poison)
    if backend.dead_letter_reason:
        for body, reason in letters:
            assert poison[body] in reason, (body[:40], reason)
