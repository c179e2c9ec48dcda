"""One backend per engine for the engine contract suite.

A backend knows how to reach (or start) the real server of its engine, how
to give each test a fresh queue, where its dead letters are, and how to
restart its broker. Every engine of minionize.registry.ENGINES has its module
here, named after it, that declares its backends in a module-level tuple
`BACKENDS` (amqp.py: `(AmqpBackend, AmqpPrefetchBackend)`, the second a way
of setting the same engine; memory.py: none). BACKENDS below is made of those
declarations, the first time it is read: importing a backend module is cheap
(clients are imported where they are used), so collection may do it.

The servers that the backends start themselves (the Pub/Sub emulator, a JVM
that takes seconds to start; pulsar-lite) are started once per session and
shared by every module: `started` keeps them, and `backend_fixture` makes
the parametrized `backend` fixture that each suite declares.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Literal, Optional, Union

import pytest

from minionize.registry import ENGINES

from .base import Backend


class _Declared(Mapping[str, type[Backend]]):
    """name -> backend class, from the `BACKENDS` of each engine's module (read at first use)."""

    def __init__(self) -> None:
        self._found: Optional[dict[str, type[Backend]]] = None
        self._engines: dict[str, str] = {}

    def _all(self) -> dict[str, type[Backend]]:
        if self._found is None:
            found: dict[str, type[Backend]] = {}
            for engine in ENGINES:
                module = importlib.import_module(f"{__name__}.{engine}")
                declared = getattr(module, "BACKENDS", None)
                if not isinstance(declared, tuple):
                    raise TypeError(f"{module.__name__} declares no BACKENDS tuple (its backend classes)")
                names = [backend.name for backend in declared]
                if declared and names[0] != engine:
                    raise TypeError(f"{module.__name__}: the first of BACKENDS is named after the engine ({names})")
                for backend in declared:
                    if backend.name in found:
                        raise TypeError(f"two backends named {backend.name!r}")
                    found[backend.name] = backend
                    self._engines[backend.name] = engine
            self._found = found
        return self._found

    def __getitem__(self, name: str) -> type[Backend]:
        return self._all()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._all())

    def __len__(self) -> int:
        return len(self._all())

    def engine_of(self, name: str) -> str:
        self._all()
        return self._engines[name]


#: Every backend by name, in the registry's order of engines: the engine's own
#: first (named after it), then the other ways of setting it (amqp-prefetch).
BACKENDS = _Declared()

#: The session's backends, by name: a running one, or why it could not start
#: (a skip or a failure, raised again for every test that asks for it).
_STARTED = pytest.StashKey[dict[str, Union[Backend, BaseException]]]()


def with_capability(capability: str) -> list[str]:
    """The engines whose backend has `capability` (a class attribute), for parametrize."""
    return [name for name in BACKENDS if getattr(load(name), capability)]


def load(name: str) -> type[Backend]:
    return BACKENDS[name]


def engine_of(name: str) -> str:
    """The engine (MINION_ENGINE value) of the backend `name`: amqp for amqp-prefetch."""
    return BACKENDS.engine_of(name)


def engine_backends() -> list[str]:
    """One backend per engine, the one named after it, for what is about the engine and not
    about a way of setting it (amqp, not amqp-prefetch)."""
    return [name for name in BACKENDS if engine_of(name) == name]


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


__all__ = [
    "BACKENDS", "Backend", "backend_fixture", "engine_backends", "engine_of", "load", "started", "with_capability",
]
