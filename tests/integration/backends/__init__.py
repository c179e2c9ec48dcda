"""One backend per engine for the engine contract suite.

A backend knows how to reach (or start) the real server of its engine, how
to give each test a fresh queue, where its dead letters are, and how to
restart its broker. Adding an engine to the contract suite means one module
here and one line in BACKENDS.

The servers that the backends start themselves (the Pub/Sub emulator, a JVM
that takes seconds to start; pulsar-lite) are started once per session and
shared by every module: `started` keeps them, and `backend_fixture` makes
the parametrized `backend` fixture that each suite declares.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from typing import Any, Literal, Union

import pytest

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

#: The session's backends, by name: a running one, or why it could not start
#: (a skip or a failure, raised again for every test that asks for it).
_STARTED = pytest.StashKey[dict[str, Union[Backend, BaseException]]]()


def with_capability(capability: str) -> list[str]:
    """The engines whose backend has `capability` (a class attribute), for parametrize."""
    return [name for name in BACKENDS if getattr(load(name), capability)]


def load(name: str) -> type[Backend]:
    module, _, attribute = BACKENDS[name].partition(":")
    backend: type[Backend] = getattr(importlib.import_module(module), attribute)
    return backend


def started(name: str, config: pytest.Config) -> Backend:
    """The session's backend `name`, started at its first use and stopped when pytest ends."""
    backends = config.stash.get(_STARTED, None)
    if backends is None:
        backends = config.stash[_STARTED] = {}
        config.add_cleanup(lambda: _stop(backends))
    if name not in backends:
        instance = load(name)()
        try:
            instance.start()
        except BaseException as exc:  # noqa: BLE001 - `require`'s skip too: not retried by each test
            backends[name] = exc
            raise
        backends[name] = instance
    found = backends[name]
    if isinstance(found, BaseException):
        raise found
    return found


def _stop(backends: dict[str, Union[Backend, BaseException]]) -> None:
    for found in reversed(list(backends.values())):
        if isinstance(found, Backend):
            found.stop()


def backend_fixture(
    names: Iterable[str], scope: Literal["session", "module"] = "module", doc: str = ""
) -> Any:
    """A fixture named `backend`, parametrized over the backends `names`, each the session's one (`started`).

    A suite declares it as `backend = backend_fixture([...])`; tests may narrow
    it with `@pytest.mark.parametrize("backend", [...], indirect=True)`.
    """

    def backend(request: pytest.FixtureRequest) -> Backend:
        return started(request.param, request.config)

    backend.__doc__ = doc or backend_fixture.__doc__
    return pytest.fixture(scope=scope, params=list(names))(backend)


__all__ = ["BACKENDS", "Backend", "backend_fixture", "load", "started", "with_capability"]
