"""The nats engine: a private nats-server with JetStream on file storage, on a free loopback port.

Private rather than the shared server on 4222: the restart test stops and
starts it, and its data directory must outlive that. max_payload is raised
to 8 MB for the poison suite's 1 MiB body (1 MB by default).
"""

from __future__ import annotations

import asyncio
import shutil
import socket
from pathlib import Path
from typing import Any, Optional

from tests.conftest import require

from ..api_backends import ApiBackend
from .base import Backend, ServerProcess

NATS_SERVER = shutil.which("nats-server") or "/usr/sbin/nats-server"


class NatsServer(ServerProcess):
    """One nats-server process with JetStream on 127.0.0.1 (SIGTERM: it flushes its stores)."""

    program, log_name = "nats-server", "nats.log"

    def __init__(self, *options: str, config: str = "") -> None:
        """`options`: nats-server's command line; `config`: more lines of its configuration file."""
        super().__init__()
        path = self.directory / "nats.conf"
        path.write_text(
            f"listen: 127.0.0.1:{self.port}\nmax_payload: 8MB\n"
            f'jetstream {{ store_dir: "{self.directory / "store"}" }}\n{config}'
        )
        self.command = [NATS_SERVER, "-c", str(path), "-l", str(self.log), *options]

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @property
    def tls_url(self) -> str:
        return f"tls://127.0.0.1:{self.port}"

    def ready(self) -> bool:
        """The server answers, and JetStream has finished recovering its streams."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as conn:
                if not conn.recv(4096).startswith(b"INFO "):
                    return False
        except OSError:
            return False
        # Ready once since its last start (the log of a restarted server holds both).
        if not self.log.exists():
            return False
        return "Server is ready" in self.log.read_text(errors="replace").rsplit("Starting nats-server")[-1]


def run(coroutine: Any) -> Any:
    """Run one coroutine of the test's own nats-py client."""
    return asyncio.run(coroutine)


async def _dead(url: str, subject: str) -> list[tuple[bytes, dict[str, str]]]:
    import nats
    import nats.js.errors

    client = await nats.connect(url, connect_timeout=5, allow_reconnect=False)
    try:
        js = client.jetstream()
        try:
            stream = await js.find_stream_name_by_subject(subject)
        except nats.js.errors.NotFoundError:
            return []
        # The engine's own reader of a stream's messages: the test reads what minion-status reads.
        from minionize.engines.jetstream import stored

        return [(message.data or b"", dict(message.headers or {})) for message in await stored(js, stream, subject)]
    finally:
        await client.close()


async def _publish(url: str, subject: str, bodies: list[bytes]) -> None:
    import nats

    client = await nats.connect(url, connect_timeout=5, allow_reconnect=False)
    try:
        js = client.jetstream()
        for body in bodies:
            await js.publish(subject, body)
    finally:
        await client.close()


class NatsBackend(Backend):
    name = "nats"
    has_deadline = True  # NATS_ACK_WAIT
    restartable = True
    server_name = "NATS"
    bad_urls = (("NATS_URL", "nats://u:{secret}@127.0.0.1:{port}0000"),)

    def __init__(self) -> None:
        self.server: Optional[NatsServer] = None

    @classmethod
    def pointed_at(cls, address: str, secret: str) -> tuple[dict[str, str], str]:
        env = {"MINION_ENGINE": "nats", "NATS_STREAM": "s", "NATS_URL": f"nats://u:{secret}@{address}"}
        return env, f"nats://u:***@{address}"

    def start(self) -> None:
        require(Path(NATS_SERVER).exists(), "nats-server is not installed (scripts/services.sh)")
        self.server = NatsServer()
        self.server.start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.remove()

    @property
    def url(self) -> str:
        assert self.server is not None
        return self.server.url

    def env(self, workdir: Path) -> dict[str, str]:
        return {
            "MINION_ENGINE": "nats",
            "NATS_URL": self.url,
            "NATS_STREAM": self.unique("stream"),
            "NATS_DECODER": "json",
        }

    def dead_letter_messages(self, env: dict[str, str]) -> list[tuple[bytes, dict[str, str]]]:
        """(body, headers) of each message on the dead-letter subject."""
        subject = env.get("NATS_DEAD_LETTER_SUBJECT") or f"{env.get('NATS_SUBJECT') or env['NATS_STREAM']}.dead"
        found: list[tuple[bytes, dict[str, str]]] = run(_dead(self.url, subject))
        return found

    def raw_dead_letters(self, env: dict[str, str]) -> list[tuple[bytes, str]]:
        return [(body, headers.get("minion_reason", "")) for body, headers in self.dead_letter_messages(env)]

    def publish_raw(self, env: dict[str, str], bodies: list[bytes]) -> None:
        run(_publish(self.url, env.get("NATS_SUBJECT") or env["NATS_STREAM"], bodies))

    def lease_env(self) -> dict[str, str]:
        return {"NATS_ACK_WAIT": "2"}

    def long_run(self) -> tuple[float, dict[str, str]]:
        return 5.0, {"NATS_ACK_WAIT": "2"}

    def restart(self) -> None:
        assert self.server is not None
        self.server.shutdown()
        self.server.start()


BACKENDS = (NatsBackend,)


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


API_BACKENDS = (NatsApi,)
