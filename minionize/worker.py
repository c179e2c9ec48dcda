"""The worker loop: take a message, run the callback, settle, report.

    engine.next() -> Message -> callback.run() -> Outcome -> engine.ack/nack/fail -> reporter

The loop runs in the main thread; each run has a thread of its own
(MINION_CONCURRENCY of them at most), which calls the callback. `_settle`
alone decides what happens to a message. The loop holds the worker's lock
except while it waits, and only a holder of the lock touches the engine, the
reporter or the runs: the loop, or, for an engine that allows it
(`Engine.any_thread`: a file, a sweep), the slot thread that just finished a
run, which settles it and takes the next message itself rather than waking
the loop to do it (two thread switches, a third of a short run's overhead).

Stopping (minionize/stopping.py): signal handlers only record the request;
the loop stops taking, lets the runs finish within MINION_GRACE_PERIOD, then
stops them and gives their messages back.
"""

from __future__ import annotations

import logging
import queue
import random
import signal
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional

from . import exitcodes
from .callbacks.base import Callback, RunContext, describe_param
from .callbacks.child import KILL_AFTER
from .config import BATCH_IDLE_TIMEOUT, Settings
from .engines.base import Engine
from .excerpt import safe_text
from .health import NodeHealth
from .message import Message, Outcome, Status
from .reporters.base import MinionInfo, Probe, Reporter, RunRecord
from .stopping import StopRequest

log = logging.getLogger("minionize")

#: Longest wait on the engine, so that a stop is noticed quickly.
POLL = 0.5
#: /healthz fails when the loop has not turned for that long (above the engine backoff).
HEALTH_STALE = 60.0
#: Seconds between two heartbeats sent to the reporters.
HEARTBEAT = 10.0
_QUEUE_REPORT_EVERY = 1.0
_ENGINE_BACKOFF_MAX = 30.0
#: The engine calls that settle messages: an unexpected error there concerns those messages only.
_SETTLING = frozenset({"ack", "nack", "release", "fail", "extend"})
#: Seconds a stop may take beyond the grace period and the kill delay (settling, closing).
_STOP_MARGIN = 3.0


@dataclass
class _Run:
    message: Message
    record: RunRecord
    context: RunContext
    settled: bool = False


class Worker:
    """One minion: `run()` returns an exit code from `minionize.exitcodes`."""

    def __init__(
        self,
        engine: Engine,
        callback: Callback,
        settings: Settings,
        reporter: Optional[Reporter] = None,
        minion: Optional[MinionInfo] = None,
    ) -> None:
        self.engine = engine
        self.callback = callback
        self.settings = settings
        self.reporter = reporter or Reporter()
        self.minion = minion or MinionInfo.here(settings.env, engine.describe(), settings.concurrency)
        self._runs: dict[int, _Run] = {}
        self._finished: queue.SimpleQueue[Optional[tuple[_Run, Outcome]]] = queue.SimpleQueue()
        self._stop = StopRequest(settings.drain_signal, settings.drain_exit_code)
        self._held: list[Message] = []
        self._last_lease = time.monotonic()
        self._last_queue_report = 0.0
        self._engine_failures = 0
        self._opened = False
        self._heartbeat = time.monotonic()
        self._last_report_beat = time.monotonic()
        self._services: list[Any] = []
        self._slots: dict[int, queue.SimpleQueue[Optional[_Run]]] = {}
        # The runs, the engine and the reporter: one thread at a time (see the module's docstring).
        self._lock = threading.Lock()
        self._looping = False
        #: Set by a failed (or, late in a stop, skipped) engine call: `_settle` then reports "unsettled".
        self._call_failed = False
        self.counts = {"acked": 0, "retried": 0, "failed": 0, "released": 0}
        #: The broken-node guard: after strikes of runs failing at once, take nothing for a while, then give up.
        self._health = NodeHealth.from_settings(settings)

    # -- life cycle --------------------------------------------------------

    def attach(self, service: Any) -> None:
        """A service (the metrics server) started before the engine opens and stopped at the end."""
        self._services.append(service)

    def probe(self) -> Probe:
        """The minion's health, for /healthz, /readyz and the gauges (read from any thread)."""
        runs = len(self._runs)
        draining = self._stop.warm or self._past_deadline()
        return Probe(
            alive=time.monotonic() - self._heartbeat < HEALTH_STALE,
            ready=self._opened and self._engine_failures == 0 and not draining,
            draining=draining,
            in_flight=runs,
            free_slots=max(0, self.settings.concurrency - runs),
            strikes=self._health.strikes,
        )

    def run(self) -> int:
        """Open the engine, loop until drained, idle or stopped, close everything."""
        for service in self._services:
            service.start()
        try:
            return self._run()
        finally:
            for service in self._services:
                service.stop()

    def _run(self) -> int:
        self.engine.open()
        self._opened = True
        previous = self._stop.install()
        try:
            self.callback.setup(self.settings)
            self._report(self.reporter.open, self.minion)
            log.info("minion %s: taking parameters from %s", self.minion.id, self.engine.describe())
            with self._lock:
                self._looping = True
                try:
                    code, reason = self._loop()
                finally:
                    self._looping = False  # from now on, slot threads leave everything to this thread
            self._report_queue(force=True)  # the last word: what is left
        finally:
            for inbox in self._slots.values():
                inbox.put(None)  # a slot thread still in a run (abandoned) ends with the process
            self._close_callback()
            self._stop.restore(previous)
            self._release_held()
            self.engine.close()
        self._report(self.reporter.close, reason)
        log.info("minion %s: %s (%s)", self.minion.id, reason, _summary(self.counts))
        return self._exit_code(code)

    def _exit_code(self, code: int) -> int:
        """A minion that set parameters aside and otherwise ended well says so, as xargs's 123 does."""
        if code == exitcodes.OK and self.counts.get("failed") and self.settings.failed_exit_code:
            return self.settings.failed_exit_code
        return code

    def request_stop(self, signum: int = signal.SIGTERM) -> None:
        """Ask for a warm stop (a second call: a cold stop), as a signal would."""
        self._stop.ask(signum)

    # -- the loop ------------------------------------------------------------

    def _loop(self) -> tuple[int, str]:
        idle_since = time.monotonic()
        while True:
            self._heartbeat = time.monotonic()
            self._collect(0)
            self._renew_leases()  # during a grace period too: the runs go on
            self._report_heartbeat()
            if self._stop.warm:
                if self._stopping_done():
                    return self._stop.result()
                self._collect(0.1)
                continue
            if self._runs or self._health.paused:
                idle_since = time.monotonic()  # a strike's pause is not idleness
            if self._may_take() and self._take():
                continue
            if self._runs:
                # Nothing to take: wait for a run to end rather than poll the queue.
                self._collect(POLL)
                continue
            if self._health.gave_up:
                return exitcodes.BROKEN_NODE, f"broken node: gave up after {self._health.strikes} strikes"
            ended = self._ended(idle_since)
            if ended:
                return exitcodes.OK, ended
            if self._health.paused:
                # A strike's pause, waited without the lock, a turn of the loop at a time: a stop ends it.
                self._collect(min(POLL, self._health.pause_left()))

    def _may_take(self) -> bool:
        """A slot is free, MINION_DEADLINE (after which running ones only finish) is not past, no strike holds back."""
        if self._health.paused or self._health.gave_up:
            return False
        return len(self._runs) < self.settings.concurrency and not self._past_deadline()

    def _past_deadline(self) -> bool:
        return self.settings.deadline is not None and time.time() >= self.settings.deadline

    def _ended(self, idle_since: float) -> Optional[str]:
        """Why the minion can stop now that nothing runs, or None to keep going.

        The rule (README, "When a minion ends"): an input that ends by itself
        (execo, file, memory) ends the minion once it is drained. A broker's
        queue ends it only in batch mode (MINION_BATCH): once drained, or
        after an idle time where the broker cannot tell (Pub/Sub, Pulsar).
        Otherwise a minion on a broker waits for work until it is stopped,
        or for MINION_IDLE_TIMEOUT without a parameter.
        """
        if self._past_deadline():
            return "deadline reached"
        if self.settings.dry:
            return "dry run over"
        ends = self.engine.input_ends or self.settings.batch
        if ends and self._engine_call(self.engine.drained):
            return "drained"
        idle = self.settings.idle_timeout
        if idle is None and ends and not self.engine.tells_drained:
            idle = BATCH_IDLE_TIMEOUT
        if idle is not None and time.monotonic() - idle_since >= idle:
            return f"idle for {idle:g}s"
        return None

    def _take(self, timeout: Optional[float] = None) -> bool:
        """Take one message if one comes within `timeout`; True when one did."""
        if timeout is None:
            timeout = 0.05 if self._runs else POLL
        message = self._engine_call(self.engine.next, timeout)
        if message is not None and self._health.avoids(message.id):
            message = self._elsewhere(message)
        if message is None:
            return False
        slot = min(set(range(self.settings.concurrency)) - set(self._runs))
        record = RunRecord(message.id, message.param, message.attempt, slot, time.time())
        record.extra["reclaimed"] = message.reclaimed
        context = RunContext(slot=slot, timeout=self.settings.timeout, dry=self.settings.dry)
        run = _Run(message, record, context)
        self._runs[slot] = run
        self._report(self.reporter.started, record)
        if message.reject_reason is not None:
            self._settle(run, Outcome.rejected(message.reject_reason))
            return True
        if message.attempt > self.settings.max_attempts:
            # Delivered again after its last attempt: the minions that ran it died
            # (a parameter that makes them run out of memory, say). Never again.
            reason = f"delivered {message.attempt} times: the minions that took it died"
            self._settle(run, Outcome.rejected(reason))
            return True
        self._dispatch(run)
        return True

    def _elsewhere(self, message: Message) -> Message:
        """Another parameter than those that just failed fast here, if one comes at once (NodeHealth.avoids).

        The ones taken meanwhile (MINION_STRIKE_AFTER at most) are given back uncounted.
        """
        held, chosen = [message], message
        for _ in range(self.settings.strike_after):
            other = self._engine_call(self.engine.next, 0)
            if other is None or not self._health.avoids(other.id):
                chosen = other or message
                break
            held.append(other)
        for given in held:
            if given is not chosen:
                self._engine_call(self.engine.release, given)
        return chosen

    def _dispatch(self, run: _Run) -> None:
        """Hand the run to its slot's thread, started at the slot's first run.

        One long-lived thread per slot rather than one per run: starting a
        thread costs about as much as a short run's own Python work.
        """
        inbox = self._slots.get(run.record.slot)
        if inbox is None:
            inbox = self._slots[run.record.slot] = queue.SimpleQueue()
            name = f"minion-slot-{run.record.slot}"
            threading.Thread(target=self._slot_loop, args=(inbox,), name=name, daemon=True).start()
        inbox.put(run)

    def _slot_loop(self, inbox: queue.SimpleQueue[Optional[_Run]]) -> None:
        while (run := inbox.get()) is not None:
            self._execute(run)

    def _execute(self, run: _Run) -> None:
        """The body of a run's thread: the callback, then the hand-over of its outcome."""
        try:
            outcome = self.callback.run(run.message, run.context)
            if not isinstance(outcome, Outcome):
                outcome = Outcome.failure(f"callback returned {outcome!r}, not an Outcome")
        except Exception as exc:
            log.exception("callback raised on %s", describe_param(run.message.param))
            outcome = Outcome.failure(f"{type(exc).__name__}: {exc}")
        if self.engine.any_thread and self._settle_here(run, outcome):
            return
        self._finished.put((run, outcome))

    def _settle_here(self, run: _Run, outcome: Outcome) -> bool:
        """Settle a run from its own thread and take the next message into its slot; False: leave it to the loop."""
        with self._lock:
            if not self._looping:
                return False
            if not run.settled:
                self._settle(run, outcome)
            taken = not self._stop.warm and self._may_take() and self._take(timeout=0)
        if not taken:
            self._finished.put(None)  # wake the loop: the queue may be drained, the minion idle
        return True

    def _collect(self, timeout: float) -> None:
        """Settle the runs that finished, waiting up to `timeout` (without the lock) for the first."""
        try:
            if timeout:
                self._lock.release()
                try:
                    finished = self._finished.get(timeout=timeout)
                finally:
                    self._lock.acquire()
            else:
                finished = self._finished.get_nowait()
        except queue.Empty:
            return
        while True:
            if finished is not None and not finished[0].settled:
                self._settle(*finished)
            try:
                finished = self._finished.get_nowait()
            except queue.Empty:
                return

    # -- deciding ------------------------------------------------------------

    def _settle(self, run: _Run, outcome: Outcome) -> None:
        """Ack, retry, set aside or give back one message: the only place that decides."""
        message = run.message
        give_back = self._observe(run, outcome)
        if self.settings.dry:
            verdict = "held"
            self._held.append(message)
        else:
            verdict, method, args = self._decide(message, outcome, give_back)
            self._call_failed = False
            self._engine_call(method, message, *args)
            if self._call_failed:
                log.warning("%s: not %s, the engine's %s failed: left to the broker's redelivery",
                            describe_param(message.param), verdict, method.__name__)
                verdict = "unsettled"
        run.settled = True
        self._runs.pop(run.record.slot, None)
        self.counts[verdict] = self.counts.get(verdict, 0) + 1
        self._log_outcome(message, outcome, verdict)
        run.record.end, run.record.outcome, run.record.verdict = time.time(), outcome, verdict
        self._report(self.reporter.finished, run.record)
        self._report_queue()

    def _decide(
        self, message: Message, outcome: Outcome, give_back: bool
    ) -> tuple[str, Callable[..., Any], tuple[Any, ...]]:
        """The verdict on a run, and the engine call (with its arguments after the message) that settles it."""
        if outcome.ok:
            return "acked", self.engine.ack, ()
        if outcome.status is Status.INTERRUPTED or give_back:
            return "released", self.engine.release, ()
        if outcome.status is Status.REJECTED or message.attempt >= self.settings.max_attempts:
            # A broker refuses what UTF-8 cannot encode, and a user's callback may say anything.
            reason = safe_text(outcome.error or "failed")
            if outcome.status is not Status.REJECTED:
                reason = f"{reason} (attempt {message.attempt} of {self.settings.max_attempts})"
            return "failed", self.engine.fail, (reason,)
        return "retried", self.engine.nack, ()

    def _observe(self, run: _Run, outcome: Outcome) -> bool:
        """Tell the broken-node guard how a run ended; True: a local failure during a strike, given back uncounted."""
        strike = self._health.record(run.message.id, outcome, time.time() - run.record.start, run.message.attempt)
        if strike is not None:
            level = logging.INFO if not strike.number else logging.ERROR if strike.final else logging.WARNING
            log.log(level, "%s", strike.describe())
            self._report(self.reporter.strike, strike)
        return self._health.gives_back(outcome)

    def _log_outcome(self, message: Message, outcome: Outcome, verdict: str) -> None:
        if outcome.ok or verdict == "held":
            if log.isEnabledFor(logging.DEBUG):  # describe_param costs a json.dumps
                log.debug("%s: %s", describe_param(message.param), verdict)
            return
        log.warning(
            "%s: %s, attempt %d: %s",
            describe_param(message.param),
            verdict,
            message.attempt,
            outcome.error,
        )

    # -- stopping ------------------------------------------------------------

    def _stopping_done(self) -> bool:
        """Advance a warm or cold stop; True once no run is left."""
        now = time.monotonic()
        if self._stop.grace_deadline is None:
            self._stop.grace_deadline = now + self.settings.grace_period
            name = signal.Signals(self._stop.signals[0]).name
            log.warning(
                "%s: taking no new parameter, %d running, grace period %gs",
                name,
                len(self._runs),
                self.settings.grace_period,
            )
        if self._stop.cold or now >= self._stop.grace_deadline:
            self._cancel_runs(hard=self._stop.cold)
        if self._stop.cold or now >= self._stop.grace_deadline + KILL_AFTER + 2:
            self._abandon_runs()
        return not self._runs

    def _cancel_runs(self, hard: bool) -> None:
        if self._stop.cancelled and not hard:
            return
        self._stop.cancelled = True
        for run in self._runs.values():
            run.context.hard_cancel = hard
            run.context.cancel.set()
        if hard:
            # A cold stop still waits a moment for the killed runs to report.
            deadline = time.monotonic() + 1.0
            while self._runs and time.monotonic() < deadline:
                self._collect(0.05)

    def _abandon_runs(self) -> None:
        """Give back the messages of runs that did not stop (e.g. Python functions)."""
        if self._stop.cold:
            reason = "killed by the second signal (cold stop), and not ended a second later"
        else:
            reason = "did not stop within the grace period"
        for run in list(self._runs.values()):
            self._settle(run, Outcome.interrupted(reason))

    # -- helpers -------------------------------------------------------------

    def _renew_leases(self) -> None:
        interval = self.engine.lease_interval
        if interval is None or not self._runs:
            return
        if time.monotonic() - self._last_lease >= interval:
            self._last_lease = time.monotonic()
            self._engine_call(self.engine.extend, [run.message for run in self._runs.values()])

    def _release_held(self) -> None:
        """A dry run took messages only to show them: give them all back."""
        held, self._held = self._held, []
        for message in held:
            self._engine_call(self.engine.release, message)

    def _report_heartbeat(self) -> None:
        if time.monotonic() - self._last_report_beat >= HEARTBEAT:
            self._last_report_beat = time.monotonic()
            self._report(self.reporter.heartbeat, self.probe())

    def _report_queue(self, force: bool = False) -> None:
        """Tell the reporters the queue size: a broker round trip, so at most once a second."""
        now = time.monotonic()
        if now - self._last_queue_report < _QUEUE_REPORT_EVERY and not force:
            return
        self._last_queue_report = now
        remaining = self._engine_call(self.engine.remaining)
        if remaining is not None:
            self._report(self.reporter.queue, remaining)

    def _engine_call(self, method: Callable[..., Any], *args: Any) -> Any:
        """Call the engine; a lost connection or an I/O error is retried later, not fatal.

        During a stop, past the time a stop may take (grace + kill delay +
        a margin), calls are no longer made: what they would have settled
        is left to the broker's redelivery.
        """
        if self._stop.overdue(KILL_AFTER + _STOP_MARGIN):
            self._call_failed = True
            if not self._stop.gave_up_engine:
                self._stop.gave_up_engine = True
                log.warning("stop overdue: leaving what is not settled yet to the broker's redelivery")
            return None
        try:
            result = method(*args)
        except (OSError, ConnectionError) as exc:
            self._call_failed = True
            self._engine_failed(method.__name__, exc)
            return None
        except Exception:
            if method.__name__ not in _SETTLING:
                raise
            # One message the engine cannot settle (a bug, or content its client refuses):
            # the broker redelivers it; the minion goes on with the others.
            self._call_failed = True
            log.exception("engine %s failed on one message; left to the broker's redelivery", method.__name__)
            return None
        if self._engine_failures:
            log.warning("engine reachable again after %d failed calls", self._engine_failures)
        self._engine_failures = 0
        return result

    def _engine_failed(self, name: str, exc: BaseException) -> None:
        """Back off after a failed engine call: growing, jittered, and cut short by a stop."""
        self._engine_failures += 1
        if self._stop.warm:
            # No sleeping during a stop: the loop goes on at its own pace, bounded by the stop's deadline.
            log.warning("engine %s failed during a stop (%s)", name, exc)
            return
        ceiling = min(_ENGINE_BACKOFF_MAX, 0.5 * 2 ** min(self._engine_failures, 6))
        # Jitter, so that a fleet that lost its broker does not come back in lock-step.
        delay = random.uniform(ceiling / 2, ceiling)
        level = logging.WARNING if self._engine_failures == 1 else logging.DEBUG
        log.log(level, "engine %s failed (%s); trying again in %.1fs", name, exc, delay)
        self._pause(delay)

    def _pause(self, seconds: float) -> None:
        """Sleep without holding the worker's lock; a stop signal ends the sleep."""
        asked = len(self._stop.signals)
        deadline = time.monotonic() + seconds
        held = self._looping  # while looping, every engine call is made under the lock
        if held:
            self._lock.release()
        try:
            while len(self._stop.signals) == asked and (left := deadline - time.monotonic()) > 0:
                time.sleep(min(left, 0.1))
        finally:
            if held:
                self._lock.acquire()

    def _close_callback(self) -> None:
        try:
            self.callback.close()
        except Exception as exc:
            log.warning("closing %s failed: %s", type(self.callback).__name__, exc)

    def _report(self, method: Callable[..., Any], *args: Any) -> None:
        """Call the reporter; a failing reporter never fails a parameter."""
        try:
            method(*args)
        except Exception as exc:
            log.warning("reporter %s failed: %s", type(self.reporter).__name__, exc)


def _summary(counts: dict[str, int]) -> str:
    return ", ".join(f"{count} {verdict}" for verdict, count in counts.items() if count) or "nothing done"
