"""The runs in progress and their threads: one long-lived thread per slot, and the hand-over of outcomes.

A slot's thread starts at the slot's first run and then waits in its inbox:
starting a thread costs about as much as a short run's own Python work. A
finished run goes back to the worker's loop through one queue (or is
settled by its own thread, for an engine that allows it; see the worker).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Callable, Optional

from .callbacks.base import RunContext
from .message import Message, Outcome
from .reporters.base import RunRecord


@dataclass
class Run:
    """One message being run in a slot."""

    message: Message
    record: RunRecord
    context: RunContext
    settled: bool = False

    @property
    def slot(self) -> int:
        return self.record.slot


class Slots:
    """MINION_CONCURRENCY slots: which runs are in progress, and the threads that run them."""

    def __init__(self, size: int, work: Callable[[Run], None]) -> None:
        self.size = size
        #: The runs in progress, by slot.
        self.runs: dict[int, Run] = {}
        self._work = work
        self._inboxes: dict[int, queue.SimpleQueue[Optional[Run]]] = {}
        self._finished: queue.SimpleQueue[Optional[tuple[Run, Outcome]]] = queue.SimpleQueue()

    def __len__(self) -> int:
        return len(self.runs)

    @property
    def free(self) -> bool:
        return len(self.runs) < self.size

    def first_free(self) -> int:
        return min(set(range(self.size)) - set(self.runs))

    def start(self, run: Run) -> None:
        """Hand `run` to its slot's thread, started at the slot's first run."""
        self.runs[run.slot] = run
        inbox = self._inboxes.get(run.slot)
        if inbox is None:
            inbox = self._inboxes[run.slot] = queue.SimpleQueue()
            name = f"minion-slot-{run.slot}"
            threading.Thread(target=self._serve, args=(inbox,), name=name, daemon=True).start()
        inbox.put(run)

    def _serve(self, inbox: queue.SimpleQueue[Optional[Run]]) -> None:
        while (run := inbox.get()) is not None:
            self._work(run)

    def ended(self, run: Run) -> None:
        """The run is settled: its slot is free."""
        run.settled = True
        self.runs.pop(run.slot, None)

    def finished(self, run: Run, outcome: Outcome) -> None:
        """From a slot's thread: hand the outcome over to the loop."""
        self._finished.put((run, outcome))

    def wake(self) -> None:
        """From a slot's thread, or a signal handler (SimpleQueue.put is reentrant): wake the loop (the queue
        may be drained, the minion idle, or a stop asked)."""
        self._finished.put(None)

    def collect(
        self, timeout: float, unlocked: Callable[[], AbstractContextManager[None]]
    ) -> Iterator[tuple[Run, Outcome]]:
        """The finished runs not settled yet, waiting up to `timeout` for the first, within `unlocked()`."""
        try:
            if timeout:
                with unlocked():
                    item = self._finished.get(timeout=timeout)
            else:
                item = self._finished.get_nowait()
        except queue.Empty:
            return
        while True:
            if item is not None and not item[0].settled:
                yield item
            try:
                item = self._finished.get_nowait()
            except queue.Empty:
                return

    def close(self) -> None:
        """End the threads; one still in a run (abandoned) ends with the process."""
        for inbox in self._inboxes.values():
            inbox.put(None)
