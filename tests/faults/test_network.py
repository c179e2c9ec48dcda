"""Network faults between the minions and their broker: a partition, a stop during one.

Every broker engine, its minions in a namespace of their own and its broker
across a veth link (net.py). FAULTS_NET_* choose the sizes (netfleet.NetSizes):
the CI-sized run by default, `scripts/faults` the full one.

- partition: FAULTS_NET_PARAMS parameters through FAULTS_NET_MINIONS minions;
  once a third is done, the link is cut for FAULTS_PARTITION seconds, half-open
  (packets dropped, no reset), then comes back. Nothing may be lost; the extra
  runs stay within `extra_bound`; every minion says it is not ready during the
  cut (or its engine did not notice: the row says how long it took) and ready
  after; its log says it lost the broker once per outage, not once per retry.
- stop in a cut: a minion with a long run in flight gets SIGTERM as the link is
  cut; it must exit within grace + the kill delay + a margin, and its
  parameter must come back (a minion on the machine itself runs it).
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Optional

import pytest

from minionize.callbacks.child import KILL_AFTER
from tests.conftest import minion_env, minionize_cmd
from tests.integration.backends import Backend

from .harness import Figures, Fleet, Sizes, children, count_done, done_program, not_done, push, wait_for
from .net import Network, network
from .netfleet import NetFleet, NetSizes, Watch

pytestmark = pytest.mark.integration
#: The broker engines (not execo and file: no network between them and a minion).
ENGINES = ["redis", "amqp", "google", "pulsar", "nats", "postgres"]
GRACE = 2.0
#: What a stop may take beyond the grace period and the kill delay.
MARGIN = 5.0
#: Brokers that never check a silent client (pulsar-lite 0.2.0 sends no ping; a Pulsar broker does, every
#: 30 s): a stopped minion's connection, whose end the cut swallowed, is ended for them by the test.
PINGLESS = {"pulsar"}
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
    return ""


@pytest.mark.parametrize("backend", ENGINES, indirect=True)
def test_partition(backend: Backend, net: Network, tmp_path: Path, net_sizes: NetSizes, sizes: Sizes,
                   figures: list[Figures]) -> None:
    env = {**backend.env(tmp_path), **backend.lease_env(), **net_sizes.env(backend.name)}
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
    assert watch.ready_again is not None, "a minion did not say it was ready again after the link's return"


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
        started = time.monotonic()
        minion.send_signal(signal.SIGTERM)
        try:
            code = minion.wait(timeout=60)
        except subprocess.TimeoutExpired:
            code = None
        took = time.monotonic() - started
    finally:
        if minion.poll() is None:
            minion.kill()
            minion.wait()
        net.clear()
    if backend.name in PINGLESS:
        net.drop_connections()
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
