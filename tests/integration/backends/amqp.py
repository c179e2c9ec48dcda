"""The amqp engine: RabbitMQ on 127.0.0.1:5672 (guest/guest), started here if only installed."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

from tests.conftest import require

from ..api_backends import ApiBackend
from .base import Backend

HOST, PORT = "127.0.0.1", 5672
URL = f"amqp://guest:guest@{HOST}:{PORT}/%2F"


def listening(timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((HOST, PORT), timeout=timeout):
            return True
    except OSError:
        return False


def wait_listening(seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while not listening():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.5)
    return True


def rabbitmqctl(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    # Debian installs it in /usr/sbin, which not every PATH has.
    program = shutil.which("rabbitmqctl") or "/usr/sbin/rabbitmqctl"
    return subprocess.run([program, *args], capture_output=True, text=True, timeout=timeout, check=True)


def channel() -> Any:
    """A fresh connection's channel, for tests that look into the broker. Its publishes wait for the
    broker's confirm: one not confirmed may reach a quorum queue after what another connection pushes
    next, once a draining minion has found the queue empty."""
    import pika

    fresh = pika.BlockingConnection(pika.URLParameters(URL)).channel()
    fresh.confirm_delivery()
    return fresh


def read_queue(queue: str) -> list[tuple[Any, Any, bytes]]:
    """(method, properties, body) of every message in `queue`, left in it."""
    ch = channel()
    messages = []
    try:
        while True:
            method, properties, body = ch.basic_get(queue, auto_ack=False)
            if method is None:
                return messages
            messages.append((method, properties, body))
    finally:
        ch.connection.close()  # unacked: all go back


class AmqpBackend(Backend):
    name = "amqp"
    # Durable queues and persistent messages outlive `stop_app`/`start_app`.
    restartable = True
    # The only deadline is RabbitMQ's consumer_timeout (30 min by default, a
    # server-wide setting in 3.10): nothing renews it, and a run outliving
    # it is run again, as the engine documents; no short deadline to test.
    has_deadline = False
    server_name = "RabbitMQ"
    bad_urls = (
        ("AMQP_URL", "amqp://u:{secret}@127.0.0.1:{port}/%2F?heartbeat=often"),
        ("AMQP_URL", "amqp://u:{secret}@127.0.0.1:99999/%2F"),
    )

    def __init__(self) -> None:
        self.queues: list[str] = []

    @classmethod
    def pointed_at(cls, address: str, secret: str) -> tuple[dict[str, str], str]:
        env = {"MINION_ENGINE": "amqp", "AMQP_QUEUE": "q", "AMQP_URL": f"amqp://u:{secret}@{address}/%2F"}
        return env, f"amqp://u:***@{address}/%2F"

    def start(self) -> None:
        if not listening() and shutil.which("rabbitmq-server"):
            subprocess.run(["rabbitmq-server", "-detached"], capture_output=True, timeout=60)
            wait_listening(120)
        require(listening(), f"RabbitMQ is not listening on {HOST}:{PORT}")

    def stop(self) -> None:
        if not listening():
            return
        ch = channel()
        for queue in self.queues:
            for name in (queue, f"{queue}.dead", f"{queue}.in-flight"):
                ch.queue_delete(name)
        ch.connection.close()
        self.queues.clear()

    def env(self, workdir: Path) -> dict[str, str]:
        queue = self.unique("minion")
        self.queues.append(queue)
        return {"MINION_ENGINE": "amqp", "AMQP_URL": URL, "AMQP_QUEUE": queue, "AMQP_DECODER": "json"}

    def publish_raw(self, env: dict[str, str], bodies: list[bytes]) -> None:
        import pika

        ch = channel()  # confirmed one by one
        try:
            for body in bodies:
                ch.basic_publish("", env["AMQP_QUEUE"], body, pika.BasicProperties(delivery_mode=2))
        finally:
            ch.connection.close()

    def raw_dead_letters(self, env: dict[str, str]) -> list[tuple[bytes, str]]:
        dead = env.get("AMQP_DEAD_LETTER_QUEUE") or f"{env['AMQP_QUEUE']}.dead"
        letters = []
        for _, properties, body in read_queue(dead):
            headers = properties.headers or {}
            reason = headers.get("minion_reason", b"")
            letters.append((body, reason.decode() if isinstance(reason, bytes) else str(reason)))
        return letters

    def restart(self) -> None:
        rabbitmqctl("stop_app", timeout=120)
        rabbitmqctl("start_app", timeout=180)
        rabbitmqctl("await_startup", timeout=180)
        assert wait_listening(60), "RabbitMQ did not listen again after start_app"


class AmqpPrefetchBackend(AmqpBackend):
    """The amqp engine consuming with AMQP_PREFETCH: messages pushed ahead wait in the minion."""

    name = "amqp-prefetch"
    #: More than the slots of any test, so that some pushed messages are never started.
    PREFETCH = "5"

    def env(self, workdir: Path) -> dict[str, str]:
        return {**super().env(workdir), "AMQP_PREFETCH": self.PREFETCH}


BACKENDS = (AmqpBackend, AmqpPrefetchBackend)


class AmqpApi(ApiBackend):
    engine = "amqp"
    process = "amqp"
    #: RabbitMQ's queue.declare counts the ready messages, not those unacked.
    remaining_counts_held = False
    hold_seconds = 0.5  # held by the connection: renewals only service heartbeats

    def address_env(self, host: str, port: int) -> dict[str, str]:
        return {"AMQP_URL": f"amqp://guest:guest@{host}:{port}/%2F"}


class AmqpPrefetchApi(AmqpApi):
    """The amqp engine consuming with AMQP_PREFETCH: messages are pushed to the minion ahead."""

    process = "amqp-prefetch"
    #: RabbitMQ pushes a message given back to any consumer with room in its
    #: prefetch window, the one that gave it back included: another minion
    #: gets it only when this one's window is full or its connection gone.
    shares = False


API_BACKENDS = (AmqpApi, AmqpPrefetchApi)
