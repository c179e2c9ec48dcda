"""What the in-process engine suite (test_engine_api.py) needs to know about each engine.

One class per engine (and per mode worth its own run, such as amqp with
AMQP_PREFETCH), declared in the engine's module of tests/integration/backends
(`API_BACKENDS`, beside its process backends): which of the process suite's
backends runs its server and gives a test a fresh queue (the session's one,
shared with the other suites; its `publish_raw` puts raw bodies on that
queue), how to point the engine at a given host and port, and what the suite
must expect of it beyond what the engine class declares (`tells_drained`,
`free_release`, `keeps_reason`, its settings: read from the class, never
repeated here), each with the reason.

test_engine_api.py fails while a registry engine has none.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Optional

from minionize.engines.base import DeadLetter, Engine

from .backends import Backend, Declared


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


#: Each engine of the registry, by the name the suite's parameters show (its
#: process backend's, or the engine's), and the modes worth a run of their own:
#: the `API_BACKENDS` that each engine's module in tests/integration/backends declares.
API_BACKENDS: Mapping[str, type[ApiBackend]] = Declared("API_BACKENDS", lambda api: str(api.process or api.engine))


__all__ = ["API_BACKENDS", "ApiBackend"]
