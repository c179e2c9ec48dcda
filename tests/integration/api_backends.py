"""What the in-process engine suite (test_engine_api.py) needs to know about each engine.

One class per engine (and per mode worth its own run, such as amqp with
AMQP_PREFETCH): which of the process suite's backends runs its server and
gives a test a fresh queue (the session's one, shared with the other
suites; its `publish_raw` puts raw bodies on that queue), how to point the engine at a given host and port, and what the suite must
expect of it beyond what the engine class declares
(`tells_drained`, `free_release`, `keeps_reason`, its settings: read from
the class, never repeated here), each with the reason.

A new engine joins with a class here and one line in API_BACKENDS;
test_engine_api.py fails while a registry engine has none.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from minionize.engines.base import DeadLetter, Engine
from minionize.message import Message

from .backends import Backend


class ApiBackend:
    """The defaults describe a broker shared by any number of minions."""

    #: The MINION_ENGINE value.
    engine = ""
    #: The process suite's backend (tests/integration/backends) that starts the
    #: server and makes a fresh queue's variables; None: the engine has no server.
    process: Optional[str] = None
    #: A message given back goes to whichever engine on the queue takes next
    #: (another minion), not only to the one that gave it back.
    shares = True
    #: A fresh engine built from the same variables reaches the same queue
    #: (minion-push fills it from another process).
    pushes_from_afar = True
    #: `remaining()` is a number (None: the engine cannot know it).
    knows_remaining = True
    #: `remaining()` counts the messages held by minions, not only those waiting.
    remaining_counts_held = True
    #: How long the extend test holds a message, renewing it: past the lease
    #: the variables of `env` set (0: the lease is too long for this suite).
    hold_seconds = 0.5

    def __init__(self, server: Optional[Backend] = None) -> None:
        #: The running backend named by `process` (the session's one: backends.started).
        self.server = server

    def env(self, workdir: Path) -> dict[str, str]:
        """The variables of a fresh, empty queue of this test's own."""
        assert self.server is not None
        return self.server.env(workdir)

    @property
    def raw_bytes(self) -> bool:
        """The queue holds any bytes (the process backend's `raw_bytes`)."""
        return self.server is None or self.server.raw_bytes

    def publish_raw(self, env: dict[str, str], bodies: list[bytes]) -> None:
        """Put `bodies` on the queue as they are, with the server's own client (the queue exists)."""
        assert self.server is not None, f"{self.engine} has no server to publish to"
        self.server.publish_raw(env, bodies)

    def address_env(self, host: str, port: int) -> Optional[dict[str, str]]:
        """The variables that point the engine at host:port; None: it has no server to reach."""
        return None

    def secret_companions(self, name: str) -> dict[str, str]:
        """Variables that must come with the secret setting `name` for the settings to be valid."""
        return {}

    def dead_letters(self, reader: Engine) -> list[DeadLetter]:
        """What the dead-letter place holds, read with `reader` (a fresh engine, or the minion's own)."""
        return reader.dead_letters()


class MemoryApi(ApiBackend):
    engine = "memory"
    #: The queue lives in the engine object: one minion, and only it can fill it.
    shares = pushes_from_afar = False
    hold_seconds = 0.3  # no lease: held until settled

    def env(self, workdir: Path) -> dict[str, str]:
        return {"MINION_ENGINE": "memory"}

    def dead_letters(self, reader: Engine) -> list[DeadLetter]:
        """The documented place: the engine's `failed` list (minion-status cannot reach a minion's memory)."""
        failed: list[tuple[Message, str]] = reader.failed  # type: ignore[attr-defined]
        return [DeadLetter(m.param if isinstance(m.param, str) else json.dumps(m.param), why) for m, why in failed]


class FileApi(ApiBackend):
    engine = "file"
    process = "file"
    #: A file has no broker: a line given back is queued again in the engine that read it.
    shares = False
    #: Lines are read as they come; the engine does not count those ahead.
    knows_remaining = False
    hold_seconds = 0.3  # no lease: held until settled


class ExecoApi(ApiBackend):
    engine = "execo"
    process = "execo"
    #: MINION_LEASE_SECONDS=1: another minion would reclaim it 1.33 s after the last renewal, at one of
    #: its reclaim passes (one a second): 2.6 s let two of them pass after that.
    hold_seconds = 2.6

    def env(self, workdir: Path) -> dict[str, str]:
        return {**super().env(workdir), "MINION_LEASE_SECONDS": "1"}


class RedisApi(ApiBackend):
    engine = "redis"
    process = "redis"
    hold_seconds = 1.6  # past REDIS_CLAIM_IDLE=1 (another minion claims idle entries at each empty read)

    def env(self, workdir: Path) -> dict[str, str]:
        return {**super().env(workdir), "REDIS_CLAIM_IDLE": "1"}

    def address_env(self, host: str, port: int) -> dict[str, str]:
        return {"REDIS_URL": f"redis://{host}:{port}/0"}


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


class GoogleApi(ApiBackend):
    engine = "google"
    process = "google"
    #: Pub/Sub has no cheap count of a subscription's messages.
    knows_remaining = False
    #: The ack deadline is 10 s at the least: the process suite's long-run test holds one past it.
    hold_seconds = 0.0

    def address_env(self, host: str, port: int) -> dict[str, str]:
        return {"PUBSUB_EMULATOR_HOST": f"{host}:{port}"}


class PulsarApi(ApiBackend):
    engine = "pulsar"
    process = "pulsar"
    #: pulsar-lite 0.2.0 numbers every client's consumers from 0, so two clients
    #: cannot share a subscription: the engine that gave a message back takes it.
    shares = False
    #: Pulsar cannot count what a subscription has left.
    knows_remaining = False
    hold_seconds = 0.5  # no deadline (ack timeout off): held until settled

    def env(self, workdir: Path) -> dict[str, str]:
        return {**super().env(workdir), "PULSAR_NACK_DELAY": "0.1"}

    def address_env(self, host: str, port: int) -> dict[str, str]:
        return {"PULSAR_CONNECTION": f"pulsar://{host}:{port}"}

    def secret_companions(self, name: str) -> dict[str, str]:
        return {"PULSAR_TLS_KEY_FILE": {"PULSAR_TLS_CERT_FILE": "/nowhere/client.pem"}}.get(name, {})


class PostgresApi(ApiBackend):
    engine = "postgres"
    process = "postgres"
    hold_seconds = 1.6  # past POSTGRES_LEASE_SECONDS=1 (another minion's take finds expired leases)

    def env(self, workdir: Path) -> dict[str, str]:
        return {**super().env(workdir), "POSTGRES_LEASE_SECONDS": "1"}

    def address_env(self, host: str, port: int) -> dict[str, str]:
        return {"POSTGRES_URL": f"postgresql://postgres@{host}:{port}/test"}


class NatsApi(ApiBackend):
    engine = "nats"
    process = "nats"
    hold_seconds = 1.6  # past NATS_ACK_WAIT=1 (JetStream redelivers a message without news after it)

    def env(self, workdir: Path) -> dict[str, str]:
        return {**super().env(workdir), "NATS_ACK_WAIT": "1"}

    def address_env(self, host: str, port: int) -> dict[str, str]:
        return {"NATS_URL": f"nats://{host}:{port}"}

    def secret_companions(self, name: str) -> dict[str, str]:
        companions = {"NATS_PASSWORD": {"NATS_USER": "minion"}, "NATS_TLS_KEY_FILE": {"NATS_TLS_CERT_FILE": "/c.pem"}}
        return companions.get(name, {})


#: Each engine of the registry, by the name the suite's parameters show, and the
#: modes worth a run of their own.
API_BACKENDS: dict[str, type[ApiBackend]] = {
    "memory": MemoryApi,
    "file": FileApi,
    "execo": ExecoApi,
    "redis": RedisApi,
    "amqp": AmqpApi,
    "amqp-prefetch": AmqpPrefetchApi,
    "google": GoogleApi,
    "pulsar": PulsarApi,
    "nats": NatsApi,
    "postgres": PostgresApi,
}


__all__ = ["API_BACKENDS", "ApiBackend"]
