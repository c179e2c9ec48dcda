"""MINION_LOG_FORMAT=json: one valid JSON object a line, with the minion's and the run's fields, whatever they hold."""

from __future__ import annotations

import io
import json
import logging
import re
import sys
import warnings
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minionize import FuncCallback
from minionize.assembly import configure_logging
from minionize.config import Settings
from minionize.engines.memory import MemoryEngine
from minionize.logs import FIELDS, JsonFormatter, MinionFields, dumps, run_extra
from minionize.worker import Worker
from tests.conftest import ROOT

ISO_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def record(msg: Any = "hello %s", args: Any = ("world",), exc_info: Any = None, **extra: Any) -> logging.LogRecord:
    made = logging.LogRecord("minionize", logging.WARNING, __file__, 1, msg, args, exc_info)
    made.__dict__.update(extra)
    return made


def parsed(line: str) -> dict[str, Any]:
    """The object of a line that must be one line of valid UTF-8 JSON."""
    assert len(line.splitlines()) == 1, line
    line.encode("utf-8")  # a lone surrogate would raise
    obj = json.loads(line)
    assert isinstance(obj, dict)
    return obj


@pytest.fixture()
def captured() -> Iterator[io.StringIO]:
    """The root logger's one handler, JSON to a buffer, as configure_logging makes it."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    root, minionize = logging.getLogger(), logging.getLogger("minionize")
    saved, level = root.handlers[:], minionize.level
    root.handlers[:] = [handler]
    minionize.setLevel(logging.DEBUG)
    yield stream
    root.handlers[:] = saved
    minionize.setLevel(level)


def test_the_stable_fields_and_nothing_made_up() -> None:
    line = parsed(JsonFormatter().format(record()))
    assert list(line) == ["time", "level", "logger", "message"]  # no minion, no run: absent
    assert ISO_MS.match(line["time"]) and line["level"] == "WARNING" and line["message"] == "hello world"


def test_a_run_line_has_every_field_in_the_documented_order() -> None:
    rec = record(**run_extra("m-1", {"lr": 0.1}, 2, verdict="retried", exit_code=1, duration=0.25))
    assert MinionFields("host-1-abc", "host", None).filter(rec)
    try:
        raise ValueError("bad")
    except ValueError:
        rec.exc_info = sys.exc_info()
    line = parsed(JsonFormatter().format(rec))
    assert list(line) == list(FIELDS)
    assert line["minion"] == "host-1-abc" and line["job_id"] is None
    assert (line["message_id"], line["param"], line["attempt"]) == ("m-1", '{"lr": 0.1}', 2)
    assert (line["verdict"], line["exit_code"], line["duration"]) == ("retried", 1, 0.25)
    assert "ValueError: bad" in line["exception"]


def test_an_unknown_exit_code_is_left_out() -> None:
    line = parsed(JsonFormatter().format(record(**run_extra("1", "p", 1, verdict="acked", exit_code=None))))
    assert "exit_code" not in line and line["verdict"] == "acked"


def test_a_megabyte_parameter_makes_a_short_line() -> None:
    for param in ("x" * 2**20, ["y" * 2**20], {"k": list(range(2**17))}):
        line = JsonFormatter().format(record(**run_extra("1", param, 1)))
        assert len(line.encode()) < 2048
        assert parsed(line)["param"].endswith("...")


def _deep(depth: int) -> Any:
    value: Any = []
    for _ in range(depth):
        value = [value]
    return value


class Unprintable:
    def __str__(self) -> str:
        raise RuntimeError("no")

    __repr__ = __str__


ODD = {
    "a lone surrogate in the message": dict(msg="bad \udcff byte", args=()),
    "a lone surrogate in an argument": dict(args=("\ud800",)),
    "control characters and line breaks": dict(args=("a\nb\rc\x00d\x1be\x85f\u2028g\u2029h",)),
    "arguments that do not fit the format": dict(msg="%d and %s", args=("x",)),
    "an argument that cannot be printed": dict(args=(Unprintable(),)),
    "a deeply nested argument": dict(args=(_deep(100_000),)),
    "a deeply nested message": dict(msg=_deep(100_000), args=()),
    "a surrogate and a nested parameter": dict(**run_extra("\udcff", [_deep(50_000), "\udc80\n"], 1)),
}


@pytest.mark.parametrize("fields", ODD.values(), ids=list(ODD))
def test_odd_content_still_makes_one_valid_line(fields: dict[str, Any]) -> None:
    line = parsed(JsonFormatter().format(record(**fields)))
    assert set(line) >= {"time", "level", "logger", "message"}


def test_a_surrogate_is_shown_as_the_text_format_shows_it() -> None:
    line = parsed(JsonFormatter().format(record(msg="bad \udcff byte", args=())))
    assert line["message"] == "bad \\udcff byte"


def test_an_exception_that_cannot_be_printed_still_has_its_traceback() -> None:
    class Odd(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no")

    try:
        raise Odd()
    except Odd:
        line = parsed(JsonFormatter().format(record(exc_info=sys.exc_info())))
    assert "Odd" in line["exception"]


@settings(max_examples=200, deadline=None)
@given(message=st.text(), param=st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text() | st.binary(),
    lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner), max_leaves=20,
))
def test_any_text_and_parameter_make_one_valid_line(message: str, param: Any) -> None:
    line = parsed(JsonFormatter().format(record(msg=message, args=(), **run_extra(message, param, 1))))
    assert line["message_id"] == message.encode("utf-8", "backslashreplace").decode("utf-8")


def test_dumps_escapes_what_splitlines_would_break_on() -> None:
    assert json.loads(dumps({"m": "a\u2028b\x85c"})) == {"m": "a\u2028b\x85c"}
    assert len(dumps({"m": "a\u2028b\x85c\u2029"}).splitlines()) == 1


def test_minion_fields_come_and_go_with_the_worker(captured: io.StringIO) -> None:
    """A worker's lines carry its minion's fields, every run's verdict, and the lines after it none of them."""
    def work(param: str) -> None:
        if param == "bad":
            raise RuntimeError("boom")

    worker = Worker(MemoryEngine(["ok", "bad"]), FuncCallback(work),
                    Settings(engine="memory", max_attempts=2, log_format="json"))
    assert worker.run() == 123
    logging.getLogger("minionize").info("after")
    lines = [parsed(line) for line in captured.getvalue().splitlines()]
    assert all(line["minion"] == worker.minion.id and line["host"] == worker.minion.host for line in lines[:-1])
    assert "minion" not in lines[-1]
    runs = [(line["param"], line["attempt"], line["verdict"], line["level"]) for line in lines if "verdict" in line]
    assert runs == [("ok", 1, "acked", "INFO"), ("bad", 1, "retried", "WARNING"), ("bad", 2, "failed", "WARNING")]
    assert all(isinstance(line["duration"], float) for line in lines if "verdict" in line)
    raised = [line for line in lines if "exception" in line]
    assert len(raised) == 2 and "RuntimeError: boom" in raised[0]["exception"]
    assert raised[0]["param"] == "bad" and "verdict" not in raised[0]


def test_text_logs_a_success_at_debug_only(captured: io.StringIO, caplog: pytest.LogCaptureFixture) -> None:
    worker = Worker(MemoryEngine(["ok"]), FuncCallback(lambda p: None), Settings(engine="memory"))
    with caplog.at_level(logging.DEBUG, logger="minionize"):
        worker.run()
    assert [r.levelname for r in caplog.records if r.getMessage() == "ok: acked"] == ["DEBUG"]


def test_the_readme_documents_every_field_in_order() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Structured logs"):]
    section = section[:section.index("```")]
    named = [name for name in re.findall(r"`(\w+)`", section) if name in FIELDS]
    assert list(dict.fromkeys(named)) == list(FIELDS)


def test_a_python_warning_is_a_json_line_too(capsys: pytest.CaptureFixture[str]) -> None:
    root = logging.getLogger()
    saved = root.handlers[:]
    root.handlers[:] = []
    try:
        configure_logging(Settings(log_format="json"))
        warnings.warn("an old API", DeprecationWarning, stacklevel=1)
        logging.getLogger("minionize").info("then a line")
    finally:
        logging.captureWarnings(False)
        root.handlers[:] = saved
    lines = [parsed(line) for line in capsys.readouterr().err.splitlines()]
    assert [line["logger"] for line in lines] == ["py.warnings", "minionize"]
    assert "DeprecationWarning: an old API" in lines[0]["message"]
