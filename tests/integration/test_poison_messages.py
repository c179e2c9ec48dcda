"""Poison messages on real brokers: set aside once with their reason, and the minion goes on.

For every engine that decodes raw bytes (each broker, and the file engine),
raw bodies that no producer of minionize would write are put between good
parameters: JSON nested 100,000 deep, a 5,001-digit integer, a NUL or a
lone surrogate in a dict value, bytes that are not UTF-8, a 1 MiB single
word. One real minion with the json decoder must exit 0 (never 1 with a
traceback, which on Redis and RabbitMQ made the fleet crash-loop on the
message forever), set each poison aside exactly once with its reason in the
dead-letter place, and run every good parameter.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from minionize import exitcodes
from tests.conftest import ROOT, run_minion

from .backends import Backend, load, with_capability
from .test_contract import push, runs

pytestmark = pytest.mark.integration
RECORD = (sys.executable, str(ROOT / "tests" / "programs" / "record.py"))

#: Raw body -> what the reason it is set aside with must say.
POISON: dict[bytes, str] = {
    b"[" * 100_000: "JSON nested too deeply",
    b"1" * 5_001: "not usable JSON",
    b'{"k": "a\\u0000b"}': "NUL character",
    b'{"k": "\\ud800"}': "lone surrogate",
    b"caf\xe9": "not UTF-8 text",
    b'"' + b"x" * (1 << 20) + b'"': "does not fit in a command line",
}
GOOD_BEFORE, GOOD_AFTER = ["g0"], ["g1", "g2", "g3"]


@pytest.fixture(scope="module", params=with_capability("holds_bodies"))
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    """Every engine that reads raw bytes (execo's sweeps hold Python objects, not bodies)."""
    instance = load(request.param)()
    instance.start()
    yield instance
    instance.stop()


def _is_text(body: bytes) -> bool:
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def test_poison_messages_are_set_aside_once_and_the_minion_goes_on(backend: Backend, tmp_path: Path) -> None:
    env = backend.env(tmp_path)
    # What the queue can hold: a PostgreSQL text column refuses bytes that are not UTF-8 when written.
    poison = {body: why for body, why in POISON.items() if backend.raw_bytes or _is_text(body)}
    push(env, *GOOD_BEFORE)  # creates the queue (a subscription, a group) as a fleet would have it
    backend.publish_raw(env, list(poison))
    push(env, *GOOD_AFTER)
    extra = {} if backend.drains else {"MINION_IDLE_TIMEOUT": "4"}
    result = run_minion(*RECORD, str(tmp_path), "0", "0", cwd=tmp_path, timeout=120, **env, **extra)

    assert result.returncode == exitcodes.SET_ASIDE, result.stderr[-3000:]  # drained, poison set aside
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert runs(tmp_path, "end") == {param: 1 for param in GOOD_BEFORE + GOOD_AFTER}
    # Set aside once each, at the first delivery: one log line per poison, never retried.
    failed = [line for line in result.stderr.splitlines() if ": failed, attempt 1: " in line]
    assert len(failed) == len(poison), "\n".join(failed)
    assert ": retried, " not in result.stderr
    for expected in poison.values():
        assert sum(expected in line for line in failed) == 1, (expected, failed)
    letters = backend.raw_dead_letters(env)
    assert sorted(body for body, _ in letters) == sorted(poison)
    if backend.dead_letter_reason:
        for body, reason in letters:
            assert poison[body] in reason, (body[:40], reason)
