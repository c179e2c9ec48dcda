"""The worker's calls to its engine: a lost broker is waited out, never fatal.

A call that fails with a lost connection or an I/O error is given up and
retried by the loop after a growing, jittered backoff (not during a stop,
which must not sleep). An unexpected error while settling one message
concerns that message only: the broker redelivers it. Past the time a stop
may take, or once a call took a second or more to fail during a stop, no
call is made at all.
"""

from __future__ import annotations

import logging
import random
import time
from typing import Any, Callable

from .stopping import StopRequest

log = logging.getLogger("minionize")

#: The longest backoff after failed engine calls, in seconds: a minion is back within that
#: long of its broker (at 30 s, the first ack after a 30 s partition came up to 45 s after the
#: link's return), and a fleet of a thousand minions tries about a hundred times a second.
BACKOFF_MAX = 10.0
#: The engine calls that settle messages: an unexpected error there concerns those messages only.
SETTLING = frozenset({"ack", "nack", "release", "fail", "extend"})
#: The calls whose success shows that the broker answers again: `drained` and
#: `remaining` may answer from what the client knows (or a default), and
#: would end an outage in the log at every turn of the loop while it lasts.
REACHING = SETTLING | {"next", "next_many"}
#: During a stop, a call that took this long to fail ends the engine calls: the broker is out of reach, and
#: every settlement would wait as long.
SLOW_FAILURE = 1.0


class EngineCalls:
    """Calls to the engine through `__call__`: the result, or None when the call failed (then `failed`)."""

    def __init__(self, stop: StopRequest, pause: Callable[[float], None], stop_takes: float,
                 offline: frozenset[str] = frozenset()) -> None:
        self._stop, self._pause, self._stop_takes = stop, pause, stop_takes
        #: The calls that show the broker is back (without the engine's `offline_calls`).
        self._reaching = REACHING - offline
        #: Failed calls in a row (the minion is not ready while there are some).
        self.failures = 0
        #: Whether the last call failed, or was not made.
        self.failed = False

    def __call__(self, method: Callable[..., Any], *args: Any) -> Any:
        self.failed = False
        if self._stop.gave_up_engine or self._stop.overdue(self._stop_takes):
            self.failed = True
            if not self._stop.gave_up_engine:
                self._stop.gave_up_engine = True
                log.warning("stop overdue: leaving what is not settled yet to the broker's redelivery")
            return None
        started = time.monotonic()
        try:
            result = method(*args)
        except (OSError, ConnectionError) as exc:
            self.failed = True
            self._back_off(method.__name__, exc, time.monotonic() - started)
            return None
        except Exception:
            if method.__name__ not in SETTLING:
                raise
            # One message the engine cannot settle (a bug, or content its client refuses):
            # the broker redelivers it; the minion goes on with the others.
            self.failed = True
            log.exception("engine %s failed on one message; left to the broker's redelivery", method.__name__)
            return None
        if self.failures and method.__name__ in self._reaching:
            log.warning("engine reachable again after %d failed calls", self.failures)
            self.failures = 0
        return result

    def _back_off(self, name: str, exc: BaseException, took: float) -> None:
        """Wait after a failed call: growing, jittered, and cut short by a stop."""
        self.failures += 1
        if self._stop.warm:
            # No sleeping during a stop: the loop goes on at its own pace, bounded by the stop's deadline.
            log.warning("engine %s failed during a stop (%s)", name, exc)
            if took >= SLOW_FAILURE:
                # The broker took that long to fail: each settlement would wait as long (a client retrying
                # refused connections until its deadline, as Pub/Sub's does, or a server that does not answer).
                self._stop.gave_up_engine = True
                log.warning("the engine took %.1fs to fail during a stop: leaving what is not settled yet to "
                            "the broker's redelivery", took)
            return
        ceiling = min(BACKOFF_MAX, 0.5 * 2 ** min(self.failures, 6))
        # Jitter, so that a fleet that lost its broker does not come back in lock-step.
        delay = random.uniform(ceiling / 2, ceiling)
        level = logging.WARNING if self.failures == 1 else logging.DEBUG
        log.log(level, "engine %s failed (%s); trying again in %.1fs", name, exc, delay)
        self._pause(delay)
