"""Fault injection: real minions on a real queue, judged by what their runs recorded.

A `Fleet` is a set of `python -m minionize` processes consuming one queue,
each in a session of its own, wrapping a program of `programs/` that
appends "PARAM PID" to `<records>/done.<minion pid>` when a run finishes.
`kill_node` kills a minion as a dying node would: SIGKILL for the minion and
for the process group of every run it had. `count_done` reads the records,
and `Figures` turns them into one row of the fault table.

A parameter is *done* when a run of it recorded itself (its last act before
exit 0); *lost* when no run did, once every minion exited by itself; each
further finished run of a parameter is an *extra run* (a duplicate).

A backend whose queue cannot be shared by processes (`shared_by_processes`
False: pulsar-lite 0.2.0) gets one minion with MINION_CONCURRENCY slots
instead of several minions.
"""

from __future__ import annotations

import collections
import datetime
import os
import platform
import random
import signal
import subprocess
import sys
import time
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import pytest

from tests.conftest import minion_env, minionize_cmd
from tests.integration.backends import Backend

PROGRAMS = Path(__file__).resolve().parent / "programs"
#: Kills count as deliveries on most brokers: a parameter killed several times
#: must not be set aside as failing (100 is Pub/Sub's largest dead-letter limit).
MAX_ATTEMPTS = "100"
#: For engines that never drain: how long a minion waits for nothing before it exits.
IDLE_TIMEOUT = "4"


@dataclass(frozen=True)
class Sizes:
    """How big a run is: FAULTS_PARAMS, FAULTS_MINIONS, FAULTS_KILL_EVERY, FAULTS_RUN_SECONDS, FAULTS_GIVE_UP,
    FAULTS_BROKEN_PARAMS."""

    params: int = 200
    minions: int = 4
    kill_every: float = 1.0
    run_seconds: float = 0.05
    #: Seconds after which a scenario that is not over fails (below pytest's timeout of 120 s).
    give_up: float = 90.0
    #: Parameters of the broken-node sweep (3 healthy minions and a broken one).
    broken_params: int = 100

    @classmethod
    def from_env(cls) -> Sizes:
        env = os.environ
        return cls(
            params=int(env.get("FAULTS_PARAMS") or cls.params),
            minions=int(env.get("FAULTS_MINIONS") or cls.minions),
            kill_every=float(env.get("FAULTS_KILL_EVERY") or cls.kill_every),
            run_seconds=float(env.get("FAULTS_RUN_SECONDS") or cls.run_seconds),
            give_up=float(env.get("FAULTS_GIVE_UP") or cls.give_up),
            broken_params=int(env.get("FAULTS_BROKEN_PARAMS") or cls.broken_params),
        )

    def describe(self) -> str:
        return (f"FAULTS_PARAMS={self.params} FAULTS_MINIONS={self.minions} FAULTS_KILL_EVERY={self.kill_every:g} "
                f"FAULTS_RUN_SECONDS={self.run_seconds:g} FAULTS_BROKEN_PARAMS={self.broken_params}")


# -- processes ----------------------------------------------------------------


def _stat(pid: int) -> Optional[list[str]]:
    """The fields of /proc/PID/stat after the command name (state first), or None."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rpartition(")")[2].split()


def children(pid: int) -> list[int]:
    """The processes whose parent is `pid`: a minion's runs, each in a session of its own
    (its guard, minionize/guard.py, is not a run)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat(int(entry))
            if fields is not None and int(fields[1]) == pid and not _is_guard(int(entry)):
                found.append(int(entry))
    return found


def _is_guard(pid: int) -> bool:
    try:
        return b"minionize/guard.py" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def alive(pid: int) -> bool:
    """The process exists and is not a zombie (an orphan's zombie waits for a reaper)."""
    fields = _stat(pid)
    return fields is not None and fields[0] != "Z"


def kill_node(process: subprocess.Popen[bytes]) -> int:
    """SIGKILL a minion and every run it had, as a dying node would; returns how many runs it had."""
    if process.poll() is not None:
        return 0
    # Stopped first, the minion can neither start a run nor settle one while its runs are found.
    os.kill(process.pid, signal.SIGSTOP)
    runs = children(process.pid)
    for run in runs:
        for kill in (os.killpg, os.kill):  # os.kill: a child caught before its setsid()
            with suppress(ProcessLookupError, PermissionError):
                kill(run, signal.SIGKILL)
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=60)
    return len(runs)


def push(env: dict[str, str], params: list[str]) -> None:
    """Queue `params` with minion-push, with the fleet's MINION_MAX_ATTEMPTS.

    The attempts matter here too: on Pub/Sub, minion-push creates the
    subscription, whose dead-letter policy then sets a message aside after
    that many deliveries, whatever the minions say.
    """
    result = subprocess.run(
        [sys.executable, "-m", "minionize.push", *params],
        env=minion_env(**{"MINION_MAX_ATTEMPTS": MAX_ATTEMPTS, **env}), capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr


def sigterm_timed(process: subprocess.Popen[bytes], timeout: float = 60) -> tuple[Optional[int], float]:
    """SIGTERM `process`; its exit code (None: still running after `timeout`) and how long the stop took."""
    started = time.monotonic()
    process.send_signal(signal.SIGTERM)
    try:
        code: Optional[int] = process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        code = None
    return code, time.monotonic() - started


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"{what}: not within {timeout:g}s"
        time.sleep(0.05)


class Fleet:
    """Minion processes consuming one queue, started, killed and replaced on demand."""

    def __init__(
        self, backend: Backend, env: dict[str, str], workdir: Path, program: list[str], size: int = 1,
        name: str = "minion",
    ) -> None:
        self.shared = backend.shared_by_processes
        self.processes = size if self.shared else 1
        self.concurrency = 1 if self.shared else size
        settings = {"MINION_MAX_ATTEMPTS": MAX_ATTEMPTS, **env, "MINION_CONCURRENCY": str(self.concurrency)}
        if not backend.drains:
            settings.setdefault("MINION_IDLE_TIMEOUT", IDLE_TIMEOUT)
        self.env = minion_env(**settings)
        self.workdir, self.program, self.name = workdir, program, name
        self.logs = workdir / "logs"
        self.logs.mkdir(exist_ok=True)
        self.minions: list[subprocess.Popen[bytes]] = []
        self.killed: set[int] = set()

    @property
    def layout(self) -> str:
        if self.shared:
            return f"{self.processes} minion{'s' if self.processes > 1 else ''}"
        return f"1 minion x {self.concurrency} slots"

    def spawn(self) -> subprocess.Popen[bytes]:
        with open(self.logs / f"{self.name}-{len(self.minions)}.log", "wb") as log:
            minion = subprocess.Popen(
                minionize_cmd(*self.program), cwd=self.workdir, env=self.env,
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        self.minions.append(minion)
        return minion

    def start(self) -> Fleet:
        for _ in range(self.processes):
            self.spawn()
        return self

    def live(self) -> list[subprocess.Popen[bytes]]:
        return [minion for minion in self.minions if minion.poll() is None]

    def working(self, records: Path) -> list[subprocess.Popen[bytes]]:
        """The live minions past their start-up: running a parameter, or done with one already."""
        return [m for m in self.live() if (records / f"done.{m.pid}").exists() or children(m.pid)]

    def kill_one(self, rng: random.Random, among: list[subprocess.Popen[bytes]]) -> int:
        """Kill a random minion of `among` and its runs, start a replacement at once; returns the runs killed."""
        victim = rng.choice(among)
        runs = kill_node(victim)
        self.killed.add(victim.pid)
        self.spawn()
        return runs

    def wait(self, timeout: float) -> bool:
        """True when every minion exited by itself within `timeout`."""
        deadline = time.monotonic() + timeout
        while self.live():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.1)
        return True

    def stop(self) -> None:
        """Kill what is left (a failed test must not leave minions behind)."""
        for minion in self.live():
            kill_node(minion)

    def failed(self) -> list[subprocess.Popen[bytes]]:
        """The minions that were not killed and exited with another code than 0."""
        return [m for m in self.minions if m.pid not in self.killed and m.poll() not in (None, 0)]

    def failures(self) -> list[str]:
        """A line per failed minion, with the end of its log."""
        return [
            f"{self.name} {self.minions.index(m)} (pid {m.pid}) exited {m.returncode}:\n"
            f"{self.log(self.minions.index(m))[-1500:]}"
            for m in self.failed()
        ]

    def log(self, number: int) -> str:
        return (self.logs / f"{self.name}-{number}.log").read_text(errors="replace")

    def all_logs(self) -> str:
        return "\n".join(self.log(number) for number in range(len(self.minions)))


# -- records ------------------------------------------------------------------


def done_program(records: Path, run_seconds: float) -> list[str]:
    """The command of a minion whose runs sleep `run_seconds` and record themselves in `records`."""
    records.mkdir(exist_ok=True)
    return [str(PROGRAMS / "done.sh"), str(records), f"{run_seconds:g}"]


def count_done(records: Path) -> collections.Counter[str]:
    """How many runs of each parameter finished, from every done.* file."""
    counts: collections.Counter[str] = collections.Counter()
    for path in records.glob("done.*"):
        for line in path.read_text().splitlines():
            if len(line.split()) == 2:
                counts[line.split()[0]] += 1
    return counts


def not_done(params: list[str], records: Path) -> list[str]:
    """The parameters of `params` that no run finished, in their order."""
    done = count_done(records)
    return [param for param in params if not done[param]]


def read_pids(path: Path) -> list[int]:
    return [int(word) for word in path.read_text().split()]


@dataclass
class Figures:
    """One row of the fault table."""

    engine: str
    scenario: str
    layout: str
    params: int
    done: int
    lost: int
    #: Runs beyond the first of each parameter.
    extra: int
    #: Parameters done more than once.
    twice: int
    kills: int = 0
    #: Seconds between two kills.
    kill_every: float = 0.0
    runs_killed: int = 0
    #: Seconds until every parameter was done once, and until the last minion exited.
    all_done: float = 0.0
    drained: float = 0.0
    #: Why the scenario did not finish, if it did not.
    note: str = ""
    #: What the table's columns do not say (a broken minion's verdicts), listed under the table.
    remarks: str = ""

    @classmethod
    def of(cls, engine: str, scenario: str, fleet: Fleet, params: list[str], counts: collections.Counter[str],
           **measures: object) -> Figures:
        return cls(
            engine=engine, scenario=scenario, layout=fleet.layout, params=len(params),
            done=sum(1 for p in params if counts[p]), lost=sum(1 for p in params if not counts[p]),
            extra=sum(count - 1 for count in counts.values() if count > 1),
            twice=sum(1 for count in counts.values() if count > 1),
            **measures,
        )

    HEADER = (
        "| engine | scenario | minions | params | done | lost | extra runs | params run twice+ | kills "
        "| a kill every (s) | runs killed | all done (s) | drained (s) |\n"
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    )

    def row(self) -> str:
        every = f"{self.kill_every:g}" if self.kills else "-"
        scenario = f"{self.scenario} ({self.note})" if self.note else self.scenario
        lost = "-" if self.note else self.lost  # a stuck run did not end: what it had not done is not lost
        cells = (
            self.engine, scenario, self.layout, self.params, self.done, lost, self.extra, self.twice,
            self.kills, every, self.runs_killed, f"{self.all_done:.1f}", f"{self.drained:.1f}",
        )
        return "| " + " | ".join(str(cell) for cell in cells) + " |"


#: The rows of this session's table (`config.stash`), a worker's sent to the controller under pytest-xdist.
FIGURES = pytest.StashKey[list["Figures"]]()


def print_table(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    """The fault table at the end of the run, and in FAULTS_REPORT when it is set."""
    rows = config.stash.get(FIGURES, [])
    if not rows:
        return
    text = table(rows, Sizes.from_env())
    terminalreporter.write_sep("=", "fault injection")
    terminalreporter.write(text)
    path = os.environ.get("FAULTS_REPORT")
    if path:
        with open(path, "w") as report:
            report.write(text)
        terminalreporter.write(f"(written to {path})\n")


def table(rows: list[Figures], sizes: Sizes) -> str:
    """The fault table in Markdown, with when, where and how it was made."""
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    machine = f"{platform.node()}, {os.cpu_count()} cores, {platform.system()} {platform.release()}"
    lines = [f"Fault injection, {now}, on {machine}", f"Settings: {sizes.describe()}", "", Figures.HEADER]
    lines += [row.row() for row in rows]
    remarks = [f"- {row.engine}, {row.scenario}: {row.remarks}" for row in rows if row.remarks]
    lines += ["", *remarks] if remarks else []
    return "\n".join(lines) + "\n"

