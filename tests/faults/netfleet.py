"""Minions on the far side of a test network (net.py), and what is measured while the link is broken.

A `NetFleet` is a `Fleet` whose minions run in the minions' namespace, each
serving /metrics and /readyz on a port of its own there (METRICS_BASE + its
number). `Watch` reads them through the fault: when each minion's /readyz
went 503 after the cut (how long its engine took to notice a dead link),
when the first parameter was acked after the link came back, and when every
minion was ready again. `lost_broker_lines` counts what each log said about
it.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from minionize.registry import engine_class
from tests.conftest import minionize_cmd
from tests.integration.backends import Backend

from .harness import Fleet
from .net import Network

#: The first minion's metrics port in the minions' namespace (the namespace is the test's: all ports are free).
METRICS_BASE = 9100
_ACKED = re.compile(r"^minion_messages_acked_total (\S+)$", re.MULTILINE)
#: The worker's line for a lost broker (minionize/calls.py): once per outage, the retries at DEBUG.
LOST_BROKER = re.compile(r"WARNING engine \w+ failed \(")
#: A line of a broker's client library above DEBUG (the pulsar engine forwards its C++ client's log, natsconnect
#: the nats client's errors): the library says each failed attempt, about two lines every 11 s for Pulsar's.
CLIENT_LINE = re.compile(r"^.* (?:WARNING|ERROR|CRITICAL) \w+ client: .*$", re.MULTILINE)


@dataclass(frozen=True)
class NetSizes:
    """FAULTS_NET_PARAMS, FAULTS_NET_MINIONS, FAULTS_NET_RUN_SECONDS, FAULTS_PARTITION,
    FAULTS_NET_OPERATION_TIMEOUT, FAULTS_NET_DEGRADED_PARAMS, FAULTS_LONG_PARTITION: the CI-sized run by default,
    `scripts/faults` the full one."""

    params: int = 24
    minions: int = 2
    run_seconds: float = 0.2
    #: Seconds the link stays cut in the middle of a run.
    partition: float = 6.0
    #: <ENGINE>_OPERATION_TIMEOUT of the minions ("": the engine's default), which bounds how long an
    #: engine takes to notice a dead link: under the CI-sized partition, so that the cut is noticed.
    operation_timeout: str = "1.5"
    #: Parameters of the degraded-link run (latency for the first half, loss for the rest).
    degraded_params: int = 8
    #: Seconds of the partition longer than the lease (the cut-off minions' runs last half of it).
    long_partition: float = 6.0

    @classmethod
    def from_env(cls) -> NetSizes:
        env = os.environ
        return cls(
            params=int(env.get("FAULTS_NET_PARAMS") or cls.params),
            minions=int(env.get("FAULTS_NET_MINIONS") or cls.minions),
            run_seconds=float(env.get("FAULTS_NET_RUN_SECONDS") or cls.run_seconds),
            partition=float(env.get("FAULTS_PARTITION") or cls.partition),
            operation_timeout=env.get("FAULTS_NET_OPERATION_TIMEOUT", cls.operation_timeout),
            degraded_params=int(env.get("FAULTS_NET_DEGRADED_PARAMS") or cls.degraded_params),
            long_partition=float(env.get("FAULTS_LONG_PARTITION") or cls.long_partition),
        )


    def env(self, engine: str) -> dict[str, str]:
        """The variables that the sizes set for an engine's minions."""
        if not self.operation_timeout:
            return {}
        return {f"{engine.upper()}_OPERATION_TIMEOUT": self.operation_timeout}

    def timeout(self, engine: str) -> float:
        """The operation timeout of an engine's minions: the sizes', else the engine's default."""
        if self.operation_timeout:
            return float(self.operation_timeout)
        name = f"{engine.upper()}_OPERATION_TIMEOUT"
        return float(next(s.default for s in engine_class(engine).settings if s.name == name))


class NetFleet(Fleet):
    """A Fleet whose minions run in `net`'s minion namespace, with their probes served there."""

    def __init__(self, net: Network, backend: Backend, env: dict[str, str], workdir: Path, program: list[str],
                 size: int, name: str = "minion") -> None:
        super().__init__(backend, net.expose(env), workdir, program, size, name=name)
        self.net = net
        self.ports: dict[int, int] = {}

    def spawn(self) -> subprocess.Popen[bytes]:
        number = len(self.minions)
        env = {**self.env, "MINION_METRICS_PORT": str(METRICS_BASE + number)}
        with open(self.logs / f"{self.name}-{number}.log", "wb") as log:
            minion = subprocess.Popen(
                self.net.command(minionize_cmd(*self.program)), cwd=self.workdir, env=env,
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        self.minions.append(minion)
        self.ports[minion.pid] = METRICS_BASE + number
        return minion

    def ready(self) -> dict[int, int]:
        """The /readyz status of each live minion (0: it did not answer)."""
        return {m.pid: self.net.get(self.ports[m.pid], "/readyz")[0] for m in self.live()}

    def acked(self) -> dict[int, float]:
        """minion_messages_acked of each live minion that answered."""
        found = {}
        for minion in self.live():
            status, body = self.net.get(self.ports[minion.pid], "/metrics")
            match = _ACKED.search(body) if status == 200 else None
            if match:
                found[minion.pid] = float(match.group(1))
        return found

    def lost_broker_lines(self) -> int:
        """The most lines saying the broker was lost in one minion's log."""
        return max((len(LOST_BROKER.findall(self.log(n))) for n in range(len(self.minions))), default=0)

    def client_lines(self) -> list[str]:
        """The client libraries' lines that the minions logged above DEBUG (an outage is the minion's to say)."""
        return [line for n in range(len(self.minions)) for line in CLIENT_LINE.findall(self.log(n))]


@dataclass
class Watch:
    """What the minions' probes said through one fault."""

    fleet: NetFleet
    cut_at: float = 0.0
    healed_at: float = 0.0
    #: When every parameter was done once.
    all_done: float = 0.0
    #: Seconds from the cut to each minion's first /readyz 503 (pid: seconds).
    unready: dict[int, float] = field(default_factory=dict)
    #: Seconds from the link's return to the first ack, and to every minion ready again.
    first_ack: Optional[float] = None
    ready_again: Optional[float] = None
    _acked: dict[int, float] = field(default_factory=dict)
    #: The minions back after the link's return: /readyz 200, or an exit 0 (which needed the broker's answer:
    #: a drained queue, or an idle time that a lost broker does not count), by pid.
    _back: set[int] = field(default_factory=set)

    def during_cut(self, seconds: float) -> None:
        """Cut the link for `seconds`, noting when each minion says it is not ready."""
        self.fleet.net.cut()
        self.cut_at = time.monotonic()
        try:
            while time.monotonic() - self.cut_at < seconds:
                for pid, status in self.fleet.ready().items():
                    if status == 503 and pid not in self.unready:
                        self.unready[pid] = time.monotonic() - self.cut_at
                time.sleep(0.1)
        finally:
            self.heal()

    def heal(self) -> None:
        """Remove the fault: the first ack and the minions' return are timed from now (`after`)."""
        self._acked = self.fleet.acked()
        self.fleet.net.clear()
        self.healed_at = time.monotonic()

    def after(self) -> None:
        """One look after the link's return: the first ack, and every minion ready."""
        now = time.monotonic() - self.healed_at
        if self.first_ack is None:
            acked = self.fleet.acked()
            if any(count > self._acked.get(pid, 0.0) for pid, count in acked.items()):
                self.first_ack = now
        if self.ready_again is None:
            self._back |= {pid for pid, status in self.fleet.ready().items() if status == 200}
            self._back |= {minion.pid for minion in self.fleet.minions if minion.poll() == 0}
            if self._back >= set(self.fleet.ports):
                self.ready_again = now

    def describe(self) -> str:
        slowest = f"{max(self.unready.values()):.1f}s" if self.unready else "never"
        never = len(self.fleet.ports) - len(self.unready)
        return (
            f"cut {self.healed_at - self.cut_at:.0f}s: /readyz 503 after {slowest}"
            f"{f' ({never} minion(s) never)' if self.unready and never > 0 else ''}; "
            f"first ack {_seconds(self.first_ack)} after the link's return; /readyz 200 again after "
            f"{_seconds(self.ready_again)}; most 'engine ... failed' warnings in one log: "
            f"{self.fleet.lost_broker_lines()}"
        )


def _seconds(value: Optional[float]) -> str:
    return "never" if value is None else f"{value:.1f}s"
