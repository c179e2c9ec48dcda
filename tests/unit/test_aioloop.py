"""aioloop.LoopThread: an asyncio client's coroutines run behind synchronous verbs, bounded, guarded, stopped."""

from __future__ import annotations

import asyncio
import gc
import logging
import threading
import warnings
from collections.abc import Iterator

import pytest

from minionize.engines.aioloop import LoopThread
from minionize.engines.kit import ConnectionGuard


class Lost(Exception):
    """A client's "connection lost"."""


@pytest.fixture
def loop() -> Iterator[LoopThread]:
    thread = LoopThread("minionize-test-loop")
    yield thread
    thread.stop()


def threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name == "minionize-test-loop"]


async def answer(value: int) -> int:
    await asyncio.sleep(0)
    return value


def test_a_coroutine_runs_on_the_thread_and_its_result_comes_back(loop: LoopThread) -> None:
    async def where() -> str:
        return threading.current_thread().name

    assert loop.run(answer(42), timeout=5) == 42
    assert loop.run(where(), timeout=5) == "minionize-test-loop"
    assert loop.submit(answer(7)).result(5) == 7


def test_past_its_bound_a_coroutine_is_cancelled_and_the_caller_gets_timeout_error(loop: LoopThread) -> None:
    cancelled = threading.Event()

    async def forever() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    with pytest.raises(TimeoutError, match="no answer within 0.05s"):
        loop.run(forever(), timeout=0.05)
    assert cancelled.wait(5)


def test_guarded_turns_the_clients_errors_into_connection_error(loop: LoopThread) -> None:
    guard = ConnectionGuard("broker at h:1", (Lost,), 5.0)

    async def lost() -> None:
        raise Lost("reset by peer")

    with pytest.raises(ConnectionError, match=r"^broker at h:1: fetch failed: reset by peer$"):
        loop.guarded(lost(), guard, "fetch", timeout=5)
    assert loop.guarded(answer(1), guard, "fetch", timeout=5) == 1


def test_a_call_refused_before_it_is_sent_never_reaches_the_loop_nor_warns(loop: LoopThread) -> None:
    guard = ConnectionGuard("broker at h:1", (Lost,), 5.0)
    ran: list[str] = []

    async def call() -> None:
        ran.append("ran")

    def reconnecting() -> None:
        raise Lost("reconnecting")

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "coroutine ... was never awaited" would be a RuntimeWarning
        with pytest.raises(ConnectionError, match="reconnecting"):
            loop.guarded(call(), guard, "ack", timeout=5, ready=reconnecting)
        guard.silence()
        with pytest.raises(ConnectionError, match="not tried"):
            loop.guarded(call(), guard, "ack", timeout=5)
        gc.collect()
    assert ran == []


def test_stop_ends_the_thread_even_with_a_coroutine_still_waiting() -> None:
    thread = LoopThread("minionize-test-loop")
    thread.submit(asyncio.Event().wait())
    thread.stop()
    assert threads() == []
    assert thread.loop.is_closed()


def test_asyncios_warning_at_the_end_of_a_tls_upgraded_connection_is_dropped(
    loop: LoopThread, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, "asyncio"):
        logging.getLogger("asyncio").warning("returning true from eof_received() has no effect when using ssl")
        logging.getLogger("asyncio").warning("something else")
    assert [record.getMessage() for record in caplog.records] == ["something else"]
