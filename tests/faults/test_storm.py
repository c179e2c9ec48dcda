"""Kill storms and broker restarts: every parameter is done at least once, and few twice.

A kill storm runs FAULTS_PARAMS parameters through FAULTS_MINIONS minions
while a killer, every FAULTS_KILL_EVERY seconds, kills a random minion and
the runs it had (a node dying) and starts a replacement at once. The minions
use each backend's short leases (`lease_env`), so that a dead minion's
parameters come back within seconds. Then:

- lost (parameters that no run finished) must be 0;
- extra runs must stay within `extra_bound`: a killed minion can only leave
  unacknowledged the runs it had finished but not yet acked, and, where the
  client holds acks for a while before sending them (pulsar), the runs that
  finished within that while.

A broker restart (restartable backends) must lose nothing either.
"""

from __future__ import annotations

import dataclasses
import math
import os
import random
import time
from pathlib import Path

import pytest

from tests.integration.backends import Backend, with_capability

from .harness import Figures, Fleet, Sizes, children, count_done, done_program, not_done, push

pytestmark = pytest.mark.integration
#: Once every parameter is done, how long the minions may take to exit by
#: themselves (a dead minion's last parameter comes back after its lease).
DRAIN_TIMEOUT = 120.0
#: No parameter done for that long means the fleet is stuck (longer than any lease or ack deadline used).
STALLED = 60.0


def watch(fleet: Fleet, records: Path, params: list[str], give_up: float, tick: Tick) -> str:
    """Call tick(fleet, parameters done) until every parameter is done once.

    Returns why it gave up ("" when it did not): a minion failed (a
    replacement that could not reach the queue, say), none is left,
    `give_up` seconds passed, or STALLED seconds without a parameter done.
    """
    wanted = set(params)
    deadline = time.monotonic() + give_up
    progress, last = time.monotonic(), 0
    while True:
        done = len(count_done(records).keys() & wanted)
        if done == len(wanted):
            return ""
        if done > last:
            progress, last = time.monotonic(), done
        failed = fleet.failed()
        if failed or not fleet.live():
            return f"stopped: a minion exited {failed[0].returncode}" if failed else "stopped: no minion left"
        if time.monotonic() > deadline or time.monotonic() - progress > STALLED:
            return f"stalled: nothing done for {time.monotonic() - progress:.0f}s"
        tick(fleet, done)
        time.sleep(0.05)


class Tick:
    """What happens to the fleet while it works (nothing, here)."""

    def __call__(self, fleet: Fleet, done: int) -> None:
        pass

    def measures(self) -> dict[str, float]:
        return {}


class Killer(Tick):
    """Every `every` seconds, kills a random working minion and its runs, and starts another.

    The victim is a minion busy with a run when one is.

    Only a minion past its start-up (it runs or has run a parameter) is
    killed, so that a kill every fraction of a second still lets a single
    minion (a queue that processes cannot share) make progress. When none
    is, that kill is skipped rather than kept for the first minion that
    starts working: a killer lying in wait would kill every delivery of the
    last parameter within moments of its return (a dying node does not wait
    for work), and a broker that sets a message aside after some deliveries
    would be right to.
    """

    def __init__(self, every: float, rng: random.Random, records: Path) -> None:
        self.every, self.rng, self.records = every, rng, records
        self.kills = self.runs = 0
        self.next = 0.0

    def __call__(self, fleet: Fleet, done: int) -> None:
        now = time.monotonic()
        if not self.next:
            self.next = now + self.every
        if now < self.next:
            return
        working = fleet.working(self.records)
        if working:
            # A busy minion when there is one: a kill that hits no run proves little.
            busy = [minion for minion in working if children(minion.pid)]
            self.runs += fleet.kill_one(self.rng, busy or working)
            self.kills += 1
        # Until a kill has hit a run (its run may end as the kill comes), the next comes four times sooner:
        # a storm of a few seconds had two kills, and both missed one run in ten.
        self.next = time.monotonic() + (self.every if self.runs else self.every / 4)

    def measures(self) -> dict[str, float]:
        return {"kills": self.kills, "runs_killed": self.runs, "kill_every": self.every}


class Restarter(Tick):
    """Restarts the broker once, when a quarter of the parameters are done."""

    def __init__(self, backend: Backend, params: int) -> None:
        self.backend, self.when = backend, max(1, params // 4)
        self.restarted = False

    def __call__(self, fleet: Fleet, done: int) -> None:
        if not self.restarted and done >= self.when:
            self.backend.restart()
            self.restarted = True


def run_scenario(
    backend: Backend, workdir: Path, sizes: Sizes, scenario: str, tick: Tick, figures: list[Figures]
) -> tuple[Figures, Fleet]:
    """Push the parameters, run the fleet with `tick` called as it goes, let it drain, count.

    The row goes to the table even when the fleet got stuck, then the test fails.
    """
    env = {**backend.env(workdir), **backend.lease_env()}
    params = [f"p{i}" for i in range(sizes.params)]
    push(env, params)
    records = workdir / "records"
    fleet = Fleet(backend, env, workdir, done_program(records, sizes.run_seconds), sizes.minions)
    started = time.monotonic()
    fleet.start()
    try:
        stuck = watch(fleet, records, params, sizes.give_up, tick)
        all_done = time.monotonic() - started
        if not stuck and not fleet.wait(DRAIN_TIMEOUT):
            stuck = f"the minions did not exit within {DRAIN_TIMEOUT:g}s of the last parameter"
        drained = time.monotonic() - started
        live = [fleet.log(n)[-1500:] for n, m in enumerate(fleet.minions) if m.poll() is None]
    finally:
        fleet.stop()
    measures = {"all_done": all_done, "drained": drained, **tick.measures()}
    result = Figures.of(backend.name, scenario, fleet, params, count_done(records), note=stuck, **measures)
    figures.append(result)
    if stuck:
        logs = "\n".join([*fleet.failures(), "live minions:", *live])
        pytest.fail(f"{backend.name}: {stuck}\n{result.row()}\n{missing(backend, env, params, records)}\n{logs}")
    return result, fleet


def missing(backend: Backend, env: dict[str, str], params: list[str], records: Path) -> str:
    """Which parameters no run finished, and which of them the queue set aside (dead letters)."""
    absent = not_done(params, records)
    try:
        letters = [f"{param} ({reason or 'no reason given'})" for param, reason in backend.dead_letters(env)]
    except Exception as exc:  # noqa: BLE001 - a diagnosis of a failure must not hide it
        letters = [f"(could not read the dead letters: {exc!r})"]
    return f"not done: {absent[:20]}; set aside as dead letters: {letters[:20]}"


def check_nothing_lost(backend: Backend, figures: Figures, fleet: Fleet, workdir: Path) -> None:
    problems = fleet.failures()
    assert not problems, "\n".join(problems)
    if figures.lost:
        lost = not_done([f"p{i}" for i in range(figures.params)], workdir / "records")
        pytest.fail(f"{backend.name}: {figures.lost} parameters lost: {lost[:20]}\n{figures.row()}")


def extra_bound(kills: int, concurrency: int, run_seconds: float, ack_delay: float) -> int:
    """The most extra runs `kills` kills can cause.

    Each slot of a killed minion may have finished a run it had not acked
    yet, plus every run it finished during the last `ack_delay` seconds (at
    most one per `run_seconds`), whose acks the client still held.
    """
    held = math.ceil(ack_delay / run_seconds) if ack_delay else 0
    return kills * concurrency * (1 + held)


@pytest.mark.parametrize("backend", with_capability("survives_kill"), indirect=True)
def test_kill_storm(backend: Backend, tmp_path: Path, sizes: Sizes, figures: list[Figures]) -> None:
    seed = int(os.environ.get("FAULTS_SEED") or time.time_ns() % 1_000_000)
    print(f"FAULTS_SEED={seed}")  # shown with a failure: the same choice of victims again
    killer = Killer(sizes.kill_every, random.Random(seed), tmp_path / "records")
    result, fleet = run_scenario(backend, tmp_path, sizes, "kill storm", killer, figures)
    check_nothing_lost(backend, result, fleet, tmp_path)
    bound = extra_bound(result.kills, fleet.concurrency, sizes.run_seconds, backend.ack_delay)
    assert result.extra <= bound, f"{result.extra} extra runs for {result.kills} kills (FAULTS_SEED={seed})"
    # Kills that never hit a run would prove nothing.
    assert result.runs_killed > 0, f"no kill hit a run (FAULTS_SEED={seed})"


@pytest.mark.parametrize("backend", ["execo"], indirect=True)
def test_kill_storm_of_runs_taken_ahead(backend: Backend, tmp_path: Path, sizes: Sizes, figures: list[Figures]) -> None:
    """Runs of 5 ms, far shorter than EXECO_TAKE_AHEAD (50 ms): each minion takes several parameters per
    lock of the sweep and writes their acks at its next take. A kill then loses what it took ahead and the
    acks it held, which come back after their leases: never a parameter."""
    # As many kills as the usual storm has: more parameters (they run faster), a kill more often.
    short = dataclasses.replace(sizes, run_seconds=0.005, params=max(sizes.params, 1000),
                                kill_every=min(sizes.kill_every, 0.3))
    seed = int(os.environ.get("FAULTS_SEED") or time.time_ns() % 1_000_000)
    print(f"FAULTS_SEED={seed}")
    killer = Killer(short.kill_every, random.Random(seed), tmp_path / "records")
    result, fleet = run_scenario(backend, tmp_path, short, "kill storm, 5 ms runs taken ahead", killer, figures)
    check_nothing_lost(backend, result, fleet, tmp_path)
    bound = extra_bound(result.kills, fleet.concurrency, short.run_seconds, backend.ack_delay)
    assert result.extra <= bound, f"{result.extra} extra runs for {result.kills} kills (FAULTS_SEED={seed})"
    assert result.kills >= 3, f"{result.kills} kills: too few to tell (FAULTS_SEED={seed})"


@pytest.mark.parametrize("backend", with_capability("restartable"), indirect=True)
def test_broker_restart(backend: Backend, tmp_path: Path, sizes: Sizes, figures: list[Figures]) -> None:
    restarter = Restarter(backend, sizes.params)
    result, fleet = run_scenario(backend, tmp_path, sizes, "broker restart", restarter, figures)
    assert restarter.restarted, "the run ended before the broker could be restarted"
    check_nothing_lost(backend, result, fleet, tmp_path)
