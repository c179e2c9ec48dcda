"""The broken-node guard: the policy alone (minionize.health), then the worker that follows it."""

from __future__ import annotations

import io
import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from minionize import Outcome, exitcodes
from minionize.callbacks.base import Callback, RunContext
from minionize.config import Settings
from minionize.engines.memory import MemoryEngine
from minionize.errors import ConfigError
from minionize.health import NodeHealth, Strike, looks_local
from minionize.message import Message
from minionize.reporters.base import MinionInfo, Reporter, RunRecord
from minionize.reporters.json import JsonReporter
from minionize.reporters.metrics import MetricsReporter
from minionize.reporters.stdout import StdoutReporter
from minionize.worker import Worker

NOT_FOUND = Outcome.failure("exit code 127", 127)
BAD = Outcome.failure("exit code 1", 1)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def guard(after: int = 3, pause: float = 10.0, limit: int = 3) -> tuple[NodeHealth, Clock]:
    clock = Clock()
    return NodeHealth(after=after, fast=5.0, pause=pause, limit=limit, clock=clock), clock


def fail_on(health: NodeHealth, keys: list[str], outcome: Outcome = NOT_FOUND, duration: float = 0.01) -> list[Strike]:
    return [s for key in keys if (s := health.record(key, outcome, duration)) is not None]


# -- the policy ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("outcome", "local"),
    [
        (Outcome.failure("exit code 127", 127), True),
        (Outcome.failure("exit code 126", 126), True),
        (Outcome.failure("cannot start 'prog': No such file or directory", 127), True),
        (Outcome.failure("cannot start 'prog': Exec format error", None), True),
        (Outcome.failure("cannot reach the Docker engine: connection refused"), True),
        (Outcome.failure("ModuleNotFoundError: No module named 'numpy'"), True),
        (Outcome.failure("exit code 1", 1), False),
        (Outcome.failure("killed by SIGSEGV", None, signal=11), False),
        (Outcome.failure("timed out after 2s", 127, timed_out=True), False),
        (Outcome.rejected("not valid JSON"), False),
        (Outcome.interrupted(exit_code=127), False),
        (Outcome.success(), False),
    ],
)
def test_a_failure_looks_local_when_the_program_did_not_run(outcome: Outcome, local: bool) -> None:
    assert looks_local(outcome) is local


def test_fast_failures_on_different_parameters_make_a_strike_with_a_growing_pause() -> None:
    health, clock = guard(after=3, pause=10.0, limit=4)
    assert fail_on(health, ["a", "b"]) == [] and health.strikes == 0
    assert not health.gives_back(NOT_FOUND)  # no strike yet: the attempt counts
    [first] = fail_on(health, ["c"])
    assert (first.number, first.limit, first.failures, first.pause, first.final) == (1, 4, 3, 10.0, False)
    assert health.paused and health.pause_left() == 10.0
    assert health.gives_back(NOT_FOUND) and not health.gives_back(BAD)
    # Runs taken before the pause that end during it: given back, but no second strike.
    assert fail_on(health, ["d", "e", "f"]) == [] and health.strikes == 1
    clock.now += 10.0
    assert not health.paused
    [second] = fail_on(health, ["g", "h", "i"])
    assert (second.number, second.pause, second.failures) == (2, 20.0, 6)
    clock.now += 20.0
    [third] = fail_on(health, ["j", "k", "l"])
    assert third.pause == 40.0 and not health.gave_up


def test_the_last_strike_gives_up_without_a_pause() -> None:
    health, _ = guard(after=2, limit=2)
    fail_on(health, ["a", "b"])
    health.clock.now += 100  # type: ignore[attr-defined]
    [last] = fail_on(health, ["c", "d"])
    assert last.final and last.pause == 0 and health.gave_up and not health.paused
    assert "giving up (exit code 4)" in last.describe()
    assert fail_on(health, ["e", "f", "g"]) == [], "no strike after giving up"


def test_a_success_ends_the_strikes_and_the_pause() -> None:
    health, _ = guard(after=2)
    fail_on(health, ["a", "b"])
    assert health.strikes == 1 and health.paused
    over = health.record("c", Outcome.success(), 0.01)
    assert over is not None and over.number == 0 and "strikes are over" in over.describe()
    assert health.strikes == 0 and not health.paused and not health.gives_back(NOT_FOUND)
    assert health.record("d", Outcome.success(), 0.01) is None, "nothing to say when nothing changed"
    assert fail_on(health, ["e"]) == [], "the count starts again from zero"


def test_one_parameter_failing_again_and_again_is_no_strike() -> None:
    health, _ = guard(after=3)
    assert fail_on(health, ["bad"] * 20) == []
    assert fail_on(health, ["bad", "worse"] * 10) == []
    assert len(fail_on(health, ["third"])) == 1


def test_a_parameter_that_failed_fast_here_is_avoided_until_a_success() -> None:
    health, _ = guard(after=3)
    fail_on(health, ["a"], BAD)
    assert health.avoids("a") and not health.avoids("b")
    health.record("b", Outcome.success(), 0.01)
    assert not health.avoids("a")
    fail_on(health, ["c"], BAD, duration=10.0)
    assert not health.avoids("c"), "a slow failure: the program ran"


def test_retries_count_only_when_they_look_local() -> None:
    health, _ = guard(after=3)
    for key in "abcdef":
        assert health.record(key, BAD, 0.01, attempt=2) is None
    assert health.strikes == 0
    strikes = [health.record(key, NOT_FOUND, 0.01, attempt=2) for key in "xyz"]
    assert strikes[-1] is not None and strikes[-1].number == 1


def test_slow_failures_timeouts_stops_and_rejections_do_not_count() -> None:
    health, _ = guard(after=2)
    fail_on(health, ["a"])
    fail_on(health, ["b"], BAD, duration=6.0)  # it ran for seconds: the node can run it
    assert fail_on(health, ["c"]) == [], "a slow failure breaks the series"
    fail_on(health, ["d"], Outcome.failure("timed out", None, timed_out=True), duration=0.01)
    assert fail_on(health, ["e"]) == [], "so does a timeout"
    # A stop and a parameter that can never run are neither failures of the node nor successes.
    health.record("f", Outcome.interrupted(), 0.01)
    health.record("g", Outcome.rejected("not JSON"), 0.01)
    assert len(fail_on(health, ["h"])) == 1


def test_zero_turns_the_guard_off() -> None:
    health, _ = guard(after=0)
    assert fail_on(health, [str(i) for i in range(100)]) == []
    assert health.strikes == 0 and not health.gave_up and not health.gives_back(NOT_FOUND)


def test_settings_and_their_errors() -> None:
    default = Settings.from_env({})
    assert (default.strike_after, default.strike_fast, default.strike_pause, default.max_strikes) == (10, 5.0, 30.0, 3)
    env = {"MINION_STRIKE_AFTER": "4", "MINION_STRIKE_FAST": "0.5", "MINION_STRIKE_PAUSE": "2",
           "MINION_MAX_STRIKES": "5"}
    health = NodeHealth.from_settings(Settings.from_env(env))
    assert (health.after, health.fast, health.pause, health.limit) == (4, 0.5, 2.0, 5)
    for name, value in [("MINION_STRIKE_AFTER", "-1"), ("MINION_STRIKE_FAST", "fast"),
                        ("MINION_STRIKE_PAUSE", "-3"), ("MINION_MAX_STRIKES", "0")]:
        with pytest.raises(ConfigError, match=name):
            Settings.from_env({name: value})


# -- the worker ----------------------------------------------------------------


class Recorder(Reporter):
    def __init__(self) -> None:
        self.verdicts: list[tuple[Any, int, str]] = []
        self.strikes: list[Strike] = []
        self.closed = ""

    def finished(self, run: RunRecord) -> None:
        self.verdicts.append((run.param, run.attempt, run.verdict or ""))

    def strike(self, strike: Strike) -> None:
        self.strikes.append(strike)

    def close(self, reason: str) -> None:
        self.closed = reason


class Broken(Callback):
    """A node where the program is missing: every run exits 127 at once."""

    def run(self, message: Message, context: RunContext) -> Outcome:
        return Outcome.failure("exit code 127", 127)


def strict(**kw: Any) -> Settings:
    return Settings(engine="memory", strike_after=3, strike_pause=0.2, max_strikes=3, **kw)


def test_a_broken_minion_gives_parameters_back_uncounted_and_exits_broken_node() -> None:
    engine = MemoryEngine(f"p{i}" for i in range(20))
    reporter = Recorder()
    started = time.monotonic()
    code = Worker(engine, Broken(), strict(), reporter).run()
    took = time.monotonic() - started
    assert code == exitcodes.BROKEN_NODE
    assert "broken node" in reporter.closed
    assert [s.number for s in reporter.strikes] == [1, 2, 3] and reporter.strikes[-1].final
    # Two attempts counted before the first strike; every run after it is given back as it was.
    assert [v for _, _, v in reporter.verdicts] == ["retried"] * 2 + ["released"] * 7
    assert all(attempt == 1 for _, attempt, _ in reporter.verdicts)
    assert engine.failed == [] and len(engine.nacked) == 2
    assert sorted(m.param for m in engine._queue) == sorted(f"p{i}" for i in range(20)), "nothing lost"
    assert 0.6 - 0.05 <= took < 3, f"pauses of 0.2 s and 0.4 s, then gave up: {took:.2f}s"


class Sweep(Callback):
    """Good parameters succeed; bad ones fail at once with `code`."""

    def __init__(self, code: int) -> None:
        self.code = code

    def run(self, message: Message, context: RunContext) -> Outcome:
        if message.param.startswith("bad"):
            return Outcome.failure(f"exit code {self.code}", self.code)
        return Outcome.success()


class Sticky(MemoryEngine):
    """A queue that hands a parameter given back to the same minion at once, as execo and Redis do."""

    def _requeue(self, message: Message, attempt: int) -> None:
        with self._cond:
            self._in_flight.pop(message.id, None)
            self._queue.appendleft(Message(id=message.id, param=message.param, attempt=attempt))
            self._cond.notify()


def test_a_broken_minion_on_a_sticky_queue_spends_one_attempt_per_parameter_at_most() -> None:
    engine = Sticky(f"p{i}" for i in range(20))
    reporter = Recorder()
    assert Worker(engine, Broken(), strict(), reporter).run() == exitcodes.BROKEN_NODE
    assert engine.failed == []
    # Two attempts counted before the first strike, on two parameters; nothing else counted.
    assert [(p, a) for p, a, v in reporter.verdicts if v == "retried"] == [("p0", 1), ("p1", 1)]
    assert max(attempt for _, attempt, _ in reporter.verdicts) == 2
    assert [s.number for s in reporter.strikes] == [1, 2, 3]


def test_a_healthy_minion_on_a_sticky_queue_still_sets_a_bad_parameter_aside() -> None:
    engine = Sticky(["bad0", *(f"good{i}" for i in range(10))])
    reporter = Recorder()
    assert Worker(engine, Sweep(127), strict(), reporter).run() == exitcodes.SET_ASIDE
    assert [(m.param, m.attempt) for m, _ in engine.failed] == [("bad0", 3)]
    assert len(engine.acked) == 10 and reporter.strikes == []
    # Retried after a good parameter each time, not three times in a row.
    runs = [p for p, _, _ in reporter.verdicts]
    assert runs.index("bad0") == 0 and runs[1] != "bad0" and runs.count("bad0") == 3


@pytest.mark.parametrize("queue", [MemoryEngine, Sticky])
@pytest.mark.parametrize(("code", "bad"), [(1, 15), (2, 40), (127, 6)])
def test_a_sweep_with_a_few_bad_parameters_never_strikes(code: int, bad: int, queue: type[MemoryEngine]) -> None:
    """Bad parameters among good ones, each retried until set aside, with the default settings.

    The memory queue hands their retries out one after another at the end
    (as a FIFO broker does): more than MINION_STRIKE_AFTER different
    parameters failing at once in a row, but retries, which count only when
    they look local. The sticky one hands a retry back at once.
    """
    params = [f"good{i}" for i in range(200)]
    for i in range(bad):
        params[i * (200 // bad)] = f"bad{i}"
    engine = queue(params)
    reporter = Recorder()
    settings = Settings(engine="memory", strike_pause=0.1)
    assert Worker(engine, Sweep(code), settings, reporter).run() == exitcodes.SET_ASIDE
    assert reporter.strikes == []
    assert len(engine.failed) == bad and len(engine.acked) == 200 - bad
    assert "released" not in {v for _, _, v in reporter.verdicts}


def test_a_block_of_bad_parameters_pauses_but_a_success_ends_the_strike() -> None:
    engine = MemoryEngine([*(f"bad{i}" for i in range(3)), *(f"good{i}" for i in range(5))])
    reporter = Recorder()
    code = Worker(engine, Sweep(1), strict(max_attempts=1), reporter).run()
    assert code == exitcodes.SET_ASIDE
    assert [s.number for s in reporter.strikes] == [1, 0]
    # exit 1 does not look local: the bad parameters are set aside as usual, nothing is released.
    assert len(engine.failed) == 3 and len(engine.acked) == 5


def test_a_stop_cuts_a_strike_s_pause_short() -> None:
    engine = MemoryEngine(f"p{i}" for i in range(10))
    worker = Worker(engine, Broken(), Settings(engine="memory", strike_after=2, strike_pause=60), Recorder())
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(worker.run()))
    thread.start()
    deadline = time.monotonic() + 5
    while not worker.probe().strikes and time.monotonic() < deadline:
        time.sleep(0.01)
    assert worker.probe().strikes == 1
    stopped = time.monotonic()
    worker.request_stop()
    thread.join(5)
    assert result == [exitcodes.OK] and time.monotonic() - stopped < 1.5
    assert engine.failed == [] and len(engine._queue) == 10


def test_reporters_tell_the_strikes(tmp_path: Path) -> None:
    minion = MinionInfo("m1", "host", 1, None, "memory", 1, 0.0)
    strike = Strike(2, 3, 20, 60.0, "exit code 127")
    stream = io.StringIO()
    stdout = StdoutReporter(stream)
    stdout.open(minion)
    stdout.strike(strike)
    assert stream.getvalue() == (
        "minion m1: broken node? 20 runs in a row failed fast, the last with exit code 127; strike 2 of 3: "
        "taking nothing for 60s; runs that fail locally are given back uncounted\n"
    )
    reporter = JsonReporter(tmp_path)
    reporter.open(minion)
    reporter.strike(strike)
    reporter.close("done")
    [record] = [r for r in map(json.loads, (tmp_path / "m1.jsonl").read_text().splitlines()) if r["type"] == "strike"]
    assert {k: record[k] for k in ("minion", "strike", "max_strikes", "failures", "pause", "error")} == {
        "minion": "m1", "strike": 2, "max_strikes": 3, "failures": 20, "pause": 60.0, "error": "exit code 127"}
    metrics = MetricsReporter()
    metrics.strike(strike)
    metrics.strike(Strike(0, 3, 20, 0.0))
    engine = MemoryEngine()
    probe = Worker(engine, Broken(), Settings(engine="memory")).probe()
    text = metrics.export(probe).decode()
    assert "minion_strikes_total 1.0" in text and "minion_broken_node 0.0" in text
