"""One backend per engine for the engine contract suite.

A backend knows how to reach (or start) the real server of its engine, how
to give each test a fresh queue, where its dead letters are, and how to
restart its broker. Adding an engine to the contract suite means one module
here and one line in BACKENDS.
"""

from __future__ import annotations

import importlib

from .base import Backend

BACKENDS = {
    "execo": "tests.integration.backends.execo:ExecoBackend",
    "file": "tests.integration.backends.file:FileBackend",
    "google": "tests.integration.backends.google:GoogleBackend",
    "pulsar": "tests.integration.backends.pulsar:PulsarBackend",
    "redis": "tests.integration.backends.redis:RedisBackend",
    "amqp": "tests.integration.backends.amqp:AmqpBackend",
    "amqp-prefetch": "tests.integration.backends.amqp:AmqpPrefetchBackend",
    "nats": "tests.integration.backends.nats:NatsBackend",
    "postgres": "tests.integration.backends.postgres:PostgresBackend",
}


def with_capability(capability: str) -> list[str]:
    """The engines whose backend has `capability` (a class attribute), for parametrize."""
    return [name for name in BACKENDS if getattr(load(name), capability)]


def load(name: str) -> type[Backend]:
    module, _, attribute = BACKENDS[name].partition(":")
    backend: type[Backend] = getattr(importlib.import_module(module), attribute)
    return backend


__all__ = ["BACKENDS", "Backend", "load", "with_capability"]
