"""Is this node broken? A minion whose runs all fail at once stops taking work.

A minion on a broken node (its program missing, a shared library gone, the
wrong architecture) fails every run within milliseconds, so it takes
parameters far faster than the healthy minions and spends their attempts:
one such minion among four once set aside 452 parameters of a 500-parameter
sweep. HTCondor calls such machines black holes. `NodeHealth` is the guard,
fed the outcome of every run by the worker:

- MINION_STRIKE_AFTER fast failures in a row (each quicker than
  MINION_STRIKE_FAST seconds, on as many different parameters, with no
  success between them) make a *strike*: the minion takes nothing for
  MINION_STRIKE_PAUSE seconds, doubled at each further strike;
- from the first strike until a run succeeds, a failure that looks local to
  the node (`looks_local`: exit code 126 or 127, a program that could not
  be started) gives its parameter back without counting an attempt
  (verdict `released`), for a healthy minion to run;
- at MINION_MAX_STRIKES strikes the minion gives up: it exits with
  `exitcodes.BROKEN_NODE` once its runs have ended;
- a parameter that failed fast here since the last success is not run
  again at once when another one is there to take (`avoids`): it goes
  back uncounted, so that the next failure is on another parameter and
  the retry, if any, happens after a run that tells more.

A success ends it all: the node works. A failure that took longer, or a
timeout, breaks the series (the program did run). A parameter failing again
and again counts once, and the retry of a parameter that failed before counts
only if its failure looks local: the retries of a few bad parameters, which
a queue may hand out one after another at the end of a sweep, make no
strike. The policy is pure: the worker decides, logs and reports.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Optional

from . import exitcodes
from .config import Settings
from .message import Outcome, Status

#: The shell's "found but cannot execute" (not executable, exec format error)
#: and "command not found" (also the dynamic loader's missing library, and the
#: process callback's own code for a program it could not start).
LOCAL_EXIT_CODES = frozenset({126, 127})
#: The start of the error of a run that never started, whatever the callback.
_LOCAL_ERRORS = ("cannot start", "cannot reach the docker engine", "modulenotfounderror", "importerror")
#: The longest pause, whatever the strike.
MAX_PAUSE = 900.0


def looks_local(outcome: Outcome) -> bool:
    """The failure comes from the node rather than the parameter: the program did not even run."""
    if outcome.status is not Status.FAILURE or outcome.timed_out:
        return False
    if outcome.exit_code in LOCAL_EXIT_CODES:
        return True
    error = (outcome.error or "").lower()
    return error.startswith(_LOCAL_ERRORS) or "exec format error" in error


@dataclass(frozen=True)
class Strike:
    """A change of a minion's mind about its node, for its log and its reporters."""

    #: 1 for the first strike; 0 when a run succeeded and the strikes are over.
    number: int
    #: MINION_MAX_STRIKES: the strike at which the minion gives up.
    limit: int
    #: Fast failures in a row since the last success.
    failures: int
    #: Seconds without taking a parameter (0 when giving up or over).
    pause: float
    #: The error of the last failure.
    error: str = ""

    @property
    def final(self) -> bool:
        """The minion gives up: it takes nothing more and exits BROKEN_NODE."""
        return self.number >= self.limit

    def describe(self) -> str:
        if self.number == 0:
            return "a run succeeded: the node works, strikes are over"
        head = (f"broken node? {self.failures} runs in a row failed fast, the last with {self.error or 'an error'}; "
                f"strike {self.number} of {self.limit}: ")
        if self.final:
            return head + f"giving up (exit code {exitcodes.BROKEN_NODE}) once the runs in hand end"
        return head + f"taking nothing for {self.pause:g}s; runs that fail locally are given back uncounted"


class NodeHealth:
    """Counts fast failures in a row and says when to pause, give a parameter back, or give up."""

    def __init__(self, after: int = 10, fast: float = 5.0, pause: float = 30.0, limit: int = 3,
                 clock: Callable[[], float] = time.monotonic) -> None:
        #: 0 turns the guard off.
        self.after, self.fast, self.pause, self.limit = after, fast, pause, limit
        self.clock = clock
        #: Strikes since the last success.
        self.strikes = 0
        #: The parameters that failed fast since the last strike (or success), and how many of those failures count.
        self._keys: set[str] = set()
        self._counted = 0
        #: Fast failures since the last success, for the reports.
        self._failures = 0
        self._until = 0.0

    @classmethod
    def from_settings(cls, settings: Settings) -> NodeHealth:
        return cls(settings.strike_after, settings.strike_fast, settings.strike_pause, settings.max_strikes)

    @property
    def paused(self) -> bool:
        return self.pause_left() > 0

    def pause_left(self) -> float:
        """Seconds until the minion may take parameters again (0: now)."""
        return max(0.0, self._until - self.clock())

    @property
    def gave_up(self) -> bool:
        return self.after > 0 and self.strikes >= self.limit

    def avoids(self, key: str) -> bool:
        """Parameter `key` failed fast here since the last success: better run another one first.

        Most queues hand a parameter given back straight to the minion that
        gave it (execo pops it again, Redis lets it claim it again): a broken
        minion would spend all its attempts before it could see that other
        parameters fail too.
        """
        return key in self._keys

    def gives_back(self, outcome: Outcome) -> bool:
        """Give the parameter back without counting an attempt: a local failure during a strike."""
        return self.strikes > 0 and looks_local(outcome)

    def record(self, key: str, outcome: Outcome, duration: float, attempt: int = 1) -> Optional[Strike]:
        """Take in how a run of parameter `key` ended; a Strike when one begins or the strikes end."""
        if self.after <= 0:
            return None
        if outcome.ok:
            over = Strike(0, self.limit, self._failures, 0.0) if self.strikes else None
            self.strikes, self._failures, self._counted, self._until = 0, 0, 0, 0.0
            self._keys.clear()
            return over
        if outcome.status is not Status.FAILURE:
            return None  # a stop or a parameter that can never run says nothing about the node
        if outcome.timed_out or duration >= self.fast:
            self._keys.clear()
            self._failures = self._counted = 0
            return None
        if self.paused or self.gave_up:
            return None  # a run taken before the pause: this strike is already counted
        new = key not in self._keys
        self._keys.add(key)
        self._failures += 1
        if attempt > 1 and not looks_local(outcome):
            return None  # a parameter that failed before may be bad: its retries say little about the node
        # A parameter counts once; but during a strike, every run given back uncounted counts,
        # or a queue that hands the same few back again and again would have them run forever.
        if new or self.gives_back(outcome):
            self._counted += 1
        if self._counted < self.after:
            return None
        return self._strike(outcome.error or "")

    def _strike(self, error: str) -> Strike:
        self._keys.clear()
        self._counted = 0
        self.strikes += 1
        pause = 0.0 if self.strikes >= self.limit else min(MAX_PAUSE, self.pause * 2 ** (self.strikes - 1))
        self._until = self.clock() + pause
        return Strike(self.strikes, self.limit, self._failures, pause, error)
