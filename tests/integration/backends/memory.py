"""The memory engine has no process backend: its queue lives in one minion's process.

The process suites need a queue that several processes and minion-push can
reach; the in-process API suite (test_engine_api.py) covers memory, with
its API backend here.
"""

from __future__ import annotations

import json
from pathlib import Path

from minionize.engines.base import DeadLetter, Engine
from minionize.message import Message

from ..api_backends import ApiBackend
from .base import Backend

BACKENDS: tuple[type[Backend], ...] = ()


class MemoryApi(ApiBackend):
    engine = "memory"
    #: The queue lives in the engine object: one minion, and only it can fill it.
    shares = pushes_from_afar = False
    hold_seconds = 0.3  # no lease: held until settled

    def env(self, workdir: Path) -> dict[str, str]:
        return {"MINION_ENGINE": "memory"}

    def dead_letters(self, reader: Engine) -> list[DeadLetter]:
        """The documented place: the engine's `failed` list (minion-status cannot reach a minion's memory)."""
        failed: list[tuple[Message, str]] = reader.failed  # type: ignore[attr-defined]
        return [DeadLetter(m.param if isinstance(m.param, str) else json.dumps(m.param), why) for m, why in failed]


API_BACKENDS = (MemoryApi,)
