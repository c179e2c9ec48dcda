"""Network faults between the minions and their broker: a partition, a stop during one.

Every broker engine, its minions in a namespace of their own and its broker
across a veth link (net.py). FAULTS_NET_* choose the sizes (netfleet.NetSizes):
the CI-sized run by default, `scripts/faults` the full one.

- partition: FAULTS_NET_PARAMS parameters through FAULTS_NET_MINIONS minions;
  once a third is done, the link is cut for FAULTS_PARTITION seconds, half-open
  (packets dropped, no reset), then comes back. Nothing may be lost; the extra
  runs stay within EXTRA_PER_SLOT per slot; every minion says it is not ready
  during the cut (the row says how long its engine took to notice) and ready
  after; the first ack comes within the worker's longest backoff of the link's
  return, plus the attempt the return interrupted (RETURN_SLACK); its log
  says it lost the broker once per outage, not once per retry, and no line of
  the broker's client library (one per attempt) is above DEBUG.
- stop in a cut: a minion with a long run in flight gets SIGTERM as the link is
  cut; it must exit within grace + the kill delay + a margin, and its
  parameter must come back (a minion on the machine itself runs it).
- a slow then lossy link: 300 ± 100 ms on what the minions send for the first
  half of FAULTS_NET_DEGRADED_PARAMS, then 5 % of the packets lost each way for
  the rest. Nothing lost; at most one extra run per slot (an ack that timed out).
- a partition longer than the lease: two minions cut off while they run (for
  half of FAULTS_LONG_PARTITION); a minion on the broker's side must be handed
  their parameters within the cut (each engine's short lease, `lease_env`;
  RabbitMQ's lease is the connection, ended by missed heartbeats). The extra
  runs are exactly those: at most one per cut-off slot. The cut-off minions
  end within the same bound as scenario 1's first ack (plus their idle time,
  where the broker cannot tell a drained queue). Not pulsar: Pulsar has
  no ack deadline, a cut-off minion keeps its parameters until its connection
  ends (the stop scenario shows them coming back then).

The extra runs are bounded by what a slot can do while its acks fail: finish
the run it had (its ack lost: the broker delivers it again) and, on a broker
that hands out the next message before it knows, run one more.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path
from typing import Optional

import pytest

from minionize.callbacks.child import KILL_AFTER
from minionize.calls import BACKOFF_MAX
from tests.conftest import minion_env, minionize_cmd
from tests.integration.backends import Backend

from .harness import (
    IDLE_TIMEOUT,
    Figures,
    Fleet,
    Sizes,
    children,
    count_done,
    done_program,
    not_done,
    push,
    sigterm_timed,
    wait_for,
)
from .net import Network, network
from .netfleet import NetFleet, NetSizes, Watch

pytestmark = pytest.mark.integration
#: The broker engines (not execo and file: no network between them and a minion).
ENGINES = ["redis", "amqp", "google", "pulsar", "nats", "postgres"]
GRACE = 2.0
#: What a stop may take beyond the grace period and the kill delay.
MARGIN = 5.0
#: What the first ack after a partition (or a cut-off minion's return) may take beyond the worker's longest
#: backoff (BACKOFF_MAX), the attempt that the link's return interrupted (an operation timeout) and a run: room
#: for a loaded 2-core machine.
RETURN_SLACK = 5.0
#: The worker's warnings that the broker is lost, in one minion's log, for one outage: the first failed call,
#: and a settling call that fails before the next one (the retries are logged at DEBUG).
WARNINGS_PER_OUTAGE = 2
#: Scenario 2 and 3: one-way latency and jitter (seconds) on what the minions send, and the share of packets lost.
LATENCY, LOSS = (0.3, 0.1), 0.05
#: Scenario 4 sets each engine's lease short (`lease_env`); RabbitMQ's is the connection, ended by missed heartbeats.
LEASE = {"amqp": {"AMQP_HEARTBEAT": "1"}}
#: Scenario 4: the idle time after which the cut-off minions end, where the broker cannot tell a drained queue.
LEASE_IDLE = 3.0
#: Engines whose broker never hands a cut-off minion's parameter to another minion while it is cut off: Pulsar has
#: no ack deadline (the engine keeps ack timeout off) and waits for the connection to end (and pulsar-lite 0.2.0
#: lets a single process consume a subscription: no second minion to hand it to).
NO_HANDOVER = {"pulsar"}
#: Extra runs a cut may cause per slot of a cut-off minion: the run it finished but could
#: not ack, and the one it took (or had prefetched) and ran while its ack was failing.
EXTRA_PER_SLOT = 2


@pytest.fixture
def net() -> Iterator[Network]:
    with network() as made:
        yield made


@pytest.fixture(scope="session")
def net_sizes() -> NetSizes:
    return NetSizes.from_env()


def run_through(fleet: Fleet, records: Path, params: list[str], watch: Watch, within: float) -> str:
    """Wait until every parameter is done and every minion exited; '' or why not."""
    deadline = time.monotonic() + within
    wanted = set(params)
    while len(count_done(records).keys() & wanted) < len(wanted) or fleet.live():
        if not watch.all_done and len(count_done(records).keys() & wanted) == len(wanted):
            watch.all_done = time.monotonic()
        watch.after()
        if fleet.failed():
            return f"a minion exited {fleet.failed()[0].returncode}"
        if not fleet.live() and not_done(params, records):
            return "no minion left, parameters not done"
        if time.monotonic() > deadline:
            return "stuck: " + ("a minion did not exit" if not not_done(params, records) else "parameters not done")
        time.sleep(0.1)
    watch.after()  # the last minion may have ended since the last look
    return ""


@pytest.mark.parametrize("backend", ENGINES, indirect=True)
def test_partition(backend: Backend, net: Network, tmp_path: Path, net_sizes: NetSizes, sizes: Sizes,
                   figures: list[Figures]) -> None:
    env = {**backend.env(tmp_path), **backend.lease_env(), **net_sizes.env(backend.name)}
    if not backend.drains:
        # No kill here: the fleet's short idle time ends the minions (a lost broker does not count as idle).
        env["MINION_IDLE_TIMEOUT"] = IDLE_TIMEOUT
    params = [f"p{i}" for i in range(net_sizes.params)]
    push(env, params)
    records = tmp_path / "records"
    fleet = NetFleet(net, backend, env, tmp_path, done_program(records, net_sizes.run_seconds), net_sizes.minions)
    watch = Watch(fleet)
    started = time.monotonic()
    fleet.start()
    try:
        wait_for(lambda: len(count_done(records)) >= len(params) // 3 or bool(fleet.failed()), sizes.give_up,
                 "a third of the parameters done")
        watch.during_cut(net_sizes.partition)
        stuck = run_through(fleet, records, params, watch, sizes.give_up)
        all_done = watch.all_done - started
        drained = time.monotonic() - started
    finally:
        fleet.stop()
    result = Figures.of(backend.name, f"partition {net_sizes.partition:g}s, half-open", fleet, params,
                        count_done(records), note=stuck, all_done=all_done, drained=drained, remarks=watch.describe())
    figures.append(result)
    print(f"\n{result.row()}\n{result.remarks}")
    assert not stuck, f"{stuck}\n{result.row()}\n" + "\n".join(fleet.failures())
    assert result.lost == 0, not_done(params, records)
    bound = EXTRA_PER_SLOT * fleet.processes * fleet.concurrency
    assert result.extra <= bound, f"{result.extra} extra runs, bound {bound}"
    warned = fleet.lost_broker_lines()
    assert warned <= WARNINGS_PER_OUTAGE, f"a minion logged the lost broker {warned} times for one cut"
    chatter = fleet.client_lines()
    assert not chatter, "the client library's own lines above DEBUG:\n" + "\n".join(chatter[:10])
    silent = sorted(set(fleet.ports) - set(watch.unready))
    assert not silent, f"minions {silent} never said they were not ready during the cut"
    assert watch.ready_again is not None, "a minion did not say it was ready again after the link's return"
    # A silent connection is dropped and another opened (kit.ConnectionGuard.on_silent): before, Pulsar and NATS
    # kept it until TCP's next retransmission, 23 to 28 s after a 30 s cut's end (docs/reliability.md).
    within = BACKOFF_MAX + net_sizes.timeout(backend.name) + net_sizes.run_seconds + RETURN_SLACK
    assert watch.first_ack is not None and watch.first_ack < within, \
        f"first ack {watch.first_ack} s after the link's return (bound {within:g} s)"


@pytest.mark.parametrize("backend", ENGINES, indirect=True)
def test_stop_in_a_partition(backend: Backend, net: Network, tmp_path: Path, net_sizes: NetSizes,
                             figures: list[Figures]) -> None:
    env = {**backend.env(tmp_path), **backend.lease_env(), **net_sizes.env(backend.name)}
    push(env, ["1"])
    records = tmp_path / "records"
    settings = {**net.expose(env), "MINION_CONCURRENCY": "2", "MINION_GRACE_PERIOD": f"{GRACE:g}",
                "MINION_MAX_ATTEMPTS": "100", "MINION_LOG_LEVEL": "DEBUG"}
    log = tmp_path / "minion.log"
    with open(log, "wb") as out:
        minion = subprocess.Popen(
            net.command(minionize_cmd(*done_program(records, 60))), cwd=tmp_path, env=minion_env(**settings),
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
    try:
        wait_for(lambda: bool(children(minion.pid)) or minion.poll() is not None, 60, "a run in flight")
        assert minion.poll() is None, log.read_text(errors="replace")[-3000:]
        net.cut()
        code, took = sigterm_timed(minion)
    finally:
        if minion.poll() is None:
            minion.kill()
            minion.wait()
        net.clear()
    back = comes_back(backend, env, tmp_path)
    bound = GRACE + KILL_AFTER + MARGIN
    figures.append(Figures(
        engine=backend.name, scenario=f"SIGTERM as the link is cut, grace {GRACE:g}s: stop took {took:.1f}s",
        layout="1 minion x 2 slots", params=1, done=int(back is not None), lost=int(back is None), extra=0,
        twice=0, drained=took, remarks=f"the parameter ran again {_after(back)} after the link's return",
    ))
    tail = log.read_text(errors="replace")[-4000:]
    assert code is not None and took < bound, f"the stop took {took:.1f}s (bound {bound:g}s):\n{tail}"
    assert code == 0, tail
    assert back is not None, "the parameter of the stopped minion never came back"


def comes_back(backend: Backend, env: dict[str, str], workdir: Path) -> Optional[float]:
    """Seconds until a minion on the machine itself ran the stopped minion's parameter, or None."""
    records = workdir / "again"
    started = time.monotonic()
    fleet = Fleet(backend, {**env, "MINION_IDLE_TIMEOUT": "30"}, workdir, done_program(records, 0), 1,
                  name="again")
    fleet.start()
    try:
        wait_for(lambda: bool(count_done(records)) or not fleet.live(), 60, "the parameter back")
    except AssertionError:
        return None
    finally:
        fleet.stop()
    return time.monotonic() - started if count_done(records) else None


def _after(seconds: Optional[float]) -> str:
    return "never" if seconds is None else f"{seconds:.1f}s"


@pytest.mark.parametrize("backend", ENGINES, indirect=True)
def test_a_slow_then_lossy_link(backend: Backend, net: Network, tmp_path: Path, net_sizes: NetSizes, sizes: Sizes,
                                figures: list[Figures]) -> None:
    """Scenarios 2 and 3 in one fleet: LATENCY for the first half of the parameters, then LOSS for the rest.

    With the engines' own operation timeouts: a connection's handshake takes several round trips (RabbitMQ's
    about ten), longer than the CI-sized run's short timeout under this latency.
    """
    env = backend.env(tmp_path)
    params = [f"p{i}" for i in range(net_sizes.degraded_params)]
    push(env, params)
    records = tmp_path / "records"
    fleet = NetFleet(net, backend, env, tmp_path, done_program(records, 0.05), net_sizes.minions)
    half = len(params) // 2
    net.delay(*LATENCY)
    started = time.monotonic()
    fleet.start()
    try:
        wait_for(lambda: len(count_done(records)) >= half or bool(fleet.failed()) or not fleet.live(),
                 sizes.give_up, "half of the parameters done")
        slow = time.monotonic() - started
        net.clear()
        net.loss(LOSS)
        stuck = run_through(fleet, records, params, Watch(fleet), sizes.give_up)
        lossy = time.monotonic() - started - slow
    finally:
        fleet.stop()
        net.clear()
    counts = count_done(records)
    warned = f"most 'engine ... failed' warnings in one log: {fleet.lost_broker_lines()}"
    for scenario, took in ((f"latency {LATENCY[0] * 1000:g}±{LATENCY[1] * 1000:g} ms, first half", slow),
                           (f"loss {LOSS:.0%}, second half", lossy)):
        figures.append(Figures.of(backend.name, scenario, fleet, params, counts, note=stuck, all_done=took,
                                  remarks=f"{warned} (over both halves)"))
    assert not stuck, f"{stuck}\n" + "\n".join(fleet.failures())
    assert not not_done(params, records)
    bound = fleet.processes * fleet.concurrency  # a slot whose ack timed out runs that parameter again
    extra = sum(count - 1 for count in counts.values() if count > 1)
    assert extra <= bound, f"{extra} extra runs, bound {bound}"


@pytest.mark.parametrize("backend", [engine for engine in ENGINES if engine not in NO_HANDOVER], indirect=True)
def test_partition_longer_than_the_lease(backend: Backend, net: Network, tmp_path: Path, net_sizes: NetSizes,
                                         sizes: Sizes, figures: list[Figures]) -> None:
    """Scenario 4: the broker gives the cut-off minions' parameters to a minion on its side while they still run."""
    env = {**backend.env(tmp_path), **backend.lease_env(), **LEASE.get(backend.name, {}),
           **net_sizes.env(backend.name)}
    params = [f"p{i}" for i in range(6)]
    push(env, params)
    records = tmp_path / "records"
    # Where the broker cannot tell that the queue is drained, the cut-off minions end after a short idle time
    # once the link is back (an outage is not idleness), and the healthy one waits out the whole partition.
    idle = {} if backend.drains else {"MINION_IDLE_TIMEOUT": f"{LEASE_IDLE:g}"}
    cut_off = NetFleet(net, backend, {**env, **idle}, tmp_path, done_program(records, net_sizes.long_partition / 2),
                       2, name="cut")
    healthy = Fleet(backend, {**env, "MINION_IDLE_TIMEOUT": f"{net_sizes.long_partition * 2:g}"}, tmp_path,
                    done_program(records, 0.05), 1, name="healthy")
    cut_off.start()
    try:
        wait_for(lambda: all(children(m.pid) for m in cut_off.minions) or bool(cut_off.failed()), 60,
                 "a run in flight in each cut-off minion")
        held = _running(cut_off)
        net.cut()
        cut_at = time.monotonic()
        healthy.start()
        handed = _handover(healthy, records, held, cut_at, net_sizes.long_partition)
        time.sleep(max(0.0, net_sizes.long_partition - (time.monotonic() - cut_at)))
        watch = Watch(cut_off, cut_at=cut_at)
        watch.heal()
        # The cut-off minions' end is the subject; the healthy one is stopped once they ended.
        stuck = run_through(cut_off, records, params, watch, sizes.give_up)
        ended = time.monotonic() - watch.healed_at
    finally:
        net.clear()
        cut_off.stop()
        healthy.stop()
    counts = count_done(records)
    scenario = f"partition {net_sizes.long_partition:g}s, longer than the lease"
    result = Figures.of(backend.name, scenario, cut_off, params, counts, note=stuck,
                        remarks=f"the cut-off minions' parameters handed over {_after(handed)} after the cut; "
                                f"the cut-off minions ended {ended:.1f}s after the link's return")
    figures.append(result)
    assert not stuck, f"{stuck}\n" + "\n".join(cut_off.failures() + healthy.failures())
    assert result.lost == 0, not_done(params, records)
    assert handed is not None, "the broker never gave the cut-off minions' parameters to the healthy one"
    bound = cut_off.processes * cut_off.concurrency  # each cut-off run also ran on the healthy minion
    assert result.extra <= bound, f"{result.extra} extra runs, bound {bound}"
    # Back within the worker's backoff, they find the queue drained (or idle for LEASE_IDLE): a minion that kept
    # its silent connection would wait for TCP's next retransmission.
    within = BACKOFF_MAX + net_sizes.timeout(backend.name) + (0 if backend.drains else LEASE_IDLE) + RETURN_SLACK
    assert ended < within, f"the cut-off minions ended {ended:.1f}s after the link's return (bound {within:g} s)"


def _running(fleet: Fleet) -> set[str]:
    """The parameters that a fleet's minions are running: the last argument of each run (done.sh DIR SECONDS PARAM)."""
    found = set()
    for minion in fleet.live():
        for run in children(minion.pid):
            with suppress(OSError, IndexError):
                found.add(Path(f"/proc/{run}/cmdline").read_bytes().split(b"\0")[-2].decode())
    return found


def _handover(healthy: Fleet, records: Path, held: set[str], since: float, within: float) -> Optional[float]:
    """Seconds from `since` until the healthy minion ran one of `held`, or None if it did not within `within`."""
    while time.monotonic() - since < within:
        ran = {line.split()[0] for m in healthy.minions if (records / f"done.{m.pid}").exists()
               for line in (records / f"done.{m.pid}").read_text().splitlines() if line.strip()}
        if held & ran:
            return time.monotonic() - since
        time.sleep(0.1)
    return None
