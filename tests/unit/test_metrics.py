"""Prometheus metrics and probes, scraped from a real minion process."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from minionize import FuncCallback
from minionize.config import Settings
from minionize.engines.memory import MemoryEngine
from minionize.message import Message
from minionize.reporters.metrics import MetricsReporter
from minionize.worker import Worker
from tests.conftest import ROOT, minion_env, minionize_cmd

RECORD = (sys.executable, str(ROOT / "tests" / "programs" / "record.py"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def metric(text: str, name: str) -> float:
    match = re.search(rf"^{name}(?:\{{[^}}]*\}})? (\S+)$", text, re.MULTILINE)
    assert match, f"{name} not in /metrics"
    return float(match.group(1))


def wait_for(predicate, timeout: float = 20) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


def test_counters_match_what_was_done_and_probes_follow_a_drain(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    runs.mkdir()
    port = free_port()
    # record.py DIR SECONDS CODE NAME: "bad" exits 3 and is retried after "slow",
    # which sleeps 30 s; the others end at once.
    minion = subprocess.Popen(
        minionize_cmd(*RECORD, str(runs)), cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=minion_env(MINION_ENGINE="memory", MINION_METRICS_PORT=str(port), MINION_MAX_ATTEMPTS="2",
                       MINION_ARGS="{seconds} {code} {name}", MINION_IDLE_TIMEOUT="600", MINION_GRACE_PERIOD="0.5",
                       MEMORY_PARAMS=json.dumps([
                           {"seconds": 0, "code": 0, "name": "ok1"},
                           {"seconds": 0, "code": 0, "name": "ok2"},
                           {"seconds": 0, "code": 3, "name": "bad"},
                           {"seconds": 30, "code": 0, "name": "slow"},
                       ])),
    )
    try:
        wait_for(lambda: any(runs.glob("slow.*.start")))
        status, text = get(port, "/metrics")
        assert status == 200
        assert metric(text, "minion_messages_received_total") == 4
        assert metric(text, "minion_messages_acked_total") == 2
        assert metric(text, "minion_messages_nacked_total") == 1
        assert metric(text, "minion_messages_dead_lettered_total") == 0
        assert metric(text, "minion_in_flight") == 1
        assert metric(text, "minion_free_slots") == 0
        assert metric(text, "minion_ready") == 1
        assert metric(text, "minion_run_duration_seconds_count") == 3
        assert get(port, "/healthz")[0] == 200
        assert get(port, "/readyz") == (200, '{"ok": true, "draining": false, "in_flight": 1}')
        minion.send_signal(signal.SIGTERM)
        wait_for(lambda: get(port, "/readyz")[0] == 503, 5)
        assert get(port, "/healthz")[0] == 200  # draining is not dead
        assert metric(get(port, "/metrics")[1], "minion_draining") == 1
        assert metric(get(port, "/metrics")[1], "minion_ready") == 0
        assert get(port, "/nothing")[0] == 404
        _, err = minion.communicate(timeout=30)
    finally:
        if minion.poll() is None:
            minion.kill()
    assert minion.returncode == 0, err
    # the retry of "bad" was never taken: the stop came first
    assert not list(runs.glob("bad.*.end"))[1:]


def test_a_busy_port_is_a_configuration_error(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run(
            minionize_cmd("true"), cwd=tmp_path, capture_output=True, text=True, timeout=30,
            env=minion_env(MINION_ENGINE="memory", MINION_METRICS_PORT=str(port), MINION_METRICS_ADDRESS="127.0.0.1"),
        )
    assert result.returncode == 2
    assert result.stderr.startswith(f"minionize: MINION_METRICS_PORT='{port}': cannot listen there")


def test_ipv6_address_serves_both_families() -> None:
    from minionize.reporters.base import Probe
    from minionize.reporters.metrics import MetricsReporter, MetricsServer

    probe = Probe(alive=True, ready=True, draining=False, in_flight=0, free_slots=1)
    server = MetricsServer(MetricsReporter(), lambda: probe, 0, "::")
    server.start()
    try:
        with urllib.request.urlopen(f"http://[::1]:{server.port}/healthz", timeout=5) as response:
            assert response.status == 200
        assert get(server.port, "/readyz")[0] == 200  # 127.0.0.1 through the dual-stack socket
    finally:
        server.stop()


def test_a_settlement_the_broker_refused_is_counted_unsettled_not_acked() -> None:
    class AckLost(MemoryEngine):
        def ack(self, message: Message) -> None:
            raise ConnectionError("broker gone")

    metrics = MetricsReporter()
    engine = AckLost(["x"])
    Worker(engine, FuncCallback(lambda param: None), Settings(engine="memory", idle_timeout=0.5), metrics).run()
    assert metrics.registry.get_sample_value("minion_messages_unsettled_total") == 1
    assert metrics.registry.get_sample_value("minion_messages_acked_total") == 0
