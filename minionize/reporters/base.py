"""The contract between the worker loop and the reporters.

The worker calls a reporter from its main thread only. A reporter that
raises is logged and ignored: reporting never fails a parameter.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any, Optional

from ..config import EnvReader
from ..health import Strike
from ..message import Outcome

log = logging.getLogger("minionize")

#: Seconds between two heartbeats of a minion to its reporters: the contract
#: of `Reporter.heartbeat`, by which mtop and minion-status tell a silent minion.
HEARTBEAT = 10.0
#: Variables that name the batch job (or pod) a minion runs in, by priority.
JOB_ID_VARIABLES = ("OAR_JOB_ID", "SLURM_JOB_ID", "PBS_JOBID", "POD_NAME", "JOB_ID")


def job_id(env: EnvReader) -> Optional[str]:
    """The batch job id (OAR, Slurm, PBS) or the Kubernetes pod name, if any."""
    for name in JOB_ID_VARIABLES:
        value = env.get(name)
        if value:
            return value
    # In a pod, the hostname is the pod name unless the spec overrides it.
    if env.get("KUBERNETES_SERVICE_HOST"):
        return os.uname().nodename  # as socket.gethostname(), without importing socket
    return None


@dataclass(frozen=True)
class MinionInfo:
    """Who is reporting: one minion process."""

    id: str
    host: str
    pid: int
    job_id: Optional[str]
    engine: str
    concurrency: int
    started: float

    @classmethod
    def here(cls, env: EnvReader, engine: str, concurrency: int) -> MinionInfo:
        host = os.uname().nodename  # as socket.gethostname(), without importing socket
        pid = os.getpid()
        minion_id = f"{host}-{pid}-{os.urandom(3).hex()}"
        return cls(minion_id, host, pid, job_id(env), engine, concurrency, time.time())


@dataclass(frozen=True)
class Probe:
    """What the worker says about itself, for health probes and gauges."""

    #: The loop turned recently (it is not stuck).
    alive: bool
    #: The engine answered its last call and the minion is not stopping.
    ready: bool
    draining: bool
    in_flight: int
    free_slots: int
    #: Strikes since the last success (minionize.health): 0 while runs do not all fail at once.
    strikes: int = 0


@dataclass
class RunRecord:
    """One run of one parameter, as it is started and then as it ended."""

    message_id: str
    param: Any
    attempt: int
    slot: int
    start: float
    end: Optional[float] = None
    outcome: Optional[Outcome] = None
    #: What the worker did with the message: acked, retried, failed, released.
    verdict: Optional[str] = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def duration(self) -> Optional[float]:
        return None if self.end is None else self.end - self.start


class Reporter:
    """Does nothing; subclasses override what they report."""

    name = "null"

    @classmethod
    def from_env(cls, env: EnvReader) -> Reporter:
        return cls()

    def open(self, minion: MinionInfo) -> None:
        """The minion starts."""

    def started(self, run: RunRecord) -> None:
        """A run starts."""

    def finished(self, run: RunRecord) -> None:
        """A run ended and its message was settled (see `run.verdict`)."""

    def queue(self, remaining: int) -> None:
        """The engine says how many parameters are still to do."""

    def heartbeat(self, probe: Probe) -> None:
        """Every HEARTBEAT seconds: the minion is alive (mtop marks silent ones stale)."""

    def strike(self, strike: Strike) -> None:
        """The runs all fail at once (a broken node?): a strike begins (`strike.number` > 0) or they are over (0)."""

    def close(self, reason: str) -> None:
        """The minion stops (drained, idle, stopped...)."""


class FanOut(Reporter):
    """Several reporters at once (MINION_REPORTER=json,stdout, plus metrics).

    Each is called in turn; one that raises is logged and skipped, so that it
    neither fails a parameter nor silences the others.
    """

    def __init__(self, reporters: list[Reporter]) -> None:
        self.reporters = reporters

    def _each(self, method: str, *args: Any) -> None:
        for reporter in self.reporters:
            try:
                getattr(reporter, method)(*args)
            except Exception as exc:
                log.warning("reporter %s failed: %s", type(reporter).__name__, exc)

    def open(self, minion: MinionInfo) -> None:
        self._each("open", minion)

    def started(self, run: RunRecord) -> None:
        self._each("started", run)

    def finished(self, run: RunRecord) -> None:
        self._each("finished", run)

    def queue(self, remaining: int) -> None:
        self._each("queue", remaining)

    def heartbeat(self, probe: Probe) -> None:
        self._each("heartbeat", probe)

    def strike(self, strike: Strike) -> None:
        self._each("strike", strike)

    def close(self, reason: str) -> None:
        self._each("close", reason)
