"""A stop during a broker outage ends in bounded time, whatever the broker does.

For each broker engine, a minion (two slots, one parameter) runs a long
program; then its broker is cut off, killed (connections end, new ones are
refused) or paused (connections stay open and nothing answers, as across a
network partition), and the minion gets SIGTERM with MINION_GRACE_PERIOD=2.
It must exit within grace + the kill delay + 5 s: its engine calls give up
within their operation timeout, its backoff ends with the stop, and what it
cannot settle is left to the broker's redelivery. The time it took goes to
the fault table.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from minionize.callbacks.child import KILL_AFTER
from tests.conftest import minion_env, minionize_cmd

from .brokers import BROKERS, Broker
from .harness import Figures, children, done_program, push, sigterm_timed, wait_for

pytestmark = pytest.mark.integration
GRACE = 2.0
#: What a stop may take beyond the grace period and the kill delay.
MARGIN = 5.0
#: The outage starts that long before the SIGTERM: the minion has met it (a failed call, a backoff).
OUTAGE_BEFORE_STOP = 1.5


@pytest.fixture(params=sorted(BROKERS))
def broker(request: pytest.FixtureRequest) -> Iterator[Broker]:
    instance = BROKERS[request.param]()
    instance.start()
    yield instance
    instance.remove()


@pytest.mark.parametrize("outage", ["killed", "paused"])
def test_a_stop_during_an_outage_is_bounded(
    broker: Broker, outage: str, tmp_path: Path, figures: list[Figures]
) -> None:
    env = broker.env(tmp_path)
    push(env, ["1"])
    records = tmp_path / "records"
    settings = {**env, "MINION_CONCURRENCY": "2", "MINION_GRACE_PERIOD": f"{GRACE:g}", "MINION_LOG_LEVEL": "DEBUG"}
    log = tmp_path / "minion.log"
    with open(log, "wb") as out:
        minion = subprocess.Popen(
            minionize_cmd(*done_program(records, 60)), cwd=tmp_path, env=minion_env(**settings),
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
    try:
        wait_for(lambda: bool(children(minion.pid)) or minion.poll() is not None, 60, "a run in flight")
        assert minion.poll() is None, log.read_text(errors="replace")[-3000:]
        broker.kill() if outage == "killed" else broker.pause()
        time.sleep(OUTAGE_BEFORE_STOP)
        code, took = sigterm_timed(minion)
    finally:
        if minion.poll() is None:
            minion.kill()
            minion.wait()
    bound = GRACE + KILL_AFTER + MARGIN
    print(f"\nstop during an outage ({broker.engine}, broker {outage}): exit {code} after {took:.1f}s "
          f"(bound {bound:g}s)")
    figures.append(Figures(
        engine=broker.engine, scenario=f"SIGTERM with the broker {outage}, grace {GRACE:g}s: stop took {took:.1f}s",
        layout="1 minion x 2 slots", params=1, done=0, lost=0, extra=0, twice=0, drained=took,
    ))
    tail = log.read_text(errors="replace")[-4000:]
    assert code is not None and took < bound, f"the stop took {took:.1f}s (bound {bound:g}s):\n{tail}"
    assert code == 0, tail
