"""The file engine: one consumer per file, retries in place, no broker."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..api_backends import ApiBackend
from .base import Backend


class FileBackend(Backend):
    name = "file"
    shared_by_processes = False
    input_ends = True  # end of file
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

    def publish_raw(self, env: dict[str, str], bodies: list[bytes]) -> None:
        with open(env["FILE_PATH"], "ab") as out:
            out.write(b"".join(body + b"\n" for body in bodies))

    def raw_dead_letters(self, env: dict[str, str]) -> list[tuple[bytes, str]]:
        path = Path(env["FILE_DEAD_LETTER"])
        return [(line, "") for line in path.read_bytes().split(b"\n")[:-1]] if path.exists() else []


BACKENDS = (FileBackend,)


class FileApi(ApiBackend):
    engine = "file"
    process = "file"
    #: A file has no broker: a line given back is queued again in the engine that read it.
    shares = False
    #: Lines are read as they come; the engine does not count those ahead.
    knows_remaining = False
    hold_seconds = 0.3  # no lease: held until settled


API_BACKENDS = (FileApi,)
