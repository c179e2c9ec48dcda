"""Prometheus metrics and health probes, served over HTTP.

Variables:
    MINION_METRICS_PORT  int   unset  serve /metrics, /healthz and /readyz on this port
    MINION_METRICS_ADDRESS str 0.0.0.0  the address to listen on (127.0.0.1 to keep it
                                        local, :: for IPv6 and IPv4)

`/healthz` answers 200 while the worker loop turns (it would be 503 if the
loop were stuck): it does not look at the broker, so that a broker outage
does not make Kubernetes restart every pod. `/readyz` answers 200 when the
last call to the engine succeeded and the minion is not draining.

Uses the standard Prometheus client library (`pip install 'minionize[metrics]'`),
imported only when MINION_METRICS_PORT is set.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Optional

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from ..health import Strike
from .base import Probe, Reporter, RunRecord

#: Run durations span milliseconds (a `true`) to days (a simulation).
BUCKETS = (0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600, 4 * 3600, 24 * 3600)


class MetricsReporter(Reporter):
    """Counts what the worker does; `serve` exposes it with the probes."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        counter = lambda name, doc: Counter(name, doc, registry=self.registry)  # noqa: E731
        self.received = counter("minion_messages_received", "Parameters taken from the queue.")
        self.acked = counter("minion_messages_acked", "Parameters done and acked.")
        self.nacked = counter("minion_messages_nacked", "Parameters given back for another attempt.")
        self.released = counter("minion_messages_released", "Parameters given back by a stop.")
        self.dead_lettered = counter("minion_messages_dead_lettered", "Parameters set aside as failed.")
        self.unsettled = counter(
            "minion_messages_unsettled", "Parameters whose ack, nack or dead letter the broker did not take."
        )
        self.timed_out = counter("minion_runs_timed_out", "Runs killed by MINION_TIMEOUT.")
        self.reclaimed = counter("minion_messages_reclaimed", "Parameters taken back from a dead minion.")
        self.strikes = counter("minion_strikes", "Strikes: runs that all failed at once, as on a broken node.")
        self.duration = Histogram(
            "minion_run_duration_seconds", "Duration of finished runs.", buckets=BUCKETS, registry=self.registry
        )
        self.in_flight = Gauge("minion_in_flight", "Runs in progress.", registry=self.registry)
        self.free_slots = Gauge("minion_free_slots", "Slots free to run a parameter.", registry=self.registry)
        self.draining = Gauge("minion_draining", "1 while the minion stops.", registry=self.registry)
        self.ready = Gauge("minion_ready", "1 while /readyz answers 200 (the engine answers, no stop).",
                           registry=self.registry)
        self.broken_node = Gauge(
            "minion_broken_node", "Strikes since the last success (0: the node looks fine).", registry=self.registry
        )
        self._by_verdict = {
            "acked": self.acked,
            "retried": self.nacked,
            "released": self.released,
            "failed": self.dead_lettered,
            "unsettled": self.unsettled,
        }

    def started(self, run: RunRecord) -> None:
        self.received.inc()
        if run.extra.get("reclaimed"):
            self.reclaimed.inc()

    def finished(self, run: RunRecord) -> None:
        counter = self._by_verdict.get(run.verdict or "")
        if counter is not None:
            counter.inc()
        if run.outcome is not None and run.outcome.timed_out:
            self.timed_out.inc()
        if run.duration is not None and run.verdict != "released":
            self.duration.observe(run.duration)

    def strike(self, strike: Strike) -> None:
        if strike.number:
            self.strikes.inc()

    def export(self, probe: Probe) -> bytes:
        self.in_flight.set(probe.in_flight)
        self.free_slots.set(probe.free_slots)
        self.draining.set(1 if probe.draining else 0)
        self.ready.set(1 if probe.ready else 0)
        self.broken_node.set(probe.strikes)
        return generate_latest(self.registry)


class MetricsServer:
    """A small threaded HTTP server for /metrics, /healthz and /readyz."""

    def __init__(self, metrics: MetricsReporter, probe: Callable[[], Probe], port: int, address: str) -> None:
        handler = _handler(metrics, probe)
        server_class = _IPv6Server if ":" in address else ThreadingHTTPServer
        self.server = server_class((address, port), handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self._thread: Optional[threading.Thread] = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self.server.serve_forever, name="minion-metrics", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class _IPv6Server(ThreadingHTTPServer):
    """For MINION_METRICS_ADDRESS=:: (IPv6-only clusters); also takes IPv4 where the system allows."""

    address_family = socket.AF_INET6

    def server_bind(self) -> None:
        with contextlib.suppress(OSError):
            self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()


def _handler(metrics: MetricsReporter, probe: Callable[[], Probe]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the http.server API
            state = probe()
            if self.path == "/metrics":
                self._send(200, metrics.export(state), CONTENT_TYPE_LATEST)
            elif self.path in ("/healthz", "/readyz"):
                ok = state.alive if self.path == "/healthz" else state.ready
                body = json.dumps({"ok": ok, "draining": state.draining, "in_flight": state.in_flight})
                self._send(200 if ok else 503, body.encode(), "application/json")
            else:
                self._send(404, b"not found: try /metrics, /healthz or /readyz\n", "text/plain")

        def _send(self, code: int, body: bytes, content_type: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass  # a probe every few seconds is not worth a log line

    return Handler


__all__ = ["MetricsReporter", "MetricsServer", "Probe"]
