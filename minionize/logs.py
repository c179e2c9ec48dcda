"""The minion's log lines: text for a terminal, or one JSON object a line (MINION_LOG_FORMAT=json).

Both formats show the same messages (secrets are masked where the message
is made, so they are masked alike). A JSON line has the fields of `FIELDS`;
one that is unknown is absent rather than made up: the minion's fields
appear once its worker runs (`minion_fields`), a run's fields on the lines
about one run (`run_extra`, given as `extra=`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Iterator
from typing import Any, Optional

from .excerpt import excerpt, safe_text

TEXT = "%(asctime)s minionize %(levelname)s %(message)s"
#: The fields of a JSON line, in their order (README, "Structured logs").
FIELDS = (
    "time", "level", "logger", "message", "minion", "host", "job_id",
    "message_id", "param", "attempt", "verdict", "exit_code", "duration", "exception",
)
#: Characters of a parameter in its own field (the message holds a shorter one).
PARAM_LIMIT = 500
#: The record attributes that carry the minion's and the run's fields: one
#: name each, so that another library's `extra=` cannot pass for ours.
_MINION = "minionize_minion"
_RUN = "minionize_run"
#: What json.dumps(ensure_ascii=False) leaves as is and str.splitlines() takes for a line break.
_BREAKS = {"\x85": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"}


def formatter(kind: str) -> logging.Formatter:
    """The formatter of MINION_LOG_FORMAT: `text` or `json`."""
    return JsonFormatter() if kind == "json" else logging.Formatter(TEXT)


class JsonFormatter(logging.Formatter):
    """One JSON object a line; never raises, whatever the message, its arguments or the parameter hold."""

    def format(self, record: logging.LogRecord) -> str:
        fields: dict[str, Any] = {
            "time": _iso(record.created, record.msecs),
            "level": record.levelname,
            "logger": record.name,
            "message": _message(record),
        }
        fields.update(getattr(record, _MINION, None) or {})
        fields.update(getattr(record, _RUN, None) or {})
        if record.exc_info:
            try:
                fields["exception"] = self.formatException(record.exc_info)
            except Exception as exc:  # an exception type that cannot even be printed
                fields["exception"] = f"<traceback unprintable: {type(exc).__name__}>"
        elif record.exc_text:
            fields["exception"] = record.exc_text
        return dumps(fields)


def dumps(fields: dict[str, Any]) -> str:
    """One line of JSON, valid UTF-8: a lone surrogate is written as the text shows it (`\\udcff`)."""
    clean = {key: _clean(value) for key, value in fields.items()}
    line = json.dumps(clean, ensure_ascii=False, default=str)
    if any(char in line for char in _BREAKS):
        for char, escape in _BREAKS.items():
            line = line.replace(char, escape)
    return line


def _clean(value: Any) -> Any:
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return value.encode("utf-8", "backslashreplace").decode("utf-8")
        return value
    if value is None or isinstance(value, (bool, int, float)):
        return value
    return _clean(excerpt(value, PARAM_LIMIT))


def _message(record: logging.LogRecord) -> str:
    """The record's message; arguments that do not fit its format, or cannot be printed, are shown as they are."""
    try:
        return record.getMessage()
    except Exception as exc:  # noqa: BLE001 - a log line is never lost to its arguments
        return f"{excerpt(record.msg, 2000)} {excerpt(record.args, 2000)} (unformattable: {type(exc).__name__})"


def _iso(created: float, msecs: float) -> str:
    """ISO 8601 in UTC with milliseconds: 2026-11-29T12:00:14.123Z."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created)) + f".{int(msecs):03d}Z"


def writes_json() -> bool:
    """Whether the root logger's lines are JSON (then a last word on stderr must be one too)."""
    return any(isinstance(handler.formatter, JsonFormatter) for handler in logging.getLogger().handlers)


class MinionFields(logging.Filter):
    """Stamps the minion's id, host and job id on each record a handler writes."""

    def __init__(self, minion: str, host: str, job_id: Optional[str]) -> None:
        super().__init__()
        self.fields = {"minion": minion, "host": host, "job_id": job_id}

    def filter(self, record: logging.LogRecord) -> bool:
        setattr(record, _MINION, self.fields)
        return True


@contextlib.contextmanager
def minion_fields(minion: str, host: str, job_id: Optional[str]) -> Iterator[None]:
    """While a worker runs: its fields on every line of the handlers of the root and `minionize` loggers."""
    stamp = MinionFields(minion, host, job_id)
    handlers = [*logging.getLogger().handlers, *logging.getLogger("minionize").handlers]
    for handler in handlers:
        handler.addFilter(stamp)
    try:
        yield
    finally:
        for handler in handlers:
            handler.removeFilter(stamp)


def run_extra(message_id: str, param: Any, attempt: int, **outcome: Any) -> dict[str, Any]:
    """`extra=` of a line about one run: its message, parameter (bounded) and attempt, and, once over,
    `verdict`, `exit_code` and `duration` (seconds); a None is left out."""
    fields = {"message_id": message_id, "param": _param(param), "attempt": attempt}
    fields.update((key, value) for key, value in outcome.items() if value is not None)
    return {_RUN: fields}


def _param(param: Any) -> str:
    """The parameter as the text lines show it (a string as is), cut at PARAM_LIMIT characters."""
    return safe_text(param, PARAM_LIMIT) if isinstance(param, str) else excerpt(param, PARAM_LIMIT)
