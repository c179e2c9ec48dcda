"""Private broker instances that a test may kill or pause, one per broker engine.

A broker is cut off in one of two ways: `kill` (SIGKILL: connections end,
new ones are refused) or `pause` (SIGSTOP: the kernel still accepts
connections, nothing ever answers, as across a network partition). RabbitMQ
takes a minute to start and is shared by every test, so the minion reaches
it through a `Proxy` that the test owns: killing or pausing the proxy is,
seen from the minion, killing or pausing the broker.
"""

from __future__ import annotations

import os
import signal
import socket
import struct
import threading
import uuid
from contextlib import suppress
from pathlib import Path

from tests.integration.backends.amqp import HOST as AMQP_HOST
from tests.integration.backends.amqp import PORT as AMQP_PORT
from tests.integration.backends.amqp import AmqpBackend, channel
from tests.integration.backends.base import ServerProcess, free_port
from tests.integration.backends.google import Emulator
from tests.integration.backends.nats import NatsServer
from tests.integration.backends.postgres import PrivatePostgresBackend
from tests.integration.backends.pulsar import PulsarBackend
from tests.integration.backends.redis import RedisServer


class Proxy:
    """Relays TCP connections from a free port of 127.0.0.1 to `port`, until killed or paused."""

    def __init__(self, port: int) -> None:
        self.upstream = port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._sockets: list[socket.socket] = []
        self._paused = threading.Event()
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                self._sockets.append(client)
            if self._paused.is_set():
                continue  # accepted, never answered
            try:
                server = socket.create_connection(("127.0.0.1", self.upstream), timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets.append(server)
            for source, target in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(source, target), daemon=True).start()

    def _pump(self, source: socket.socket, target: socket.socket) -> None:
        while True:
            try:
                data = source.recv(65536)
            except OSError:
                data = b""
            if not data:
                break
            if self._paused.is_set():
                continue  # swallowed: the other side never hears of it
            with suppress(OSError):
                target.sendall(data)
        if not self._paused.is_set():
            with suppress(OSError):
                target.shutdown(socket.SHUT_RDWR)

    def kill(self) -> None:
        """Reset every connection and refuse new ones, as a dead broker's host does."""
        self._listener.close()
        with self._lock:
            for sock in self._sockets:
                with suppress(OSError):
                    # A linger of 0: close() sends a reset, not a FIN.
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    sock.close()

    def pause(self) -> None:
        self._paused.set()

    def close(self) -> None:
        self.kill()


class Broker:
    """One private broker: the minion's variables, and the two ways to cut it off."""

    engine = ""

    def start(self) -> None:
        raise NotImplementedError

    def env(self, workdir: Path) -> dict[str, str]:
        raise NotImplementedError

    def kill(self) -> None:
        raise NotImplementedError

    def pause(self) -> None:
        raise NotImplementedError

    def remove(self) -> None:
        raise NotImplementedError


class ServerBroker(Broker):
    """A broker that is one process of this test's own (a ServerProcess): it gets the signals."""

    server: ServerProcess

    def make(self) -> ServerProcess:
        raise NotImplementedError

    def start(self) -> None:
        self.server = self.make()
        self.server.start()

    def kill(self) -> None:
        assert self.server.process is not None
        self.server.process.kill()

    def pause(self) -> None:
        assert self.server.process is not None
        self.server.process.send_signal(signal.SIGSTOP)

    def remove(self) -> None:
        if self.server.process is not None:
            self.server.process.send_signal(signal.SIGCONT)
            self.server.process.kill()
            self.server.process.wait()
            self.server.process = None
        self.server.remove()


class RedisBroker(ServerBroker):
    engine = "redis"

    def make(self) -> ServerProcess:
        return RedisServer()

    def env(self, workdir: Path) -> dict[str, str]:
        return {"MINION_ENGINE": "redis", "REDIS_URL": f"redis://127.0.0.1:{self.server.port}/0",
                "REDIS_STREAM": f"outage-{uuid.uuid4().hex[:8]}"}


class NatsBroker(ServerBroker):
    """A nats-server of this test's own, with JetStream on disk."""

    engine = "nats"

    def make(self) -> ServerProcess:
        return NatsServer()

    def env(self, workdir: Path) -> dict[str, str]:
        return {"MINION_ENGINE": "nats", "NATS_URL": f"nats://127.0.0.1:{self.server.port}",
                "NATS_STREAM": f"outage-{uuid.uuid4().hex[:8]}"}


class AmqpBroker(Broker):
    """The shared RabbitMQ, reached through a Proxy of this test's."""

    engine = "amqp"

    def start(self) -> None:
        AmqpBackend().start()
        self.proxy = Proxy(AMQP_PORT)
        self.queue = f"outage-{uuid.uuid4().hex[:8]}"

    def env(self, workdir: Path) -> dict[str, str]:
        return {"MINION_ENGINE": "amqp", "AMQP_QUEUE": self.queue,
                "AMQP_URL": f"amqp://guest:guest@{AMQP_HOST}:{self.proxy.port}/%2F"}

    def kill(self) -> None:
        self.proxy.kill()

    def pause(self) -> None:
        self.proxy.pause()

    def remove(self) -> None:
        self.proxy.close()
        ch = channel()
        for name in (self.queue, f"{self.queue}.dead", f"{self.queue}.in-flight"):
            ch.queue_delete(name)
        ch.connection.close()


class PulsarBroker(Broker):
    """pulsar-lite behind its relay (tests/integration/backends/pulsar.py)."""

    engine = "pulsar"

    def start(self) -> None:
        self.backend = PulsarBackend()
        self.backend.start()

    def env(self, workdir: Path) -> dict[str, str]:
        return self.backend.env(workdir)

    def kill(self) -> None:
        process = self.backend._process  # noqa: SLF001 - the broker process that the backend owns
        assert process is not None
        process.kill()
        process.wait()

    def pause(self) -> None:
        process = self.backend._process  # noqa: SLF001
        assert process is not None
        process.send_signal(signal.SIGSTOP)

    def remove(self) -> None:
        process = self.backend._process  # noqa: SLF001
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGCONT)
        self.backend.stop()


class GoogleBroker(Broker):
    """A Pub/Sub emulator of this test's own, on a free port."""

    engine = "google"

    def start(self) -> None:
        self.emulator = Emulator(f"127.0.0.1:{free_port()}")
        self.emulator.start()

    def env(self, workdir: Path) -> dict[str, str]:
        unique = uuid.uuid4().hex[:8]
        return {"MINION_ENGINE": "google", "PUBSUB_EMULATOR_HOST": self.emulator.host,
                "GOOGLE_PROJECT_ID": f"project-{unique}", "GOOGLE_TOPIC_ID": f"topic-{unique}",
                "GOOGLE_SUBSCRIPTION": f"sub-{unique}"}

    def _signal(self, signum: int) -> None:
        assert self.emulator.process is not None
        with suppress(ProcessLookupError):
            os.killpg(self.emulator.process.pid, signum)  # gcloud runs java: the whole group

    def kill(self) -> None:
        self._signal(signal.SIGKILL)
        assert self.emulator.process is not None
        self.emulator.process.wait()

    def pause(self) -> None:
        self._signal(signal.SIGSTOP)

    def remove(self) -> None:
        if self.emulator.process is not None:
            self._signal(signal.SIGCONT)
            self._signal(signal.SIGKILL)
        self.emulator.stop()


class PostgresBroker(Broker):
    """A PostgreSQL server of this test's own (initdb in a temporary directory); its processes get the signals."""

    engine = "postgres"

    def start(self) -> None:
        self.backend = PrivatePostgresBackend()
        self.backend.start()

    def env(self, workdir: Path) -> dict[str, str]:
        return self.backend.env(workdir)

    def kill(self) -> None:
        assert self.backend.server is not None
        self.backend.server.signal(signal.SIGKILL)  # the postmaster and every backend: connections reset

    def pause(self) -> None:
        assert self.backend.server is not None
        self.backend.server.signal(signal.SIGSTOP)

    def remove(self) -> None:
        self.backend.stop()


BROKERS: dict[str, type[Broker]] = {
    broker.engine: broker
    for broker in (RedisBroker, AmqpBroker, PulsarBroker, GoogleBroker, PostgresBroker, NatsBroker)
}
