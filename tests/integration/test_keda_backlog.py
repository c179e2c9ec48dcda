"""What KEDA would read from a real Redis and a real RabbitMQ, with the chart's trigger settings.

The chart is rendered with helm, as it would be installed, and its trigger's
metadata is turned into the figure KEDA's scaler would fetch from the broker
(read_redis and read_rabbitmq follow redis_streams_scaler.go and
rabbitmq_scaler.go of KEDA 2.16.1 to 2.20.2). While a real minion runs
parameters, that figure must never fall to the scale-to-zero value (at or
under the activation value): else KEDA stops the fleet in the middle of a
run, which is then redone. The former settings (lagCount with consumerGroup;
RabbitMQ's amqp protocol) are read beside them, to show that the test tells
them apart: they did fall to zero under a running parameter.

RabbitMQ's management API (what protocol http reads: `messages`, ready plus
unacknowledged) is asked when its plugin listens on 127.0.0.1:15672; where it
is not enabled, as on the CI machine, the same two counters come from
`rabbitmqctl list_queues`, which reads them where the management API does:
from statistics RabbitMQ refreshes every few seconds
(collect_statistics_interval), so the minion starts once they show the
pushed parameters, as a fleet at zero would. Protocol amqp's figure is a
passive declare's ready count, as KEDA takes it: live.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml

from tests.conftest import ROOT, minion_env, require
from tests.unit.conftest import k8s_tools

from .backends import amqp as amqp_backend
from .backends.redis import RedisServer

pytestmark = pytest.mark.integration

CHART = ROOT / "helm" / "minionize"
RECORD = (sys.executable, str(ROOT / "tests" / "programs" / "record.py"))
#: Long enough for several looks at the broker while the last parameter runs
#: (a look at RabbitMQ through rabbitmqctl takes most of a second).
RUN_SECONDS = {"redis": 3.0, "amqp": 5.0}
MANAGEMENT_API = "http://127.0.0.1:15672"


# --- the chart's trigger ------------------------------------------------------


@pytest.fixture(scope="module")
def helm() -> str:
    path = k8s_tools()[0]
    require(path is not None and Path(path).exists(), "helm is missing and scripts/k8s-tools.sh could not install it")
    assert path is not None
    return path


def rendered_trigger(helm: str, values: dict[str, Any]) -> dict[str, str]:
    """The metadata of the ScaledObject's trigger, as `helm install` would create it."""
    base = {"image": {"repository": "registry.example/team/train", "tag": "1.0"}, "keda": {"enabled": True}}
    done = subprocess.run(
        [helm, "template", "fleet", str(CHART), "--values", "-"],
        input=json.dumps(_merge(base, values)), capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 0, done.stderr
    (scaled,) = [d for d in yaml.safe_load_all(done.stdout) if d and d["kind"] == "ScaledObject"]
    (trigger,) = scaled["spec"]["triggers"]
    metadata: dict[str, str] = trigger["metadata"]
    return metadata


def _merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out = dict(a)
    for key, value in b.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


# --- what KEDA's scalers read -------------------------------------------------


def read_redis(client: Any, metadata: dict[str, str]) -> int:
    """redis_streams_scaler.go: XLEN without consumerGroup; with one, the group's lag
    when lagCount is set (XLEN if the group does not exist yet), else XPENDING's count."""
    stream = metadata["stream"]
    group = metadata.get("consumerGroup")
    if not group:
        return int(client.xlen(stream))
    if int(metadata.get("lagCount", "0")):
        for info in client.xinfo_groups(stream):
            if info["name"].decode() == group:
                # NULL (entries deleted behind the group) reaches KEDA as 0 at best.
                return int(info["lag"] or 0)
        return int(client.xlen(stream))
    return int(client.xpending(stream, group)["pending"])


def redis_activation(metadata: dict[str, str]) -> int:
    return int(metadata.get("activationLagCount", "0"))


def rabbitmq_counts(queue: str) -> tuple[int, int]:
    """(ready, unacknowledged) of `queue`: the management API's, else rabbitmqctl's."""
    try:
        with urllib.request.urlopen(_management_request(queue), timeout=2) as answer:
            info = json.load(answer)
        return int(info["messages_ready"]), int(info["messages_unacknowledged"])
    except OSError:
        pass
    listed = amqp_backend.rabbitmqctl("list_queues", "-q", "--no-table-headers", "name", "messages_ready",
                                      "messages_unacknowledged")
    for line in listed.stdout.splitlines():
        name, ready, unacked = line.split("\t")
        if name == queue:
            return int(ready), int(unacked)
    return 0, 0


def _management_request(queue: str) -> urllib.request.Request:
    import base64

    request = urllib.request.Request(f"{MANAGEMENT_API}/api/queues/%2F/{queue}")
    request.add_header("Authorization", "Basic " + base64.b64encode(b"guest:guest").decode())
    return request


def read_rabbitmq(queue: str, metadata: dict[str, str]) -> int:
    """rabbitmq_scaler.go, mode QueueLength: protocol http reads `messages` (ready plus
    unacknowledged, unless excludeUnacknowledged); protocol amqp, a passive declare's ready count."""
    if metadata.get("protocol") == "http":
        ready, unacked = rabbitmq_counts(queue)
        return ready if metadata.get("excludeUnacknowledged") == "true" else ready + unacked
    channel = amqp_backend.channel()
    try:
        return int(channel.queue_declare(queue, passive=True).method.message_count)
    finally:
        channel.connection.close()


def rabbitmq_activation(metadata: dict[str, str]) -> float:
    return float(metadata.get("activationValue", "0"))


# --- a minion at work, looked at ------------------------------------------------


def runs(directory: Path) -> tuple[set[str], set[str]]:
    """(started, ended) runs of record.py, by their file stem."""
    started = {p.name.removesuffix(".start") for p in directory.glob("*.start")}
    ended = {p.name.removesuffix(".end") for p in directory.glob("*.end")}
    return started, ended


def watch(minion: subprocess.Popen[str], directory: Path, look: Callable[[], Any]) -> list[Any]:
    """`look()` at the broker until the minion exits; each look taken while a run was in
    flight throughout (started before it, not ended after it: its message was neither
    acked nor settled, since the minion settles after the program exits)."""
    seen = []
    deadline = time.monotonic() + 60
    while minion.poll() is None and time.monotonic() < deadline:
        started, _ = runs(directory)
        value = look()
        _, ended = runs(directory)
        if started - ended:
            seen.append(value)
        time.sleep(0.1)
    assert minion.poll() is not None, "the minion did not finish"
    return seen


def push(env: dict[str, str], *params: str) -> None:
    done = subprocess.run([sys.executable, "-m", "minionize.push", *params], env=minion_env(**env),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


# --- Redis --------------------------------------------------------------------


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    require(shutil.which("redis-server") is not None, "redis-server is not installed (scripts/services.sh)")
    server = RedisServer()
    server.start()
    yield server
    server.remove()


@pytest.fixture
def redis_case(helm: str, redis_server: RedisServer) -> tuple[dict[str, str], dict[str, str], Any]:
    """(the minion's environment, the chart's trigger, a client)."""
    import redis

    url = f"redis://127.0.0.1:{redis_server.port}/0"
    stream = f"keda-{uuid.uuid4().hex[:8]}"
    metadata = rendered_trigger(helm, {"engine": "redis", "redis": {"url": url, "stream": stream}})
    assert metadata["address"] == f"127.0.0.1:{redis_server.port}" and metadata["databaseIndex"] == "0"
    env = {"MINION_ENGINE": "redis", "REDIS_URL": url, "REDIS_STREAM": stream}
    return env, metadata, redis.Redis.from_url(url)


#: The chart's trigger before issue #16: lagCount, with the group.
FORMER_REDIS = {"consumerGroup": "minionize", "lagCount": "5", "activationLagCount": "0"}


def test_redis_backlog_never_reads_zero_while_a_run_is_in_flight(
    redis_case: tuple[dict[str, str], dict[str, str], Any], spawn: Any, tmp_path: Path
) -> None:
    env, metadata, client = redis_case
    push(env, "a", "b", "c")
    former = {**metadata, **FORMER_REDIS}
    minion = spawn(env, *RECORD, str(tmp_path), str(RUN_SECONDS[env["MINION_ENGINE"]]), "0")
    seen = watch(minion, tmp_path, lambda: (read_redis(client, metadata), read_redis(client, former)))
    assert minion.returncode == 0, minion.communicate()[1]
    assert len(runs(tmp_path)[1]) == 3
    assert len(seen) >= 6, seen
    # The chart's trigger: never at the scale-to-zero value while a run is in flight.
    assert min(reading for reading, _ in seen) > redis_activation(metadata), seen
    # lagCount did fall to it under the last parameter: the test tells them apart.
    assert any(lag <= 0 for _, lag in seen), seen
    # Drained: zero, so that the fleet can scale to zero.
    assert read_redis(client, metadata) == 0


def test_redis_entry_handed_back_at_a_shutdown_still_wakes_the_fleet(
    redis_case: tuple[dict[str, str], dict[str, str], Any], spawn: Any, tmp_path: Path
) -> None:
    """A scale-down SIGTERMs a busy minion: its entry stays pending, for another to claim."""
    env, metadata, client = redis_case
    push(env, "long")
    minion = spawn({**env, "MINION_GRACE_PERIOD": "1"}, *RECORD, str(tmp_path), "60", "0")
    deadline = time.monotonic() + 30
    while not runs(tmp_path)[0] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert runs(tmp_path)[0], "the run did not start"
    minion.send_signal(signal.SIGTERM)
    minion.communicate(timeout=30)
    assert int(client.xpending(env["REDIS_STREAM"], "minionize")["pending"]) == 1, "given back, not acked"
    assert read_redis(client, metadata) > redis_activation(metadata)
    assert read_redis(client, {**metadata, **FORMER_REDIS}) == 0, "lagCount would have left the fleet at zero"


# --- RabbitMQ -----------------------------------------------------------------


@pytest.fixture
def amqp_case(helm: str) -> Iterator[tuple[dict[str, str], dict[str, str]]]:
    require(amqp_backend.listening(), "RabbitMQ does not listen on 127.0.0.1:5672 (scripts/services.sh)")
    queue = f"keda-{uuid.uuid4().hex[:8]}"
    metadata = rendered_trigger(helm, {"engine": "amqp", "amqp": {
        "url": "amqp://127.0.0.1:5672/%2F", "queue": queue}, "keda": {"rabbitmq": {
        "managementURL": f"{MANAGEMENT_API}/%2F", "credentialsSecret": {"existingSecret": "monitoring"}}}})
    env = {"MINION_ENGINE": "amqp", "AMQP_URL": amqp_backend.URL, "AMQP_QUEUE": queue}
    yield env, metadata
    channel = amqp_backend.channel()
    try:
        for name in (queue, f"{queue}.dead", f"{queue}.in-flight"):
            channel.queue_delete(name)
    finally:
        channel.connection.close()


def test_rabbitmq_backlog_never_reads_zero_while_a_run_is_in_flight(
    amqp_case: tuple[dict[str, str], dict[str, str]], spawn: Any, tmp_path: Path
) -> None:
    env, metadata = amqp_case
    assert (metadata["protocol"], metadata["mode"]) == ("http", "QueueLength")
    queue = env["AMQP_QUEUE"]
    push(env, "a", "b")
    deadline = time.monotonic() + 30
    while read_rabbitmq(queue, metadata) < 2 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert read_rabbitmq(queue, metadata) == 2, "RabbitMQ's statistics never showed the pushed parameters"
    former = {**metadata, "protocol": "amqp"}
    minion = spawn(env, *RECORD, str(tmp_path), str(RUN_SECONDS[env["MINION_ENGINE"]]), "0")

    def look() -> tuple[int, int]:
        return read_rabbitmq(queue, metadata), read_rabbitmq(queue, former)

    seen = watch(minion, tmp_path, look)
    assert minion.returncode == 0, minion.communicate()[1]
    assert len(runs(tmp_path)[1]) == 2
    assert len(seen) >= 4, seen
    assert min(reading for reading, _ in seen) > rabbitmq_activation(metadata), seen
    # Ready messages only (protocol amqp) fell to zero under the last parameter.
    assert any(ready <= 0 for _, ready in seen), seen
    deadline = time.monotonic() + 30
    while read_rabbitmq(queue, metadata) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert read_rabbitmq(queue, metadata) == 0, "drained: the fleet can scale to zero"
