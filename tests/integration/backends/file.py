"""The file engine: one consumer per file, retries in place, no broker."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .base import Backend


class FileBackend(Backend):
    name = "file"
    shared_by_processes = False
    survives_kill = False  # documented: a file has nobody to give lines back to
    #: FILE_DEAD_LETTER keeps raw lines, so that it can be fed back as it is.
    dead_letter_reason = False

    def env(self, workdir: Path) -> dict[str, str]:
        name = self.unique("params")
        return {
            "MINION_ENGINE": "file",
            "FILE_PATH": str(workdir / f"{name}.txt"),
            "FILE_DECODER": "json",
            "FILE_DEAD_LETTER": str(workdir / f"{name}.dead"),
        }

    def dead_letters(self, env: dict[str, str]) -> list[tuple[Any, str]]:
        import json

        path = Path(env["FILE_DEAD_LETTER"])
        lines = path.read_text().splitlines() if path.exists() else []
        return [(json.loads(line), "") for line in lines]


BACKENDS = (FileBackend,)
