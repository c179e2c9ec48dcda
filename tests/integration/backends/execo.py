"""The execo engine: a sweep directory, no server."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

from ..api_backends import ApiBackend
from .base import Backend


class ExecoBackend(Backend):
    name = "execo"
    has_deadline = True  # the lease
    ack_delay = 0.05  # runs shorter than EXECO_TAKE_AHEAD have their acks written with the next take
    input_ends = True  # the sweep is done
    holds_bodies = False  # its sweeps keep Python objects (pickled)
    #: The journal keeps the failure after a retry (test_requeue has execo's own test).
    retry_empties_dead_letters = False

    def env(self, workdir: Path) -> dict[str, str]:
        return {"MINION_ENGINE": "execo", "EXECO_PERSISTENCE_DIR": str(workdir / self.unique("sweep"))}

    def dead_letters(self, env: dict[str, str]) -> list[tuple[Any, str]]:
        journal = Path(env["EXECO_PERSISTENCE_DIR"]) / ".minionize" / "journal"
        failed = []
        with open(journal, "rb") as handle:
            while True:
                try:
                    event, param, detail = pickle.load(handle)
                except EOFError:
                    return failed
                if event == "fail":
                    failed.append((param, detail))

    def lease_env(self) -> dict[str, str]:
        return {"MINION_LEASE_SECONDS": "2"}

    def long_run(self) -> tuple[float, dict[str, str]]:
        return 5.0, {"MINION_LEASE_SECONDS": "2"}


BACKENDS = (ExecoBackend,)


class ExecoApi(ApiBackend):
    engine = "execo"
    process = "execo"
    #: MINION_LEASE_SECONDS=1: another minion would reclaim it 1.33 s after the last renewal, at one of
    #: its reclaim passes (one a second): 2.6 s let two of them pass after that.
    hold_seconds = 2.6

    def env(self, workdir: Path) -> dict[str, str]:
        return {**super().env(workdir), "MINION_LEASE_SECONDS": "1"}


API_BACKENDS = (ExecoApi,)
