"""The worker while its broker is down: backoff that a stop cuts short, never under the lock, stops bounded."""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from typing import Any, Optional

import pytest

from minionize import FuncCallback, ProcessCallback, calls
from minionize.callbacks.child import KILL_AFTER
from minionize.calls import EngineCalls
from minionize.config import Settings
from minionize.engines.memory import MemoryEngine
from minionize.message import Message
from minionize.slots import Slots
from minionize.stopping import StopRequest
from minionize.worker import _STOP_MARGIN, Worker


class Down(MemoryEngine):
    """A broker that is down from the start: every call fails as a lost connection would."""

    def __init__(self, params: Any = ()) -> None:
        super().__init__(params)
        self.failures = 0
        self.lock_held_while_failing: list[bool] = []

    def next(self, timeout: float) -> Optional[Message]:
        self.failures += 1
        raise ConnectionError("broker down")

    def drained(self) -> bool:
        return False


def wait_until(condition: Any, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition never came true"
        time.sleep(0.01)


def test_a_stop_cuts_the_backoff_short() -> None:
    engine = Down()
    worker = Worker(engine, FuncCallback(print), Settings(engine="memory"))
    stopped: list[float] = []
    thread = threading.Thread(target=lambda: stopped.append(worker.run()))
    thread.start()
    # From the third failure on, the backoff sleeps at least 2 s (ceiling 4 s, jittered down to half).
    wait_until(lambda: engine.failures >= 3)
    time.sleep(0.2)
    asked = time.monotonic()
    worker.request_stop()
    thread.join(30)
    assert not thread.is_alive()
    assert time.monotonic() - asked < 1.5, "the backoff sleep ignored the stop"
    assert stopped == [0]


def test_the_backoff_sleeps_without_the_workers_lock() -> None:
    engine = Down()
    worker = Worker(engine, FuncCallback(print), Settings(engine="memory"))
    thread = threading.Thread(target=worker.run)
    thread.start()
    try:
        wait_until(lambda: engine.failures >= 2)
        time.sleep(0.2)  # inside the second backoff (at least 1 s)
        assert worker._lock.acquire(timeout=0.5), "the lock is held during the backoff"
        worker._lock.release()
    finally:
        worker.request_stop()
        thread.join(30)


def test_backoff_delays_are_jittered() -> None:
    delays: list[float] = []
    calls = EngineCalls(StopRequest(), delays.append, stop_takes=10.0)

    def down() -> None:
        raise ConnectionError("down")

    for _ in range(20):
        calls.failures = 3
        calls(down)
    assert all(2.0 <= d <= 8.0 for d in delays)  # 4th failure: ceiling 8 s, never below half
    assert len({round(d, 3) for d in delays}) > 10, "every minion would retry in lock-step"


class SettlingFails(MemoryEngine):
    """A broker that goes down once the run started: giving the message back fails, forever."""

    def release(self, message: Message) -> None:
        raise ConnectionError("broker down")

    def nack(self, message: Message) -> None:
        raise ConnectionError("broker down")

    def remaining(self) -> Optional[int]:
        raise ConnectionError("broker down")

    def drained(self) -> bool:
        return False


def test_a_stop_during_an_outage_ends_within_grace_plus_kill_delay() -> None:
    engine = SettlingFails(["long"])
    started = threading.Event()

    def long_run(param: Any) -> None:
        started.set()
        time.sleep(60)  # a Python function: cannot be cancelled, only abandoned

    grace = 0.5
    worker = Worker(engine, FuncCallback(long_run), Settings(engine="memory", grace_period=grace))
    threading.Thread(target=lambda: (started.wait(10), worker.request_stop()), daemon=True).start()
    begun = time.monotonic()
    code = worker.run()
    took = time.monotonic() - begun
    assert code == 0
    assert took < grace + KILL_AFTER + _STOP_MARGIN + 1.0, f"stop took {took:.1f}s"
    assert engine.acked == []  # left to the broker's redelivery, not acked


class PullHangs(MemoryEngine):
    """A broker lost once the first run started: the next pull hangs for `hang` seconds, then fails;
    giving the message back fails at once."""

    def __init__(self, params: Any, hang: float) -> None:
        super().__init__(params)
        self.hang, self.pulls, self.hanging = hang, 0, threading.Event()

    def next_many(self, limit: int, timeout: float) -> list[Message]:
        message = self.next(timeout)
        return [] if message is None else [message]

    def next(self, timeout: float) -> Optional[Message]:
        self.pulls += 1
        if self.pulls == 1:
            return super().next(timeout)
        self.hanging.set()
        time.sleep(self.hang)
        raise ConnectionError("broker down: no answer")

    def release(self, message: Message) -> None:
        raise ConnectionError("broker down")


def test_the_grace_period_runs_from_the_signal_not_from_when_the_loop_sees_it() -> None:
    """A SIGTERM that comes during a hanging engine call: its grace period is spent while the call hangs
    (Kubernetes counts its own from the signal), and the run is stopped as soon as the call ends."""
    hang, grace = 3.0, 2.0
    engine = PullHangs(["60"], hang)
    worker = Worker(engine, ProcessCallback(["sleep"]), Settings(engine="memory", concurrency=2, grace_period=grace))
    asked: list[float] = []

    def stop_during_the_pull() -> None:
        engine.hanging.wait(30)
        time.sleep(0.1)
        asked.append(time.monotonic())
        worker.request_stop()

    threading.Thread(target=stop_during_the_pull, daemon=True).start()
    assert worker.run() == 0
    took = time.monotonic() - asked[0]
    # Before: the grace period began when the pull ended, and the stop took hang + grace.
    assert took < hang + grace / 2, f"stop took {took:.1f}s"
    assert engine.acked == []  # the run was stopped, its message left to the broker's redelivery


def test_a_lost_broker_is_not_idleness() -> None:
    """A batch minion with an idle timeout keeps waiting for a broker it cannot reach (it would exit 0 otherwise,
    as if the queue were empty, with its work left undone)."""
    engine = Down()
    worker = Worker(engine, FuncCallback(print), Settings(engine="memory", idle_timeout=0.3, batch=True))
    ended: list[int] = []
    thread = threading.Thread(target=lambda: ended.append(worker.run()))
    thread.start()
    try:
        time.sleep(2.0)  # several idle timeouts, and a backoff or two
        assert not ended, "the minion took a lost broker for an empty queue"
    finally:
        worker.request_stop()
        thread.join(30)


def test_only_a_call_that_reaches_the_broker_ends_an_outage() -> None:
    """`drained` and the engine's offline calls can answer without the broker: the outage goes on, once logged."""
    calls = EngineCalls(StopRequest(), lambda seconds: None, stop_takes=10.0, offline=frozenset({"ack"}))

    def next() -> None:  # noqa: A001 - named as the engine call it stands for
        raise ConnectionError("down")

    def drained() -> bool:
        return False

    def ack() -> None:
        pass

    calls(next)
    for local in (drained, ack):
        calls(local)
        assert calls.failures == 1, f"{local.__name__} ended the outage"
    calls.failures, reached = 1, lambda: None
    reached.__name__ = "extend"
    calls(reached)
    assert calls.failures == 0


def test_a_signal_wakes_a_loop_waiting_for_its_runs() -> None:
    """The stop's handler wakes the loop's wait for a run to end (up to 10 s here, POLL in a minion):
    it runs on the waiting thread itself, and the wake must neither deadlock nor wait out the timeout."""
    slots = Slots(1, lambda run: None)
    stop = StopRequest(wake=slots.wake)
    previous = signal.signal(signal.SIGALRM, stop.ask)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.2)
        begun = time.monotonic()
        assert list(slots.collect(10.0, contextlib.nullcontext)) == []
        waited = time.monotonic() - begun
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert stop.signals == [signal.SIGALRM]
    assert waited < 5.0, f"the wait went on {waited:.1f}s after the signal"


def test_during_a_stop_a_call_that_took_a_second_to_fail_ends_the_engine_calls(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A broker that takes its whole timeout to fail (Pub/Sub's client retries refused connections until its
    deadline) would make every settlement of a stop wait as long: after one such failure, what is not settled
    is left to the broker's redelivery. A call that fails at once is no reason to stop trying."""
    now = [1000.0]
    monkeypatch.setattr(calls.time, "monotonic", lambda: now[0])
    stop = StopRequest()
    stop.ask(signal.SIGTERM)
    engine_calls = EngineCalls(stop, lambda seconds: None, stop_takes=10.0)
    made: list[str] = []

    def release() -> None:
        made.append("release")
        raise ConnectionError("connection refused")

    def pull() -> None:
        made.append("pull")
        now[0] += 4.9
        raise ConnectionError("Timeout of 5.0s exceeded, last exception: 503 failed to connect")

    assert engine_calls(release) is None and engine_calls(release) is None
    assert made == ["release", "release"]  # failed at once: tried again
    assert engine_calls(pull) is None
    assert engine_calls(release) is None and engine_calls.failed
    assert made == ["release", "release", "pull"]  # not made: left to the broker's redelivery


def test_outside_a_stop_a_slow_failure_is_retried_after_the_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]
    monkeypatch.setattr(calls.time, "monotonic", lambda: now[0])
    engine_calls = EngineCalls(StopRequest(), lambda seconds: None, stop_takes=10.0)
    made: list[str] = []

    def pull() -> None:
        made.append("pull")
        now[0] += 4.9
        raise ConnectionError("no answer")

    engine_calls(pull)
    engine_calls(pull)
    assert made == ["pull", "pull"]
