"""The engine contract at the API level: every engine's verbs, called in-process, on its real server.

As huey's StorageTests and kombu's BasicFunctionality do for their
backends, one set of tests runs for every engine of the registry (memory
included): each builds engines with `registry.engine_class(name).from_env`,
as a minion does, and calls `push`, `next`, `ack`, `nack`, `release`,
`fail`, `extend`, `drained`, `remaining`, `dead_letters` and `describe`
directly. Where an engine cannot keep a promise by design, its class
declares it (`tells_drained`, `free_release`, `keeps_reason`, its settings),
or its API backend (api_backends.ApiBackend, declared in the engine's
module of tests/integration/backends) where the promise is about this suite's
servers (pulsar-lite) or an engine setting (AMQP_PREFETCH), and the test
asserts the documented behaviour instead. The black-box process suite
(test_contract.py) and the fault suite check the same engines with real
minions, kills and restarts.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Optional
from urllib.parse import urlsplit, urlunsplit

import pytest

from minionize.config import EnvReader
from minionize.engines.base import DeadLetter, Engine
from minionize.errors import QueueUnreachable
from minionize.message import Message
from minionize.registry import ENGINES, engine_class

from . import test_unreachable
from .api_backends import API_BACKENDS, ApiBackend
from .backends import started
from .backends.base import take as backends_take

pytestmark = pytest.mark.integration
#: How long a test waits for a message that should come.
COMES_WITHIN = 30.0
#: How long a test watches for a message that should not come (an ack lost,
#: a redelivery by mistake): longer than Pulsar's 0.1 s nack delay here.
ABSENT_FOR = 0.3
#: The operation timeout of the unreachable test, and what opening may take beyond it.
OPERATION_TIMEOUT = 1.0
SLACK = 9.0
SECRET = "Zq-api-secret-7"


@pytest.fixture(scope="session", params=list(API_BACKENDS))
def api(request: pytest.FixtureRequest) -> ApiBackend:
    kind = API_BACKENDS[request.param]
    return kind(started(kind.process, request.config) if kind.process else None)


class Rig:
    """A fresh queue of one engine, and the engines a test opens on it (all closed at the end)."""

    def __init__(self, api: ApiBackend, workdir: Path) -> None:
        self.api = api
        self.env = api.env(workdir)
        self.opened: list[Engine] = []
        self._consumer: Optional[Engine] = None
        self._other: Optional[Engine] = None

    @property
    def engine_class(self) -> Any:
        return engine_class(self.api.engine)

    def make(self, open_it: bool = True) -> Engine:
        """An engine built from the queue's variables, as a minion builds it."""
        engine: Engine = self.engine_class.from_env(EnvReader(self.env))
        self.opened.append(engine)
        if open_it:
            engine.open()
        return engine

    @property
    def consumer(self) -> Engine:
        """The test's minion (opened at first use: after the first push, as a minion starts)."""
        if self._consumer is None:
            self._consumer = self.make()
        return self._consumer

    @property
    def other(self) -> Engine:
        """A second minion on the queue; the same one where the backend does not share given-back messages."""
        if not self.api.shares:
            return self.consumer
        if self._other is None:
            self._other = self.make()
        return self._other

    def push(self, params: list[Any]) -> None:
        """Queue `params` as minion-push does: from a fresh engine, closed after."""
        if not self.api.pushes_from_afar:
            self.consumer.push(params)
            return
        pusher = self.make(open_it=False)
        where = pusher.push(params)
        pusher.close()
        assert isinstance(where, str) and where, "push says where the parameters went"

    def dead_letters(self) -> list[DeadLetter]:
        """What `minion-status --failed` lists: from a fresh engine (the minion's own for memory)."""
        if not self.api.pushes_from_afar:
            return self.api.dead_letters(self.consumer)
        reader = self.make(open_it=False)
        try:
            return self.api.dead_letters(reader)
        finally:
            reader.close()

    def close(self) -> None:
        for engine in reversed(self.opened):
            engine.close()


@pytest.fixture
def rig(api: ApiBackend, tmp_path: Path) -> Iterator[Rig]:
    queue = Rig(api, tmp_path)
    yield queue
    queue.close()


def take(engine: Engine, within: float = COMES_WITHIN) -> Message:
    message: Message = backends_take(engine, within)
    return message


def absent(rig: Rig, seconds: float = ABSENT_FOR) -> None:
    """Nothing comes to any minion of the queue for `seconds`."""
    engines = [rig.consumer] if rig.other is rig.consumer else [rig.consumer, rig.other]
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for engine in engines:
            message = engine.next(0.05)
            assert message is None, f"unexpected delivery: {message}"


def wait_for(predicate: Any, within: float = COMES_WITHIN) -> None:
    deadline = time.monotonic() + within
    while not predicate():
        assert time.monotonic() < deadline, f"{predicate} still false after {within:g}s"
        time.sleep(0.1)


def parameter(text: str) -> Any:
    """A dead letter's parameter: its JSON body decoded, or its text (execo, identity bodies)."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def setting_named(engine: Any, suffix: str) -> Optional[str]:
    """The name of the engine's setting that ends with `suffix` (its decoder, its operation timeout)."""
    return next((s.name for s in engine.settings if s.name.endswith(suffix)), None)


# -- taking and settling -------------------------------------------------------


def test_pushed_parameters_come_once_each_and_an_ack_removes_them(rig: Rig) -> None:
    params = ["a", "b", "c"]
    rig.push(params)
    engine = rig.consumer
    if rig.api.knows_remaining:
        wait_for(lambda: engine.remaining() == 3)
    assert not engine.drained(), "drained while messages are queued"

    taken = [take(engine) for _ in params]
    assert sorted(m.param for m in taken) == params
    assert [(m.attempt, m.reject_reason, m.reclaimed) for m in taken] == [(1, None, False)] * 3
    assert not engine.drained(), "drained while messages are held"
    assert not rig.other.drained(), "drained while another minion holds messages"
    if rig.api.knows_remaining:
        assert engine.remaining() == (3 if rig.api.remaining_counts_held else 0)

    for message in taken:
        engine.ack(message)
    absent(rig)
    if type(engine).tells_drained:
        wait_for(engine.drained)
    else:
        assert engine.drained() is False, "drained() is never True where tells_drained is False"
    assert engine.remaining() == (0 if rig.api.knows_remaining else None)


def test_a_nack_redelivers_to_any_minion_with_the_next_attempt(rig: Rig) -> None:
    rig.push(["p"])
    first = take(rig.consumer)
    rig.consumer.nack(first)
    assert not rig.other.drained(), "drained while a message waits to be delivered again"
    if rig.api.knows_remaining:  # where only waiting ones count, it may be held already (a prefetch)
        assert rig.other.remaining() in ((1,) if rig.api.remaining_counts_held else (0, 1))
    second = take(rig.other)
    assert (second.id, second.param, second.attempt, second.reclaimed) == (first.id, "p", 2, False)
    rig.other.nack(second)
    third = take(rig.consumer)
    assert (third.id, third.param, third.attempt, third.reclaimed) == (first.id, "p", 3, False)
    rig.consumer.ack(third)
    absent(rig)


def test_a_release_costs_no_attempt(rig: Rig) -> None:
    counted = int(not rig.engine_class.free_release)  # a broker that counts every delivery counts this one too
    rig.push(["p"])
    message = take(rig.consumer)
    rig.consumer.release(message)
    message = take(rig.other)
    assert (message.param, message.attempt) == ("p", 1 + counted)
    rig.other.nack(message)
    message = take(rig.consumer)
    assert message.attempt == 2 + counted
    rig.consumer.release(message)
    message = take(rig.other)
    assert (message.param, message.attempt) == ("p", 2 + 2 * counted)
    rig.other.ack(message)
    absent(rig)


def test_fail_sets_the_message_aside_with_its_reason(rig: Rig) -> None:
    reason = "exit code 1 (boom)"
    rig.push(["doomed", "fine"])
    for _ in range(2):
        message = take(rig.consumer)
        if message.param == "doomed":
            rig.consumer.fail(message, reason)
        else:
            rig.consumer.ack(message)
    absent(rig)
    letters = rig.dead_letters()
    assert [parameter(letter.param) for letter in letters] == ["doomed"]
    assert letters[0].reason == (reason if rig.engine_class.keeps_reason else "")
    assert rig.dead_letters() == letters, "listing the dead letters takes them away"
    if type(rig.consumer).tells_drained:
        wait_for(rig.consumer.drained)


def test_undecodable_bodies_are_flagged_then_set_aside_with_why(rig: Rig) -> None:
    decoder = setting_named(rig.engine_class, "_DECODER")
    if decoder is None:
        # No decoder: parameters are Python objects, never bodies (memory, execo's pickles), so
        # bytes that are not UTF-8 are a parameter like any other.
        rig.push([b"caf\xe9"])
        message = take(rig.consumer)
        assert (message.param, message.reject_reason) == (b"caf\xe9", None)
        rig.consumer.ack(message)
        return
    rig.env[decoder] = "json"
    rig.push([])  # creates what a minion consumes from: what is published before is kept
    bodies = [b"caf\xe9", b"{not json"] if rig.api.raw_bytes else [b"{not json"]
    rig.api.publish_raw(rig.env, bodies)
    reasons = []
    for _ in bodies:
        message = take(rig.consumer)
        assert message.reject_reason, f"{message} was decoded"
        reasons.append(message.reject_reason)
        rig.consumer.fail(message, message.reject_reason)
    expected_reasons = ["not UTF-8 text", "not valid JSON"] if rig.api.raw_bytes else ["not valid JSON"]
    assert sorted(r.split(" (")[0] for r in reasons) == expected_reasons, reasons
    letters = rig.dead_letters()
    expected = sorted(reasons) if rig.engine_class.keeps_reason else [""] * len(bodies)
    assert sorted(letter.reason for letter in letters) == expected
    assert "{not json" in [letter.param for letter in letters], "the body is kept as it came, to be fixed"
    for letter in letters:  # minion-status prints them: text, whatever the bytes were
        letter.param.encode("utf-8")


# -- leases, reaching the server, what is shown --------------------------------


def test_extend_keeps_a_held_message_from_other_minions_until_it_is_acked(rig: Rig) -> None:
    rig.push(["long"])
    engine = rig.consumer
    message = take(engine)
    interval = engine.lease_interval
    assert interval is None or interval > 0
    step = min(0.2, interval or 0.2)
    deadline = time.monotonic() + rig.api.hold_seconds
    while True:  # at least one renewal, even where the lease is too long to outlive here
        engine.extend([message])
        if time.monotonic() >= deadline:
            break
        assert rig.other.next(step) is None, "a held message went to another minion"
    engine.ack(message)
    absent(rig)


def closed_port() -> int:
    """A port of 127.0.0.1 that nothing listens on (it was free a moment ago)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def test_an_unreachable_server_raises_queue_unreachable_within_the_operation_timeout(
    api: ApiBackend, tmp_path: Path
) -> None:
    """What a minion (open), minion-push (push) and minion-status --failed (dead_letters) meet: exit code 3."""
    engine_type = engine_class(api.engine)
    timeout = setting_named(engine_type, "_OPERATION_TIMEOUT")
    address = api.address_env("127.0.0.1", closed_port())
    if address is None:
        # Nothing to reach over a network: no operation timeout either.
        assert timeout is None, f"{api.engine} declares {timeout} but its backend gives no address_env"
        return
    assert timeout is not None, f"{api.engine} has a server but declares no *_OPERATION_TIMEOUT"
    env = {**api.env(tmp_path), **address, timeout: f"{OPERATION_TIMEOUT:g}"}
    verbs = {"open": lambda e: e.open(), "push": lambda e: e.push(["x"]), "dead_letters": lambda e: e.dead_letters()}
    for verb, call in verbs.items():
        engine = engine_type.from_env(EnvReader(env))
        started = time.monotonic()
        try:
            with pytest.raises(QueueUnreachable):
                call(engine)
        finally:
            engine.close()
        took = time.monotonic() - started
        assert took < OPERATION_TIMEOUT + SLACK, f"{verb}() gave up after {took:.1f}s"


def with_password(url: str, secret: str) -> str:
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"minion:{secret}@{host}"))


def test_describe_never_shows_a_secret_setting(api: ApiBackend, tmp_path: Path) -> None:
    engine_type = engine_class(api.engine)
    base = api.env(tmp_path)
    assert engine_type.from_env(EnvReader(base)).describe()
    for setting in (s for s in engine_type.settings if s.secret):
        if setting.kind == "url":
            value = with_password(base.get(setting.name) or setting.default, SECRET)
        else:
            value = f"/nowhere/{SECRET}" if setting.kind == "path" else SECRET
        env = {**base, **api.secret_companions(setting.name), setting.name: value}
        shown = engine_type.from_env(EnvReader(env)).describe()
        assert SECRET not in shown, f"{setting.name} shows in {shown!r}"


# -- every engine is here ------------------------------------------------------


def test_every_registry_engine_has_an_api_backend() -> None:
    covered = {backend.engine for backend in API_BACKENDS.values()}
    missing = sorted(set(ENGINES) - covered)
    assert not missing, f"declare API_BACKENDS in tests/integration/backends/<engine>.py for {missing}"


def test_the_process_level_unreachable_test_runs_every_engine_with_a_server() -> None:
    with_server = {b.engine for b in API_BACKENDS.values() if b().address_env("127.0.0.1", 1) is not None}
    assert set(test_unreachable.ENGINES) == with_server
