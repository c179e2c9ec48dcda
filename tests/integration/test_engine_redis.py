"""What the redis engine promises beyond the contract suite, on a real redis-server.

The engine is driven directly for the delivery details (attempts from the
delivery count, renewals, a late minion) and through real minion processes
for draining, dead letters, masked passwords and a server that goes away.
"""

from __future__ import annotations

import collections
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from minionize import exitcodes
from minionize.config import EnvReader
from minionize.engines.redis import RedisEngine
from minionize.errors import ConfigError
from tests.conftest import ROOT, minion_env, minionize_cmd, require, run_minion

from .backends.base import free_port
from .backends.redis import RedisServer

pytestmark = pytest.mark.integration

RECORD = (sys.executable, str(ROOT / "tests" / "programs" / "record.py"))
PASSWORD = "s3cret-pw"


def _server(*options: str) -> Iterator[RedisServer]:
    require(shutil.which("redis-server") is not None, "redis-server is not installed (scripts/services.sh)")
    server = RedisServer(*options)
    server.start()
    yield server
    server.remove()


@pytest.fixture(scope="module")
def server() -> Iterator[RedisServer]:
    yield from _server()


@pytest.fixture(scope="module")
def locked_server() -> Iterator[RedisServer]:
    yield from _server("--requirepass", PASSWORD)


@pytest.fixture
def stream() -> str:
    return f"s-{uuid.uuid4().hex[:10]}"


def url(server: RedisServer, password: str = "") -> str:
    auth = f":{password}@" if password else ""
    return f"redis://{auth}127.0.0.1:{server.port}/0"


def engine(server: RedisServer, stream: str, **options: Any) -> RedisEngine:
    instance = RedisEngine(stream, url(server), decoder="json", **options)
    instance.open()
    return instance


def client(server: RedisServer) -> Any:
    return redis.Redis.from_url(url(server))


_SPAWNED: list[subprocess.Popen[str]] = []


@pytest.fixture(autouse=True)
def _no_minion_left() -> Iterator[None]:
    yield
    while _SPAWNED:
        minion = _SPAWNED.pop()
        if minion.poll() is None:
            minion.kill()
            minion.communicate()


def spawn(env: dict[str, str], cwd: Path, *program: str) -> subprocess.Popen[str]:
    minion = subprocess.Popen(
        minionize_cmd(*program), cwd=cwd, env=minion_env(**env),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    _SPAWNED.append(minion)
    return minion


def minion_settings(server: RedisServer, stream: str, **extra: str) -> dict[str, str]:
    return {"MINION_ENGINE": "redis", "REDIS_URL": url(server), "REDIS_STREAM": stream,
            "REDIS_DECODER": "json", **extra}


def ends(directory: Path) -> collections.Counter[str]:
    return collections.Counter(p.name.split(".")[0] for p in directory.glob("*.end"))


def wait_for(predicate, timeout: float = 30) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


# -- the engine itself ---------------------------------------------------------


def test_attempts_come_from_the_delivery_count_and_nothing_is_copied(server: RedisServer, stream: str) -> None:
    minion = engine(server, stream)
    minion.push(["x"])
    first = minion.next(0.1)
    assert first is not None and (first.param, first.attempt) == ("x", 1)
    minion.release(first)  # a stop: no attempt counted
    again = minion.next(0.1)
    assert again is not None and (again.id, again.attempt, again.reclaimed) == (first.id, 1, False)
    minion.nack(again)
    third = minion.next(0.1)
    assert third is not None and (third.id, third.attempt) == (first.id, 2)
    with client(server) as c:
        assert c.xlen(stream) == 1  # the same entry all along
        minion.ack(third)
        assert c.xlen(stream) == 0  # REDIS_DELETE_ACKED
        assert c.xpending(stream, "minionize")["pending"] == 0
    assert minion.drained()
    minion.close()


def test_renewals_keep_an_entry_and_a_late_minion_cannot_disturb_its_new_holder(
    server: RedisServer, stream: str
) -> None:
    first, second, third = (engine(server, stream, claim_idle=1) for _ in range(3))
    first.push(["long"])
    taken = first.next(0.1)
    assert taken is not None
    for _ in range(4):  # 2 s, twice the claim time, renewed every 0.5 s
        time.sleep(0.5)
        first.extend([taken])
        assert second.next(0.05) is None
    time.sleep(1.2)  # the first minion stalls
    stolen = second.next(0.1)
    assert stolen is not None and stolen.id == taken.id
    assert (stolen.attempt, stolen.reclaimed) == (2, True)
    first.nack(taken)  # too late: the entry is the second minion's now
    first.fail(taken, "late")
    assert third.next(0.1) is None
    with client(server) as c:
        assert c.xlen(f"{stream}:dead") == 0
        assert c.xpending(stream, "minionize")["consumers"] == [{"name": second.consumer.encode(), "pending": 1}]
    second.ack(stolen)
    assert third.drained()
    for minion in (first, second, third):
        minion.close()


def test_undecodable_entries_are_rejected_with_a_reason(server: RedisServer, stream: str) -> None:
    minion = engine(server, stream)
    with client(server) as c:
        c.xadd(stream, {"param": "not json"})
        c.xadd(stream, {"other": "1"})
    bad_json, no_field = minion.next(0.1), minion.next(0.1)
    assert bad_json is not None and "not valid JSON" in (bad_json.reject_reason or "")
    assert no_field is not None and "no 'param' field" in (no_field.reject_reason or "")
    assert no_field.param == {"other": "1"}
    minion.close()


def test_a_dead_letter_with_only_minionizes_field_names_is_left_and_the_others_retried(
    server: RedisServer, stream: str
) -> None:
    # A producer's entry whose one field bears a name minionize writes on dead letters: nothing of
    # it is left to queue again (XADD of no field raised, and blocked every retry after it).
    minion = engine(server, stream)
    with client(server) as c:
        c.xadd(stream, {"minion_source": "elsewhere"})
        c.xadd(stream, {"param": '"fine"'})
    for _ in range(2):
        message = minion.next(0.1)
        assert message is not None
        minion.fail(message, message.reject_reason or "exit code 1")
    reader = RedisEngine(stream, url(server))
    assert reader.retry_failed() == 1
    assert [d.reason for d in reader.dead_letters()] == ["no 'param' field in the stream entry"]
    reader.close()
    again = minion.next(0.1)
    assert again is not None and again.param == "fine"
    minion.close()


def test_an_entry_without_the_field_is_listed_and_retried_as_it_came(server: RedisServer, stream: str) -> None:
    minion = engine(server, stream)
    with client(server) as c:
        c.xadd(stream, {"data": "42"})  # a producer that names the field otherwise
    message = minion.next(0.1)
    assert message is not None and message.reject_reason is not None
    minion.fail(message, message.reject_reason)
    reader = RedisEngine(stream, url(server))
    assert [(d.param, d.reason) for d in reader.dead_letters()] == [('{"data": "42"}', message.reject_reason)]
    assert reader.retry_failed() == 1
    reader.close()
    again = minion.next(0.1)  # the same entry, set aside again: never an empty parameter that runs
    assert again is not None and (again.param, again.reject_reason) == ({"data": "42"}, message.reject_reason)
    minion.close()


def test_remaining_counts_pending_and_undelivered(server: RedisServer, stream: str) -> None:
    minion = engine(server, stream)
    minion.push([1, 2, 3])
    taken = minion.next(0.1)
    assert taken is not None
    assert minion.remaining() == 3
    minion.ack(taken)
    assert minion.remaining() == 2
    minion.close()


def test_a_group_lost_by_the_server_is_created_again(server: RedisServer, stream: str) -> None:
    minion = engine(server, stream)
    with client(server) as c:
        c.delete(stream)
        assert not minion.drained()  # the group comes back first, then a verdict
        assert minion.drained()
        c.delete(stream)
        assert minion.next(0.1) is None
        assert c.xinfo_groups(stream)[0]["name"] == b"minionize"
    minion.push(["after"])
    message = minion.next(0.1)
    assert message is not None and message.param == "after"
    minion.close()


@pytest.mark.parametrize(
    ("variables", "named"),
    [
        ({}, "REDIS_STREAM"),
        ({"REDIS_STREAM": "s", "REDIS_CLAIM_IDLE": "0.5"}, "REDIS_CLAIM_IDLE"),
        ({"REDIS_STREAM": "s", "REDIS_DECODER": "jsno"}, "REDIS_DECODER"),
        ({"REDIS_STREAM": "s", "REDIS_FIELD": "minion_reason"}, "REDIS_FIELD"),
        ({"REDIS_STREAM": "s", "REDIS_URL": f"http://:{PASSWORD}@127.0.0.1/0"}, "REDIS_URL"),
    ],
)
def test_bad_settings_name_the_variable_and_never_show_a_password(variables: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError) as error:
        RedisEngine.from_env(EnvReader(variables))
    assert error.value.variable == named
    assert PASSWORD not in str(error.value)


def test_describe_masks_passwords_in_the_authority_and_the_query() -> None:
    for secret_url in (f"redis://user:{PASSWORD}@127.0.0.1:1/0", f"unix:///run/redis.sock?password={PASSWORD}&db=2"):
        described = RedisEngine.from_env(EnvReader({"REDIS_STREAM": "s", "REDIS_URL": secret_url})).describe()
        assert PASSWORD not in described and "***" in described
    assert "unix:///run/redis.sock?password=***&db=2" in described


# -- minion processes -----------------------------------------------------------


def test_a_minion_drains_only_once_nothing_is_pending_anywhere(
    server: RedisServer, stream: str, tmp_path: Path
) -> None:
    env = minion_settings(server, stream)
    engine(server, stream).push(["slow"])
    holder = spawn(env, tmp_path, *RECORD, str(tmp_path), "3", "0")
    wait_for(lambda: any(tmp_path.glob("slow.*.start")))
    waiter = spawn(env, tmp_path, *RECORD, str(tmp_path), "0", "0")
    time.sleep(1.5)
    assert waiter.poll() is None, "the second minion left while the first still held an entry"
    waiter.communicate(timeout=30)
    waiter_left = time.time()
    holder.communicate(timeout=30)
    assert (holder.returncode, waiter.returncode) == (0, 0)
    end_file = next(tmp_path.glob("slow.*.end"))
    assert waiter_left >= float(end_file.read_text().split()[0])
    assert ends(tmp_path) == {"slow": 1}


def test_dead_letters_keep_the_parameter_reason_attempts_and_can_be_replayed(
    server: RedisServer, stream: str, tmp_path: Path
) -> None:
    dead = f"{stream}-failed"
    env = minion_settings(server, stream, REDIS_DEAD_LETTER_STREAM=dead, MINION_MAX_ATTEMPTS="2")
    engine(server, stream).push(["doomed", "fine"])
    failing = spawn(env, tmp_path, "test", "doomed", "!=")
    failing.communicate(timeout=60)
    assert failing.returncode == exitcodes.SET_ASIDE
    with client(server) as c:
        ((_, letter),) = c.xrange(dead)
        assert c.xlen(stream) == 0 and c.xpending(stream, "minionize")["pending"] == 0
    assert letter[b"param"] == b'"doomed"'
    assert b"exit code 1" in letter[b"minion_reason"] and b"attempt 2 of 2" in letter[b"minion_reason"]
    assert letter[b"minion_attempts"] == b"2"
    assert letter[b"minion_source"] == env["REDIS_STREAM"].encode()
    assert letter[b"minion_original_id"].count(b"-") == 1
    # Replayed from the dead-letter stream, it fails again: its dead letter's
    # fields are replaced, not doubled.
    replay_env = minion_settings(server, dead, MINION_MAX_ATTEMPTS="1")
    replay = spawn(replay_env, tmp_path, *RECORD, str(tmp_path), "0", "3")
    replay.communicate(timeout=60)
    assert replay.returncode == exitcodes.SET_ASIDE and ends(tmp_path) == {"doomed": 1}
    with client(server) as c:
        ((_, flat),) = c.eval("return redis.call('XRANGE', KEYS[1], '-', '+')", 1, f"{dead}:dead")
    fields = flat[::2]
    assert sorted(fields) == [b"minion_attempts", b"minion_original_id", b"minion_reason", b"minion_source", b"param"]
    assert flat[fields.index(b"minion_reason") * 2 + 1].startswith(b"exit code 3")


def test_an_unreachable_server_at_start_is_exit_code_3(tmp_path: Path) -> None:
    env = {"MINION_ENGINE": "redis", "REDIS_STREAM": "s", "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}
    started = time.monotonic()
    result = run_minion("true", cwd=tmp_path, **env)
    assert result.returncode == 3, result.stderr
    assert "cannot reach redis at redis://127.0.0.1" in result.stderr
    assert time.monotonic() - started < 15


def test_the_password_never_reaches_the_logs(locked_server: RedisServer, stream: str, tmp_path: Path) -> None:
    env = minion_settings(locked_server, stream, MINION_LOG_LEVEL="DEBUG", MINION_REPORTER="stdout")
    env["REDIS_URL"] = url(locked_server, PASSWORD)
    RedisEngine(stream, env["REDIS_URL"], decoder="json").push(["p"])
    minion = spawn(env, tmp_path, *RECORD, str(tmp_path), "0", "0")
    out, err = minion.communicate(timeout=60)
    assert minion.returncode == 0, err
    assert ends(tmp_path) == {"p": 1}
    assert f"redis://:***@127.0.0.1:{locked_server.port}/0" in err
    assert PASSWORD not in out + err

    env["REDIS_URL"] = url(locked_server, "wrong-" + PASSWORD)
    refused = spawn(env, tmp_path, *RECORD, str(tmp_path), "0", "0")
    out, err = refused.communicate(timeout=60)
    assert refused.returncode == 2, err
    assert "REDIS_URL" in err and PASSWORD not in out + err


def test_a_server_gone_mid_run_loses_nothing_and_the_ack_is_sent_when_it_is_back(
    server: RedisServer, stream: str, tmp_path: Path
) -> None:
    # REDIS_CLAIM_IDLE stays 60 s: the entry can only be settled in time by
    # the ack that the minion kept while the server was away.
    engine(server, stream).push(["held"])
    minion = spawn(minion_settings(server, stream), tmp_path, *RECORD, str(tmp_path), "1.5", "0")
    wait_for(lambda: any(tmp_path.glob("held.*.start")))
    server.shutdown()
    try:
        wait_for(lambda: ends(tmp_path)["held"] == 1)
        time.sleep(1.0)  # the ack fails: nobody listens
    finally:
        server.start()
    _, err = minion.communicate(timeout=45)
    assert minion.returncode == 0, err
    assert ends(tmp_path) == {"held": 1}
    assert "engine ack failed" in err and "engine reachable again" in err
    with client(server) as c:
        assert c.xlen(stream) == 0 and c.xpending(stream, "minionize")["pending"] == 0


def test_next_many_reads_up_to_the_free_slots_in_one_call_and_each_is_pending_to_this_minion(
    server: RedisServer, stream: str
) -> None:
    minion, other = engine(server, stream), engine(server, stream)
    minion.push([str(i) for i in range(5)])
    taken = minion.next_many(3, 0.1)
    assert [m.param for m in taken] == ["0", "1", "2"] and all(m.attempt == 1 for m in taken)
    with client(server) as c:
        consumers = {e["name"]: e["pending"] for e in c.xpending(stream, "minionize")["consumers"]}
        assert consumers == {minion.consumer.encode(): 3}
    assert [m.param for m in other.next_many(8, 0.1)] == ["3", "4"]  # never more than there is
    for message in taken:
        minion.ack(message)
    assert minion.next_many(3, 0.1) == []
    minion.close()
    other.close()


def test_push_takes_any_iterable_in_rounds_of_a_thousand(server: RedisServer, stream: str) -> None:
    minion = engine(server, stream)
    minion.push(str(i) for i in range(2500))  # a generator, as minion-push streams them
    with client(server) as c:
        assert c.xlen(stream) == 2500
    minion.close()
