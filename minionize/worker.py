"""The worker loop: take a message, run the callback, settle, report.

    engine.next() -> Message -> callback.run() -> Outcome -> engine.ack/nack/fail -> reporter

The loop runs in the main thread; each run is in a slot whose thread calls
the callback (minionize/slots.py, MINION_CONCURRENCY slots). `_settle`
alone settles a message, with the verdict of minionize/policy.py. The loop holds the worker's lock
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

import contextlib
import logging
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any, Callable, Optional

from . import exitcodes, logs
from .callbacks.base import Callback, RunContext, describe_param
from .calls import EngineCalls
from .config import BATCH_IDLE_TIMEOUT, Settings
from .engines.base import Engine
from .guard import KILL_AFTER
from .health import NodeHealth
from .message import Message, Outcome
from .policy import Verdict, decide
from .reporters.base import HEARTBEAT, MinionInfo, Probe, Reporter, RunRecord
from .slots import Run, Slots
from .stopping import StopRequest

log = logging.getLogger("minionize")

#: Longest wait on the engine, so that a stop is noticed quickly.
POLL = 0.5
#: /healthz fails when the loop has not turned for that long (above the engine backoff).
HEALTH_STALE = 60.0
_QUEUE_REPORT_EVERY = 1.0
#: Seconds a stop may take beyond the grace period and the kill delay (settling, closing).
_STOP_MARGIN = 3.0


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
        self._slots = Slots(settings.concurrency, self._execute)
        engine.slots = settings.concurrency
        self._stop = StopRequest(settings.drain_signal, settings.drain_exit_code, wake=self._slots.wake)
        self._held: list[Message] = []
        self._last_lease = time.monotonic()
        self._last_queue_report = 0.0
        self._opened = False
        self._heartbeat = time.monotonic()
        self._last_report_beat = time.monotonic()
        self._services: list[Any] = []
        # The runs, the engine and the reporter: one thread at a time (see the module's docstring).
        self._lock = threading.Lock()
        self._looping = False
        #: What a slot's thread met while taking for its slot (an engine error): the loop raises it.
        self._fatal: Optional[BaseException] = None
        # Every engine call: a failed one is retried after a backoff, a late one in a stop not made.
        self._engine_call = EngineCalls(self._stop, self._pause, KILL_AFTER + _STOP_MARGIN, engine.offline_calls)
        self.counts: dict[str, int] = {v.value: 0 for v in (Verdict.ACKED, Verdict.RETRIED, Verdict.FAILED,
                                                            Verdict.RELEASED)}
        #: The broken-node guard: after strikes of runs failing at once, take nothing for a while, then give up.
        self._health = NodeHealth.from_settings(settings)

    # -- life cycle --------------------------------------------------------

    def attach(self, service: Any) -> None:
        """A service (the metrics server) started before the engine opens and stopped at the end."""
        self._services.append(service)

    def probe(self) -> Probe:
        """The minion's health, for /healthz, /readyz and the gauges (read from any thread)."""
        runs = len(self._slots)
        draining = self._stop.warm or self._past_deadline()
        return Probe(
            alive=time.monotonic() - self._heartbeat < HEALTH_STALE,
            ready=self._opened and self._engine_call.failures == 0 and not draining,
            draining=draining,
            in_flight=runs,
            free_slots=max(0, self.settings.concurrency - runs),
            strikes=self._health.strikes,
        )

    def run(self) -> int:
        """Open the engine, loop until drained, idle or stopped, close everything."""
        with logs.minion_fields(self.minion.id, self.minion.host, self.minion.job_id):
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
                except BaseException:
                    self._looping = False
                    self._stop.abandon(self._slots, self._collect, self._settle)
                    raise
                finally:
                    self._looping = False  # from now on, slot threads leave everything to this thread
            self._report_queue(force=True)  # the last word: what is left
        finally:
            self._slots.close()
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
            self._begin_turn()
            if self._stop.warm:
                if self._stop.advance(self._slots, self.settings.grace_period, self._collect, self._settle):
                    return self._stop.result()
                self._collect(0.1)
                continue
            if self._may_take() and self._take():
                continue
            if self._slots.runs or self._health.paused or self._engine_call.failures:
                # Neither a strike's pause nor a lost broker is idleness: an empty queue is.
                idle_since = time.monotonic()
            if self._slots.runs:
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

    def _begin_turn(self) -> None:
        """Settle the runs that finished, raise what a slot's thread met, renew the leases, say it lives."""
        self._heartbeat = time.monotonic()
        self._collect(0)
        if self._fatal is not None:
            raise self._fatal
        self._renew_leases()  # during a grace period too: the runs go on
        self._report_heartbeat()

    def _may_take(self) -> bool:
        """A slot is free, MINION_DEADLINE (after which running ones only finish) is not past, no strike holds back."""
        if self._health.paused or self._health.gave_up:
            return False
        return self._slots.free and not self._past_deadline()

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
        """Take a message for each free slot (the engine may give fewer) if one comes within `timeout`;
        True when one did."""
        if timeout is None:
            timeout = 0.05 if self._slots.runs else POLL
        free = self._slots.size - len(self._slots)
        if free > 1:
            messages = self._engine_call(self.engine.next_many, free, timeout) or []
        else:
            messages = [self._engine_call(self.engine.next, timeout)]
        taken = False
        for message in messages:
            if message is not None and self._health.avoids(message.id):
                message = self._elsewhere(message)
            if message is not None:
                self._start(message)
                taken = True
        return taken

    def _start(self, message: Message) -> None:
        """Give `message` a slot and start its run (or settle it at once: rejected, out of attempts)."""
        slot = self._slots.first_free()
        record = RunRecord(message.id, message.param, message.attempt, slot, time.time())
        record.extra["reclaimed"] = message.reclaimed
        context = RunContext(slot=slot, timeout=self.settings.timeout, dry=self.settings.dry)
        run = Run(message, record, context)
        self._report(self.reporter.started, record)
        if message.reject_reason is not None:
            self._slots.runs[slot] = run
            self._settle(run, Outcome.rejected(message.reject_reason))
        elif message.attempt > self.settings.max_attempts:
            # Delivered again after its last attempt: the minions that ran it died
            # (a parameter that makes them run out of memory, say). Never again.
            self._slots.runs[slot] = run
            self._settle(run, Outcome.rejected(f"delivered {message.attempt} times: the minions that took it died"))
        else:
            self._slots.start(run)

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

    def _execute(self, run: Run) -> None:
        """The body of a run's thread: the callback, then the hand-over of its outcome."""
        try:
            outcome = self.callback.run(run.message, run.context)
            if not isinstance(outcome, Outcome):
                outcome = Outcome.failure(f"callback returned {outcome!r}, not an Outcome")
        except Exception as exc:
            message = run.message
            log.exception("callback raised on %s", describe_param(message.param),
                          extra=logs.run_extra(message.id, message.param, message.attempt))
            outcome = Outcome.failure(f"{type(exc).__name__}: {exc}")
        if self.engine.any_thread and self._settle_here(run, outcome):
            return
        self._slots.finished(run, outcome)

    def _settle_here(self, run: Run, outcome: Outcome) -> bool:
        """Settle a run from its own thread and take the next message into its slot; False: leave it to the loop."""
        with self._lock:
            if not self._looping:
                return False
            if not run.settled:
                self._settle(run, outcome)
            try:
                taken = not self._stop.warm and self._fatal is None and self._may_take() and self._take(timeout=0)
            except Exception as exc:  # the loop's to raise (its thread ends the minion): this one goes on
                self._fatal, taken = exc, False
        if not taken:
            self._slots.wake()
        return True

    def _collect(self, timeout: float) -> None:
        """Settle the runs that finished, waiting up to `timeout` (without the lock) for the first."""
        for run, outcome in self._slots.collect(timeout, self._unlocked):
            self._settle(run, outcome)

    @contextlib.contextmanager
    def _unlocked(self) -> Iterator[None]:
        self._lock.release()
        try:
            yield
        finally:
            self._lock.acquire()

    # -- deciding ------------------------------------------------------------

    def _settle(self, run: Run, outcome: Outcome) -> None:
        """Ack, retry, set aside or give back one message: the only place that settles."""
        message = run.message
        decision = decide(outcome, message.attempt, self.settings.max_attempts, self._observe(run, outcome),
                          self.settings.dry)
        verdict = decision.verdict
        if verdict is Verdict.HELD:
            self._held.append(message)
        elif decision.verb is not None:
            method = getattr(self.engine, decision.verb)
            self._engine_call(method, message, *([decision.reason] if verdict is Verdict.FAILED else []))
            if self._engine_call.failed:
                log.warning("%s: not %s, the engine's %s failed: left to the broker's redelivery",
                            describe_param(message.param), verdict, decision.verb)
                verdict = Verdict.UNSETTLED
        self._slots.ended(run)
        self.counts[verdict.value] = self.counts.get(verdict.value, 0) + 1
        self._log_outcome(run, outcome, verdict)
        run.record.end, run.record.outcome, run.record.verdict = time.time(), outcome, verdict.value
        self._report(self.reporter.finished, run.record)
        self._report_queue()

    def _observe(self, run: Run, outcome: Outcome) -> bool:
        """Tell the broken-node guard how a run ended; True: a local failure during a strike, given back uncounted."""
        strike = self._health.record(run.message.id, outcome, time.time() - run.record.start, run.message.attempt)
        if strike is not None:
            level = logging.INFO if not strike.number else logging.ERROR if strike.final else logging.WARNING
            log.log(level, "%s", strike.describe())
            self._report(self.reporter.strike, strike)
        return self._health.gives_back(outcome)

    def _log_outcome(self, run: Run, outcome: Outcome, verdict: Verdict) -> None:
        """A line per run: a success at DEBUG in text (a terminal's noise), INFO in json (a log store's
        record of it); anything else at WARNING."""
        message, quiet = run.message, outcome.ok or verdict is Verdict.HELD
        level = logging.WARNING if not quiet else logging.INFO if self.settings.log_format == "json" else logging.DEBUG
        if not log.isEnabledFor(level):  # describe_param costs a json.dumps
            return
        extra = logs.run_extra(message.id, message.param, message.attempt, verdict=verdict.value,
                               exit_code=outcome.exit_code, duration=round(time.time() - run.record.start, 3))
        if quiet:
            log.log(level, "%s: %s", describe_param(message.param), verdict, extra=extra)
        else:
            log.log(level, "%s: %s, attempt %d: %s", describe_param(message.param), verdict, message.attempt,
                    outcome.error, extra=extra)

    # -- helpers -------------------------------------------------------------

    def _renew_leases(self) -> None:
        """Keep the messages in hand: those running, and those a dry run holds until its end."""
        interval = self.engine.lease_interval
        if interval is None or not (self._slots.runs or self._held):
            return
        if time.monotonic() - self._last_lease >= interval:
            self._last_lease = time.monotonic()
            self._engine_call(self.engine.extend, [run.message for run in self._slots.runs.values()] + self._held)

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
