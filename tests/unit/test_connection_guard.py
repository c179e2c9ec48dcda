"""kit.ConnectionGuard: the one way every broker engine turns a lost connection into a retry."""

from __future__ import annotations

import pytest

from minionize.engines import kit
from minionize.engines.kit import ConnectionGuard


class Lost(Exception):
    """A client library's "connection lost"."""


class Clock:
    """time.monotonic for the guard, moved by the test: no real waiting, no timing flakes."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(kit.time, "monotonic", fake)
    return fake


def guard(timeout: float = 0.2) -> tuple[ConnectionGuard, list[str]]:
    dropped: list[str] = []
    return ConnectionGuard("broker at h:1", (Lost,), timeout, lambda: dropped.append("dropped")), dropped


def test_a_declared_error_becomes_a_connection_error_and_drops_the_connection() -> None:
    lost, dropped = guard()
    with pytest.raises(ConnectionError, match=r"^broker at h:1: ack failed: reset by peer$"), lost("ack"):
        raise Lost("reset by peer\nsecond line of a long client message")
    assert dropped == ["dropped"]
    assert not lost.silent  # it failed at once: the next call tries


def test_other_errors_are_not_its_business() -> None:
    lost, dropped = guard()
    with pytest.raises(KeyError), lost("ack"):
        raise KeyError("a bug")
    assert dropped == []


def test_a_call_left_unanswered_for_the_timeout_makes_the_next_ones_fail_at_once(clock: Clock) -> None:
    lost, _ = guard(timeout=0.2)
    with pytest.raises(ConnectionError), lost("next"):
        clock.now += 0.25
        raise Lost("timed out")
    assert lost.silent
    ran = []
    with pytest.raises(ConnectionError, match="not tried: no answer within 0.2s"), lost("ack"):
        ran.append("ack")
    assert ran == []
    clock.now += 0.25
    with lost("ack"):
        ran.append("ack")
    assert ran == ["ack"]


def test_a_call_that_may_rightly_wait_is_not_taken_for_a_silent_server(clock: Clock) -> None:
    lost, _ = guard(timeout=0.2)
    with pytest.raises(ConnectionError), lost("consume", wait=1.0):
        clock.now += 0.25
        raise Lost("closed")
    assert not lost.silent


def test_a_call_left_unanswered_drops_the_connection_a_failed_one_does_not(clock: Clock) -> None:
    """on_silent: the connection of an unanswered call may be half-open, and is dropped; one that failed at once
    (the client already knows it is lost, and reconnects) is left to the client."""
    reopened: list[str] = []
    lost = ConnectionGuard("broker at h:1", (Lost,), 0.2, on_silent=lambda: reopened.append("reopened"))
    with pytest.raises(ConnectionError), lost("next"):
        raise Lost("reconnecting")
    assert reopened == []
    with pytest.raises(ConnectionError), lost("next"):
        clock.now += 0.25
        raise Lost("timed out")
    assert reopened == ["reopened"]
