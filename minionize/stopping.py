"""What the signals ask of a minion: a warm stop, a cold stop, or a drain before preemption.

The first SIGTERM, SIGINT or SIGHUP (the terminal or the ssh session that
started the minion is gone) is a warm stop (take nothing new, let the runs
finish within MINION_GRACE_PERIOD, then stop them and give their messages
back); a second one is a cold stop (stop the runs at once, give their
messages back, exit 130). The drain signal (MINION_DRAIN_SIGNAL, SIGUSR2 by
default: OAR's checkpoint signal before it kills a besteffort job) is a
warm stop that exits with MINION_DRAIN_EXIT_CODE (99 makes OAR resubmit an
idempotent job). The handlers only record the signal; the worker's loop
does the rest.
"""

from __future__ import annotations

import logging
import signal
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from . import exitcodes
from .earlystop import STOP_SIGNALS, caught, on_main_thread, take
from .guard import KILL_AFTER
from .message import Outcome
from .slots import Run, Slots

log = logging.getLogger("minionize")


@dataclass
class StopRequest:
    """The signals received so far, and how far the loop got in obeying them."""

    drain_signal: Optional[int] = None
    drain_exit_code: int = exitcodes.OK
    signals: list[int] = field(default_factory=list)
    #: When the first stop signal came (time.monotonic): the grace period runs from there, not from
    #: when the loop saw it, which may be an engine call's timeout later (a pull from a dead broker).
    asked_at: Optional[float] = None
    grace_deadline: Optional[float] = None
    cancelled: bool = False
    #: Set once the stop took so long that the engine is no longer called.
    gave_up_engine: bool = False
    #: Called by `ask`, so that a loop waiting for a run to end sees the stop at once (reentrant: a
    #: signal handler may interrupt the waiting thread itself; queue.SimpleQueue.put is).
    wake: Optional[Callable[[], None]] = None

    @property
    def warm(self) -> bool:
        return bool(self.signals)

    @property
    def cold(self) -> bool:
        return len(self.signals) > 1

    def overdue(self, beyond: float) -> bool:
        """True once a stop is `beyond` seconds past its grace period."""
        return self.grace_deadline is not None and time.monotonic() > self.grace_deadline + beyond

    def ask(self, signum: int, frame: object = None) -> None:
        """Record a stop request (a signal handler: only a flag, and the time)."""
        if self.asked_at is None:
            self.asked_at = time.monotonic()
        self.signals.append(signum)
        if self.wake is not None:
            self.wake()

    def install(self) -> dict[int, Any]:
        """Handle SIGTERM, SIGINT, SIGHUP and the drain signal; returns the handlers they replace."""
        if not on_main_thread():
            return {}  # embedded in a thread: the host program owns signals
        drain = [self.drain_signal] if self.drain_signal else []
        handled = [signum for signum in (*STOP_SIGNALS, *drain) if caught(signum)]
        previous = {signum: signal.signal(signum, self.ask) for signum in handled}
        for signum in take():  # what came while starting: a stop before anything is taken
            self.ask(signum)
        return previous

    @staticmethod
    def restore(previous: dict[int, Any]) -> None:
        for signum, handler in previous.items():
            signal.signal(signum, handler)

    def advance(
        self, slots: Slots, grace_period: float, collect: Callable[[float], None],
        give_back: Callable[[Run, Outcome], None],
    ) -> bool:
        """Move a warm or cold stop on by one turn of the loop; True once no run is left.

        The runs get the grace period, then are stopped (at once in a cold
        stop); those still there KILL_AFTER later (a Python function cannot
        be stopped) are given back all the same.
        """
        now = time.monotonic()
        if self.grace_deadline is None:
            asked = now if self.asked_at is None else self.asked_at
            self.grace_deadline = asked + grace_period
            name = signal.Signals(self.signals[0]).name
            late = f" ({now - asked:.1f}s of it gone before the loop saw the signal)" if now - asked >= 0.5 else ""
            log.warning("%s: taking no new parameter, %d running, grace period %gs%s", name, len(slots),
                        grace_period, late)
        if self.cold or now >= self.grace_deadline:
            self._cancel(slots, collect)
        if self.cold or now >= self.grace_deadline + KILL_AFTER + 2:
            reason = ("killed by the second signal (cold stop), and not ended a second later" if self.cold
                      else "did not stop within the grace period")
            for run in list(slots.runs.values()):
                give_back(run, Outcome.interrupted(reason))
        return not slots.runs

    def _cancel(self, slots: Slots, collect: Callable[[float], None]) -> None:
        if self.cancelled and not self.cold:
            return
        self.cancelled = True
        _end_runs(slots, collect, hard=self.cold)

    def abandon(self, slots: Slots, collect: Callable[[float], None],
                give_back: Callable[[Run, Outcome], None]) -> None:
        """The loop ends on an error (the engine's, a bug) with runs in flight: end them as a cold stop
        does and give their messages back, no attempt counted, rather than leave them running, orphans,
        their parameters back only after a lease or an ack deadline, an attempt spent."""
        if not slots.runs:
            return
        log.warning("ending on an error: stopping the %d runs in flight, their parameters given back", len(slots))
        _end_runs(slots, collect, hard=True)
        for run in list(slots.runs.values()):
            give_back(run, Outcome.interrupted("the minion ended on an error, and the run did not end a second later"))

    def result(self) -> tuple[int, str]:
        """The exit code and the reason of a stop that is over."""
        name = signal.Signals(self.signals[0]).name
        if self.cold:
            return exitcodes.COLD_STOP, f"cold stop ({name}, then {signal.Signals(self.signals[1]).name})"
        if self.signals[0] == self.drain_signal:
            return self.drain_exit_code, f"drained on {name} (preemption notice)"
        return exitcodes.OK, f"stopped by {name}"


def _end_runs(slots: Slots, collect: Callable[[float], None], hard: bool) -> None:
    """Ask every run to end; `hard`: killed at once, and waited for a second (a cold stop) as they report."""
    for run in slots.runs.values():
        run.context.hard_cancel = hard
        run.context.cancel.set()
    if hard:
        deadline = time.monotonic() + 1.0
        while slots.runs and time.monotonic() < deadline:
            collect(0.05)
