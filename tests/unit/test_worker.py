"""The worker loop over the in-memory engine: what is acked, retried, set aside, released."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from minionize import FuncCallback, Outcome, ProcessCallback
from minionize.callbacks.base import Callback, RunContext
from minionize.config import Settings
from minionize.engines.memory import MemoryEngine
from minionize.errors import ConfigError
from minionize.message import Message
from minionize.reporters.base import Reporter, RunRecord
from minionize.worker import Worker


def settings(**kw: Any) -> Settings:
    return Settings(engine="memory", **kw)


class Recorder(Reporter):
    def __init__(self) -> None:
        self.finished_runs: list[RunRecord] = []
        self.closed = ""

    def finished(self, run: RunRecord) -> None:
        self.finished_runs.append(run)

    def close(self, reason: str) -> None:
        self.closed = reason


def test_success_acks_each_parameter_once() -> None:
    seen: list[Any] = []
    engine = MemoryEngine(range(5))
    code = Worker(engine, FuncCallback(seen.append), settings()).run()
    assert code == 0
    assert sorted(seen) == [0, 1, 2, 3, 4]
    assert sorted(m.param for m in engine.acked) == [0, 1, 2, 3, 4]
    assert engine.nacked == [] and engine.failed == []


def test_retries_then_set_aside_after_max_attempts() -> None:
    attempts: list[Any] = []

    def flaky(param: Any) -> None:
        attempts.append(param)
        if param == "bad":
            raise RuntimeError("boom")

    engine = MemoryEngine(["ok", "bad"])
    reporter = Recorder()
    Worker(engine, FuncCallback(flaky), settings(max_attempts=3), reporter).run()
    assert attempts.count("bad") == 3
    assert [m.param for m in engine.acked] == ["ok"]
    [(failed, reason)] = engine.failed
    assert failed.param == "bad" and failed.attempt == 3
    assert "RuntimeError: boom" in reason and "attempt 3 of 3" in reason
    verdicts = [(r.param, r.attempt, r.verdict) for r in reporter.finished_runs if r.param == "bad"]
    assert verdicts == [("bad", 1, "retried"), ("bad", 2, "retried"), ("bad", 3, "failed")]
    assert reporter.closed == "drained"


def test_only_false_fails_a_function_that_returns() -> None:
    engine = MemoryEngine([False, 3, None, 0])
    Worker(engine, FuncCallback(lambda p: p), settings(max_attempts=1)).run()
    assert [(m.param, reason) for m, reason in engine.failed] == [
        (False, "function returned False (attempt 1 of 1)")
    ]
    assert sorted(str(m.param) for m in engine.acked) == ["0", "3", "None"]


def test_rejected_message_never_runs() -> None:
    engine = MemoryEngine(["x"])
    ran: list[Any] = []
    original = engine.next

    def next_with_bad_body(timeout: float) -> Message | None:
        message = original(timeout)
        if message is not None:
            message.reject_reason = "not valid JSON"
        return message

    engine.next = next_with_bad_body  # type: ignore[method-assign]
    Worker(engine, FuncCallback(ran.append), settings()).run()
    assert ran == []
    assert [(m.param, reason) for m, reason in engine.failed] == [("x", "not valid JSON")]


def test_concurrency_overlaps_but_never_exceeds_the_slots() -> None:
    running = 0
    peak = 0
    slots: set[int] = set()
    lock = threading.Lock()

    class Slow(Callback):
        def run(self, message: Message, context: RunContext) -> Outcome:
            nonlocal running, peak
            with lock:
                running += 1
                peak = max(peak, running)
                slots.add(context.slot)
            time.sleep(0.2)
            with lock:
                running -= 1
            return Outcome.success()

    engine = MemoryEngine(range(9))
    started = time.monotonic()
    Worker(engine, Slow(), settings(concurrency=3)).run()
    assert peak == 3
    assert slots == {0, 1, 2}
    assert len(engine.acked) == 9
    assert time.monotonic() - started < 9 * 0.2  # they did overlap


def test_a_failing_reporter_never_fails_a_parameter() -> None:
    class Broken(Reporter):
        def started(self, run: RunRecord) -> None:
            raise OSError("disk full")

        def finished(self, run: RunRecord) -> None:
            raise OSError("disk full")

    engine = MemoryEngine(range(3))
    assert Worker(engine, FuncCallback(lambda p: None), settings(), Broken()).run() == 0
    assert len(engine.acked) == 3 and engine.failed == []


def test_dry_run_runs_nothing_and_gives_everything_back(capsys: pytest.CaptureFixture[str]) -> None:
    engine = MemoryEngine(["a b", "c"])
    Worker(engine, ProcessCallback(["echo"]), settings(dry=True)).run()
    out = capsys.readouterr().out
    assert "DRY: echo a b" in out and "DRY: echo c" in out
    assert engine.acked == []
    assert sorted(m.param for m in engine._queue) == ["a b", "c"]
    assert all(m.attempt == 1 for m in engine._queue)


def test_idle_timeout_ends_a_minion_on_an_empty_broker() -> None:
    class NeverDrained(MemoryEngine):
        def drained(self) -> bool:
            return False

    started = time.monotonic()
    reporter = Recorder()
    code = Worker(NeverDrained(), FuncCallback(print), settings(idle_timeout=1.0), reporter).run()
    assert code == 0 and reporter.closed == "idle for 1s"
    assert 1.0 <= time.monotonic() - started < 5


def test_warm_stop_lets_the_run_finish_within_grace() -> None:
    engine = MemoryEngine(["slow", "never"])
    gate = threading.Event()

    def slow(param: Any) -> None:
        gate.set()
        time.sleep(0.5)

    worker = Worker(engine, FuncCallback(slow), settings(grace_period=5))
    threading.Thread(target=lambda: (gate.wait(5), worker.request_stop())).start()
    assert worker.run() == 0
    assert [m.param for m in engine.acked] == ["slow"]
    assert [m.param for m in engine._queue] == ["never"]


def test_grace_period_over_releases_the_message_without_counting_an_attempt() -> None:
    engine = MemoryEngine(["long"])
    gate = threading.Event()
    worker = Worker(engine, ProcessCallback(["sleep"]), settings(grace_period=0.3))
    original = engine.next

    def next_then_stop(timeout: float) -> Message | None:
        message = original(timeout)
        if message is not None:
            message.param = "30"
            gate.set()
        return message

    engine.next = next_then_stop  # type: ignore[method-assign]
    threading.Thread(target=lambda: (gate.wait(5), time.sleep(0.3), worker.request_stop())).start()
    started = time.monotonic()
    assert worker.run() == 0
    assert time.monotonic() - started < 10
    assert engine.acked == [] and engine.failed == []
    [back] = list(engine._queue)
    assert back.attempt == 1


def test_a_message_past_its_last_attempt_is_set_aside_without_running() -> None:
    """A poison parameter that kills its minions comes back with a growing delivery count."""
    ran: list[Any] = []
    engine = MemoryEngine(["poison"])
    first = engine.next(0.01)
    assert first is not None
    for _ in range(3):  # three minions died while running it
        engine.nack(first)
        first = engine.next(0.01)
        assert first is not None
    engine.release(first)
    Worker(engine, FuncCallback(ran.append), settings(max_attempts=3)).run()
    assert ran == []
    [(message, reason)] = engine.failed
    assert message.attempt == 4 and "delivered 4 times" in reason


def test_a_dry_run_keeps_the_leases_of_what_it_holds() -> None:
    """A dry run holds every message it shows until its end: a long one must not lose them to the lease."""

    class SlowLeasing(MemoryEngine):
        lease_interval = 0.05

        def __init__(self) -> None:
            super().__init__(["a", "b", "c", "d"])
            self.extended: list[list[str]] = []

        def next(self, timeout: float) -> Message | None:
            time.sleep(0.1)  # a slow broker: the dry run outlasts the lease interval
            return super().next(timeout)

        def extend(self, messages: list[Message]) -> None:
            self.extended.append([m.param for m in messages])

    engine = SlowLeasing()
    assert Worker(engine, ProcessCallback(["echo"]), settings(dry=True)).run() == 0
    # a, b and c were each held while the next one was being taken, longer than the interval
    assert {"a", "b", "c"} <= {param for call in engine.extended for param in call}
    assert sorted(m.param for m in engine._queue) == ["a", "b", "c", "d"]


def test_leases_are_renewed_during_the_grace_period() -> None:
    class Leasing(MemoryEngine):
        lease_interval = 0.1

        def __init__(self) -> None:
            super().__init__(["long"])
            self.extended_at: list[float] = []

        def extend(self, messages: list[Message]) -> None:
            self.extended_at.append(time.monotonic())

    engine = Leasing()
    gate = threading.Event()

    def slow(param: Any) -> None:
        gate.set()
        time.sleep(1.5)

    worker = Worker(engine, FuncCallback(slow), settings(grace_period=5))
    stopped_at: list[float] = []
    threading.Thread(target=lambda: (gate.wait(5), stopped_at.append(time.monotonic()), worker.request_stop())).start()
    assert worker.run() == 0
    assert [m.param for m in engine.acked] == ["long"]
    after_stop = [t for t in engine.extended_at if t > stopped_at[0] + 0.3]
    assert len(after_stop) >= 5


class Watched(MemoryEngine):
    """Records which thread made each engine call, and checks that calls never overlap."""

    def __init__(self, params: Any, any_thread: bool) -> None:
        super().__init__(params)
        self.any_thread = any_thread
        self.callers: set[str] = set()
        self.inside = threading.Lock()
        self.overlaps = 0

    def _enter(self) -> None:
        if not self.inside.acquire(blocking=False):
            self.overlaps += 1
            self.inside.acquire()
        self.callers.add(threading.current_thread().name)

    def next(self, timeout: float) -> Any:
        self._enter()
        try:
            return super().next(timeout)
        finally:
            self.inside.release()

    def ack(self, message: Message) -> None:
        self._enter()
        try:
            super().ack(message)
        finally:
            self.inside.release()


@pytest.mark.parametrize("any_thread", [True, False])
def test_slot_threads_settle_and_take_only_where_the_engine_allows_it(any_thread: bool) -> None:
    engine = Watched(range(200), any_thread)
    code = Worker(engine, FuncCallback(lambda p: time.sleep(0.001)), settings(concurrency=3)).run()
    assert code == 0
    assert sorted(m.param for m in engine.acked) == list(range(200))
    assert engine.overlaps == 0, "two threads called the engine at once"
    slot_threads = {name for name in engine.callers if name.startswith("minion-slot-")}
    if any_thread:
        assert slot_threads, "no slot thread took a message itself"
    else:
        assert engine.callers == {threading.current_thread().name}


def test_a_stop_reaches_runs_handed_over_by_their_slot_thread() -> None:
    """With slot threads taking messages themselves, a warm stop still takes nothing new."""
    engine = MemoryEngine(range(1000))
    worker = Worker(engine, FuncCallback(lambda p: time.sleep(0.002)), settings(concurrency=2))
    stopper = threading.Timer(0.3, worker.request_stop)
    stopper.start()
    code = worker.run()
    stopper.join()
    assert code == 0
    done = len(engine.acked)
    assert 0 < done < 1000
    assert len(engine._queue) + done == 1000  # the rest is still queued, none in flight


# -- when a minion ends: the rule of README's "When a minion ends" --------------


class Broker(MemoryEngine):
    """A broker's queue: more may come at any time, and drained() can tell (Redis, RabbitMQ)."""

    input_ends = False


class BlindBroker(Broker):
    """A broker that cannot tell that its queue is drained (Pub/Sub, Pulsar)."""

    tells_drained = False

    def drained(self) -> bool:
        return False


def run_with_late_param(engine: MemoryEngine, minion_settings: Settings, late: float = 1.0) -> tuple[int, float]:
    """Run a minion on `engine`, put a parameter in after `late` s and stop it 1 s after that run.

    Returns the exit code and when the minion ended, in seconds from its start.
    """
    ran = threading.Event()
    worker = Worker(engine, FuncCallback(lambda p: ran.set()), minion_settings)

    def feed_then_stop() -> None:
        time.sleep(late)
        engine.put("late")
        if ran.wait(5):
            time.sleep(1.0)
        worker.request_stop()

    feeder = threading.Thread(target=feed_then_stop)
    started = time.monotonic()
    feeder.start()
    code = worker.run()
    ended = time.monotonic() - started
    feeder.join()
    return code, ended


@pytest.mark.parametrize("engine_class", [Broker, BlindBroker])
def test_a_minion_on_a_broker_waits_for_work_until_it_is_stopped(engine_class: type[MemoryEngine]) -> None:
    engine = engine_class()
    code, ended = run_with_late_param(engine, settings())
    assert code == 0
    assert [m.param for m in engine.acked] == ["late"], "the minion left before the work came"
    assert ended >= 2.0, "it ended before it was stopped"


def test_batch_mode_ends_a_minion_once_the_broker_is_drained() -> None:
    engine = Broker(["a", "b"])
    reporter = Recorder()
    started = time.monotonic()
    code = Worker(engine, FuncCallback(print), settings(batch=True), reporter).run()
    assert code == 0 and reporter.closed == "drained"
    assert sorted(m.param for m in engine.acked) == ["a", "b"]
    assert time.monotonic() - started < 10


def test_batch_mode_on_a_broker_that_cannot_tell_ends_after_the_batch_idle_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("minionize.worker.BATCH_IDLE_TIMEOUT", 0.5)
    reporter = Recorder()
    code = Worker(BlindBroker(["a"]), FuncCallback(print), settings(batch=True), reporter).run()
    assert code == 0 and reporter.closed == "idle for 0.5s"
    # MINION_IDLE_TIMEOUT, when set, is the idle time of batch mode too.
    code = Worker(BlindBroker(), FuncCallback(print), settings(batch=True, idle_timeout=0.2), reporter).run()
    assert code == 0 and reporter.closed == "idle for 0.2s"


def test_an_idle_timeout_alone_waits_that_long_for_work_even_on_a_drained_broker() -> None:
    engine = Broker()
    reporter = Recorder()
    started = time.monotonic()
    code = Worker(engine, FuncCallback(print), settings(idle_timeout=1.0), reporter).run()
    assert code == 0 and reporter.closed == "idle for 1s"
    assert time.monotonic() - started >= 1.0
    # Started before the work, it runs what comes within its idle time.
    code, _ = run_with_late_param(engine, settings(idle_timeout=3.0), late=0.5)
    assert code == 0 and [m.param for m in engine.acked] == ["late"]


@pytest.mark.parametrize("batch", [False, True])
def test_an_input_that_ends_ends_the_minion_in_either_mode(batch: bool) -> None:
    reporter = Recorder()
    code = Worker(MemoryEngine([1]), FuncCallback(print), settings(batch=batch), reporter).run()
    assert code == 0 and reporter.closed == "drained"


def test_minion_batch_is_read_from_the_environment() -> None:
    assert Settings.from_env({}).batch is False
    assert Settings.from_env({"MINION_BATCH": "1"}).batch is True
    assert Settings.from_env({"MINION_BATCH": "false"}).batch is False



class BreaksAfter(MemoryEngine):
    """An engine that hands out `good` messages, then fails every take with an error no retry can mend."""

    def __init__(self, params: Any, good: int) -> None:
        super().__init__(params)
        self.good = good
        self.released: list[Any] = []

    def next(self, timeout: float) -> Message | None:
        if self.good <= 0:
            raise ConfigError("LAB_QUEUE", "broken", "cannot be read any more")
        self.good -= 1
        return super().next(timeout)

    def release(self, message: Message) -> None:
        self.released.append(message.param)
        super().release(message)


def test_an_engine_error_met_by_a_slot_thread_ends_the_minion_and_gives_the_runs_in_flight_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # "short" ends first: its slot's thread settles it and takes the next message, which fails. The
    # loop ends the minion on that error; "long", still running, is killed and given back uncounted.
    crashed: list[Any] = []
    monkeypatch.setattr(threading, "excepthook", crashed.append)
    engine = BreaksAfter(["long", "short"], good=2)
    program = ProcessCallback(["sh", "-c", 'if [ "$0" = long ]; then sleep 30; fi'])
    started = time.monotonic()
    with pytest.raises(ConfigError, match="cannot be read any more"):
        Worker(engine, program, settings(concurrency=2)).run()
    assert time.monotonic() - started < 15  # the 30 s run was not waited for
    assert [m.param for m in engine.acked] == ["short"]
    assert engine.released == ["long"] and engine.nacked == [] and engine.failed == []
    assert crashed == []  # no slot thread died of it
