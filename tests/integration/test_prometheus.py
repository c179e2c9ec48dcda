"""The chart's alert rules and dashboard, evaluated by a real Prometheus on two real minions.

Debian's `prometheus` (scripts/services.sh installs it) runs on a free
loopback port with storage in a temporary directory and scrapes, every
second, two minions that share a Redis stream, under the labels a
ServiceMonitor of the release would give them (job, namespace, pod). Every
PromQL expression of the rendered PrometheusRule and Grafana dashboard is
then queried through the HTTP API, at two instants whose state the test
knows, and must give the value this module's tables expect
(tests/unit/test_chart_monitoring.py checks that the tables name every
query of the chart).

The scenario. Each minion runs one parameter at a time, with MINION_TIMEOUT=6
and MINION_MAX_ATTEMPTS=2. First 4 parameters that succeed and 2 that fail
(each retried once, then set aside as failed); then, once they are settled,
2 slow ones, one per minion: their first attempt hangs until MINION_TIMEOUT
kills it, the retry succeeds. `held` is an instant while both slow runs hang
(after a rendered noAckFor of 3 s of it: MinionNoAck fires), `settled` one
after everything is acked or set aside.
"""

from __future__ import annotations

import contextlib
import json
import math
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml

from tests.conftest import minion_env, minionize_cmd, require
from tests.unit.conftest import k8s_tools

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

REDIS_URL = "redis://127.0.0.1:6379/0"
RELEASE, NAMESPACE = "fleet", "minions"
JOB = f"{RELEASE}-minionize-metrics"
PODS = ("minion-a", "minion-b")
#: The rendered noAckFor of these tests: the slow runs hang twice as long.
NO_ACK_FOR = 3
RUN_TIMEOUT = 6
PROGRAM = """#!/bin/sh
case "$1" in
  ok*) exit 0 ;;
  fail*) exit 1 ;;
  slow*) [ -e "{state}/$1" ] && exit 0; touch "{state}/$1"; exec sleep 120 ;;
esac
exit 2
"""

#: A result: {pod or "": value} ("" for a series without a pod label).
Result = dict[str, float]
Check = Callable[[Result], bool]
#: A series of a range query: its labels, and (time, value) pairs.
Series = tuple[dict[str, str], list[tuple[float, float]]]


def fleet(expected: Callable[[float], bool]) -> Check:
    return lambda r: set(r) == {""} and expected(r[""])


def per_pod(expected: Callable[[float], bool]) -> Check:
    return lambda r: set(r) == set(PODS) and all(expected(v) for v in r.values())


def equal(value: float) -> Callable[[float], bool]:
    return lambda v: v == value


def positive(v: float) -> bool:
    return v > 0


def empty(r: Result) -> bool:
    return r == {}


#: 'panel title/refId' -> (check at `held`, check at `settled`).
PANEL_CHECKS: dict[str, tuple[Check, Check]] = {
    "Minions ready/A": (fleet(equal(2)), fleet(equal(2))),
    "Minions ready/B": (fleet(equal(2)), fleet(equal(2))),
    "In flight/A": (fleet(equal(2)), fleet(equal(0))),
    "Free slots/A": (fleet(equal(0)), fleet(equal(2))),
    "Broken nodes/A": (fleet(equal(0)), fleet(equal(0))),
    "Throughput/A": (fleet(positive), fleet(positive)),
    "Throughput/B": (fleet(positive), fleet(positive)),
    "Failures by verdict/A": (fleet(positive), fleet(positive)),   # retried
    "Failures by verdict/B": (fleet(positive), fleet(positive)),   # set aside as failed
    "Failures by verdict/C": (fleet(equal(0)), fleet(equal(0))),   # released: no stop
    "Failures by verdict/D": (fleet(equal(0)), fleet(equal(0))),   # unsettled: Redis took every settlement
    "Failures by verdict/E": (fleet(equal(0)), fleet(positive)),   # timed out: once the slow runs are killed
    # 10 quick runs and 2 killed after 6 s: the median is under a second, the 90th and 99th percentiles over.
    "Run duration/A": (fleet(lambda v: 0 < v < 1), fleet(lambda v: 0 < v < 1)),
    "Run duration/B": (fleet(lambda v: 0 < v < 1), fleet(lambda v: 1 < v <= 10)),
    "Run duration/C": (fleet(lambda v: 0 < v < 1), fleet(lambda v: 1 < v <= 10)),
    "Throughput by minion/A": (per_pod(lambda v: v >= 0), per_pod(lambda v: v >= 0)),
    "In flight by minion/A": (per_pod(equal(1)), per_pod(equal(0))),
    "Free slots by minion/A": (per_pod(equal(0)), per_pod(equal(1))),
    "Failures by minion/A": (per_pod(lambda v: v >= 0), per_pod(lambda v: v >= 0)),
    "Failures by minion/B": (per_pod(lambda v: v >= 0), per_pod(lambda v: v >= 0)),
    # Each minion ran a killed slow run by `settled`: its 90th percentile is that run's bucket or below.
    # NaN for a minion that had not finished a run yet.
    "Run duration p90 by minion/A": (per_pod(lambda v: math.isnan(v) or 0 < v <= 10),
                                     per_pod(lambda v: 0 < v <= 10)),
    "Readiness and strikes by minion/A": (per_pod(equal(1)), per_pod(equal(1))),
    "Readiness and strikes by minion/B": (per_pod(equal(0)), per_pod(equal(0))),
}

#: alert -> (check of its expression at `held`, at `settled`); a result is what would fire.
ALERT_CHECKS: dict[str, tuple[Check, Check]] = {
    "MinionNoAck": (per_pod(equal(1)), empty),
    "MinionDeadLettersRising": (fleet(positive), fleet(positive)),
    "MinionNotReady": (empty, empty),
    "MinionBrokenNode": (empty, empty),
    # 2 of 12 runs timed out: a sixth, over the 0.1 of the defaults, once they are killed.
    "MinionRunsTimingOut": (empty, fleet(lambda v: 0.1 < v < 0.3)),
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def poll(predicate: Callable[[], bool], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"not reached in {timeout} s: {what}"
        time.sleep(0.1)


def render_monitoring() -> tuple[dict[str, Any], dict[str, Any]]:
    """(the rendered PrometheusRule, the dashboard), noAckFor shortened for the test."""
    helm = k8s_tools()[0]
    require(helm is not None, "helm is missing and scripts/k8s-tools.sh could not install it")
    assert helm is not None
    from tests.unit.test_chart import helm_template
    from tests.unit.test_chart_monitoring import monitoring_values, rendered_dashboard, rendered_rule

    values = monitoring_values(noAckFor=f"{NO_ACK_FOR}s")
    done = helm_template(helm, values)
    assert done.returncode == 0, done.stderr
    return rendered_rule(helm, values), rendered_dashboard(helm, values)[1]


@dataclass
class Prometheus:
    port: int

    def query(self, expr: str, at: float) -> Result:
        url = f"http://127.0.0.1:{self.port}/api/v1/query?" + urllib.parse.urlencode({"query": expr, "time": at})
        with urllib.request.urlopen(url, timeout=10) as response:
            body = json.load(response)
        assert body["status"] == "success", body
        assert body["data"]["resultType"] == "vector", body
        out: Result = {}
        for sample in body["data"]["result"]:
            pod = sample["metric"].get("pod", "")
            assert pod not in out, f"two series for {pod!r}: {body}"
            out[pod] = float(sample["value"][1])
        return out


    def query_range(self, expr: str, start: float, end: float, step: float = 1) -> list[Series]:
        """(labels, [(time, value)]) of each series of `expr` from `start` to `end`."""
        url = f"http://127.0.0.1:{self.port}/api/v1/query_range?" + urllib.parse.urlencode(
            {"query": expr, "start": start, "end": end, "step": step})
        with urllib.request.urlopen(url, timeout=10) as response:
            body = json.load(response)
        assert body["status"] == "success", body
        return [(r["metric"], [(float(t), float(v)) for t, v in r["values"]]) for r in body["data"]["result"]]


def metric(port: int, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        for line in response.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    raise AssertionError(f"{name} not served on {port}")


@dataclass
class Run:
    prometheus: Prometheus
    rule: dict[str, Any]
    dashboard: dict[str, Any]
    held: float
    settled: float
    #: When Prometheus first scraped both minions.
    start: float


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    with monitored_fleet(tmp_path_factory.mktemp("prometheus")) as fleet:
        yield fleet


@contextlib.contextmanager
def monitored_fleet(tmp: Path) -> Iterator[Run]:
    """The scenario of the module docstring, on a Prometheus and two minions of its own
    (also run by scripts/dashboard-screenshot, for the README's picture)."""
    prometheus_bin = shutil.which("prometheus")
    require(prometheus_bin is not None, "prometheus is missing: apt-get install prometheus (scripts/services.sh does)")
    assert prometheus_bin is not None
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_timeout=5)
    try:
        client.ping()
    except redis.RedisError as exc:
        require(False, f"no Redis answers on {REDIS_URL} (scripts/services.sh): {exc}")
    rule, dashboard = render_monitoring()

    state = tmp / "state"
    state.mkdir()
    program = tmp / "program.sh"
    program.write_text(PROGRAM.format(state=state))
    program.chmod(0o755)
    stream = f"minionize-test-prometheus-{uuid.uuid4().hex[:12]}"
    queue = {"MINION_ENGINE": "redis", "REDIS_URL": REDIS_URL, "REDIS_STREAM": stream}
    ports = {pod: free_port() for pod in PODS}
    web = free_port()
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [{
            "job_name": JOB,
            "static_configs": [{"targets": [f"127.0.0.1:{port}"], "labels": {"namespace": NAMESPACE, "pod": pod}}
                               for pod, port in ports.items()],
        }],
    }
    (tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
    processes: list[subprocess.Popen[bytes]] = []
    try:
        for pod, port in ports.items():
            env = minion_env(**queue, MINION_BATCH="0", MINION_METRICS_PORT=str(port),
                             MINION_METRICS_ADDRESS="127.0.0.1", MINION_TIMEOUT=str(RUN_TIMEOUT),
                             MINION_MAX_ATTEMPTS="2", MINION_GRACE_PERIOD="0.5", MINION_CONCURRENCY="1")
            with open(tmp / f"{pod}.log", "wb") as log:  # the child keeps its own descriptor
                processes.append(subprocess.Popen(minionize_cmd(str(program)), cwd=tmp, env=env,
                                                  stdout=subprocess.DEVNULL, stderr=log))
        with open(tmp / "prometheus.log", "wb") as log:
            processes.append(subprocess.Popen(
                [prometheus_bin, f"--config.file={tmp / 'prometheus.yml'}", f"--storage.tsdb.path={tmp / 'data'}",
                 f"--web.listen-address=127.0.0.1:{web}"],
                stdout=subprocess.DEVNULL, stderr=log,
            ))
        prometheus = Prometheus(web)
        up = f'up{{job="{JOB}"}}'

        def scraped() -> bool:
            try:
                return prometheus.query(f"sum({up})", time.time()) == {"": 2.0}
            except OSError:
                return False

        poll(scraped, "prometheus scrapes both minions", timeout=60)
        start = time.time()

        def push(*params: str) -> None:
            subprocess.run([sys.executable, "-m", "minionize.push", *params], env=minion_env(**queue),
                           check=True, capture_output=True, timeout=60)

        def total(name: str) -> float:
            return sum(metric(port, name) for port in ports.values())

        push("ok1", "ok2", "ok3", "ok4", "fail1", "fail2")
        poll(lambda: total("minion_messages_acked_total") == 4 and total("minion_messages_dead_lettered_total") == 2,
             "the quick parameters settled")
        push("slow1", "slow2")
        poll(lambda: all(metric(port, "minion_in_flight") == 1 for port in ports.values()),
             "each minion runs a slow parameter")
        held = time.time() + NO_ACK_FOR + 1  # before the kill, RUN_TIMEOUT after the start
        poll(lambda: total("minion_messages_acked_total") == 6 and total("minion_in_flight") == 0,
             "the slow parameters acked at their second attempt", timeout=RUN_TIMEOUT + 20)
        assert total("minion_runs_timed_out_total") == 2
        settled = time.time() + 1
        # Scraped on both sides of `settled`.
        poll(lambda: prometheus.query(f'count(timestamp({up}) > {settled + 1})', time.time()) == {"": 2.0},
             "prometheus scraped after the last run")
        yield Run(prometheus, rule, dashboard, held, settled, start)
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        client.delete(stream, f"{stream}:dead")
        client.close()


def check(run: Run, what: str, expr: str, checks: tuple[Check, Check]) -> None:
    for (instant, at), expected in zip((("held", run.held), ("settled", run.settled)), checks, strict=True):
        result = run.prometheus.query(expr, at)
        assert expected(result), f"{what} at {instant}: {expr} gave {result}"


def test_every_dashboard_query(run: Run) -> None:
    from tests.unit.test_chart_monitoring import panel_queries  # those of a collapsed row's panels too

    for key, expr in panel_queries(run.dashboard).items():
        check(run, key, expr, PANEL_CHECKS[key])


def test_every_alert_expression(run: Run) -> None:
    for group in run.rule["spec"]["groups"]:
        for rule in group["rules"]:
            check(run, rule["alert"], rule["expr"], ALERT_CHECKS[rule["alert"]])
