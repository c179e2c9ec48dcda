"""Property tests of the untrusted-input path: no message content raises out of an engine or a callback.

From raw bytes to a Message (`decode_into` and each engine's own handling of
bodies, attributes and headers), then from a parameter to argv, environment,
log line and report line, hypothesis throws what a queue may hold: any
bytes, any text, JSON nested 100,000 deep, integers of 5,000 digits, NULs
and lone surrogates anywhere. Each step must either work or give a one-line
reason (a reject reason, BadParam), within a bounded CPU time.
"""

from __future__ import annotations

import io
import json
import shlex
import time
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from minionize import FuncCallback, ProcessCallback
from minionize.callbacks.base import RunContext, describe_param, param_env
from minionize.callbacks.params import ARG_MAX_BYTES, BadParam, param_args, split_words
from minionize.engines.base import COUNT_MAX, decode_into, parse_count
from minionize.engines.file import FileEngine
from minionize.excerpt import excerpt, safe_text
from minionize.message import Message, Outcome, Status
from minionize.reporters.base import RunRecord
from minionize.reporters.json import PARAM_MAX, JsonReporter
from minionize.reporters.stdout import StdoutReporter
from tests.unit.test_json_reporter import minion

# No example database: nothing written into the checkout (the seed is random each run).
settings.register_profile("poison", database=None)
settings.load_profile("poison")

# Text with what breaks argv and environments: NUL, lone surrogates, quotes, escapes.
NASTY = st.text(st.sampled_from(["a", " ", "\x00", "\ud800", "\udcff", "'", '"', "\\", "é", "\n", "{", "}"]))
TEXT = st.one_of(st.text(), NASTY)


class Nested(list):  # type: ignore[type-arg]
    """A list that shows as nested(depth): Hypothesis's printer recurses, and a failing
    example 100,000 deep would otherwise end the report in a RecursionError of its own."""

    def __repr__(self) -> str:
        depth, inner = 1, self
        while inner:
            depth, inner = depth + 1, inner[0]
        return f"nested({depth})"


def nested(depth: int) -> list[Any]:
    """[[[...]]] `depth` deep, built without recursion."""
    top: list[Any] = Nested()
    inner = top
    for _ in range(depth - 1):
        inner.append([])
        inner = inner[0]
    return top


# Parameters as decoders and Python callers make them, poison included.
JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | TEXT,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(TEXT, children, max_size=4),
    max_leaves=12,
)
PARAMS = st.one_of(
    JSONISH,
    st.integers(1, 100_000).map(nested),
    st.integers(4_300, 6_000).map(lambda digits: {"n": 10**digits}),
    st.integers(100_000, 1 << 20).map(lambda size: "x" * size),
    st.dictionaries(TEXT, NASTY, min_size=1, max_size=3),
)

# Bodies as brokers deliver them.
BODIES = st.one_of(
    st.binary(),
    TEXT.map(lambda text: text.encode("utf-8", "surrogatepass")),
    st.builds(json.dumps, JSONISH, ensure_ascii=st.booleans()).map(lambda t: t.encode("utf-8", "surrogatepass")),
    st.integers(1, 200_000).map(lambda depth: b"[" * depth + b"]" * depth),
    st.integers(1, 200_000).map(lambda depth: b'{"a":' * depth),
    st.integers(4_300, 6_000).map(lambda digits: b"1" * digits),
    st.integers(4_300, 6_000).map(lambda digits: b'{"n": -' + b"9" * digits + b"}"),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=BODIES, decoder=st.sampled_from(["json", "identity"]))
@example(body=b"[" * 100_000, decoder="json")
@example(body=b"1" * 5_001, decoder="json")
@example(body=b'{"k": "a\\u0000b"}', decoder="json")
@example(body=b'"\\ud800"', decoder="json")
@example(body=b"\xff\xfe", decoder="identity")
def test_decoding_never_raises(body: bytes, decoder: str) -> None:
    message = decode_into(Message("id", None), body, decoder)
    if message.reject_reason is not None:
        assert "\n" not in message.reject_reason and len(message.reject_reason) < 400
        assert isinstance(message.param, str)
        safe_text(message.reject_reason).encode("utf-8")
    elif decoder == "json":
        assert message.param == json.loads(body) or message.param != message.param  # NaN
    # Whatever was decoded reaches a log line.
    assert len(describe_param(message.param)) <= 200


@settings(max_examples=100, deadline=None)
@given(lines=st.lists(BODIES.filter(lambda b: b"\n" not in b and b.strip()), min_size=1, max_size=5))
def test_the_file_engine_takes_any_line(tmp_path_factory: pytest.TempPathFactory, lines: list[bytes]) -> None:
    path = tmp_path_factory.mktemp("file") / "params.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    engine = FileEngine(str(path), "json")
    engine.open()
    try:
        taken = [engine.next(0) for _ in lines]
    finally:
        engine.close()
    for line, message in zip(lines, taken, strict=True):
        assert message is not None
        expected = decode_into(Message("x", None), line.rstrip(b"\r"), "json")
        assert message.reject_reason == expected.reject_reason


COUNTS = st.one_of(
    st.none(), st.integers(), st.floats(allow_nan=True), st.text(), st.binary(), st.booleans(),
    st.lists(st.integers(), max_size=2), st.integers(0, 10**6).map(str), st.just("9" * 5000), st.just("²"),
)


@given(value=COUNTS)
def test_counts_read_from_headers_never_raise(value: Any) -> None:
    count = parse_count(value, default=7)
    assert count == 7 or 0 <= count <= COUNT_MAX


@settings(max_examples=150, deadline=None)
@given(body=BODIES, prior=COUNTS, delivered=COUNTS, redelivered=st.booleans(), message_id=st.none() | TEXT)
def test_the_amqp_engine_takes_any_delivery(body: bytes, prior: Any, delivered: Any, redelivered: bool,
                                             message_id: Any) -> None:
    pika = pytest.importorskip("pika")
    from minionize.engines.amqp import PRIOR, AmqpEngine

    engine = AmqpEngine("q", decoder="json")
    method = pika.spec.Basic.Deliver(delivery_tag=1, redelivered=redelivered)
    headers = {PRIOR: prior, "x-delivery-count": delivered}
    properties = pika.BasicProperties(headers=headers, message_id=message_id)
    message = engine._message(method, properties, body)
    assert 1 <= message.attempt <= 2 * COUNT_MAX + 2
    assert message.reject_reason is not None or message.param is not None or body.strip() == b"null"


@settings(max_examples=150, deadline=None)
@given(body=BODIES, base=st.text(), delivery_attempt=st.integers(0, 1000))
@example(body=b"1", base="\u00b2", delivery_attempt=1)
@example(body=b"1", base="9" * 5000, delivery_attempt=1)
def test_the_google_engine_takes_any_message(body: bytes, base: str, delivery_attempt: int) -> None:
    pytest.importorskip("google.pubsub_v1")
    from google.pubsub_v1 import PubsubMessage, ReceivedMessage

    from minionize.engines.google import _BASE, GoogleEngine

    engine = GoogleEngine("p", "t", "s", decoder="json")
    pubsub = PubsubMessage(data=body, attributes={_BASE: base}, message_id="1")
    message = engine._message(ReceivedMessage(message=pubsub, delivery_attempt=delivery_attempt))
    assert 1 <= message.attempt <= COUNT_MAX + 1000


@settings(max_examples=150, deadline=None)
@given(fields=st.dictionaries(st.sampled_from([b"param", b"other", b"\xff"]), BODIES, max_size=3))
def test_the_redis_engine_takes_any_entry(fields: dict[bytes, bytes]) -> None:
    pytest.importorskip("redis")
    from minionize.engines.redis import RedisEngine

    message = RedisEngine("s", decoder="json")._message(b"1-0", fields, 1)
    assert (message.reject_reason is None) == (b"param" in fields and decode_into(
        Message("1", None), fields[b"param"], "json").reject_reason is None)


# -- from a parameter to argv, environment, logs and reports -------------------------------


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(param=PARAMS, template=st.none() | st.sampled_from(["{param}", "--n {n} {k}", "{k[0]} {n:>5}", "{0}"]))
def test_param_args_gives_arguments_execve_takes_or_bad_param(param: Any, template: Any) -> None:
    started = time.thread_time()
    try:
        args = param_args(param, template)
    except BadParam as exc:
        assert "\n" not in str(exc)
        str(exc).encode("utf-8")
    else:
        assert all(isinstance(arg, str) and "\x00" not in arg for arg in args)
        assert all(len(arg.encode("utf-8")) < ARG_MAX_BYTES for arg in args)
    assert time.thread_time() - started < 2.0


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(param=PARAMS, message_id=TEXT)
def test_param_env_gives_an_environment_or_bad_param(param: Any, message_id: str) -> None:
    try:
        env = param_env(Message(message_id, param), 0)
    except BadParam as exc:
        assert "\n" not in str(exc)
        return
    for name, value in env.items():
        assert "\x00" not in name + value
        (name + value).encode("utf-8")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(param=PARAMS)
def test_logs_and_reports_take_any_parameter(tmp_path_factory: pytest.TempPathFactory, param: Any) -> None:
    started = time.thread_time()
    assert len(describe_param(param)) <= 200
    assert len(excerpt(param, 50)) <= 50
    directory = tmp_path_factory.mktemp("reports")
    reporter, stream = JsonReporter(directory), io.StringIO()
    printer = StdoutReporter(stream)
    record = RunRecord("id", param, 1, 0, 0.0, end=1.0, outcome=Outcome.rejected("r"), verdict="failed")
    for each in (reporter, printer):
        each.open(minion("h"))
        each.started(record)
        each.finished(record)
        each.close("drained")
    lines = (directory / f"{minion('h').id}.jsonl").read_text().splitlines()
    written = [json.loads(line) for line in lines]  # what minion-status and mtop read back
    assert [r["type"] for r in written] == ["minion", "start", "end", "stop"]
    assert len(json.dumps(written[1]["param"])) <= 2 * PARAM_MAX
    assert stream.getvalue().count("\n") == 1
    assert time.thread_time() - started < 2.0


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(param=PARAMS)
@example(param={"k": "a\x00b"})
@example(param={"k": "\ud800"})
@example(param="x" * (1 << 20))
def test_a_process_callback_runs_or_rejects_any_parameter(param: Any) -> None:
    callback = ProcessCallback(["true"])
    outcome = callback.run(Message("id", param), RunContext())
    assert outcome.status in (Status.SUCCESS, Status.REJECTED), outcome.error
    if outcome.status is Status.REJECTED:
        assert outcome.error and "\n" not in outcome.error


@settings(max_examples=100, deadline=None)
@given(param=PARAMS)
def test_a_function_failing_on_any_parameter_gives_a_reason_brokers_take(param: Any) -> None:
    def fails(value: Any) -> None:
        raise ValueError(value if isinstance(value, str) else "x\ud800\x00")

    outcome = FuncCallback(fails).run(Message("id", param), RunContext())
    assert outcome.status is Status.FAILURE
    assert outcome.error is not None and len(outcome.error) <= 1000
    outcome.error.encode("utf-8")  # Redis, RabbitMQ, Pulsar and Pub/Sub refuse anything else


# -- the splitter ----------------------------------------------------------------


@settings(max_examples=2000)
@given(text=st.text(st.sampled_from(["a", "b", " ", "\t", "\n", "\r", "'", '"', "\\", "é", "\x0b"])))
def test_split_words_is_shlex_split(text: str) -> None:
    try:
        expected = shlex.split(text)
    except ValueError as exc:
        with pytest.raises(ValueError, match=str(exc)):
            split_words(text)
    else:
        assert split_words(text) == expected


@pytest.mark.parametrize(
    "param",
    ["x" * (1 << 20), "'" + "x" * (1 << 20) + "'", '"' + "x" * (1 << 20), "\\x" * (1 << 19), "x" * (3 << 20)],
    ids=["word", "quoted", "unclosed", "escapes", "3MiB"],
)
def test_a_one_megabyte_parameter_is_refused_in_milliseconds(param: str) -> None:
    # A quadratic splitter (shlex's) takes minutes on a megabyte; the linear one a few
    # milliseconds. The bound is on this thread's CPU time, which a loaded machine
    # does not stretch, and leaves no room for a quadratic time.
    for _ in range(3):
        started = time.thread_time()
        with pytest.raises(BadParam, match="does not fit in a command line|No closing quotation"):
            param_args(param)
        assert time.thread_time() - started < 5.0
