"""What the amqp engine promises beyond the contract suite, on the real RabbitMQ.

Engine-level tests drive AmqpEngine objects directly (two objects are two
minions: two connections); the others run the real `minionize` and
`minion-push` commands.
"""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest

from minionize import exitcodes
from minionize.engines.amqp import AmqpEngine
from tests.conftest import ROOT, minion_env, run_minion

from .backends import started
from .backends.amqp import URL, AmqpBackend, channel, rabbitmqctl, read_queue
from .backends.base import take as backends_take

pytestmark = pytest.mark.integration
RECORD = (sys.executable, str(ROOT / "tests" / "programs" / "record.py"))


@pytest.fixture(scope="module")
def broker(request: pytest.FixtureRequest) -> AmqpBackend:
    """The session's amqp backend, shared with the contract suites (backends.started)."""
    return cast(AmqpBackend, started("amqp", request.config))


@pytest.fixture
def env(broker: AmqpBackend, tmp_path: Path) -> dict[str, str]:
    return broker.env(tmp_path)


@pytest.fixture
def engines() -> Iterator[Any]:
    """Open engines (minions) on a queue; all closed at the end."""
    opened: list[AmqpEngine] = []

    def make(queue: str, **kw: Any) -> AmqpEngine:
        engine = AmqpEngine(queue, URL, **kw)
        engine.open()
        opened.append(engine)
        return engine

    yield make
    for engine in opened:
        engine.close()


def push(env: dict[str, str], *params: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "minionize.push", *params],
        env=minion_env(**env), capture_output=True, text=True, timeout=60,
    )


def take(engine: AmqpEngine, seconds: float = 5) -> Any:
    return backends_take(engine, seconds, poll=0.5)


@pytest.mark.parametrize("queue_type", ["quorum", "classic"])
def test_nacks_and_crashes_count_attempts_releases_do_not(env: dict[str, str], engines: Any, queue_type: str) -> None:
    queue = env["AMQP_QUEUE"]
    engines(queue, queue_type=queue_type).push(["p"])
    first, second = engines(queue, queue_type=queue_type), engines(queue, queue_type=queue_type)
    seen = []
    message = take(first)
    seen.append(message.attempt)
    first.release(message)
    for settle in (second.nack, second.nack, second.release):
        message = take(second)
        seen.append(message.attempt)
        settle(message)
    message = take(first)
    seen.append(message.attempt)
    first.close()  # a crash: the connection goes with the message unacked
    seen.append(take(second).attempt)
    assert seen == [1, 1, 2, 3, 3, 4]


def test_an_undecodable_body_is_flagged_not_run(env: dict[str, str], engines: Any) -> None:
    queue = env["AMQP_QUEUE"]
    minion = engines(queue, decoder="json")
    channel().basic_publish("", queue, b"{not json")
    message = take(minion)
    assert message.param == "{not json"
    assert message.reject_reason is not None and "not valid JSON" in message.reject_reason


def test_drained_waits_for_a_message_another_minion_holds(env: dict[str, str], engines: Any) -> None:
    queue = env["AMQP_QUEUE"]
    engines(queue).push(["held"])
    holder, other = engines(queue), engines(queue)
    message = take(holder)
    deadline = time.monotonic() + 2.5  # longer than the settle delay
    while time.monotonic() < deadline:
        assert not other.drained(), "drained while another minion holds a message"
        assert other.next(0.2) is None
    holder.nack(message)
    again = take(other)
    assert (again.id, again.attempt) == (message.id, 2)
    assert not holder.drained()
    other.ack(again)
    started = time.monotonic()
    drained = {id(holder): False, id(other): False}
    while not all(drained.values()):
        assert time.monotonic() - started < 5, "never drained"
        for minion in (holder, other):  # as the worker loops: next(), and drained() when nothing came
            if not drained[id(minion)]:
                assert minion.next(0.1) is None
                drained[id(minion)] = minion.drained()
    assert time.monotonic() - started >= 1.0  # seen empty twice, a second apart


@pytest.mark.parametrize("queue_type", ["quorum", "classic"])
def test_with_prefetch_what_was_pushed_but_never_taken_goes_back_without_an_attempt(
    env: dict[str, str], engines: Any, queue_type: str
) -> None:
    queue = env["AMQP_QUEUE"]
    engines(queue, queue_type=queue_type).push([f"p{i}" for i in range(8)])
    consumer = engines(queue, queue_type=queue_type, prefetch=4)
    running = take(consumer)
    wait_for(lambda: pushed(consumer) == 3, timeout=5)
    other = engines(queue, queue_type=queue_type)
    for _ in range(4):  # the 4 never pushed to `consumer`
        other.ack(take(other))
    assert other.next(0.5) is None, "a message beyond the prefetch of 4 was held"
    consumer.ack(running)
    consumer.close()  # a stop: the messages it was pushed but never took go back
    attempts = []
    while (message := other.next(1.0)) is not None:
        attempts.append(message.attempt)
        other.ack(message)
    assert attempts == [1, 1, 1]  # the 3 that waited, given back uncounted


def pushed(engine: AmqpEngine) -> int:
    """How many messages RabbitMQ pushed to `engine` that it has not handed out (without taking one)."""
    engine._connection.process_data_events(0)
    return len(engine._pushed)


def test_with_prefetch_a_crashed_minions_pushed_messages_come_back(env: dict[str, str], engines: Any) -> None:
    queue = env["AMQP_QUEUE"]
    engines(queue).push(["a", "b", "c"])
    crashing = engines(queue, prefetch=3)
    take(crashing)
    wait_for(lambda: pushed(crashing) == 2, timeout=5)
    crashing._drop()  # the connection goes, nothing given back by the minion
    survivor = engines(queue)
    seen = sorted((m.param, m.attempt) for m in (take(survivor) for _ in range(3)))
    assert seen == [("a", 2), ("b", 2), ("c", 2)]  # the quorum queue counted each delivery


# The first run of the parameter lasts 3s and fails; the second succeeds.
FAIL_SLOWLY_ONCE = """
import os, sys, time
directory, param = sys.argv[1], sys.argv[2]
attempt = os.environ["MINION_ATTEMPT"]
open(os.path.join(directory, f"{param}.{attempt}.start"), "w").close()
if attempt == "1":
    time.sleep(3)
open(os.path.join(directory, f"{param}.{attempt}.end"), "w").close()
sys.exit(1 if attempt == "1" else 0)
"""


def test_a_minion_does_not_exit_while_another_holds_a_message_it_will_nack(
    env: dict[str, str], spawn: Any, tmp_path: Path
) -> None:
    assert push(env, "slow").returncode == 0
    program = (sys.executable, "-c", FAIL_SLOWLY_ONCE, str(tmp_path))
    first = spawn(env, *program)
    wait_for(lambda: (tmp_path / "slow.1.start").exists())
    second = spawn(env, *program)
    wait_for(lambda: (tmp_path / "slow.1.end").exists())
    assert second.poll() is None, "the second minion exited while the first held the parameter"
    for minion in (first, second):
        _, err = minion.communicate(timeout=60)
        assert minion.returncode == 0, err
    runs = sorted(p.name for p in tmp_path.glob("slow.*"))
    assert runs == ["slow.1.end", "slow.1.start", "slow.2.end", "slow.2.start"]


def wait_for(predicate: Any, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


def test_dead_letters_keep_the_message_and_why_it_failed(env: dict[str, str], tmp_path: Path) -> None:
    assert push(env, "doomed").returncode == 0
    program = (sys.executable, "-c", "import sys; sys.exit(3)")
    result = run_minion(*program, cwd=tmp_path, MINION_MAX_ATTEMPTS="2", **env)
    assert result.returncode == exitcodes.SET_ASIDE, result.stderr
    assert read_queue(env["AMQP_QUEUE"]) == []
    [(_, properties, body)] = read_queue(f"{env['AMQP_QUEUE']}.dead")
    headers = properties.headers
    assert body == b'"doomed"'
    assert "exit code 3" in headers["minion_reason"] and "attempt 2 of 2" in headers["minion_reason"]
    assert headers["minion_attempts"] == "2"
    assert headers["minion_source"] == env["AMQP_QUEUE"]
    assert "x-minion-prior-attempts" not in headers
    assert properties.delivery_mode == 2 and properties.content_type == "application/json"
    assert properties.message_id


def test_a_producers_cc_header_does_not_route_the_dead_letter_back(env: dict[str, str], tmp_path: Path) -> None:
    # RabbitMQ routes a message to the queues its CC header names: copied onto the dead letter,
    # CC naming the work queue put every failure back in it, for ever.
    import pika

    queue = env["AMQP_QUEUE"]
    assert push(env, "seed").returncode == 0  # declares the queues
    ch = channel()
    ch.queue_declare(f"{queue}.audit", durable=True)
    for cc in ([queue], [f"{queue}.audit"]):
        ch.basic_publish("", queue, b'"cc"', pika.BasicProperties(delivery_mode=2, headers={"CC": cc}))
    ch.connection.close()
    result = run_minion("false", cwd=tmp_path, MINION_MAX_ATTEMPTS="1", timeout=60, **env)
    assert result.returncode == exitcodes.SET_ASIDE, result.stderr
    assert "(3 failed)" in result.stderr
    assert len(read_queue(f"{queue}.dead")) == 3
    assert read_queue(queue) == []
    assert len(read_queue(f"{queue}.audit")) == 1  # the producer's own CC copy, not one more per failure
    channel().queue_delete(f"{queue}.audit")


@pytest.mark.parametrize("deaths", ["garbage", [1, 2], [{"reason": 5}], []])
def test_a_dead_letter_with_a_malformed_x_death_is_listed(env: dict[str, str], tmp_path: Path, deaths: Any) -> None:
    import pika

    queue = env["AMQP_QUEUE"]
    assert push(env, "seed").returncode == 0
    ch = channel()
    ch.basic_publish("", f"{queue}.dead", b'"odd"', pika.BasicProperties(delivery_mode=2, headers={"x-death": deaths}))
    ch.connection.close()
    listed = subprocess.run([sys.executable, "-m", "minionize.status", "--failed"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=60, env=minion_env(**env))
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.startswith('"odd"\t') and "Traceback" not in listed.stderr


@pytest.fixture
def user(broker: AmqpBackend) -> Iterator[tuple[str, str]]:
    """A RabbitMQ user of its own, with a password that no other text contains."""
    name, password = f"minion-{uuid.uuid4().hex[:6]}", f"pw-{uuid.uuid4().hex}"
    rabbitmqctl("add_user", name, password)
    rabbitmqctl("set_permissions", "-p", "/", name, ".*", ".*", ".*")
    yield name, password
    rabbitmqctl("delete_user", name)


def close_connections_of(user: str) -> int:
    listing = rabbitmqctl("list_connections", "-q", "--no-table-headers", "user", "pid").stdout
    pids = [line.split()[1] for line in listing.splitlines() if line.split()[:1] == [user]]
    for pid in pids:
        rabbitmqctl("close_connection", pid, "test: connection lost")
    return len(pids)


def test_the_password_never_shows_not_even_when_reconnecting(
    env: dict[str, str], user: tuple[str, str], spawn: Any, tmp_path: Path
) -> None:
    name, password = user
    env = {**env, "AMQP_URL": f"amqp://{name}:{password}@127.0.0.1:5672/%2F", "MINION_LOG_LEVEL": "DEBUG"}
    pushed = push(env, "a", "b", "c")
    assert pushed.returncode == 0, pushed.stderr
    minion = spawn(env, *RECORD, str(tmp_path), "1", "0")
    wait_for(lambda: any(tmp_path.glob("*.start")))
    assert close_connections_of(name) == 1
    out, err = minion.communicate(timeout=60)
    assert minion.returncode == 0, err
    assert {p.name.split(".")[0] for p in tmp_path.glob("*.end")} == {"a", "b", "c"}
    assert "reconnected to RabbitMQ" in err
    assert f"amqp://{name}:***@127.0.0.1" in err and f"{name}:***@" in pushed.stdout
    assert password not in out + err + pushed.stdout + pushed.stderr


def test_a_queue_declared_with_other_arguments_is_a_configuration_error(env: dict[str, str], tmp_path: Path) -> None:
    queue = env["AMQP_QUEUE"]
    ch = channel()
    ch.queue_declare(queue, durable=True)  # a plain classic queue
    ch.connection.close()
    result = run_minion(sys.executable, "-c", "pass", cwd=tmp_path, **env)
    assert result.returncode == 2
    [line] = result.stderr.splitlines()
    assert line.startswith(f"minionize: AMQP_QUEUE='{queue}': the queue {queue} exists with other arguments (")
    assert "inequivalent arg" in line and "set AMQP_QUEUE_TYPE=classic" in line
    pushed = push(env, "x")
    assert pushed.returncode == 2 and len(pushed.stderr.splitlines()) == 1
    # As the message says: the engine takes the queue as it is when told its type.
    classic = {**env, "AMQP_QUEUE_TYPE": "classic"}
    assert push(classic, "x").returncode == 0
    result = run_minion(sys.executable, "-c", "pass", cwd=tmp_path, **classic)
    assert result.returncode == 0, result.stderr
    assert "(1 acked)" in result.stderr


def test_an_unreachable_broker_exits_3_at_once(tmp_path: Path) -> None:
    env = {"MINION_ENGINE": "amqp", "AMQP_QUEUE": "q", "AMQP_URL": "amqp://minion:Sesame-42@127.0.0.1:1/%2F"}
    started = time.monotonic()
    result = run_minion(sys.executable, "-c", "pass", cwd=tmp_path, **env)
    assert time.monotonic() - started < 10
    assert result.returncode == 3
    [line] = result.stderr.splitlines()
    assert line.startswith("minionize: cannot reach RabbitMQ at amqp://minion:***@127.0.0.1:1/%2F: ")
    assert "Sesame" not in result.stderr


def test_a_wrong_password_is_a_configuration_error(broker: AmqpBackend, tmp_path: Path) -> None:
    env = {"MINION_ENGINE": "amqp", "AMQP_QUEUE": "q", "AMQP_URL": "amqp://guest:Sesame-42@127.0.0.1:5672/%2F"}
    result = run_minion(sys.executable, "-c", "pass", cwd=tmp_path, **env)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "minionize: AMQP_URL='amqp://guest:***@127.0.0.1:5672/%2F': RabbitMQ refused this user name and password"
    ]


def test_heartbeats_are_answered_during_a_long_run(env: dict[str, str], tmp_path: Path) -> None:
    # With a 2s heartbeat, a run of 8s outlives it four times over: unless the
    # engine answers heartbeats meanwhile, RabbitMQ drops the connection, the
    # ack is lost and the parameter runs twice.
    assert push(env, "long").returncode == 0
    result = run_minion(*RECORD, str(tmp_path), "8", "0", cwd=tmp_path, timeout=40, AMQP_HEARTBEAT="2", **env)
    assert result.returncode == 0, result.stderr
    assert [p.name.split(".")[0] for p in tmp_path.glob("*.start")] == ["long"]
    assert "connection" not in result.stderr.lower()


def reader(**env: str) -> Any:
    from minionize.config import EnvReader

    return EnvReader(env)


def test_settings_are_checked_before_any_connection() -> None:
    from minionize.errors import ConfigError

    bad = [
        ({}, "AMQP_QUEUE=(unset)"),
        ({"AMQP_QUEUE": "q", "AMQP_URL": "http://h/"}, "AMQP_URL='http://h/': expected an amqp://"),
        ({"AMQP_QUEUE": "q", "AMQP_URL": "amqp://u:pw@h:port/"}, "AMQP_URL='amqp://u:***@h:port/': not a valid"),
        ({"AMQP_QUEUE": "q", "AMQP_QUEUE_TYPE": "stream"}, "AMQP_QUEUE_TYPE='stream'"),
        ({"AMQP_QUEUE": "q", "AMQP_DEAD_LETTER_QUEUE": "q"}, "AMQP_DEAD_LETTER_QUEUE='q'"),
        ({"AMQP_QUEUE": "q", "AMQP_HEARTBEAT": "-1"}, "AMQP_HEARTBEAT='-1'"),
        ({"AMQP_QUEUE": "q", "AMQP_PREFETCH": "-1"}, "AMQP_PREFETCH='-1'"),
        ({"AMQP_QUEUE": "q", "AMQP_PREFETCH": "many"}, "AMQP_PREFETCH='many'"),
        (
            {"AMQP_QUEUE": "q", "AMQP_URL": "amqps://h/?ssl_options=%7B%7D"},
            "AMQP_URL='amqps://h/?ssl_options=***': not a valid",
        ),
    ]
    for env, error in bad:
        with pytest.raises(ConfigError) as raised:
            AmqpEngine.from_env(reader(**env))
        assert str(raised.value).startswith(error), raised.value
    # An unreachable broker is no concern of from_env: it does no I/O.
    engine = AmqpEngine.from_env(reader(AMQP_QUEUE="q", AMQP_URL="amqp://u:pw@127.0.0.1:1/v", AMQP_HEARTBEAT="20"))
    assert (engine.dead_letter_queue, engine.queue_type, engine.lease_interval) == ("q.dead", "quorum", 5.0)
    assert AmqpEngine.from_env(reader(AMQP_QUEUE="q", AMQP_HEARTBEAT="8")).lease_interval == 2.0


def test_describe_masks_the_password_and_the_url_options() -> None:
    from minionize.secrets import mask_url

    described = AmqpEngine("q", "amqp://minion:Sesame-42@127.0.0.1/jobs?heartbeat=5").describe()
    assert described == "amqp queue q at amqp://minion:***@127.0.0.1/jobs?heartbeat=5"
    # ssl_options may carry the password of a key file.
    url = "amqps://minion:Sesame-42@127.0.0.1:5671/jobs?ssl_options=%7B%27password%27%3A%27Key-99%27%7D"
    assert mask_url(url) == "amqps://minion:***@127.0.0.1:5671/jobs?ssl_options=***"
    assert "Key-99" not in mask_url(url) and "Sesame" not in described


def test_a_minion_of_several_slots_is_pushed_one_message_per_slot_never_more(
    env: dict[str, str], engines: Any
) -> None:
    queue = env["AMQP_QUEUE"]
    engines(queue).push([f"p{i}" for i in range(6)])
    several = AmqpEngine(queue, URL)
    several.slots = 3  # as the worker of MINION_CONCURRENCY=3 sets it, before open
    several.open()
    try:
        taken = several.next_many(3, 5.0)
        for _ in range(10):  # the pushes may come in more than one read
            if len(taken) == 3:
                break
            taken += several.next_many(3 - len(taken), 5.0)
        assert len(taken) == 3
        other = engines(queue)
        rest = [take(other) for _ in range(3)]  # none was pushed to the minion of three slots
        assert {m.param for m in taken} | {m.param for m in rest} == {f"p{i}" for i in range(6)}
        assert pushed(several) == 0
        for message in taken:
            several.ack(message)
        for message in rest:
            other.ack(message)
    finally:
        several.close()
