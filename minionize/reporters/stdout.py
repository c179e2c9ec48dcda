"""A reporter for people watching a terminal: one short line per finished run.

The lines go to stderr, not stdout: stdout carries the wrapped program's own
output, which a user may be piping somewhere. Example:

    minion host-123-abc: ok 'param' attempt 1 in 0.12s (acked)
    minion host-123-abc: failed 'param' attempt 2 in 3.40s: exit code 3 (retried)
"""

from __future__ import annotations

import sys
from typing import Optional, TextIO

from ..config import EnvReader
from ..excerpt import excerpt
from ..health import Strike
from ..message import Outcome, Status
from .base import MinionInfo, Reporter, RunRecord

_WORDS = {
    Status.SUCCESS: "ok",
    Status.FAILURE: "failed",
    Status.REJECTED: "rejected",
    Status.INTERRUPTED: "interrupted",
}
#: Longest parameter and error shown, so that one run stays one line.
_LIMIT = 120


def _short(text: str, limit: int = _LIMIT) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _shown(param: object) -> str:
    """A string as Python shows it, anything else as JSON: bounded whatever the parameter."""
    if isinstance(param, str):
        return repr(param[: _LIMIT + 1])
    return excerpt(param, _LIMIT + 1)


def format_run(minion_id: str, run: RunRecord) -> str:
    """The line printed for one finished run."""
    outcome = run.outcome
    word = _WORDS[outcome.status] if outcome is not None else "ended"
    line = f"minion {minion_id}: {word} {_short(_shown(run.param))} attempt {run.attempt}"
    if run.duration is not None:
        line += f" in {run.duration:.2f}s"
    detail = _detail(outcome) if outcome is not None and not outcome.ok else None
    if detail:
        line += f": {_short(detail)}"
    if run.verdict:
        line += f" ({run.verdict})"
    return line


def _detail(outcome: Outcome) -> Optional[str]:
    if outcome.error:
        return str(outcome.error)
    if outcome.exit_code not in (None, 0):
        return f"exit code {outcome.exit_code}"
    return None


class StdoutReporter(Reporter):
    """Prints each finished run on stderr (`stream` overrides it, for tests)."""

    def __init__(self, stream: Optional[TextIO] = None) -> None:
        self._stream = stream
        self._minion_id = "?"

    @classmethod
    def from_env(cls, env: EnvReader) -> StdoutReporter:
        return cls()

    def open(self, minion: MinionInfo) -> None:
        self._minion_id = minion.id

    def finished(self, run: RunRecord) -> None:
        self._print(format_run(self._minion_id, run))

    def strike(self, strike: Strike) -> None:
        self._print(f"minion {self._minion_id}: {strike.describe()}")

    def _print(self, line: str) -> None:
        # sys.stderr is looked up at each write: it may be replaced after start-up.
        stream = self._stream or sys.stderr
        try:
            stream.write(line + "\n")
            stream.flush()
        except (OSError, ValueError):
            # A closed or broken terminal must not cost the run its verdict.
            pass
