"""Parameters taken ahead of the slots, when runs are short: one lock of the sweep for several runs.

A take of the execo engine holds the sweep's lock, reads what the fleet did
since and writes `inprogress`: about as long as a run of `true`. When the
runs are that short, a minion takes, with the parameters its free slots
ask for, as many more as its slots will finish within `window` seconds (at
most `MOST`), and hands those out without asking the sweep again. Runs as
long as the window or longer are never taken ahead: a minion holds nothing
that another one could start sooner (an hour-long run never waits behind
another in a minion while a second minion idles).

The pace is learned from the runs themselves (their time from hand-out to
settlement, smoothed) and the number of runs this minion keeps going at
once, not from the interval between two takes, which a busy sweep's lock
lengthens. A busy lock lengthens the horizon instead: the minion takes what
its slots finish within the window and within the time it waits for the
lock (smoothed), so that its slots do not run dry while it waits to take
again (128 minions on two cores wait 70 ms and more per lock). The other
minions are waiting for that lock too: they could not start those runs
sooner.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Callable

from ..message import Message

#: The most parameters taken beyond the free slots at once.
MOST = 32
_SMOOTHING = 0.2  # the weight of the latest run in the smoothed run time


class TakeAhead:
    """The messages taken ahead (each leased like a running one) and the pace that sizes them."""

    def __init__(self, window: float, max_age: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.window = window
        #: Older kept messages are given back rather than run (their lease may have lapsed).
        self.max_age = max_age
        self.clock = clock
        self._kept: deque[tuple[Message, float]] = deque()
        self._given: dict[str, float] = {}  # message id -> when it was handed out
        self._run_time = 0.0  # smoothed; 0: no run settled yet
        self._slots = 0  # the most messages this minion had out at once
        self._wait = 0.0  # the time this minion waits for the sweep's lock, smoothed

    def __len__(self) -> int:
        return len(self._kept)

    def extra(self) -> int:
        """How many to take beyond the slots that ask: the runs the slots finish within the window and the
        wait for the lock; none when a run lasts that long (another minion could start it as soon), nor
        when taking ahead is off (a window of 0)."""
        horizon = self.window + self._wait
        if not self.window or not self._run_time or self._run_time >= horizon:
            return 0
        return min(MOST, int(horizon * max(self._slots, 1) / self._run_time))

    def waited(self, seconds: float) -> None:
        """This minion waited that long for the sweep's lock."""
        self._wait = (1 - _SMOOTHING) * self._wait + _SMOOTHING * seconds

    def keep(self, messages: list[Message]) -> None:
        now = self.clock()
        self._kept.extend((message, now) for message in messages)

    def give(self, limit: int) -> list[Message]:
        """Up to `limit` kept messages, handed out (the oldest first)."""
        messages = [self._kept.popleft()[0] for _ in range(min(limit, len(self._kept)))]
        self.handed(messages)
        return messages

    def handed(self, messages: list[Message]) -> None:
        now = self.clock()
        for message in messages:
            self._given[message.id] = now
        self._slots = max(self._slots, len(self._given))

    def stale(self) -> list[Message]:
        """The kept messages too old to run: to give back."""
        limit = self.clock() - self.max_age
        old = []
        while self._kept and self._kept[0][1] < limit:
            old.append(self._kept.popleft()[0])
        return old

    def messages(self) -> list[Message]:
        return [message for message, _ in self._kept]

    def settled(self, message: Message, ran: bool = True) -> None:
        """A message handed out is settled; `ran`: it was run (a release was not), so it paces."""
        start = self._given.pop(message.id, None)
        if start is None or not ran:
            return
        took = max(self.clock() - start, 1e-6)
        self._run_time = took if not self._run_time else (1 - _SMOOTHING) * self._run_time + _SMOOTHING * took

    def take_all(self) -> list[Message]:
        """Every kept message, no longer kept (to give back at the end)."""
        messages = [message for message, _ in self._kept]
        self._kept.clear()
        return messages
