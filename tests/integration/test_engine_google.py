"""What the google engine builds beyond the contract: creation, settings, attempts, reconnection.

Everything runs against the Pub/Sub emulator (started by the backend when it
is not already listening on 127.0.0.1:8085).
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import cast

import pytest

from minionize import exitcodes
from minionize.config import EnvReader
from minionize.engines.google import GoogleEngine
from minionize.errors import ConfigError
from minionize.message import Message
from tests.conftest import ROOT, minion_env, minionize_cmd

from .backends import started
from .backends.base import free_port
from .backends.base import take as backends_take
from .backends.google import Emulator, GoogleBackend, clients, pull_all

pytestmark = pytest.mark.integration
RECORD = (sys.executable, str(ROOT / "tests" / "programs" / "record.py"))


@pytest.fixture(scope="module")
def backend(request: pytest.FixtureRequest) -> GoogleBackend:
    """The session's google backend, shared with the contract suites (backends.started)."""
    return cast(GoogleBackend, started("google", request.config))


@pytest.fixture
def env(backend: GoogleBackend, tmp_path: Path) -> dict[str, str]:
    return backend.env(tmp_path)


def minion(*argv: str, cwd: Path, **settings: str) -> subprocess.CompletedProcess[str]:
    """Run the real `python -m minionize` command line to its end."""
    return subprocess.run(
        minionize_cmd(*argv), cwd=cwd, env=minion_env(**settings), capture_output=True, text=True, timeout=90
    )


def engine_of(env: dict[str, str], **extra: str) -> GoogleEngine:
    return GoogleEngine.from_env(EnvReader({**env, **extra}))


def take(engine: GoogleEngine, within: float = 10) -> Message:
    message: Message = backends_take(engine, within, poll=0.1)
    return message


def paths(env: dict[str, str]) -> tuple[str, str, str]:
    project, topic = env["GOOGLE_PROJECT_ID"], env["GOOGLE_TOPIC_ID"]
    return (
        f"projects/{project}/topics/{topic}",
        f"projects/{project}/subscriptions/{env['GOOGLE_SUBSCRIPTION']}",
        f"projects/{project}/subscriptions/{topic}-dead-letter-sub",
    )


def test_a_minion_creates_the_missing_subscription_with_a_dead_letter_policy(env: dict[str, str]) -> None:
    engine = engine_of(env, GOOGLE_ACK_DEADLINE="17", MINION_MAX_ATTEMPTS="7")
    engine.open()
    engine.close()
    topic, subscription, keeper = paths(env)
    subscriber, _ = clients()
    found = subscriber.get_subscription(subscription=subscription)
    assert found.topic == topic
    assert found.ack_deadline_seconds == 17
    assert found.dead_letter_policy.dead_letter_topic == f"{topic}-dead-letter"
    assert found.dead_letter_policy.max_delivery_attempts == 7
    assert subscriber.get_subscription(subscription=keeper).topic == f"{topic}-dead-letter"
    assert engine.lease_interval == pytest.approx(17 / 3)


def test_a_policy_never_asks_fewer_than_the_5_attempts_pubsub_accepts(env: dict[str, str]) -> None:
    engine = engine_of(env, MINION_MAX_ATTEMPTS="2")
    engine.open()
    engine.close()
    subscriber, _ = clients()
    assert subscriber.get_subscription(subscription=paths(env)[1]).dead_letter_policy.max_delivery_attempts == 5


def test_push_creates_the_subscription_so_that_nothing_pushed_is_lost(env: dict[str, str]) -> None:
    pusher = engine_of(env)
    assert pusher.push([{"lr": 0.1}, "plain"]).startswith("Pub/Sub topic ")
    pusher.close()
    engine = engine_of(env)
    engine.open()
    params = [take(engine).param, take(engine).param]
    engine.close()
    assert sorted(params, key=str) == sorted([{"lr": 0.1}, "plain"], key=str)


def test_a_minion_warns_when_the_subscription_sets_aside_sooner_than_it_would(
    env: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    # minion-push ran with the default MINION_MAX_ATTEMPTS (3): Pub/Sub forwards
    # a message to the dead-letter topic at its 5th delivery, whatever the minions say.
    engine_of(env).push(["p"])
    for attempts, warned in (("5", False), ("20", True)):
        caplog.clear()
        engine = engine_of(env, MINION_MAX_ATTEMPTS=attempts)
        engine.open()
        engine.close()
        warnings = [r.getMessage() for r in caplog.records if "max-delivery-attempts" in r.getMessage()]
        assert bool(warnings) == warned, (attempts, caplog.text)
    [warning] = warnings
    assert "after 5 deliveries, fewer than MINION_MAX_ATTEMPTS=20" in warning
    assert f"gcloud pubsub subscriptions update {env['GOOGLE_SUBSCRIPTION']} --max-delivery-attempts=20" in warning


@pytest.mark.parametrize(
    "missing", ["GOOGLE_PROJECT_ID", "GOOGLE_TOPIC_ID", "GOOGLE_SUBSCRIPTION", "GOOGLE_APPLICATION_CREDENTIALS"]
)
def test_a_missing_mandatory_variable_exits_2_naming_it(tmp_path: Path, missing: str) -> None:
    settings = {
        "MINION_ENGINE": "google",
        "GOOGLE_PROJECT_ID": "project-1",
        "GOOGLE_TOPIC_ID": "topic-1",
        "GOOGLE_SUBSCRIPTION": "sub-1",
        "GOOGLE_APPLICATION_CREDENTIALS": str(tmp_path / "key.json"),
    }
    del settings[missing]
    result = minion("true", cwd=tmp_path, **settings)
    assert result.returncode == 2, result.stderr
    assert f"{missing}=(unset)" in result.stderr


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("GOOGLE_ACK_DEADLINE", "5"),
        ("GOOGLE_ACK_DEADLINE", "601"),
        ("GOOGLE_TOPIC_ID", "goog-reserved"),
        ("GOOGLE_SUBSCRIPTION", "has/slash"),
        ("GOOGLE_DEAD_LETTER_TOPIC", "projects/p/subscriptions/s"),
        ("GOOGLE_DECODER", "jsno"),
        ("PUBSUB_EMULATOR_HOST", "http://127.0.0.1:8085"),
    ],
)
def test_a_bad_value_is_refused_before_any_io(variable: str, value: str) -> None:
    settings = {"GOOGLE_PROJECT_ID": "p-1", "GOOGLE_TOPIC_ID": "t-1", "GOOGLE_SUBSCRIPTION": "s-1"}
    settings.update({"PUBSUB_EMULATOR_HOST": "127.0.0.1:8085", variable: value})
    with pytest.raises(ConfigError) as error:
        GoogleEngine.from_env(EnvReader(settings))
    assert error.value.variable == variable


def test_credentials_are_optional_with_the_emulator(env: dict[str, str]) -> None:
    assert "GOOGLE_APPLICATION_CREDENTIALS" not in env
    engine = engine_of(env)
    engine.open()
    engine.close()


def test_a_credentials_path_that_does_not_exist_exits_2(env: dict[str, str], tmp_path: Path) -> None:
    result = minion("true", cwd=tmp_path, **env, GOOGLE_APPLICATION_CREDENTIALS=str(tmp_path / "nowhere.json"))
    assert result.returncode == 2, result.stderr
    assert "GOOGLE_APPLICATION_CREDENTIALS=" in result.stderr and "nowhere.json" in result.stderr


def test_an_unreadable_key_file_exits_2_without_showing_its_content(tmp_path: Path) -> None:
    key = tmp_path / "key.json"
    key.write_text('{"type": "service_account", "private_key": "SECRET-KEY-MATERIAL"}')
    result = minion(
        "true", cwd=tmp_path, MINION_ENGINE="google", GOOGLE_PROJECT_ID="project-1", GOOGLE_TOPIC_ID="topic-1",
        GOOGLE_SUBSCRIPTION="sub-1", GOOGLE_APPLICATION_CREDENTIALS=str(key), MINION_LOG_LEVEL="DEBUG",
    )
    assert result.returncode == 2, result.stderr
    assert "GOOGLE_APPLICATION_CREDENTIALS" in result.stderr
    assert "SECRET" not in result.stderr + result.stdout


def test_an_unreachable_emulator_exits_3(env: dict[str, str], tmp_path: Path) -> None:
    nowhere = {**env, "PUBSUB_EMULATOR_HOST": f"127.0.0.1:{free_port()}"}
    started = time.monotonic()
    result = minion("true", cwd=tmp_path, **nowhere)
    assert result.returncode == 3, result.stderr
    assert "cannot reach Pub/Sub" in result.stderr
    assert time.monotonic() - started < 30  # a bounded wait, not the library's minute of retries


def test_a_subscription_of_another_topic_is_a_config_error(env: dict[str, str]) -> None:
    engine_of(env).open()
    other = engine_of(env, GOOGLE_TOPIC_ID="another-topic")
    with pytest.raises(ConfigError, match="GOOGLE_SUBSCRIPTION"):
        other.open()


def test_json_decoder_sets_a_non_json_message_aside_with_the_reason(env: dict[str, str], tmp_path: Path) -> None:
    engine_of(env).open()
    topic, subscription, keeper = paths(env)
    _, publisher = clients()
    publisher.publish(topic=topic, messages=[{"data": b"{not json", "attributes": {"origin": "test"}}])
    result = minion(*RECORD, str(tmp_path), "0", "0", cwd=tmp_path, **env, MINION_IDLE_TIMEOUT="3")
    assert result.returncode == exitcodes.SET_ASIDE, result.stderr
    assert not list(tmp_path.glob("*.start"))  # the program never ran
    [letter] = pull_all(keeper)
    assert letter.data == b"{not json"
    assert "not valid JSON" in letter.attributes["minion_reason"]
    assert letter.attributes["minion_attempts"] == "1"
    assert letter.attributes["minion_source"] == subscription
    assert letter.attributes["origin"] == "test"


def test_nack_makes_the_message_available_at_once(env: dict[str, str]) -> None:
    engine = engine_of(env)  # a 60 s ack deadline
    engine.push(["x"])
    engine.open()
    first = take(engine)
    nacked = time.monotonic()
    engine.nack(first)
    again = take(engine, within=30)
    delay = time.monotonic() - nacked
    engine.ack(again)
    engine.close()
    assert delay < 5, f"redelivered after {delay:.1f}s"
    assert (again.id, again.param, again.attempt) == (first.id, "x", 2)


def test_release_gives_back_without_counting_an_attempt(env: dict[str, str]) -> None:
    engine = engine_of(env)
    engine.push(["y"])
    engine.open()
    first = take(engine)
    engine.release(first)
    released = take(engine)
    engine.nack(released)
    nacked = take(engine)
    engine.ack(nacked)
    engine.close()
    assert [first.attempt, released.attempt, nacked.attempt] == [1, 1, 2]
    assert first.id == released.id == nacked.id


def test_without_a_dead_letter_policy_minionize_counts_attempts(env: dict[str, str]) -> None:
    topic, subscription, keeper = paths(env)
    subscriber, publisher = clients()
    publisher.create_topic(name=topic)
    subscriber.create_subscription(name=subscription, topic=topic)  # made elsewhere, no policy
    engine = engine_of(env)
    engine.push(["z"])
    engine.open()
    attempts = []
    for _ in range(3):
        message = take(engine)
        attempts.append(message.attempt)
        if len(attempts) < 3:
            engine.nack(message)
    engine.fail(message, "gave up")
    engine.close()
    assert attempts == [1, 2, 3]
    [letter] = pull_all(keeper)  # the dead-letter topic and its keeper were created on the way
    assert (letter.data, letter.attributes["minion_reason"], letter.attributes["minion_attempts"]) == (
        b'"z"', "gave up", "3"
    )


def test_a_lost_emulator_is_reconnected_to_when_it_comes_back(env: dict[str, str]) -> None:
    emulator = Emulator(f"127.0.0.1:{free_port()}")
    emulator.start()
    settings = {**env, "PUBSUB_EMULATOR_HOST": emulator.host}
    engine = engine_of(settings)
    try:
        engine.push(["before"])
        engine.open()
        in_hand = take(engine)
        emulator.stop()
        with pytest.raises(ConnectionError):  # what the worker backs off from, not a crash
            engine.next(0.1)
        with pytest.raises(ConnectionError):
            engine.ack(in_hand)
        emulator.start()  # empty: the emulator keeps nothing
        assert engine.next(0.1) is None  # reconnected, and the subscription created again
        engine_of(settings).push(["after"])
        assert take(engine).param == "after"
    finally:
        engine.close()
        emulator.stop()


def test_describe_names_the_subscription_and_never_the_key_file(env: dict[str, str], tmp_path: Path) -> None:
    text = engine_of(env, GOOGLE_APPLICATION_CREDENTIALS=str(tmp_path / "key.json")).describe()
    assert env["GOOGLE_SUBSCRIPTION"] in text
    assert "key.json" not in text

