"""The pulsar engine against pulsar-lite, one binary that speaks Pulsar's protocol.

`start` runs the broker shipped by `pip install pulsar-lite` on 127.0.0.1 and
a free port, with its RocksDB data in a temporary directory and its metrics
endpoint (0.0.0.0:8080 by default) disabled. The minions reach it through
`relay.Relay`, which ends every connection cleanly: pulsar-lite 0.2.0 leaks
the consumer of a connection whose read fails (a killed minion's), as a
real Pulsar broker does not (relay.py says more).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import IO, Optional

from tests.conftest import require

from ..api_backends import ApiBackend
from .base import Backend, free_port
from .relay import Relay

_READY_TIMEOUT = 20.0


def accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.25):
            return True
    except OSError:
        return False


class PulsarBackend(Backend):
    name = "pulsar"
    # pulsar-lite 0.2.0 numbers every client's consumers from 0, so two minion
    # processes cannot share a subscription: "two minions" are two slots of one.
    shared_by_processes = False
    drains = False  # Pulsar cannot tell that a topic will stay empty
    restartable = True  # its data is in RocksDB under --db-path
    # The client sends acks in groups every 100 ms, and its Python API cannot
    # turn that off (the C++ ackGroupingTimeMs is not exposed).
    ack_delay = 0.1
    exact_redelivery = False  # pulsar-lite 0.2.0: see Backend.exact_redelivery
    server_name = "Pulsar"
    # The Pulsar client refuses user:password@ in its URL, and said why with the password in it.
    bad_urls = (("PULSAR_CONNECTION", "pulsar://u:{secret}@127.0.0.1:{port}"),)

    def __init__(self) -> None:
        self.port = 0
        self._binary = ""
        self._directory: Optional[Path] = None
        self._process: Optional[subprocess.Popen[bytes]] = None
        self._log: Optional[IO[bytes]] = None
        self._relay: Optional[Relay] = None

    @classmethod
    def pointed_at(cls, address: str, secret: str) -> tuple[dict[str, str], str]:
        """The password is a token, in a variable of its own."""
        env = {"MINION_ENGINE": "pulsar", "PULSAR_TOPIC": "t", "PULSAR_CONNECTION": f"pulsar://{address}",
               "PULSAR_TOKEN": secret}
        return env, address

    @property
    def url(self) -> str:
        """The broker itself (for the tests' own clients)."""
        return f"pulsar://127.0.0.1:{self.port}"

    @property
    def minion_url(self) -> str:
        """Where minions connect: the relay in front of the broker."""
        assert self._relay is not None
        return self._relay.url

    def start(self) -> None:
        try:
            from pulsar_lite.binary_finder import find_pulsar_lite_binary

            self._binary = find_pulsar_lite_binary()
        except (ImportError, FileNotFoundError):
            require(False, "no Pulsar broker: pip install pulsar-lite")
        self._directory = Path(tempfile.mkdtemp(prefix="minionize-pulsar-"))
        (self._directory / "pulsar-lite.toml").write_text("[metrics]\nenabled = false\n")
        self._log = open(self._directory / "broker.log", "ab")  # noqa: SIM115 - closed by stop()
        self.port = free_port()
        self._launch()
        self._relay = Relay(self.port)

    def _launch(self) -> None:
        assert self._directory is not None
        self._process = subprocess.Popen(
            [
                self._binary,
                "--config", str(self._directory / "pulsar-lite.toml"),
                "--addr", f"127.0.0.1:{self.port}",
                "--db-path", str(self._directory / "data"),
                "--log-level", "warn",
            ],
            cwd=self._directory, stdout=self._log, stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + _READY_TIMEOUT
        while not accepts(self.port):
            if self._process.poll() is not None or time.monotonic() > deadline:
                self._halt()
                log = (self._directory / "broker.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"pulsar-lite did not start on port {self.port}:\n{log}")
            time.sleep(0.05)

    def _halt(self) -> None:
        if self._process is None:
            return
        self._process.terminate()
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._process = None

    def stop(self) -> None:
        if self._relay is not None:
            self._relay.close()
        self._halt()
        if self._log is not None:
            self._log.close()
        if self._directory is not None:
            shutil.rmtree(self._directory, ignore_errors=True)

    def restart(self, downtime: float = 0.0) -> None:
        self._halt()
        time.sleep(downtime)
        self._launch()

    def env(self, workdir: Path) -> dict[str, str]:
        return {
            "MINION_ENGINE": "pulsar",
            "PULSAR_CONNECTION": self.minion_url,
            "PULSAR_TOPIC": self.unique("t"),
            "PULSAR_DECODER": "json",
        }

    def raw_dead_letters(self, env: dict[str, str]) -> list[tuple[bytes, str]]:
        # The name and subscription that the engine's docstring promises.
        topic = f"{env['PULSAR_TOPIC']}-minionize-DLQ"
        return [(body, properties.get("minion_reason", "")) for body, properties in self.read(topic)]

    def publish_raw(self, env: dict[str, str], bodies: list[bytes]) -> None:
        import pulsar

        client = pulsar.Client(
            self.url, operation_timeout_seconds=10, logger=pulsar.FileLogger(pulsar.LoggerLevel.Warn, os.devnull)
        )
        try:
            producer = client.create_producer(env["PULSAR_TOPIC"])
            for body in bodies:
                producer.send(body)
            producer.close()
        finally:
            client.close()

    def read(self, topic: str, subscription: str = "minionize") -> list[tuple[bytes, dict[str, str]]]:
        """Everything queued for `subscription` on `topic`, left unacknowledged."""
        import pulsar

        client = pulsar.Client(
            self.url, operation_timeout_seconds=10, logger=pulsar.FileLogger(pulsar.LoggerLevel.Warn, os.devnull)
        )
        try:
            consumer = client.subscribe(
                topic, subscription, consumer_type=pulsar.ConsumerType.Shared,
                initial_position=pulsar.InitialPosition.Earliest,
            )
            found = []
            while True:
                try:
                    message = consumer.receive(timeout_millis=500)
                except pulsar.Timeout:
                    break
                found.append((message.data(), message.properties()))
            consumer.close()
            return found
        finally:
            client.close()


BACKENDS = (PulsarBackend,)


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


API_BACKENDS = (PulsarApi,)
