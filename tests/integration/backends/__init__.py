"""One backend per engine for the engine contract suite.

A backend knows how to reach (or start) the real server of its engine, how
to give each test a fresh queue, where its dead letters are, and how to
restart its broker. Every engine of minionize.registry.ENGINES has its module
here, named after it, that declares its classes in module-level tuples;
BACKENDS below (and api_backends.API_BACKENDS) are made of those declarations
the first time they are read: importing a backend module is cheap (clients
are imported where they are used), so collection may do it. Every suite
takes its engines from them and from the backends' capabilities: a new
engine adds its module here and no line elsewhere in the tests.

What a new engine's module must give (base.Backend and api_backends.ApiBackend
say more of each):

- `BACKENDS = (XBackend, ...)`: the first is named after the engine (`name`),
  the others are other ways of setting it (amqp-prefetch).
- `env(workdir)`: the variables of a fresh queue with the json decoder;
  `start`/`stop` when there is a server to reach or start.
- The capabilities, as class attributes: `drains`, `input_ends`,
  `survives_kill`, `dead_letter_reason`, `has_deadline`, `ack_delay` must equal
  what the engine class declares (test_engine_capabilities); the others
  (`shared_by_processes`, `exact_redelivery`, `raw_bytes`, `restartable`,
  `holds_bodies`, `retry_empties_dead_letters`) where the default is wrong.
- A queue of bodies (`holds_bodies`, the default): `publish_raw` and
  `raw_dead_letters` (`dead_letters` reads them as JSON); otherwise `dead_letters`.
- `has_deadline`: `lease_env` and `long_run`; `restartable`: `restart`.
- A server over the network (the engine declares `connection_errors` or a
  `*_OPERATION_TIMEOUT`): `pointed_at`, `server_name` and `bad_urls`
  (test_unreachable fails without them).
- `API_BACKENDS = (XApi, ...)`: the in-process suite's view of the engine,
  `address_env` when it has a server (and only then).
- In the engine's own module: a URL setting without a default declares an
  `example` (kit.Setting), for the chart test.

The servers that the backends start themselves (the Pub/Sub emulator, a JVM
that takes seconds to start; pulsar-lite) are started once per session and
shared by every module: `started` keeps them, and `backend_fixture` makes
the parametrized `backend` fixture that each suite declares.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Literal, Optional, Union

import pytest

from minionize.registry import ENGINES

from .base import Backend


class Declared(Mapping[str, Any]):
    """name -> class, from a tuple that each engine's module here declares (`BACKENDS`,
    `API_BACKENDS`), read at first use; `named` gives a class's name, and the first
    class of a module is named after its engine."""

    def __init__(self, attribute: str, named: Callable[[Any], str]) -> None:
        self.attribute = attribute
        self.named = named
        self._found: Optional[dict[str, Any]] = None
        self._engines: dict[str, str] = {}

    def _all(self) -> dict[str, Any]:
        if self._found is None:
            found: dict[str, Any] = {}
            for engine in ENGINES:
                module = importlib.import_module(f"{__name__}.{engine}")
                declared = getattr(module, self.attribute, None)
                if not isinstance(declared, tuple):
                    raise TypeError(f"{module.__name__} declares no {self.attribute} tuple (its classes)")
                names = [self.named(kind) for kind in declared]
                if declared and names[0] != engine:
                    raise TypeError(f"{module.__name__}: the first of {self.attribute} is named {engine} ({names})")
                for kind in declared:
                    name = self.named(kind)
                    if name in found:
                        raise TypeError(f"two of {self.attribute} are named {name!r}")
                    found[name] = kind
                    self._engines[name] = engine
            self._found = found
        return self._found

    def __getitem__(self, name: str) -> Any:
        return self._all()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._all())

    def __len__(self) -> int:
        return len(self._all())

    def engine_of(self, name: str) -> str:
        """The engine whose module declares `name`."""
        self._all()
        return self._engines[name]


#: Every backend by name, in the registry's order of engines: the engine's own
#: first (named after it), then the other ways of setting it (amqp-prefetch).
BACKENDS: Mapping[str, type[Backend]] = Declared("BACKENDS", lambda backend: str(backend.name))

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
    assert isinstance(BACKENDS, Declared)
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
    "BACKENDS", "Backend", "Declared", "backend_fixture", "engine_backends", "engine_of", "load", "started",
    "with_capability",
]
