"""minion-push into RabbitMQ, a window of publisher confirms at a time (engines/amqppush.py), on the real RabbitMQ.

Every parameter arrives once, in order, persistent. Whatever stops a push
midway (the broker refusing messages, the queue deleted, the connection
lost or silent) makes it fail with how many parameters RabbitMQ confirmed,
and the queue holds those, first and in order: never a success for a
message without its confirm.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import nullcontext
from pathlib import Path
from typing import Any, cast

import pytest

from minionize.engines.amqp import AmqpEngine
from minionize.engines.amqppush import BATCH, BATCH_BYTES, WINDOW, ConfirmWindow
from minionize.errors import QueueUnreachable
from tests.conftest import minion_env
from tests.faults.brokers import Proxy

from .backends import started
from .backends.amqp import PORT, URL, AmqpBackend, channel, rabbitmqctl

pytestmark = pytest.mark.integration
CONFIRMED = re.compile(r"(\d+) of the (\d+) published are confirmed queued \((?:parameters 1 to (\d+)|none)")


@pytest.fixture(scope="module")
def broker(request: pytest.FixtureRequest) -> AmqpBackend:
    return cast(AmqpBackend, started("amqp", request.config))


@pytest.fixture
def queue(broker: AmqpBackend) -> Iterator[str]:
    """A queue of this test's own, deleted after it (and at the end of the session, if RabbitMQ was away)."""
    name = broker.unique("push")
    broker.queues.append(name)
    yield name
    ch = channel()
    for each in (name, f"{name}.dead", f"{name}.in-flight"):
        ch.queue_delete(each)
    ch.connection.close()


def minion_push(queue: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "minionize.push", *args],
        env=minion_env(MINION_ENGINE="amqp", AMQP_URL=URL, AMQP_QUEUE=queue, **env),
        capture_output=True, text=True, timeout=120,
    )


def drain(queue: str) -> list[tuple[Any, bytes]]:
    """(properties, body) of every message in `queue`, oldest first, taken out of it."""
    ch = channel()
    try:
        count = ch.queue_declare(queue, passive=True).method.message_count
        messages: list[tuple[Any, bytes]] = []
        for method, properties, body in ch.consume(queue, auto_ack=True, inactivity_timeout=5):
            if method is None:
                break
            messages.append((properties, body))
            if len(messages) == count:
                break
        assert len(messages) == count, f"{count} messages in {queue}, {len(messages)} read"
        return messages
    finally:
        ch.connection.close()


def confirmed_of(error: str) -> int:
    """How many parameters the failed push says RabbitMQ confirmed: all of them the first ones."""
    found = CONFIRMED.search(error)
    assert found, error
    confirmed, prefix = int(found[1]), int(found[3] or 0)
    assert confirmed == prefix, error  # one queue: RabbitMQ confirms in order
    return confirmed


@pytest.mark.parametrize("queue_type", ["quorum", "classic"])
def test_every_parameter_arrives_once_in_order_and_persistent(queue: str, queue_type: str, tmp_path: Path) -> None:
    count = 2 * WINDOW + BATCH + 7  # several windows, and a batch left over at the end
    values: list[Any] = list(range(count))
    values[1234] = {"a": [1, "é"]}
    values[5678] = "x" * 200_000  # longer than a frame: pika splits it, between two batches
    values[9999] = "ünïcødé"
    params = tmp_path / "params.jsonl"
    params.write_text("".join(f"{json.dumps(value)}\n" for value in values), encoding="utf-8")
    pushed = minion_push(queue, "--file", str(params), "--json", AMQP_QUEUE_TYPE=queue_type)
    assert pushed.returncode == 0, pushed.stderr
    assert f"queued {count} parameters" in pushed.stdout
    messages = drain(queue)
    bodies = [value if isinstance(value, str) else json.dumps(value, ensure_ascii=False) for value in values]
    assert [body.decode("utf-8") for _, body in messages] == bodies
    assert all(properties.delivery_mode == 2 for properties, _ in messages)
    assert len({properties.message_id for properties, _ in messages}) == count
    types = [properties.content_type for properties, _ in messages]
    assert types[0] == types[1234] == "application/json" and types[5678] == types[9999] == "text/plain"


@pytest.fixture
def full_at_100(queue: str) -> Iterator[str]:
    """`queue` limited to 100 messages by a policy: RabbitMQ nacks what comes when it is full."""
    policy = f"minionize-test-{queue}"
    rabbitmqctl("set_policy", "--apply-to", "queues", "--priority", "100", policy, f"^{re.escape(queue)}$",
                '{"max-length": 100, "overflow": "reject-publish"}')
    yield queue
    rabbitmqctl("clear_policy", policy)


@pytest.mark.parametrize("queue_type", ["quorum", "classic"])
def test_a_nack_fails_the_push_with_the_confirmed_count(full_at_100: str, queue_type: str) -> None:
    pushed = minion_push(full_at_100, *(str(n) for n in range(1000)), AMQP_QUEUE_TYPE=queue_type)
    assert pushed.returncode == 3, pushed.stdout
    error = pushed.stderr.strip()
    assert len(error.splitlines()) == 1 and "queued" not in pushed.stdout
    confirmed = confirmed_of(error)
    # A classic queue refuses the 101st; a quorum queue applies its limit a little late.
    assert 100 <= confirmed < 1000 and f"refused parameter {confirmed + 1} (a nack" in error, error
    assert f"{1000 - confirmed} refused" in error
    assert [body for _, body in drain(full_at_100)] == [str(n).encode() for n in range(confirmed)]


def stream(count: int, at: int, event: Any) -> Iterator[str]:
    """`count` parameters; `event()` happens before the one numbered `at` (from 1) is given."""
    for n in range(count):
        if n + 1 == at:
            event()
        yield str(n)


def push_failing(engine: AmqpEngine, params: Iterator[str]) -> str:
    with pytest.raises(QueueUnreachable) as failed:
        engine.push(params)
    engine.close()
    return str(failed.value)


def test_a_stream_is_published_as_it_is_read_with_at_most_a_window_unconfirmed(queue: str) -> None:
    queued_midway: list[int] = []

    def look() -> None:  # nothing is held back: all but a window (and a batch) are queued already
        ch = channel()
        queued_midway.append(ch.queue_declare(queue, passive=True).method.message_count)
        ch.connection.close()

    engine = AmqpEngine(queue, URL)
    engine.push(stream(3 * WINDOW, 2 * WINDOW + 1, look))
    engine.close()
    assert queued_midway[0] >= 2 * WINDOW - WINDOW - BATCH
    assert [body for _, body in drain(queue)] == [str(n).encode() for n in range(3 * WINDOW)]


def test_large_parameters_are_sent_and_confirmed_as_they_come_too(queue: str) -> None:
    """Each one longer than a frame goes through pika's own publish: the window holds all the same."""
    engine = AmqpEngine(queue, URL)
    engine.open()
    assert engine._connection is not None
    window = ConfirmWindow(engine._connection, queue, 5.0, nullcontext, window=100)
    large = [f"{n:05}".encode() * 1000 for n in range(600)]  # 5 kB each: 3 MB in all
    queued_midway = 0
    for n, body in enumerate(large):
        if n == 500:
            ch = channel()
            queued_midway = ch.queue_declare(queue, passive=True).method.message_count
            ch.connection.close()
        window.publish(body, "text/plain")
    window.finish()
    engine.close()
    assert queued_midway >= 500 - 100 - BATCH_BYTES // 5000  # at most a window unconfirmed, a batch unsent
    assert [body for _, body in drain(queue)] == large


def test_a_connection_lost_midway_fails_the_push_and_the_confirmed_ones_are_queued(queue: str) -> None:
    proxy = Proxy(PORT)
    engine = AmqpEngine(queue, f"amqp://guest:guest@127.0.0.1:{proxy.port}/%2F", operation_timeout=2)
    # Midway through a window: thousands published, some of them not confirmed yet.
    error = push_failing(engine, stream(3 * WINDOW, WINDOW + BATCH // 2, proxy.kill))
    assert "lost the connection" in error
    confirmed = confirmed_of(error)
    bodies = [body for _, body in drain(queue)]
    # The confirmed ones are queued; the unconfirmed ones may be too, never out of order nor twice.
    assert len(bodies) >= confirmed and bodies == [str(n).encode() for n in range(len(bodies))]
    assert len(bodies) < 3 * WINDOW


def test_a_broker_that_stops_answering_fails_the_push_within_the_timeout(queue: str) -> None:
    proxy = Proxy(PORT)
    engine = AmqpEngine(queue, f"amqp://guest:guest@127.0.0.1:{proxy.port}/%2F", operation_timeout=1)
    try:
        error = push_failing(engine, stream(3 * WINDOW, WINDOW // 2, proxy.pause))
    finally:
        proxy.kill()
    assert "no confirm within 1s" in error or "no answer within" in error, error
    confirmed = confirmed_of(error)
    bodies = [body for _, body in drain(queue)]
    assert len(bodies) >= confirmed and bodies == [str(n).encode() for n in range(len(bodies))]


def test_a_queue_deleted_midway_fails_the_push_naming_the_returned_parameter(queue: str) -> None:
    engine = AmqpEngine(queue, URL, queue_type="classic")

    def delete() -> None:
        ch = channel()
        ch.queue_delete(queue)
        ch.connection.close()

    error = push_failing(engine, stream(2 * WINDOW, WINDOW // 2, delete))
    returned = re.search(r"returned parameter (\d+) as unroutable", error)
    assert returned, error
    # None of those published after the deletion counts as confirmed: they went nowhere.
    assert confirmed_of(error) < int(returned[1]) and "refused" in error
