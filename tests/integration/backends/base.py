"""What the contract suite needs to know about an engine and its server."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Optional


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on now, for a server a test starts."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def take(engine: Any, within: float = 10.0, poll: float = 0.2) -> Any:
    """An engine's next message, polled for up to `within` seconds: a broker may
    answer empty once while a message is on its way."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        message = engine.next(poll)
        if message is not None:
            return message
    raise AssertionError(f"no message within {within:g}s")


class ServerProcess:
    """A server process of the tests' own on 127.0.0.1: a free port, a directory, a log; stopped by its pid.

    A subclass sets `command` (after this __init__) and says when the server is `ready`.
    """

    #: The program's name, for messages, and its log file in the directory.
    program = ""
    log_name = ""

    def __init__(self) -> None:
        self.port = free_port()
        self.directory = Path(tempfile.mkdtemp(prefix=f"minionize-{self.program}-"))
        self.command: list[str] = []
        self.process: Optional[subprocess.Popen[bytes]] = None

    @property
    def log(self) -> Path:
        return self.directory / self.log_name

    def ready(self) -> bool:
        raise NotImplementedError

    def start(self) -> None:
        self.process = subprocess.Popen(self.command, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while not self.ready():
            if self.process.poll() is not None or time.monotonic() > deadline:
                text = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
                raise RuntimeError(f"{self.program} on port {self.port} did not start:\n{text}")
            time.sleep(0.05)

    def shutdown(self) -> None:
        """SIGTERM: the server flushes what it keeps on disk and exits."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)
        self.process = None

    def remove(self) -> None:
        self.shutdown()
        shutil.rmtree(self.directory, ignore_errors=True)


class Backend:
    """The defaults describe a broker shared by many minion processes."""

    name = ""
    #: Several minion processes can consume the same queue at once.
    shared_by_processes = True
    #: A minion exits by itself once nothing is queued or in flight anywhere;
    #: otherwise the suite sets MINION_IDLE_TIMEOUT.
    drains = True
    #: The input ends by itself (a sweep, a file): a minion ends once it is drained,
    #: batch mode or not. False for a broker, where more may come at any time: a
    #: minion there is a service (test_service_mode).
    input_ends = False
    #: A killed minion's parameter comes back to another minion.
    survives_kill = True
    #: The dead-letter place keeps why each parameter failed.
    dead_letter_reason = True
    #: A nacked message comes back with its count raised by one, exactly. False for
    #: pulsar-lite 0.2.0, where one sometimes comes back a count higher (cause not
    #: known yet: docs/reliability.md, Known issues).
    exact_redelivery = True
    #: The queue holds any bytes (False: PostgreSQL's text holds UTF-8 only, and refuses the rest when written).
    raw_bytes = True
    #: The queue holds encoded bodies (publish_raw, raw_dead_letters): False for execo,
    #: whose sweeps keep Python objects (pickled), and so have no wire format.
    holds_bodies = True
    #: Once `minion-push --retry-failed` has queued the failed parameters again,
    #: `dead_letters` reads none: the retry takes them out of the dead-letter place
    #: (test_requeue's shared test applies). False for execo, whose journal, which
    #: `dead_letters` reads, keeps every failure as history: a retry adds an event.
    retry_empties_dead_letters = True
    #: The broker has a delivery deadline that a long run must outlive.
    has_deadline = False
    #: The broker can be restarted with its data (the restart test applies).
    restartable = False
    #: Seconds for which the client may hold an ack before sending it (a
    #: killed minion loses those acks, and their parameters run again).
    ack_delay = 0.0
    # A network engine's (one that declares connection_errors or an operation
    # timeout): test_unreachable points it at a port that never answers.
    #: How the engine's errors name its server ("RabbitMQ", "Pub/Sub"); "": no server.
    server_name = ""
    #: (variable, value) that the engine must refuse as a configuration error
    #: without showing the password in it; `{secret}` and `{port}` are filled in.
    bad_urls: tuple[tuple[str, str], ...] = ()

    @classmethod
    def pointed_at(cls, address: str, secret: str) -> tuple[dict[str, str], str]:
        """The variables pointing the engine at `address` (host:port) with the password `secret`,
        and that address as its errors must show it (the password masked)."""
        raise NotImplementedError(f"{cls.__name__} cannot point its engine at an address (pointed_at)")

    def start(self) -> None:
        """Make sure the server runs (start it if needed); `require` when it cannot."""

    def stop(self) -> None:
        """Stop what `start` started."""

    def env(self, workdir: Path) -> dict[str, str]:
        """The variables of a minion consuming a fresh, empty queue of its own."""
        raise NotImplementedError

    def unique(self, prefix: str = "q") -> str:
        return f"{prefix}-{uuid.uuid4().hex[:10]}"

    def dead_letters(self, env: dict[str, str]) -> list[tuple[Any, str]]:
        """(parameter, reason) of everything in the dead-letter place: by default, the raw
        dead letters' bodies read as JSON (every backend's env sets the json decoder)."""
        return [(json.loads(body), reason) for body, reason in self.raw_dead_letters(env)]

    def publish_raw(self, env: dict[str, str], bodies: list[bytes]) -> None:
        """With holds_bodies: put `bodies` on the queue of `env` as they are, as a producer
        other than minion-push could (the queue exists)."""
        raise NotImplementedError(f"{type(self).__name__} has no publish_raw")

    def raw_dead_letters(self, env: dict[str, str]) -> list[tuple[bytes, str]]:
        """With holds_bodies: (body as it was queued, reason) of each dead letter; the
        reason is "" where none is kept (not dead_letter_reason)."""
        raise NotImplementedError(f"{type(self).__name__} has no raw_dead_letters")

    def lease_env(self) -> dict[str, str]:
        """Variables that shorten the time after which a dead minion's message comes back.

        Given over those of `env`: they may name a fresh queue of their own, made
        with a lease that no variable can set (google).
        """
        return {}

    def long_run(self) -> tuple[float, dict[str, str]]:
        """With has_deadline: a run length longer than the deadline, and the variables that set it."""
        raise NotImplementedError

    def restart(self) -> None:
        """With restartable: stop the broker and start it again, keeping its data."""
        raise NotImplementedError
