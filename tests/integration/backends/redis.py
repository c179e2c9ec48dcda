"""The redis engine: a private redis-server with an append-only file, on a free loopback port.

The shared server on 6379 keeps nothing on disk, so it could not show that a
restart loses nothing; this one fsyncs every write (`appendfsync always`).
"""

from __future__ import annotations

import shutil
import socket
from pathlib import Path
from typing import Any, Optional

from tests.conftest import require

from ..api_backends import ApiBackend
from .base import Backend, ServerProcess


class RedisServer(ServerProcess):
    """One redis-server process on 127.0.0.1 (SIGTERM: it flushes its append-only file, as SHUTDOWN does)."""

    program, log_name = "redis-server", "redis.log"

    def __init__(self, *options: str) -> None:
        super().__init__()
        self.command = [
            shutil.which("redis-server") or "redis-server",
            "--bind", "127.0.0.1", "--port", str(self.port), "--dir", str(self.directory),
            "--save", "", "--appendonly", "yes", "--appendfsync", "always",
            "--logfile", str(self.log), *options,
        ]

    def ready(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as conn:
                conn.sendall(b"PING\r\n")
                reply = conn.recv(64)
        except OSError:
            return False
        # -NOAUTH means it answers too (an instance with --requirepass).
        return reply.startswith((b"+PONG", b"-NOAUTH"))


class RedisBackend(Backend):
    name = "redis"
    has_deadline = True  # REDIS_CLAIM_IDLE
    restartable = True
    server_name = "redis"
    bad_urls = (
        ("REDIS_URL", "redis://u:{secret}@127.0.0.1:{port}/0?socket_timeout=soon"),
        ("REDIS_URL", "redis://127.0.0.1:{port}/0?password={secret}&db=x"),
    )

    def __init__(self) -> None:
        self.server: Optional[RedisServer] = None

    @classmethod
    def pointed_at(cls, address: str, secret: str) -> tuple[dict[str, str], str]:
        env = {"MINION_ENGINE": "redis", "REDIS_STREAM": "s", "REDIS_URL": f"redis://u:{secret}@{address}/0"}
        return env, f"redis://u:***@{address}/0"

    def start(self) -> None:
        require(shutil.which("redis-server") is not None, "redis-server is not installed (scripts/services.sh)")
        self.server = RedisServer()
        self.server.start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.remove()

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"redis://127.0.0.1:{self.server.port}/0"

    def client(self) -> Any:
        import redis  # the engine's own client, an optional extra

        return redis.Redis.from_url(self.url)

    def env(self, workdir: Path) -> dict[str, str]:
        return {
            "MINION_ENGINE": "redis",
            "REDIS_URL": self.url,
            "REDIS_STREAM": self.unique("stream"),
            "REDIS_DECODER": "json",
        }

    def publish_raw(self, env: dict[str, str], bodies: list[bytes]) -> None:
        with self.client() as client:
            for body in bodies:
                client.xadd(env["REDIS_STREAM"], {"param": body})

    def raw_dead_letters(self, env: dict[str, str]) -> list[tuple[bytes, str]]:
        stream = env.get("REDIS_DEAD_LETTER_STREAM") or f"{env['REDIS_STREAM']}:dead"
        with self.client() as client:
            entries = client.xrange(stream)
        return [(fields[b"param"], fields[b"minion_reason"].decode()) for _, fields in entries]

    def lease_env(self) -> dict[str, str]:
        return {"REDIS_CLAIM_IDLE": "2"}

    def long_run(self) -> tuple[float, dict[str, str]]:
        return 5.0, {"REDIS_CLAIM_IDLE": "2"}

    def restart(self) -> None:
        assert self.server is not None
        self.server.shutdown()
        self.server.start()


BACKENDS = (RedisBackend,)


class RedisApi(ApiBackend):
    engine = "redis"
    process = "redis"
    hold_seconds = 1.6  # past REDIS_CLAIM_IDLE=1 (another minion claims idle entries at each empty read)

    def env(self, workdir: Path) -> dict[str, str]:
        return {**super().env(workdir), "REDIS_CLAIM_IDLE": "1"}

    def address_env(self, host: str, port: int) -> dict[str, str]:
        return {"REDIS_URL": f"redis://{host}:{port}/0"}


API_BACKENDS = (RedisApi,)
