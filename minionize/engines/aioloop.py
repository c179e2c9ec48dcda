"""A private asyncio event loop on a thread of its own, behind an engine's synchronous verbs.

For a client that is asyncio only (nats-py): the worker calls an engine's
verbs as plain functions, from its own threads; each verb hands a
coroutine to the loop and waits for its result, within a bound (a
TimeoutError past it, and the coroutine cancelled). Through `guarded`, the
engine's kit.ConnectionGuard turns the client's connection errors into the
ConnectionError the worker backs off on. The hop costs about 0.1 ms a
call (bench/RESULTS.md, the nats rows).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from .kit import ConnectionGuard

_T = TypeVar("_T")
#: What asyncio says at the end of every connection that start_tls upgraded.
_TLS_UPGRADE_EOF = "returning true from eof_received() has no effect when using ssl"


class _QuietTlsUpgrade(logging.Filter):
    """Drop asyncio's warning at the end of a connection upgraded to TLS by start_tls (as nats-py does):
    its stream protocol, made before the upgrade, asks to stay half open, which TLS ignores. It means nothing."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.msg != _TLS_UPGRADE_EOF


def _quiet_tls_upgrades() -> None:
    asyncio_log = logging.getLogger("asyncio")
    if not any(isinstance(kept, _QuietTlsUpgrade) for kept in asyncio_log.filters):
        asyncio_log.addFilter(_QuietTlsUpgrade())


def _ready() -> None:
    """Nothing to check before a call."""


class LoopThread:
    """An asyncio event loop running on a daemon thread named `name`, until `stop`."""

    def __init__(self, name: str) -> None:
        _quiet_tls_upgrades()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self.thread.start()

    def submit(self, coroutine: Coroutine[Any, Any, _T]) -> concurrent.futures.Future[_T]:
        """Start the coroutine on the loop and return at once: its future, for a later look."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop)

    def run(self, coroutine: Coroutine[Any, Any, _T], timeout: float) -> _T:
        """The coroutine's result; TimeoutError (and the coroutine cancelled) past `timeout`."""
        future = self.submit(coroutine)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise TimeoutError(f"no answer within {timeout:g}s") from None

    def guarded(
        self, coroutine: Coroutine[Any, Any, _T], guard: ConnectionGuard, doing: str, timeout: float,
        wait: float = 0.0, ready: Callable[[], None] = _ready,
    ) -> _T:
        """`run` inside `guard(doing, wait)`, after `ready()`, which may refuse the call by raising one of the
        guard's errors. A coroutine refused before it reached the loop is closed, never left un-awaited."""
        sent = False
        try:
            with guard(doing, wait):
                ready()
                sent = True
                return self.run(coroutine, timeout)
        finally:
            if not sent:
                coroutine.close()

    def stop(self) -> None:
        """Cancel what still runs, stop the loop, join its thread and close the loop."""

        async def cancel_all() -> None:
            tasks = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.wait(tasks, timeout=1) if tasks else None

        if self.loop.is_running():
            with contextlib.suppress(concurrent.futures.TimeoutError, RuntimeError):
                asyncio.run_coroutine_threadsafe(cancel_all(), self.loop).result(2)
            self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)
        if not self.thread.is_alive():
            self.loop.close()
